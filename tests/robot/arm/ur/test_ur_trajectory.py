"""The arm controller's UR backend (ur_rtde) against the fake UR controller: the trajectory checks
of tests/robot/arm/test_arm_process.py, on a CB3 (125 Hz) and an e-Series (500 Hz) controller.

One fake controller and one arm controller per generation (module-scoped): the fake's RTDE input
registers belong to one control interface at a time, so the last test of each group is the one
that stops the controller and checks what it sent on the way out.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import multiprocess
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot.arm.backend import StatusFlag
from robot.arm.config import ArmConfig
from robot.arm.controller import ArmController
from robot.arm.interpolator import pose_distance
from robot.fake_ur.handle import FakeURController
from robot.process import DEFAULT_START_METHOD
from tests.robot.arm.trajectories import (
    corner_arrival,
    schedule_square_then_too_fast,
    skipped_periods,
)
from tests.robot.arm.ur.helpers import (
    ARM_DELAY_S,
    ARM_TAU_S,
    CB3,
    ESERIES,
    SERVO_STOP,
    SERVOL,
    SET_PAYLOAD,
    SET_TCP,
    STOP_SCRIPT,
    arm_on,
    hold,
    make_fake,
    servo_packets,
    unique_robot_times,
    ur_config,
    wait_until,
)
from tests.robot.fake_ur.helpers import fk_pose

TCP_OFFSET = (0.0, 0.0, 0.15, 0.0, 0.0, 0.1)
PAYLOAD_KG = 1.2
PAYLOAD_COG_M = (0.0, 0.01, 0.05)
LOOKAHEAD_S = 0.05  # not the defaults (0.1 s, 300): they must come from the config
GAIN = 500.0


@dataclass
class Rig:
    fake: FakeURController
    arm: ArmController
    cfg: ArmConfig

    @property
    def fake_period_s(self) -> float:
        return 1.0 / self.fake.rate_hz


@pytest.fixture(scope="module", params=[CB3, ESERIES], ids=["cb3-125Hz", "eseries-500Hz"])
def rig(request):
    version, name = request.param
    with make_fake(version) as fake:
        cfg = ur_config(
            name,
            fake.host,
            f"ur.tcp_offset_pose={list(TCP_OFFSET)}",
            f"ur.payload_kg={PAYLOAD_KG}",
            f"ur.payload_cog_m={list(PAYLOAD_COG_M)}",
            f"ur.servo_lookahead_time_s={LOOKAHEAD_S}",
            f"ur.servo_gain={GAIN}",
        )
        with arm_on(cfg) as arm:
            yield Rig(fake, arm, cfg)


@pytest.mark.timeout(60)
def test_tool_settings_sent_at_connect(rig: Rig):
    st = rig.fake.state()
    assert st["version"].startswith(rig.fake.version) and st["script_uploads"] == 1
    np.testing.assert_allclose(st["tcp_offset"], TCP_OFFSET, atol=1e-12)
    assert st["payload_mass_kg"] == pytest.approx(PAYLOAD_KG)
    np.testing.assert_allclose(st["payload_cog_m"], PAYLOAD_COG_M, atol=1e-12)
    assert st["command_counts"].get(SET_TCP) == 1 and st["command_counts"].get(SET_PAYLOAD) == 1
    # The published TCP pose is the tool's: forward kinematics of the joints plus the configured offset.
    s = rig.arm.get_state()
    lin, ang = pose_distance(s["actual_tcp_pose"], fk_pose(s["actual_q"], TCP_OFFSET))
    assert lin < 1e-6 and ang < 1e-6
    # Connected at the controller's rate, and that is what the client asked for.
    rtde = [c for c in st["connections"] if c["kind"] == "rtde"]
    assert len(rtde) == 2
    assert all(c["requested_frequency_hz"] == rig.cfg.rate_hz for c in rtde)
    assert all(c["stream_frequency_hz"] == rig.fake.rate_hz for c in rtde)


@pytest.mark.timeout(60)
def test_servo_l_arguments_from_config(rig: Rig):
    # Holding the pose is servoing too (the first servoL may still be on its way).
    wait_until(lambda: rig.fake.state()["last_servo_args"] is not None, 5, "a servoL", rig.arm)
    args = rig.fake.state()["last_servo_args"]
    assert args["time_s"] == pytest.approx(rig.cfg.period_s)  # one controller period per target
    assert args["lookahead_time_s"] == pytest.approx(LOOKAHEAD_S)
    assert args["gain"] == pytest.approx(GAIN)
    assert args["speed"] == 0.0 and args["acceleration"] == 0.0  # unused by servoL


@pytest.mark.timeout(60)
def test_waypoints_reached_on_time_within_speed_limits(rig: Rig):
    arm, cfg = rig.arm, rig.cfg
    dt = cfg.period_s
    vmax = cfg.limits.max_linear_speed_m_s
    start = arm.get_state()
    c0 = start["counter"]
    p0 = start["actual_tcp_pose"]
    n_wire, _ = rig.fake.servo_log()
    n_arm, _ = rig.fake.arm_log()
    waypoints, fast_goal, expected_fast_arrival = schedule_square_then_too_fast(arm, p0, vmax)
    # Until the controller has commanded the fast goal (a controller that a busy host kept from its
    # ticks gets there late; how late is judged below against the periods it skipped: a fixed wait
    # once ended before it got there, on a clean clone at load 1-9).
    wait_until(
        lambda: (
            time.monotonic() > expected_fast_arrival + 0.4
            and pose_distance(arm.get_state()["target_tcp_pose"], fast_goal)[0] < 1e-6
        ),
        30,
        "the trajectory to end",
        arm,
    )
    h = arm.state_ring.get_since(c0)
    wire = np.asarray(rig.fake.servo_log(n_wire)[1])  # (arrival, pose) per servoL on the wire
    held_by_script = np.asarray(rig.fake.arm_log(n_arm)[1])  # (host t, ctrl t, xyz, target xyz) per tick
    # Put the arm back for the next test.
    arm.servo_to(p0, 1.0)
    wait_until(lambda: pose_distance(arm.get_state()["actual_tcp_pose"], p0)[0] < 5e-4, 10, "back at p0", arm)

    tt, ct = h["tick_time"], h["capture_time"]
    # The link: a command reaches the arm at the fake's next cycle, a state reaches the controller
    # at its next tick after the fake sent it.
    link_s = rig.fake_period_s + dt
    judged = 0
    for wt, wp in waypoints[0::2]:  # arrivals (each is held for 0.3 s)
        # Commanded target: at the waypoint within one tick of its time, plus one per period the
        # controller's loop skipped (one late tick can skip many: seen 3.7 mm short one tick after a
        # single flagged overrun on a loaded machine).
        judged += corner_arrival(h["target_tcp_pose"], tt, wt, wp, dt) is not None
        # Actual arm: at the waypoint (up to the tracking lag of a 0.1 m/s move), from one tick plus
        # the arm's delay and the link on, before the next corner's time (the arm leaves this corner
        # 0.3 s after reaching it). How soon is not asserted: the targets pass through the ur_rtde
        # client process and the fake's own loop, which a loaded machine delays by more than the
        # 0.3 s hold (seen in CI: still 37 mm away when the hold ended); the controller's part of the
        # timing is asserted above, and a stall of 0.5 s (ur.state_timeout_s) would fault the arm.
        held = (ct >= wt + dt + ARM_DELAY_S + link_s) & (ct <= wt + 0.8)
        dist = [pose_distance(p, wp)[0] for p in h["actual_tcp_pose"][held]]
        if not (dist and min(dist) < 0.1 * ARM_TAU_S * 1.5 + 0.001):
            # Where the target was held up on its way (seen once on a quiet clean clone: the fake arm
            # entered the window 30.6 mm away and came no closer than 9.9 mm).
            raise AssertionError(
                f"the arm did not reach the corner due at {wt:.3f} (closest {min(dist, default=-1) * 1e3:.1f} mm); "
                f"s after its time: commanded {_first_at(tt, h['target_tcp_pose'][:, :3], wt, wp)}, on the "
                f"wire {_first_at(wire[:, 0], wire[:, 1:4], wt, wp)}, held by the script "
                f"{_first_at(held_by_script[:, 0], held_by_script[:, 5:8], wt, wp)}"
            )
    assert judged >= 1, "every corner's hold was eaten by controller stalls: machine too loaded"
    # The too-fast segment is stretched: commands never faster than the limit, arrival at distance / vmax.
    steps = np.linalg.norm(np.diff(h["target_tcp_pose"][:, :3], axis=0), axis=1)
    assert 0.95 * vmax * dt <= steps.max() <= vmax * dt * (1 + 1e-6)  # at the limit, never above
    arrive = tt[np.argmax(np.linalg.norm(h["target_tcp_pose"][:, :3] - fast_goal[:3], axis=1) < 1e-6)]
    # Within two ticks, plus one per late tick and one per skipped period (the per-tick step limit
    # then holds the target back).
    late = h["tick_overrun"].sum() + skipped_periods(tt, dt)
    assert -2 * dt <= arrive - expected_fast_arrival <= (2 + late) * dt
    # The arm itself (as the controller streamed it: one sample per new RTDE package, on the
    # controller's clock), averaged over 250 ms of the 600 ms fast leg: within the limit up to the
    # servo's overshoot. (Targets pass through the ur_rtde client process and the fake's own loop: on a
    # loaded machine a late target is followed by one on time, and a starved fake catches up its ticks;
    # shorter averages show those as spikes above and dips below the limit. How close to the limit
    # the arm got is not asserted for the same reason: the commands were, above.)
    u = unique_robot_times(h)
    pos, rt = h["actual_tcp_pose"][u, :3], h["robot_time"][u]
    k = max(1, int(round(0.25 / rig.fake_period_s)))
    actual_v = np.linalg.norm(pos[k:] - pos[:-k], axis=1) / (rt[k:] - rt[:-k])
    assert actual_v.max() <= vmax * 1.2
    assert not np.any(h["status_flags"] & (StatusFlag.UNREACHABLE | StatusFlag.REJECTED_TARGET))
    assert not np.any(h["status_flags"] & (StatusFlag.FAULTED | StatusFlag.DISCONNECTED))


def _first_at(times: np.ndarray, xyz: np.ndarray, wt: float, wp: np.ndarray) -> float | None:
    """Seconds after ``wt`` of the first row (from the leg into the corner on) at ``wp``'s position."""
    at = np.flatnonzero((times >= wt - 0.5) & (np.linalg.norm(xyz - wp[:3], axis=1) < 1e-6))
    return round(float(times[at[0]] - wt), 4) if len(at) else None


