"""Where calibration results go and how a command reports them.

Every ``rig calibrate <what>`` command measures, checks, and only then updates the calibration file
(:mod:`robot.calibration_data`): ``--out PATH``, else the rig's ``calibration_file``, else
``configs/calibration/<rig>.yaml``. Other values already in the file are kept. A failed measurement
raises :class:`CalibrationError` (the CLI prints it and exits non-zero) and writes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robot.calibration_data import CalibrationFile, default_path, load_calibration, save_calibration
from robot.rig_config import RigConfig


class CalibrationError(RuntimeError):
    """A calibration could not be measured (bad input, nothing seen, residual too large). The message
    tells the person at the rig what failed and what to check; no file is written."""


def result_path(rig: RigConfig, out: str | Path | None) -> Path:
    """The calibration file a command writes: ``out``, else the rig's ``calibration_file``, else
    ``configs/calibration/<rig name>.yaml``."""
    if out:
        return Path(out)
    if rig.calibration_file:
        return Path(rig.calibration_file)
    return default_path(rig.name)


def load_existing(path: Path, rig_name: str) -> CalibrationFile:
    """The calibration in ``path`` (to be updated), or an empty one for ``rig_name`` if there is none."""
    if path.is_file():
        return load_calibration(path)
    return CalibrationFile(rig=rig_name)


def update_calibration(path: Path, rig_name: str, apply: Callable[[CalibrationFile], None]) -> Path:
    """Load ``path`` (or start empty), let ``apply`` set the measured values, save atomically."""
    cal = load_existing(path, rig_name)
    if not cal.rig:
        cal.rig = rig_name
    apply(cal)
    return save_calibration(cal, path)


def plot_dir(out: str | Path | None, plots: str | Path | None, rig_name: str) -> Path:
    """Directory for the PNG plots: ``plots``, else next to ``out``, else ``runs/calibration/<rig>``."""
    if plots:
        d = Path(plots)
    elif out:
        d = Path(out).parent
    else:
        d = Path("runs") / "calibration" / rig_name
    d.mkdir(parents=True, exist_ok=True)
    return d


def progress(msg: str) -> None:
    """One progress line for the person at the rig (stdout, flushed)."""
    print(msg, flush=True)


def emit_json(result: dict[str, Any]) -> None:
    """The machine-readable result: the command's last stdout line, one JSON object."""
    print(json.dumps(result, sort_keys=False), flush=True)
    sys.stdout.flush()
