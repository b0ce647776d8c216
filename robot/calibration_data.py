"""The rig's calibration file (``configs/calibration/<rig>.yaml``): schema, load, save, staleness.

Written by ``rig calibrate ...`` (calibration/), read by the env, collection and deployment, which
print which values they use. Every value carries the date it was measured, the method and its
residual, so a reader can judge it. A missing or stale file is a warning naming the command that
fixes it, never a silent default.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from robot.arm.response import ArmResponse
from robot.config import CONFIG_DIR, ConfigError, StrictModel, build_config

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
STALE_AFTER_DAYS = 30


class Measured(StrictModel):
    """Provenance of one calibrated quantity."""

    date: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    method: str = ""
    residual: float | None = None
    residual_unit: str = ""
    n_samples: int | None = None


class LatencyValue(Measured):
    value_s: float
    std_s: float | None = None


class ActionLatencyValue(LatencyValue):
    """The arm's response to the targets it is sent (robot/arm/response.py), from
    ``rig calibrate robot-latency``.

    ``value_s`` is what deployment shifts actions by: the *ramp lag* (dead time + the sum of the lag's
    time constants), the delay with which the arm follows a smooth trajectory (README, "Latency";
    benchmarks/chunking_bench.py compares it with the dead time and the lags to 50 % / 90 % of a step).
    Files written before the response was modelled hold only ``value_s`` (then: the dead time)."""

    dead_time_s: float | None = None
    """A target sent at t starts moving the arm at t + dead_time_s (s)."""
    model: str | None = None
    """``first_order`` | ``second_order``: the lag that follows the dead time."""
    time_constants_s: list[float] | None = None
    lag_50_s: float | None = None
    """Sending a step -> the arm covered 50 % of it (s)."""
    lag_90_s: float | None = None
    """Sending a step -> the arm covered 90 % of it (s)."""

    def response(self) -> ArmResponse | None:
        """The fitted response model, or None for a file without one."""
        if self.model is None or self.dead_time_s is None or self.time_constants_s is None:
            return None
        return ArmResponse(self.model, self.dead_time_s, tuple(self.time_constants_s))


class IntrinsicsValue(Measured):
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: list[float] = Field(default_factory=list)

    @classmethod
    def from_camera_matrix(
        cls, width: int, height: int, K: Any, dist: Any, **measured: Any
    ) -> IntrinsicsValue:
        """From a 3x3 camera matrix and distortion coefficients (as cv2.calibrateCamera returns them);
        ``measured``: method, residual, residual_unit, n_samples."""
        return cls(
            width=width,
            height=height,
            fx=float(K[0][0]),
            fy=float(K[1][1]),
            cx=float(K[0][2]),
            cy=float(K[1][2]),
            distortion=[float(d) for d in np.ravel(dist)],
            **measured,
        )


class ExtrinsicsValue(Measured):
    mount: str = "world"
    """``world``: pose is camera-in-base (T_base_cam); ``tool``: camera-in-TCP (T_tcp_cam)."""
    pose: list[float]
    """[x, y, z, rx, ry, rz] metres / rotation vector."""
    rotation_residual_deg: float | None = None


class CameraCalibration(StrictModel):
    latency: LatencyValue | None = None
    intrinsics: IntrinsicsValue | None = None
    extrinsics: ExtrinsicsValue | None = None


class RobotCalibration(StrictModel):
    action_latency: ActionLatencyValue | None = None
    """Command target time -> arm actually there (s): waypoints are scheduled ``value_s`` earlier."""
    obs_latency: LatencyValue | None = None
    """Age of a robot state when the host receives it (s)."""


class GripperCalibration(StrictModel):
    action_latency: ActionLatencyValue | None = None
    """Width command target time -> fingers there (s; the ramp lag, as for the arm): width commands are
    sent this much earlier (``rig calibrate gripper-latency``). Files written before the response was
    modelled hold only ``value_s`` (then: the dead time)."""


class CalibrationFile(StrictModel):
    version: int = CALIBRATION_VERSION
    rig: str = ""
    updated: str = ""
    cameras: dict[str, CameraCalibration] = Field(default_factory=dict)
    robot: RobotCalibration = Field(default_factory=RobotCalibration)
    gripper: GripperCalibration = Field(default_factory=GripperCalibration)

    def camera(self, name: str) -> CameraCalibration:
        return self.cameras.setdefault(name, CameraCalibration())


def default_path(rig_name: str) -> Path:
    return CONFIG_DIR / "calibration" / f"{rig_name}.yaml"


def load_calibration(path: str | Path) -> CalibrationFile:
    """Load a calibration file; raises ConfigError on a malformed file or an unknown version."""
    path = Path(path)
    data: Any = yaml.safe_load(path.read_text()) or {}
    cal = build_config(CalibrationFile, data, str(path))
    if cal.version != CALIBRATION_VERSION:
        raise ConfigError(
            f"{path}: calibration file version {cal.version}, this build reads {CALIBRATION_VERSION}"
        )
    return cal


def save_calibration(cal: CalibrationFile, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written calibration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.updated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cal.model_dump(mode="json", exclude_none=True), sort_keys=False))
    tmp.replace(path)
    return path


def load_or_warn(path: str | Path | None, rig_name: str) -> CalibrationFile | None:
    """The calibration to use, or None with a warning that names the command that creates it."""
    path = Path(path) if path else default_path(rig_name)
    if not path.is_file():
        log.warning(
            "no calibration file at %s: using the latencies from the config. Run `rig calibrate "
            "camera-latency` and `rig calibrate robot-latency` to measure them.",
            path,
        )
        return None
    cal = load_calibration(path)
    if cal.updated:
        try:
            age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(cal.updated)
            if age.days > STALE_AFTER_DAYS:
                log.warning(
                    "calibration %s is %d days old: re-run `rig calibrate ...` if the rig changed",
                    path,
                    age.days,
                )
        except ValueError:
            pass
    return cal