@pytest.mark.timeout(60)
def test_no_drift_without_commands_and_controller_clock_in_whole_periods(rig: Rig):
    arm = rig.arm
    time.sleep(0.3)
    first = arm.get_state()
    sent_before = servo_packets(rig.fake)
    fake_before = rig.fake.state()["actual_tcp_pose"]
    counts = [sent_before]
    for _ in range(10):
        hold(arm, 0.5)
        counts.append(servo_packets(rig.fake))
    last = arm.get_state()
    arm.check()
    fake_after = rig.fake.state()["actual_tcp_pose"]
    h = arm.state_ring.get_since(first["counter"])
    # No drift, as the controller sees it and as the (fake) arm is.
    lin, ang = pose_distance(last["actual_tcp_pose"], first["actual_tcp_pose"])
    assert lin < 1e-4 and ang < 1e-5
    lin, ang = pose_distance(fake_after, fake_before)
    assert lin < 1e-4 and ang < 1e-5
    # It kept servoing (holding the pose) all along: new servoL packages in every half second, one
    # per tick at most. Fewer is right on a loaded machine: the ur_rtde client sends only the newest of
    # the targets queued while it waited for a CPU (seen in CI: 2219 packages for 2494 ticks).
    assert np.all(np.diff(counts) > 0), counts
    sent = counts[-1] - sent_before
    n = last["counter"] - first["counter"]
    assert 0.5 * n <= sent <= 1.1 * n + 10, (sent, n)
    # The RTDE stream the controller read is the controller generation's: the controller clock advances by
    # whole package periods (125 Hz CB3, 500 Hz e-Series), whatever the load on this machine.
    u = unique_robot_times(h)
    steps = np.diff(h["robot_time"][u]) * rig.fake.rate_hz
    assert len(steps) > 10 and np.all(np.abs(steps - np.round(steps)) < 1e-6) and np.all(steps > 0.5)
    assert (h["robot_time"][-1] - h["robot_time"][0]) == pytest.approx(
        h["tick_time"][-1] - h["tick_time"][0], rel=0.05
    )


