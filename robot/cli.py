"""The ``rig`` command: one entry point, subcommands implemented by the package that owns them.

Subcommand modules are imported only when their command runs, so ``rig --help`` is instant and does
not import torch, OpenCV or pyrealsense2. Each module exposes ``main(argv: list[str]) -> int``.
The table names modules by string so that ``robot/`` does not import ``policy/`` or ``deploy/``.
"""

from __future__ import annotations

import importlib
import sys
import traceback

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("collection.collect_cli", "record teleoperated demonstrations into an episode store"),
    "episodes": ("collection.store_cli", "list / inspect / delete episodes of a store"),
    "train": ("policy.train_cli", "train a diffusion policy on an episode store"),
    "deploy": ("deploy.deploy_cli", "run a trained policy on the arm (sim by default)"),
    "calibrate": ("calibration.cli", "intrinsics, hand-eye, camera latency, robot latency"),
    "demo": ("deploy.demo", "end to end on the simulated rig: collect -> train -> deploy"),
    "arm": ("robot.arm.cli", "arm controller tools: status, home"),
    "gripper": ("robot.gripper.cli", "gripper tools: status, open, close"),
    "cameras": ("robot.cameras.cli", "list connected cameras, live preview"),
    "spacemouse": ("robot.spacemouse.cli", "test the SpaceMouse: print normalized axes and buttons"),
    "shm": ("robot.shm.cli", "list / clean shared-memory segments left by killed runs"),
}


def _usage() -> str:
    lines = ["usage: rig [--debug] <command> [--config PATH] [key=value ...]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<11} {text}")
    lines += [
        "",
        "Run 'rig <command> --help' for the options of one command. Errors print one line;",
        "--debug (anywhere on the line) also prints the traceback behind it.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rig: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"rig {name}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    from robot.config import ConfigError
    from robot.process import DeviceProcessError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as exc:
        print(f"rig {name}: config error: {exc}", file=sys.stderr)
        return 2
    except DeviceProcessError as exc:  # a device failed: its own message, the traceback on request
        if debug:
            print(exc.detail or traceback.format_exc(), file=sys.stderr)
        print(f"rig {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rig {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
