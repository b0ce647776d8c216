"""Running ``rig calibrate`` in-process and reading its result."""

from __future__ import annotations

import json

from calibration.cli import main


def run_cli(capsys, argv: list[str]) -> tuple[int, dict, str]:
    """Run ``rig calibrate <argv>``; returns (exit code, the final JSON line, all stdout+stderr)."""
    rc = main(argv)
    out = capsys.readouterr()
    lines = [ln for ln in out.out.strip().splitlines() if ln.strip()]
    result = json.loads(lines[-1]) if lines else {}
    return rc, result, out.out + out.err


def calibrate_robot_latency(path, rig: str, *overrides: str) -> None:
    """``rig calibrate robot-latency --config <rig> -p obs.enabled=false --out <path>`` (the action
    latency only) in a subprocess, as a user calibrates before collecting or deploying."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "robot.cli",
            "calibrate",
            "robot-latency",
            "--config",
            rig,
            "-p",
            "obs.enabled=false",
            "--out",
            str(path),
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