@pytest.mark.timeout(60)
def test_home_is_slow_and_ends_at_the_start_pose(rig: Rig):
    arm, cfg = rig.arm, rig.cfg
    home = np.asarray(cfg.start_pose)
    away = home + [0.06, -0.05, 0.04, 0, 0, 0]
    away[3:] = (Rotation.from_rotvec([0, 0, 0.3]) * Rotation.from_rotvec(home[3:])).as_rotvec()
    arm.servo_to(away, 1.0)
    wait_until(lambda: pose_distance(arm.get_state()["actual_tcp_pose"], away)[0] < 5e-4, 10, "away", arm)
    time.sleep(0.2)
    c0 = arm.get_state()["counter"]
    arm.home(wait=True, timeout_s=20)
    h = arm.state_ring.get_since(c0)
    s = arm.get_state()
    lin, ang = pose_distance(s["actual_tcp_pose"], home)
    assert lin <= cfg.home_tolerance_m and ang <= 0.01
    lin, ang = pose_distance(rig.fake.state()["actual_tcp_pose"], home)  # the arm itself is there
    assert lin <= cfg.home_tolerance_m and ang <= 0.01
    # Slow: the commanded TCP is never ahead of a move at the home speed from the tick that took the
    # command (a stalled tick under load only makes it lag: the per-tick step limit holds it back).
    dt = cfg.period_s
    pos, tt = h["target_tcp_pose"][:, :3], h["tick_time"]
    travelled = np.linalg.norm(pos - pos[0], axis=1)
    k = int(np.argmax(travelled > 1e-9))
    assert k > 0
    allowed = cfg.home_speed_m_s * (tt[k:] - tt[k - 1])
    assert np.all(travelled[k:] <= allowed + 1e-9), (travelled[k:] - allowed).max()
    # ... and it does move at that speed (over 0.2 s windows of host time).
    j = np.searchsorted(tt, tt + 0.2)
    ok = j < len(tt)
    i, j = np.flatnonzero(ok), j[ok]
    v = np.linalg.norm(pos[j] - pos[i], axis=1) / (tt[j] - tt[i])
    assert v.max() >= 0.8 * cfg.home_speed_m_s
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.max() <= cfg.limits.max_linear_speed_m_s * dt * (1 + 1e-6)
    dist = np.linalg.norm(away[:3] - home[:3])
    took = h["tick_time"][-1] - h["tick_time"][0]
    assert took >= dist / cfg.home_speed_m_s - 2 * dt


