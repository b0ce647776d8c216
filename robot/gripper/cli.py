"""``rig gripper status|open|close``: talk to the gripper through the gripper process.

- ``rig gripper status [--config C] [--seconds S] [key=value ...]``: start the process (activation,
  and calibration of the open/closed counts when ``auto_calibrate``), measure its state rate for
  ``S`` seconds and print the width, object and fault state. Exit code 1 on a fault: a major one
  now, any fault (FLT >= 0x08) the gripper had at start (the reset at start clears it, so this is
  its only report), or the gripper process failing during the window (noticed when it happens).
- ``rig gripper open|close [--width-m W]``: move (to the stroke / to 0, or to ``W``) at the
  configured speed and force, wait until the fingers stop, print where and whether they hold an object.

The default config is the simulated 2F-85 (``configs/gripper/sim.yaml``); for a real gripper use
``--config gripper/robotiq_2f85.yaml host=192.168.1.10`` (the UR controller's address).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from robot.config import add_config_arguments, config_from_args
from robot.gripper.config import GripperConfig

DEFAULT_CONFIG = "gripper/sim.yaml"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig gripper", description="gripper tools")
    parser.add_argument("action", choices=["status", "open", "close"])
    parser.add_argument("--seconds", type=float, default=1.0, help="status: how long to measure (s)")
    parser.add_argument("--width-m", type=float, default=None, help="open/close: target width (m)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_config_arguments(parser, DEFAULT_CONFIG)
    args = parser.parse_intermixed_args(argv)
    config = config_from_args(GripperConfig, args)
    if not config.enabled:
        print("rig gripper: the config's backend is 'none' (no gripper)", file=sys.stderr)
        return 2

    from robot.gripper.controller import GripperController, GripperFaultError

    fault = None
    with GripperController(config) as g:
        first = g.get_state()
        if args.action != "status":
            target = (
                args.width_m
                if args.width_m is not None
                else (config.max_width_m if args.action == "open" else 0.0)
            )
            g.set_width(target)
            deadline = time.monotonic() + config.max_width_m / config.spec.speed_range_m_s[0] + 5.0
            time.sleep(0.2)  # the command reaches the fingers within a tick or two
            try:
                while g.get_state()["moving"] and time.monotonic() < deadline:
                    g.heartbeat()
                    g.check()
                    time.sleep(0.02)
            except GripperFaultError as exc:
                fault = str(exc)
        else:
            end = time.monotonic() + args.seconds
            try:
                while time.monotonic() < end:
                    g.heartbeat()
                    g.check()  # a failed or dead gripper process is reported now, not at the end
                    time.sleep(0.05)
            except GripperFaultError as exc:
                fault = str(exc)
        last = g.get_state()
        if fault is None:
            try:
                g.check()
            except GripperFaultError as exc:
                fault = str(exc)
    span = last["tick_time"] - first["tick_time"]
    info = {
        "gripper": g.description,
        "width_m": round(float(last["width_m"]), 5),
        "object_detected": bool(last["object_detected"]),
        "moving": bool(last["moving"]),
        "fault_code": int(last["fault_code"]),
        "start_fault_code": int(last["start_fault_code"]),
        "state_rate_hz": round((last["counter"] - first["counter"]) / span, 1) if span > 0 else 0.0,
        "configured_rate_hz": config.rate_hz,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"gripper:     {info['gripper']}")
        print(
            f"width:       {info['width_m'] * 1e3:.1f} mm (0 = closed, {config.max_width_m * 1e3:.0f} = open)"
        )
        print(f"object:      {'held (the fingers stopped on it)' if info['object_detected'] else 'none'}")
        print(f"fault:       {info['fault_code']:#04x}")
        if info["start_fault_code"]:
            print(f"at start:    fault {info['start_fault_code']:#04x} (cleared by the reset at start)")
        print(f"state rate:  {info['state_rate_hz']:.1f} Hz (configured {config.rate_hz:.0f} Hz)")
    if fault:
        print(f"rig gripper: {fault}", file=sys.stderr)
        return 1
    if info["start_fault_code"]:
        from robot.gripper.robotiq import describe_fault

        print(
            f"rig gripper: {g.description} reported {describe_fault(info['start_fault_code'])} at start; "
            "the reset at start cleared it: find what caused it before relying on the gripper",
            file=sys.stderr,
        )
        return 1
    return 0
