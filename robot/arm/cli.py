"""``rig arm status|home``: talk to the arm through the arm controller process.

- ``rig arm status [--config C] [--seconds S] [key=value ...]``: start the controller (it holds the
  arm where it is), measure the state rate for ``S`` seconds and print the TCP pose, joints, flags,
  tick overruns. Exit code 1 if the arm is faulted.
- ``rig arm home [--config C] [key=value ...]``: slow, speed-limited move to the configured start
  (``start_joints_rad`` or ``start_pose``); prints where it ended.

The default config is the simulated UR5 (``configs/arm/sim_ur5.yaml``); use
``--config arm/ur5_cb3.yaml host=192.168.0.10`` for a real arm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from robot.arm.backend import describe_flags
from robot.arm.config import ArmConfig
from robot.config import add_config_arguments, config_from_args

DEFAULT_CONFIG = "arm/sim_ur5.yaml"


def _fmt(v: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(f"{x:+.{digits}f}" for x in np.asarray(v)) + "]"


def _summary(arm, seconds: float) -> dict:
    first = arm.get_state()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:  # keep the controller's heartbeat watchdog fed
        arm.heartbeat()
        time.sleep(min(0.1, left))
    arm.heartbeat()
    last = arm.get_state()
    n = last["counter"] - first["counter"]
    span = last["tick_time"] - first["tick_time"]
    hist = arm.get_state_history(max(1, min(int(n), arm.state_ring.capacity)))
    return {
        "backend": arm.config.backend,
        "arm": arm.description,
        "tcp_pose": last["actual_tcp_pose"].tolist(),
        "q_rad": last["actual_q"].tolist(),
        "tcp_speed": last["actual_tcp_speed"].tolist(),
        "status": describe_flags(int(last["status_flags"])),
        "state_rate_hz": (n / span) if span > 0 else 0.0,
        "configured_rate_hz": arm.config.rate_hz,
        "tick_overruns": int(hist["tick_overrun"].sum()),
        "robot_time_s": last["robot_time"],
    }


def _print(info: dict) -> None:
    print(f"arm:         {info['arm']} ({info['backend']})")
    print(f"status:      {info['status']}")
    print(f"tcp pose:    {_fmt(info['tcp_pose'])}  (m, rotvec rad, base frame)")
    print(f"joints:      {_fmt(info['q_rad'])}  (rad)")
    print(f"tcp speed:   {_fmt(info['tcp_speed'])}  (m/s, rad/s)")
    print(
        f"state rate:  {info['state_rate_hz']:.1f} Hz (configured {info['configured_rate_hz']:.0f} Hz), "
        f"{info['tick_overruns']} tick overruns"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig arm", description="arm controller tools")
    parser.add_argument("action", choices=["status", "home"])
    parser.add_argument("--seconds", type=float, default=1.0, help="status: how long to measure (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_config_arguments(parser, DEFAULT_CONFIG)
    args = parser.parse_intermixed_args(argv)
    config = config_from_args(ArmConfig, args)

    from robot.arm.controller import ArmController, ArmFaultError

    try:
        with ArmController(config) as arm:
            if args.action == "home":
                print(
                    f"homing: to {_fmt(arm.home_pose())} at {config.home_speed_m_s:.2f} m/s (Ctrl-C stops the arm)",
                    flush=True,
                )
                arm.home(wait=True)
            info = _summary(arm, args.seconds if args.action == "status" else 0.2)
            try:
                arm.check()
                fault = None
            except ArmFaultError as exc:
                fault = str(exc)
    except TimeoutError as exc:
        print(f"rig arm {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info))
    else:
        _print(info)
    if fault:
        print(f"FAULT: {fault}", file=sys.stderr)
        return 1
    return 0
