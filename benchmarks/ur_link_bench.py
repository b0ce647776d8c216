"""UR link faults through the arm controller: dropped link, protective stop, e-stop, N trials each.

    python benchmarks/ur_link_bench.py [--trials 20]

One arm controller process (the shipped configs/arm/ur5e.yaml, only ``host`` set) against the fake UR
controller (robot/fake_ur, e-Series, simulated UR5 behind it) through the real ur_rtde 1.6.5 client.
Each trial: move, inject the fault, wait until ``check()`` raises ``ArmFaultError`` (detection time
from the injection), clear the fault, ``reconnect()`` (time to a clean state), and move again. A
trial whose controller process died (a crash, not a reported fault) counts in ``process_deaths`` and
a fresh controller is started for the next one. The baseline is the same controller without faults:
how long a ``check()`` takes to see a state the controller published (one tick at most).

Last line: ``{"trials", "clean_faults", "process_deaths", "reconnects_ok", "detect_p99_ms",
"reconnect_p99_s"}`` (and details). Needed: ``process_deaths == 0``,
``reconnects_ok == clean_faults == 3 * trials``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robot.arm.config import ArmConfig  # noqa: E402
from robot.arm.controller import ArmController, ArmFaultError  # noqa: E402
from robot.config import config_path, load_config  # noqa: E402
from robot.fake_ur.handle import FakeURController  # noqa: E402
from robot.process import DeviceProcessError  # noqa: E402

FAULTS = ("dropped link", "protective stop", "e-stop")


def _inject(fake: FakeURController, fault: str) -> None:
    if fault == "dropped link":
        fake.drop_connections()
    elif fault == "protective stop":
        fake.inject_protective_stop()
    else:
        fake.inject_emergency_stop()


def _wait_fault(arm: ArmController, timeout_s: float) -> float | None:
    """Seconds until check() raised ArmFaultError; None if it did not within ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        arm.heartbeat()
        try:
            arm.check()
        except ArmFaultError:
            return time.monotonic() - t0
        time.sleep(0.001)
    return None


def _move(arm: ArmController, dx_m: float) -> None:
    p = arm.get_state()["actual_tcp_pose"].copy()
    p[0] += dx_m
    arm.servo_to(p, 0.3)
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        arm.check()
        arm.heartbeat()
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()

    detect: dict[str, list[float]] = {f: [] for f in FAULTS}
    reconnect: dict[str, list[float]] = {f: [] for f in FAULTS}
    clean = deaths = reconnects_ok = 0
    failures: list[str] = []
    baseline_ms: list[float] = []
    fake = FakeURController("5.11", process=True, arm_kind="sim").start()
    cfg = load_config(ArmConfig, config_path("arm/ur5e.yaml"), [f"host={fake.host}"])
    arm: ArmController | None = None
    try:
        for trial in range(args.trials):
            for fault in FAULTS:
                if arm is None:
                    arm = ArmController(cfg)
                    arm.start()
                    # Baseline: the age of the newest state check() sees (no fault).
                    for _ in range(20):
                        arm.heartbeat()
                        baseline_ms.append((time.monotonic() - arm.get_state()["receive_time"]) * 1e3)
                        time.sleep(0.005)
                try:
                    _move(arm, 0.02 if trial % 2 == 0 else -0.02)
                    _inject(fake, fault)
                    took = _wait_fault(arm, 5.0)
                    if took is None:
                        failures.append(f"trial {trial} {fault}: no fault reported within 5 s")
                        fake.clear_faults()
                        continue
                    clean += 1
                    detect[fault].append(took)
                    fake.clear_faults()
                    t0 = time.monotonic()
                    arm.reconnect(timeout_s=30)
                    reconnect[fault].append(time.monotonic() - t0)
                    _move(arm, 0.0)
                    reconnects_ok += 1
                except DeviceProcessError as exc:
                    deaths += 1
                    failures.append(f"trial {trial} {fault}: controller died: {str(exc).splitlines()[-1]}")
                    fake.clear_faults()
                    arm.stop()
                    arm.close()
                    arm = None
                except ArmFaultError as exc:
                    failures.append(f"trial {trial} {fault}: {exc}")
                    fake.clear_faults()
            print(
                f"trial {trial + 1}/{args.trials}: clean {clean}, deaths {deaths}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if arm is not None:
            arm.stop()
            arm.close()
        fake.stop()

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    all_detect = [v for f in FAULTS for v in detect[f]]
    all_reconnect = [v for f in FAULTS for v in reconnect[f]]
    print(f"UR link faults through the arm controller (ur5e.yaml, fake e-Series), {args.trials} trials each")
    print(f"{'fault':<18}{'faults':>8}{'detect p50 ms':>15}{'p99 ms':>9}{'reconnect p50 s':>17}{'p99 s':>8}")
    for f in FAULTS:
        print(
            f"{f:<18}{len(detect[f]):>8}{p(detect[f], 50) * 1e3:>15.1f}{p(detect[f], 99) * 1e3:>9.1f}"
            f"{p(reconnect[f], 50):>17.2f}{p(reconnect[f], 99):>8.2f}"
        )
    print(
        f"baseline (no fault): age of the state check() sees p50 {p(baseline_ms, 50):.2f} ms, p99 {p(baseline_ms, 99):.2f} ms"
    )
    print(f"controller process deaths: {deaths}; reconnects ok: {reconnects_ok} of {clean} faults")
    for line in failures:
        print("  " + line)
    result = {
        "trials": args.trials,
        "clean_faults": clean,
        "process_deaths": deaths,
        "reconnects_ok": reconnects_ok,
        "detect_p99_ms": round(p(all_detect, 99) * 1e3, 1),
        "reconnect_p99_s": round(p(all_reconnect, 99), 2),
        "baseline_state_age_p99_ms": round(p(baseline_ms, 99), 2),
        "detect_p99_ms_by_fault": {f: round(p(detect[f], 99) * 1e3, 1) for f in FAULTS},
    }
    print(json.dumps(result))
    return 0 if deaths == 0 and reconnects_ok == clean == 3 * args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
