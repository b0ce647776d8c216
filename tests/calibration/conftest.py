"""Fixtures of the calibration tests: ``rig calibrate`` run in-process into a fresh calibration file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.calibration.helpers import run_cli


@pytest.fixture
def cal_file(tmp_path: Path) -> Path:
    """Where the procedure writes its calibration (``--out``); it does not exist before."""
    return tmp_path / "cal.yaml"


@pytest.fixture
def calibrate(capsys, cal_file: Path) -> Callable[..., tuple[int, dict, str]]:
    """``calibrate(procedure, *overrides, p=[settings])`` runs ``rig calibrate <procedure> --out
    <cal_file> -p <setting> ... <rig overrides>`` in-process; returns (exit code, the final JSON line,
    all the text printed)."""

    def run(procedure: str, *overrides: str, p: tuple[str, ...] | list[str] = ()) -> tuple[int, dict, str]:
        argv = [procedure, "--out", str(cal_file)]
        for setting in p:
            argv += ["-p", setting]
        return run_cli(capsys, [*argv, *overrides])

    return run
