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
