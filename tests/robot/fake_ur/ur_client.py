"""Scenarios run by the REAL ur_rtde client against a fake UR controller, one per subprocess.

A ur_rtde constructor talking to a silent peer blocks forever inside C++ (no timeout, no way for a
Python thread to interrupt it), so the tests never call ur_rtde in the pytest process: each scenario
runs here, in a child killed by ``subprocess.run(timeout=...)``, and prints one JSON object as its
last stdout line.

Usage: ``python ur_client.py SCENARIO HOST [JSON_ARGS]``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _receive(host: str, **kw):
    import rtde_receive

    return rtde_receive.RTDEReceiveInterface(host, **kw)


def _control(host: str, flags: int | None = None):
    import rtde_control

    if flags is None:
        return rtde_control.RTDEControlInterface(host)
    return rtde_control.RTDEControlInterface(host, -1.0, flags)


def _wait(cond, timeout_s: float, poll_s: float = 0.005) -> float | None:
    """Seconds until ``cond()`` held, or None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(poll_s)
    return None


def scenario_receive(host: str, args: dict) -> dict:
    r = _receive(host)
    t_first = r.getTimestamp()
    time.sleep(0.1)
    out = {
        "connected": r.isConnected(),
        "actual_q": list(r.getActualQ()),
        "actual_tcp_pose": list(r.getActualTCPPose()),
        "target_q": list(r.getTargetQ()),
        "target_tcp_pose": list(r.getTargetTCPPose()),
        "timestamp_advance_s": r.getTimestamp() - t_first,
        "robot_mode": r.getRobotMode(),
        "safety_mode": r.getSafetyMode(),
        "safety_status_bits": r.getSafetyStatusBits(),
        "runtime_state": r.getRuntimeState(),
        "protective_stopped": r.isProtectiveStopped(),
        "emergency_stopped": r.isEmergencyStopped(),
        "speed_scaling": r.getSpeedScaling(),
        "payload": r.getPayload(),
    }
    r.disconnect()
    return out


