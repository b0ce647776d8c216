"""``rig calibrate <what>``: measure the rig and write the calibration file.

Subcommands: ``board`` (printable ChArUco board), ``intrinsics``, ``hand-eye``, ``camera-latency``,
``robot-latency``, ``show``. Every measuring command takes the rig config (``--config rig/sim.yaml``
plus ``key=value`` overrides of any rig key, e.g. ``cameras.cameras.scene.sim.latency_s=0.137``, so
the sim rig's injected ground truth can be chosen freely), procedure settings (``--procedure PATH``,
``-p key=value``), ``--out PATH`` (default: the rig's calibration file) and ``--plots DIR``. It prints
progress, writes the file only on success, and ends with one JSON line of its result. Failures print
what went wrong and exit 1 (2 for a bad config) without writing anything.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibration.result import (
    CalibrationError,
    emit_json,
    plot_dir,
    progress,
    result_path,
    update_calibration,
)
from robot.calibration_data import LatencyValue, load_calibration
from robot.config import ConfigError, add_config_arguments, config_from_args
from robot.process import DeviceProcessError
from robot.rig_config import RigConfig

DEFAULT_RIG = "rig/sim.yaml"


def _common(sub: argparse.ArgumentParser) -> None:
    add_config_arguments(sub, DEFAULT_RIG)
    sub.add_argument("--out", default=None, help="calibration file to update (default: the rig's)")
    sub.add_argument(
        "--plots", default=None, help="directory for PNG plots (default: next to --out, or runs/)"
    )
    sub.add_argument(
        "--procedure", default=None, help="procedure settings YAML (default: configs/calibration/procedures/)"
    )
    sub.add_argument(
        "-p",
        dest="proc_overrides",
        action="append",
        default=[],
        metavar="key=value",
        help="procedure setting override",
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``<what> [options and key=value overrides in any order]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in subs.choices:
        # Intermixed: `-p a=b` may come after rig overrides (plain parse_args would stop at them).
        args = subs.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.what = argv[0]
        return args
    return ap.parse_args(argv)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rig calibrate", description=__doc__.split("\n\n")[0])
    subs = ap.add_subparsers(dest="what", required=True)
    _common(subs.add_parser("camera-latency", help="camera latency from a filmed screen time code"))
    _common(subs.add_parser("robot-latency", help="robot action (and observation) latency"))
    _common(subs.add_parser("gripper-latency", help="gripper width command latency"))
    _common(subs.add_parser("intrinsics", help="camera intrinsics (factory or ChArUco)"))
    _common(subs.add_parser("hand-eye", help="camera extrinsics (eye-to-hand, eye-in-hand)"))
    board = subs.add_parser("board", help="write a printable ChArUco board (PNG/PDF)")
    board.add_argument("--out", required=True, help="output file (.png or .pdf)")
    board.add_argument("--procedure", default=None)
    board.add_argument("-p", dest="proc_overrides", action="append", default=[], metavar="key=value")
    board.add_argument("--dpi", type=int, default=300)
    show = subs.add_parser("show", help="print the calibration file")
    add_config_arguments(show, DEFAULT_RIG)
    show.add_argument("--file", default=None, help="calibration file (default: the rig's)")
    return ap


def _rig(args: argparse.Namespace) -> RigConfig:
    return config_from_args(RigConfig, args)


def _calibration_for_env(path: Path, rig: RigConfig):
    from calibration.result import load_existing

    return load_existing(path, rig.name)


def cmd_camera_latency(args: argparse.Namespace) -> int:
    from calibration.camera_latency import measure, plot_histogram
    from calibration.procedures import CameraLatencyProcedure, load_procedure

    proc = load_procedure(CameraLatencyProcedure, "camera_latency", args.procedure, args.proc_overrides)
    rig = _rig(args)
    out = result_path(rig, args.out)
    results = measure(rig, _calibration_for_env(out, rig), proc)
    plots = plot_dir(args.out, args.plots, rig.name)
    for r in results:
        png = plot_histogram(r, plots / f"camera_latency_{r.camera}.png", proc.histogram_bins)
        progress(
            f"camera {r.camera}: latency {r.latency_s * 1e3:.2f} ms, std {r.std_s * 1e3:.2f} ms "
            f"({r.n_decoded}/{r.n_frames} frames decoded, {r.n_screen_late} shot during a screen stall, "
            f"{r.n_outliers} outliers) -> {png}"
        )

    def apply(cal):
        for r in results:
            cal.camera(r.camera).latency = LatencyValue(
                value_s=r.latency_s,
                std_s=r.std_s,
                method=f"screen time code (ArUco), refresh {proc.refresh_hz:g} Hz, display delay "
                f"{proc.display_delay_s * 1e3:g} ms",
                residual=r.std_s * 1e3,
                residual_unit="ms (std of per-frame latency)",
                n_samples=int(r.inliers.sum()),
            )

    update_calibration(out, rig.name, apply)
    progress(f"camera-latency: wrote {out}")
    summaries = [r.summary() for r in results]
    emit_json(summaries[0] if len(summaries) == 1 else {"cameras": summaries})
    return 0


def _latency_command(
    args: argparse.Namespace,
    command: str,
    procedure: tuple[type, str],
    measure: Callable[..., Any],
    apply: Callable[[Any, Any], None],
) -> int:
    """One latency procedure on the rig: load the procedure (``procedure``: its settings model and
    its name in ``configs/calibration/procedures/``, with the command's overrides), measure, write what
    ``apply(calibration, result)`` sets into the rig's calibration file, print the summary as JSON."""
    from calibration.procedures import load_procedure

    proc = load_procedure(procedure[0], procedure[1], args.procedure, args.proc_overrides)
    rig = _rig(args)
    out = result_path(rig, args.out)
    res = measure(rig, _calibration_for_env(out, rig), proc, plot_dir(args.out, args.plots, rig.name))
    update_calibration(out, rig.name, lambda cal: apply(cal, res))
    progress(f"{command}: wrote {out}")
    emit_json(res.summary())
    return 0


def cmd_robot_latency(args: argparse.Namespace) -> int:
    from calibration.procedures import RobotLatencyProcedure
    from calibration.robot_latency import measure

    def apply(cal, res):
        cal.robot.action_latency = res.action_latency_value()
        if res.obs is not None:
            cal.robot.obs_latency = res.obs_latency_value()

    return _latency_command(args, "robot-latency", (RobotLatencyProcedure, "robot_latency"), measure, apply)


def cmd_gripper_latency(args: argparse.Namespace) -> int:
    from calibration.gripper_latency import GripperLatencyProcedure, measure

    def apply(cal, res):
        cal.gripper.action_latency = res.latency_value()

    return _latency_command(
        args, "gripper-latency", (GripperLatencyProcedure, "gripper_latency"), measure, apply
    )


def cmd_intrinsics(args: argparse.Namespace) -> int:
    from calibration.intrinsics import run

    return run(args, _rig(args))


def cmd_hand_eye(args: argparse.Namespace) -> int:
    from calibration.hand_eye import run

    return run(args, _rig(args))


def cmd_board(args: argparse.Namespace) -> int:
    from calibration.board import run

    return run(args)


def cmd_show(args: argparse.Namespace) -> int:
    rig = _rig(args)
    path = Path(args.file) if args.file else result_path(rig, None)
    if not path.is_file():
        # What is in use then: the rig config's fallback latencies, uncalibrated.
        lat = rig.latency
        cams = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in lat.camera_latency_s.items()) or "none set"
        print(f"no calibration file at {path}: NOT CALIBRATED, the rig config's fallbacks are in use:")
        print(f"  action latency  {lat.action_latency_s * 1e3:.1f} ms (rig.latency.action_latency_s)")
        print(f"  camera latency  {cams} (rig.latency.camera_latency_s)")
        print(
            "Run `rig calibrate camera-latency`, `robot-latency`, `intrinsics` and `hand-eye` to measure them."
        )
        emit_json(
            {
                "calibrated": False,
                "file": str(path),
                "action_latency_s": lat.action_latency_s,
                "camera_latency_s": dict(lat.camera_latency_s),
            }
        )
        return 0
    cal = load_calibration(path)
    print(f"calibration {path} (rig {cal.rig or '?'}, version {cal.version}, updated {cal.updated or '?'})")
    from calibration.show import describe

    for line in describe(cal):
        print(line)
    emit_json(cal.model_dump(mode="json", exclude_none=True))
    return 0