def _stop_for(pid: int, seconds: float, out: Any) -> None:
    """SIGSTOP ``pid`` for ``seconds`` (measured into ``out``), then SIGCONT, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        out.value = time.monotonic() - t0
        os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(60)
def test_the_arm_outlives_a_test_process_stopped_past_the_watchdog(rig: Rig):
    """The fixture's heartbeat (tests/robot/arm/ur/beat.py) does not depend on the test process being
    run: on CI beside other work a beating thread in the pytest worker missed the shipped 1 s watchdog,
    the controller exited and the three tests after it failed on it. Here the test process is stopped
    outright for 1.5 s (fails with the former thread: the controller exits)."""
    arm = rig.arm
    assert rig.cfg.heartbeat_timeout_s == 1.0  # the shipped watchdog, not widened
    ctx = multiprocess.get_context(DEFAULT_START_METHOD)
    stopped = ctx.Value("d", 0.0, lock=False)
    helper = ctx.Process(target=_stop_for, args=(os.getpid(), 1.5, stopped), daemon=True)
    helper.start()
    helper.join(30)
    assert helper.exitcode == 0 and stopped.value >= 1.5
    counter = arm.get_state()["counter"]
    wait_until(lambda: arm.get_state()["counter"] > counter + 10, 5, "new states", arm)
    arm.check()  # still running: no error reported, not exited (stop_reason lives in the child)


@pytest.mark.timeout(60)
def test_exit_sends_servo_stop_then_stop_script(rig: Rig):
    """Last of each group: stops the shared controller (the fixture's stop is then a no-op)."""
    arm, fake = rig.arm, rig.fake
    p0 = arm.get_state()["actual_tcp_pose"]
    arm.servo_to(p0 + [0.0, 0.05, 0.0, 0, 0, 0], 1.0)  # moving when asked to stop
    time.sleep(0.3)
    before = fake.state()
    assert before["program_running"]
    arm.stop()
    after = fake.state()
    assert arm.exitcode == 0  # exited by itself, in time (not terminated or killed)
    counts0, counts1 = before["command_counts"], after["command_counts"]
    assert counts1.get(SERVO_STOP, 0) == counts0.get(SERVO_STOP, 0) + 1
    assert counts1.get(STOP_SCRIPT, 0) == counts0.get(STOP_SCRIPT, 0) + 1
    assert not after["program_running"] and after["runtime_state"] == 1  # script stopped
    # The controller's own decelerating stop ran before: the arm was at rest when servoStop came.
    assert np.linalg.norm(after["actual_qd"]) < 1e-3
    last = arm.get_state()
    assert last["status_flags"] & StatusFlag.STOPPING
    assert np.linalg.norm(last["actual_tcp_speed"][:3]) < 1e-3
    # No more commands after the exit.
    sent = servo_packets(fake)
    time.sleep(0.2)
    assert servo_packets(fake) == sent and after["command_packets"].get(SERVOL) == sent
    assert math.isfinite(last["robot_time"])
