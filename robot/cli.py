"""The ``rig`` command: one entry point, subcommands implemented by the package that owns them.

Subcommand modules are imported only when their command runs, so ``rig --help`` is instant and does
not import torch, OpenCV or pyrealsense2. Each module exposes ``main(argv: list[str]) -> int``.
The table names modules by string so that ``robot/`` does not import ``policy/`` or ``deploy/``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("collection.collect_cli", "record teleoperated demonstrations into an episode store"),
    "episodes": (
        "collection.store_cli",
        "list / show / delete-last / check / repair / export / import / view / convert-time episodes",
    ),
    "train": ("policy.train_cli", "train a diffusion policy on an episode store"),
    "policy": ("policy.policy_cli", "policy checkpoints: import a Diffusion Policy reference checkpoint"),
    "deploy": ("deploy.deploy_cli", "run a trained policy on the arm (sim by default)"),
    "replay": ("deploy.replay", "drive the arm through a recorded episode; print the tracking error"),
    "calibrate": (
        "calibration.cli",
        "board / intrinsics / hand-eye / camera-latency / robot-latency / gripper-latency / show",
    ),
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


def log_dir() -> Path:
    """Where ``rig`` keeps the log of a run that failed: ``$RIG_LOG_DIR``, else the XDG state folder."""
    if os.environ.get("RIG_LOG_DIR"):
        return Path(os.environ["RIG_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "rig" / "logs"


KEEP_LOGS = 50  # the newest failed runs' logs are kept; older ones are removed as new ones come


def write_run_log(name: str, argv: list[str], message: str, detail: str) -> Path | None:
    """Write what a failed run leaves for later (the command line, its one-line message and the full
    tracebacks, the device child's included) and return the file; None when it cannot be written
    (the one-line message is printed either way)."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"$ rig {' '.join([name, *argv])}\n{message}\n\n{detail}")
        for old in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
        return path
    except OSError:
        return None


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
    from robot.interrupt import Interrupted
    from robot.process import DeviceProcessError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as exc:
        if debug:
            traceback.print_exc()
        print(f"rig {name}: config error: {exc}", file=sys.stderr)
        return 2
    except DeviceProcessError as exc:  # a device failed: its own message, the tracebacks in the log
        detail = (exc.detail + "\n" if exc.detail else "") + traceback.format_exc()
        if debug:
            print(detail, file=sys.stderr)
        print(f"rig {name}: {exc}", file=sys.stderr)
        path = write_run_log(name, rest, f"rig {name}: {exc}", detail)
        if path is not None and not debug:
            print(f"rig {name}: the traceback is in {path} (or run with --debug)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        # A bare KeyboardInterrupt (or a device child's SIGINT) comes from a command that writes
        # nothing: those that do say what they kept through Interrupted.
        kept = str(exc) if isinstance(exc, Interrupted) else "nothing was written"
        if debug:
            traceback.print_exc()
        print(f"rig {name}: interrupted: {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