COMMANDS = {
    "camera-latency": cmd_camera_latency,
    "robot-latency": cmd_robot_latency,
    "gripper-latency": cmd_gripper_latency,
    "intrinsics": cmd_intrinsics,
    "hand-eye": cmd_hand_eye,
    "board": cmd_board,
    "show": cmd_show,
}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless: OpenCV's Qt must not abort
    try:
        return COMMANDS[args.what](args)
    except CalibrationError as exc:
        print(f"rig calibrate {args.what}: FAILED: {exc}", file=sys.stderr)
        print("no calibration file was written", file=sys.stderr)
        emit_json({"error": str(exc)})
        return 1
    except BrokenPipeError:  # output piped into `head` and closed: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except DeviceProcessError as exc:
        # A device could not start or died (an unreachable UR, a missing camera): its own one line,
        # as every rig command says it; `rig` keeps the tracebacks in the run log (--debug prints them).
        import traceback

        emit_json({"error": f"{type(exc).__name__}: {exc}"})
        detail = (exc.detail + "\n" if exc.detail else "") + traceback.format_exc()
        raise DeviceProcessError(f"{exc} (no calibration file was written)", detail=detail) from None
    except (RuntimeError, TimeoutError, OSError) as exc:
        # A device failed mid-procedure (arm fault, camera silent): say so, with the details.
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"rig calibrate {args.what}: FAILED: {exc}", file=sys.stderr)
        print("no calibration file was written", file=sys.stderr)
        emit_json({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    except ConfigError as exc:
        print(f"rig calibrate {args.what}: config error: {exc}", file=sys.stderr)
        emit_json({"error": f"config error: {exc}"})
        return 2


if __name__ == "__main__":
    sys.exit(main())
