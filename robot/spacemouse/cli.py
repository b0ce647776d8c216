"""``rig spacemouse test``: run the SpaceMouse process and print its normalized axes and buttons live.

Use it to check the daemon, the device and the axis signs/mapping of a config before teleoperating:
push the puck forward, left, up, and twist it, and watch which axis moves and with which sign.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from robot.config import add_config_arguments, config_from_args
from robot.process import DeviceProcessError
from robot.spacemouse.config import SpaceMouseConfig

AXIS_NAMES = ("x", "y", "z", "rx", "ry", "rz")


def _last_error_line(text: str) -> str:
    """The exception message at the end of a child traceback, without the exception's module path."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return re.sub(r"^[\w.]*\w(Error|NotRunning|Disconnected|Exception): ", "", last)


def format_state(rec: dict) -> str:
    """One status line: axes, buttons (pressed state and press count), age of the last motion event."""
    axes = " ".join(f"{n}{v:+.3f}" for n, v in zip(AXIS_NAMES, rec["axes"].tolist(), strict=True))
    buttons = " ".join(
        f"b{i}:{'ON ' if b else 'off'}({int(c)})"
        for i, (b, c) in enumerate(zip(rec["buttons"].tolist(), rec["button_presses"].tolist(), strict=True))
    )
    event_time = float(rec["event_time"])
    age = f"{float(rec['publish_time']) - event_time:6.2f}s" if event_time > 0 else "  none"
    return f"{axes} | {buttons} | last motion event {age} ago"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig spacemouse", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    test = sub.add_parser("test", help="print normalized axes and buttons live (Ctrl-C to quit)")
    add_config_arguments(test, default="spacemouse/spnav.yaml")
    test.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    test.add_argument("--print-hz", type=float, default=10.0, help="status lines per second")
    args = parser.parse_args(argv)
    config = config_from_args(SpaceMouseConfig, args)

    if config.backend == "spnav":
        from robot.spacemouse.spnav import default_socket_path, diagnose_socket

        socket_path = config.socket_path or default_socket_path()
        problem = diagnose_socket(socket_path)
        if problem:
            print(f"rig spacemouse: {problem}", file=sys.stderr)
            return 1

    from robot.spacemouse.device import SpaceMouse

    tty = sys.stdout.isatty()
    sm = SpaceMouse(config)
    try:
        try:
            sm.start()
        except DeviceProcessError as exc:
            print(
                f"rig spacemouse: {config.backend} backend failed to start: {_last_error_line(str(exc))}",
                file=sys.stderr,
            )
            return 1
        print(
            f"SpaceMouse ({config.backend}) publishing at {config.rate_hz:g} Hz; Ctrl-C to quit", flush=True
        )
        t_end = None if args.duration is None else time.monotonic() + args.duration
        period_s = 1.0 / args.print_hz
        while t_end is None or time.monotonic() < t_end:
            try:
                rec = sm.latest()
            except DeviceProcessError as exc:
                if tty:
                    print()
                print(f"rig spacemouse: {_last_error_line(str(exc))}", file=sys.stderr)
                return 1
            line = format_state(rec)
            if tty:
                print("\r" + line, end="", flush=True)
            else:
                print(line, flush=True)
            time.sleep(period_s)
        if tty:
            print()
        return 0
    except KeyboardInterrupt:
        if tty:
            print()
        raise  # rig: 'interrupted', exit 130, as every command ends on Ctrl-C
    finally:
        sm.close()