def scenario_control_basics(host: str, args: dict) -> dict:
    """Connect both interfaces, then moveL, moveJ, servoL stream, servoStop, setTcp, setPayload, stopScript."""
    out: dict = {}
    r = _receive(host)
    t0 = time.monotonic()
    c = _control(host, args.get("flags"))
    out["control_connect_s"] = time.monotonic() - t0
    out["program_running"] = c.isProgramRunning()
    out["start_pose"] = list(r.getActualTCPPose())
    out["start_q"] = list(r.getActualQ())

    goal = list(out["start_pose"])
    goal[2] += 0.05
    goal[1] += 0.03
    out["moveL_goal"] = goal
    out["moveL_ok"] = c.moveL(goal, 0.25, 1.2)
    time.sleep(0.02)
    out["pose_after_moveL"] = list(r.getActualTCPPose())

    q_goal = list(r.getActualQ())
    q_goal[0] += 0.2
    q_goal[5] -= 0.3
    out["moveJ_goal"] = q_goal
    out["moveJ_ok"] = c.moveJ(q_goal, 1.05, 1.4)
    time.sleep(0.02)
    out["q_after_moveJ"] = list(r.getActualQ())

    # servoL: 0.5 s of a 500 Hz (e-Series) / 125 Hz (CB3) stream moving 4 cm along -x.
    dt = float(args.get("servo_dt_s", 0.002))
    p0 = list(r.getActualTCPPose())
    out["servo_start_pose"] = p0
    n = int(0.5 / dt)
    servo_ok = True
    for i in range(1, n + 1):
        target = list(p0)
        target[0] -= 0.04 * i / n
        t_start = c.initPeriod()
        servo_ok &= c.servoL(target, 0.5, 0.5, dt, 0.1, 300)
        c.waitPeriod(t_start)
    out["servo_ok"] = servo_ok
    out["servo_final_target"] = target
    time.sleep(0.2)
    out["pose_after_servo"] = list(r.getActualTCPPose())
    out["servoStop_ok"] = c.servoStop()

    out["setTcp_ok"] = c.setTcp([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    time.sleep(0.05)
    out["q_with_tcp"] = list(r.getActualQ())
    out["pose_with_tcp"] = list(r.getActualTCPPose())
    out["tcp_offset"] = list(c.getTCPOffset())
    out["setPayload_ok"] = c.setPayload(1.5, [0.0, 0.0, 0.05])
    time.sleep(0.05)
    out["payload"] = r.getPayload()

    c.stopScript()
    out["program_running_after_stop"] = _wait(lambda: not c.isProgramRunning(), 2.0) is not None
    c.disconnect()
    r.disconnect()
    return out


def scenario_fault_and_recover(host: str, args: dict) -> dict:
    """Start a long blocking moveJ; the test injects a fault meanwhile and reports it on stdout
    ("FAULT {...}"). Then wait for a line on stdin (the test cleared the fault) and try again."""
    r = _receive(host)
    c = _control(host)
    print("READY", flush=True)
    q = list(r.getActualQ())
    q[0] += 1.5
    t0 = time.monotonic()
    ok = c.moveJ(q, 0.3, 0.5)
    move_s = time.monotonic() - t0
    # The control interface saw the fault on its own RTDE connection; the receive interface's
    # stream may deliver the same package a moment later: wait for it, bounded.
    seen = _wait(lambda: r.isProtectiveStopped() or r.isEmergencyStopped(), 1.0)
    out = {
        "move_ok": ok,
        "move_s": move_s,
        "fault_seen_by_receive_after_s": seen,
        "protective_stopped": r.isProtectiveStopped(),
        "emergency_stopped": r.isEmergencyStopped(),
        "safety_status_bits": r.getSafetyStatusBits(),
        "program_running": c.isProgramRunning(),
    }
    t1 = time.monotonic()
    out["call_during_fault_ok"] = c.moveL(list(r.getActualTCPPose()), 0.1, 0.5)
    out["call_during_fault_s"] = time.monotonic() - t1
    print("FAULT " + json.dumps(out), flush=True)
    sys.stdin.readline()
    time.sleep(0.05)
    if args.get("reupload"):
        out["first_call_after_clear_ok"] = c.moveL(list(r.getActualTCPPose()), 0.1, 0.5)
        out["reupload_ok"] = c.reuploadScript()
        # reuploadScript() returns before the controller runs the program: wait for it.
        out["running_after_reupload_s"] = _wait(c.isProgramRunning, 3.0)
    out["protective_stopped_after_clear"] = r.isProtectiveStopped()
    out["emergency_stopped_after_clear"] = r.isEmergencyStopped()
    pose = list(r.getActualTCPPose())
    pose[2] += 0.01
    out["move_after_clear_ok"] = c.moveL(pose, 0.1, 0.5)
    c.disconnect()
    r.disconnect()
    return out


def scenario_disconnect_detected(host: str, args: dict) -> dict:
    """Wait (bounded) until both interfaces report a lost connection after the test's fault."""
    r = _receive(host)
    c = _control(host)
    print("READY", flush=True)
    limit = float(args.get("limit_s", 8.0))
    t_recv = _wait(lambda: not r.isConnected(), limit)
    t_ctrl = _wait(lambda: not c.isConnected(), limit)
    out = {"receive_lost_after_s": t_recv, "control_lost_after_s": t_ctrl}
    if args.get("cleanup"):
        t0 = time.monotonic()
        r.disconnect()
        c.disconnect()
        out["cleanup_s"] = time.monotonic() - t0
    return out


def scenario_stream_rate(host: str, args: dict) -> dict:
    """Sample getTimestamp() for ``window_s``: distinct controller timestamps seen per second."""
    r = _receive(host)
    window = float(args.get("window_s", 1.0))
    seen = []
    last = r.getTimestamp()
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        ts = r.getTimestamp()
        if ts != last:
            seen.append(ts)
            last = ts
        time.sleep(0.0002)
    elapsed = time.monotonic() - t0
    r.disconnect()
    deltas = sorted(b - a for a, b in zip(seen, seen[1:], strict=False))
    return {
        "distinct_per_s": len(seen) / elapsed,
        "median_timestamp_step_s": deltas[len(deltas) // 2] if deltas else None,
        # The client keeps only the newest of several queued packets, so under CPU load many steps
        # span 2+ periods; the short steps still show the controller's own period.
        "p10_timestamp_step_s": deltas[len(deltas) // 10] if deltas else None,
        "controller_time_per_s": (seen[-1] - seen[0]) / elapsed if len(seen) > 1 else None,
        "timestamp_steps_s": [b - a for a, b in zip(seen, seen[1:], strict=False)],
    }


def scenario_second_control_refused(host: str, args: dict) -> dict:
    c = _control(host)
    try:
        _control(host)
    except RuntimeError as exc:
        return {"second_error": str(exc), "first_still_running": c.isProgramRunning()}
    return {"second_error": None}


def scenario_reconnect_probe(host: str, args: dict) -> dict:
    c = _control(host, args.get("flags"))
    print("READY", flush=True)
    t0 = time.monotonic()
    log = []
    while time.monotonic() - t0 < float(args.get("observe_s", 4.0)):
        log.append((round(time.monotonic() - t0, 3), c.isConnected(), c.isProgramRunning()))
        time.sleep(0.1)
    out = {"log": log}
    if args.get("move"):
        out["move_ok"] = c.moveL(list(c.getActualToolFlangePose()), 0.1, 0.5)
    return out


def scenario_watchdog(host: str, args: dict) -> dict:
    """setWatchdog(2 Hz), kick it for 1 s, then stop kicking. (At 2 Hz a kick may come up to 0.5 s
    late: a loaded test machine stalls this process for more than 50 ms, a 20 Hz watchdog's period.)"""
    c = _control(host)
    out = {"set_ok": c.setWatchdog(2.0)}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        c.kickWatchdog()
        time.sleep(0.01)
    out["running_while_kicked"] = c.isProgramRunning()
    out["stopped_after_s"] = _wait(lambda: not c.isProgramRunning(), 4.0)
    return out


def scenario_dashboard(host: str, args: dict) -> dict:
    """ur_rtde's DashboardClient calls a UR backend may use for status and recovery."""
    import dashboard_client

    d = dashboard_client.DashboardClient(host)
    d.connect()
    out = {"connected": d.isConnected()}
    calls = {
        "polyscopeVersion": d.polyscopeVersion,
        "getSerialNumber": d.getSerialNumber,
        "isInRemoteControl": d.isInRemoteControl,
        "getRobotModel": d.getRobotModel,
        "robotmode": d.robotmode,
        "safetystatus": d.safetystatus,
        "programState": d.programState,
        "running": d.running,
        "unlockProtectiveStop": d.unlockProtectiveStop,
        "closeSafetyPopup": d.closeSafetyPopup,
        "powerOn": d.powerOn,
        "brakeRelease": d.brakeRelease,
    }
    for name, fn in calls.items():
        try:
            value = fn()
            out[name] = value if isinstance(value, bool | int | float | str | type(None)) else str(value)
        except Exception as exc:  # report which call the fake answered wrongly
            out[name] = f"ERROR {exc}"
    d.disconnect()
    return out


def main(argv: list[str]) -> int:
    name, host = argv[1], argv[2]
    args = json.loads(argv[3]) if len(argv) > 3 else {}
    result = globals()[f"scenario_{name}"](host, args)
    print(json.dumps(result), flush=True)
    if args.get("hard_exit"):
        # After a lost link the client's destructors may wait on its reconnect thread: the
        # scenario is over, so leave without running them.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
