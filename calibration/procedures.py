"""Settings of the calibration procedures (``configs/calibration/procedures/<what>.yaml``).

These are *how to measure* (durations, excitation, boards, thresholds), not results: results go to
the calibration file (:mod:`calibration.result`). Every key can be overridden on the command line
with ``-p key=value`` (e.g. ``-p duration_s=6``), rig keys with plain ``key=value``.

``sim_*`` keys describe the fixture that the simulated rig adds to a sim camera's scene for the
procedure (the screen in front of the camera, the board on the tool or the table): on a real rig the
operator sets these up by hand and the keys are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from robot.camera_config import CharucoSpec
from robot.config import CONFIG_DIR, StrictModel, load_config

PROCEDURE_DIR = CONFIG_DIR / "calibration" / "procedures"

Axis = Literal["x", "y", "z"]
AXES = {"x": 0, "y": 1, "z": 2}


class SimScreen(StrictModel):
    """The virtual screen the sim rig puts in front of a camera for ``camera-latency``."""

    distance_m: float = Field(0.25, gt=0.01)
    """Along the optical axis, from a world-mounted camera."""
    tool_distance_m: float = Field(0.03, gt=0.006)
    """The same for a tool-mounted (wrist) camera: close enough to be in front of the tool."""
    fill: float = Field(0.8, gt=0.05, le=1.5)
    """Fraction of the image width the screen covers."""


class CameraLatencyProcedure(StrictModel):
    """``rig calibrate camera-latency``: film a screen that shows the host time as ArUco codes."""

    cameras: list[str] = Field(default_factory=list)
    """Cameras to measure (empty: all of the rig's cameras, measured together)."""
    duration_s: float = Field(4.0, gt=0)
    min_frames: int = Field(30, ge=3)
    """Fewer decoded frames than this per camera is a failure."""
    refresh_hz: float = Field(500.0, gt=0)
    """How often the screen image changes (a real monitor: its refresh rate). The code shown is the
    time the image appears; a camera sees it up to one refresh period later, half a period on
    average, which is subtracted."""
    display_delay_s: float = Field(0.0, ge=0)
    """A real screen's own delay from drawing to light (input lag; 0 for the sim screen)."""
    screen: Literal["auto", "sim", "window"] = "auto"
    """``sim``: the sim camera films a virtual screen (sim rig); ``window``: an OpenCV window on this
    host's display; ``auto``: sim on the sim rig, window otherwise."""
    dictionary: str = "DICT_6X6_1000"
    resolution_s: float = Field(4e-4, gt=0)
    """Time step of the code: two markers carry ``round(t / resolution_s) mod 500**2``."""
    screen_width_px: int = Field(180, ge=40)
    screen_height_px: int = Field(96, ge=20)
    outlier_mads: float = Field(6.0, gt=0)
    """Frames further than this many (scaled) MADs from the median are dropped as outliers."""
    max_std_s: float = Field(0.02, gt=0)
    """A spread larger than this is a failure (the screen or camera is not behaving)."""
    histogram_bins: int = Field(30, ge=5)
    sim_screen: SimScreen = Field(default_factory=SimScreen)


class ObsLatencyExcitation(StrictModel):
    """Observation latency: a slow, large sinusoid that a camera sees through the tool board."""

    enabled: bool = True
    camera: str = ""
    """A world-mounted camera that sees the tool board ('' = the first world-mounted camera)."""
    amplitude_m: float = Field(0.03, gt=0)
    frequency_hz: float = Field(0.6, gt=0)
    duration_s: float = Field(3.0, gt=0)
    max_latency_s: float = Field(0.3, gt=0)
    min_frames: int = Field(20, ge=5)


class RobotLatencyProcedure(StrictModel):
    """``rig calibrate robot-latency``: chirp through the waypoint path, fit dead time + tracking lag."""

    axis: Axis = "y"
    center_offset_m: tuple[float, float, float] = (0.0, 0.0, -0.1)
    """Excitation centre relative to the home pose (m, base frame)."""
    duration_s: float = Field(4.0, gt=0)
    chirp_f0_hz: float = Field(0.5, gt=0)
    chirp_f1_hz: float = Field(4.0, gt=0)
    amplitude_m: float = Field(0.004, gt=0)
    max_speed_m_s: float = Field(0.03, gt=0)
    """The chirp's amplitude shrinks at high frequency so that its speed stays below this (keeps the
    arm in its linear range: no speed or acceleration limiting)."""
    waypoint_dt_s: float = Field(0.02, gt=0)
    """Spacing of the scheduled waypoints (s)."""
    schedule_ahead_s: float = Field(0.25, gt=0)
    """Waypoints are scheduled this far ahead, in batches, like a policy's action chunks."""
    max_delay_s: float = Field(0.5, gt=0)
    max_residual_m: float = Field(0.0005, gt=0)
    """RMS error of the fitted response above this is a failure (the arm does not follow the model)."""
    obs: ObsLatencyExcitation = Field(default_factory=ObsLatencyExcitation)
    board: CharucoSpec = Field(
        default_factory=lambda: CharucoSpec(
            squares_x=4, squares_y=3, square_length_m=0.045, marker_length_m=0.034, dictionary="DICT_4X4_50"
        )
    )
    """The board on the tool (observation latency)."""
    sim_board_pose: list[float] = Field(default_factory=lambda: [-0.09, -0.0675, -0.1, 0.0, 0.0, 0.0])
    """Sim: board-to-tool pose (its printed side faces the tool's -z: up when the tool points down)."""

    @model_validator(mode="after")
    def _check(self) -> RobotLatencyProcedure:
        if self.chirp_f1_hz <= self.chirp_f0_hz:
            raise ValueError("chirp_f1_hz must be above chirp_f0_hz")
        if len(self.sim_board_pose) != 6:
            raise ValueError("sim_board_pose is [x, y, z, rx, ry, rz]")
        return self

    def amplitude_at(self, f_hz: float) -> float:
        return min(self.amplitude_m, self.max_speed_m_s / (2 * math.pi * f_hz))


def load_procedure(model: type, name: str, path: str | Path | None, overrides: list[str]):
    """The procedure settings: ``path`` or ``configs/calibration/procedures/<name>.yaml`` (defaults
    if that does not exist), with ``key=value`` overrides. Raises ConfigError."""
    p = Path(path) if path else PROCEDURE_DIR / f"{name}.yaml"
    if path is None and not p.is_file():
        p = None
    return load_config(model, p, overrides)
