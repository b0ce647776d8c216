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

from robot.config import CONFIG_DIR, StrictModel, load_config
from robot.geometry.camera_geometry import CharucoSpec

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
    """``rig calibrate robot-latency``: chirp through the waypoint path, fit dead time + first- or
    second-order lag (calibration/robot_latency.py)."""

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


def _tool_board() -> CharucoSpec:
    return CharucoSpec(
        squares_x=5, squares_y=4, square_length_m=0.035, marker_length_m=0.026, dictionary="DICT_4X4_50"
    )


def _table_board() -> CharucoSpec:
    return CharucoSpec(
        squares_x=7, squares_y=5, square_length_m=0.04, marker_length_m=0.03, dictionary="DICT_5X5_100"
    )


class PoseSetConfig(StrictModel):
    """The automatically generated set of arm poses the board is photographed from.

    Poses spread (Halton sequence, seeded) around ``home pose + centre offset`` (per camera mount):
    translations in a box of +-``translation_range_m``, the tool tilted by up to ``tilt_deg`` about a
    horizontal axis of every direction and turned by up to +-``yaw_deg`` about the vertical, visited
    in a short order at no more than ``speed_m_s`` / ``angular_speed_rad_s``.
    """

    n_poses: int = Field(14, ge=1)
    seed: int = 0
    world_camera_center_offset_m: tuple[float, float, float] = (0.08, 0.0, -0.12)
    """Eye-to-hand (board on the tool): centre of the pose set relative to the home pose."""
    tool_camera_center_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.05)
    """Eye-in-hand (camera on the tool, board on the table)."""
    translation_range_m: tuple[float, float, float] = (0.06, 0.06, 0.04)
    tilt_deg: float = Field(22.0, ge=0, le=60)
    yaw_deg: float = Field(30.0, ge=0, le=90)
    speed_m_s: float = Field(0.15, gt=0)
    angular_speed_rad_s: float = Field(0.8, gt=0)
    settle_s: float = Field(0.15, ge=0)
    """Wait after the arm is at rest before taking the frame (vibrations on a real arm)."""


class CaptureProcedure(StrictModel):
    """Shared by ``intrinsics`` (charuco) and ``hand-eye``: which camera, which board, which poses."""

    camera: str = ""
    """The camera to calibrate ('' = the rig's first camera)."""
    mount: Literal["auto", "world", "tool"] = "auto"
    """``world``: static camera, board on the tool (eye-to-hand); ``tool``: camera on the tool, board on
    the table (eye-in-hand); ``auto``: the sim camera's mount, else the calibration file's, else world."""
    poses: PoseSetConfig = Field(default_factory=PoseSetConfig)
    min_poses: int = Field(6, ge=3)
    """Fewer usable views than this is a failure ("too few poses")."""
    abort_after_missing: int = Field(3, ge=1)
    """Stop early when the board is not seen at any of the first this many poses."""
    min_corners: int = Field(6, ge=4)
    tool_board: CharucoSpec = Field(default_factory=_tool_board)
    """The board mounted on the tool (eye-to-hand)."""
    table_board: CharucoSpec = Field(default_factory=_table_board)
    """The board lying on the table (eye-in-hand)."""
    sim_tool_board_pose: list[float] = Field(default_factory=lambda: [-0.0875, -0.07, -0.1, 0.0, 0.0, 0.0])
    """Sim: board-to-tool pose of the tool board (printed side facing the tool's -z, i.e. up)."""
    sim_table_board: Literal["under_camera"] | list[float] = "under_camera"
    """Sim: board-to-world pose of the table board, or ``under_camera``: centred where the camera's
    optical axis meets the table at the pose set's centre."""


class IntrinsicsProcedure(CaptureProcedure):
    """``rig calibrate intrinsics``."""

    source: Literal["auto", "factory", "charuco"] = "auto"
    """``factory``: the device's intrinsics (RealSense calibration in the camera; sim: its model);
    ``charuco``: calibrate from board views; ``auto``: charuco."""
    frames_dir: str = ""
    """ChArUco from saved images (``*.png``/``*.jpg`` of one camera, e.g. taken while waving the board)
    instead of arm-driven views; ``board`` picks the board in them."""
    board: Literal["table", "tool"] = "table"
    """Which of the two boards the images of ``frames_dir`` show."""
    save_frames_dir: str = ""
    """Also save the captured views there (PNG), to recalibrate later with ``frames_dir``."""
    distortion_model: Literal["none", "k1k2", "k1k2p1p2", "k1k2p1p2k3"] = "k1k2"
    """Radial k1, k2 by default: tangential terms (p1p2) trade off against the principal point when the
    views are few; enable them for lenses that need them."""
    max_rms_px: float = Field(1.0, gt=0)
    """Overall reprojection RMS above this is a failure."""
    frame_outlier_factor: float = Field(3.0, gt=1)
    """A view whose reprojection RMS is above this times the median (and above 0.3 px) is dropped."""
    min_coverage: float = Field(0.25, gt=0, le=1)
    """Fraction of an 8x6 grid of image cells that must contain board corners over all used views."""
    duplicate_px: float = Field(3.0, ge=0)
    """A view whose corners all lie within this of an already used view's is a duplicate (dropped)."""


class HandEyeProcedure(CaptureProcedure):
    """``rig calibrate hand-eye``."""

    intrinsics: Literal["auto", "calibration", "device", "charuco"] = "auto"
    """Camera model for board poses: ``calibration`` (the file's), ``device`` (the camera's reported
    intrinsics), ``charuco`` (calibrate from these views), ``auto``: the file's if present, else device."""
    methods: list[str] = Field(
        default_factory=lambda: ["TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS", "SHAH", "LI"]
    )
    """``cv2.calibrateHandEye`` methods (TSAI, PARK, HORAUD, ANDREFF, DANIILIDIS) and
    ``cv2.calibrateRobotWorldHandEye`` methods (SHAH, LI) to compare; the best by residual is kept."""
    refine: bool = True
    """Refine the best solution by minimising the corners' reprojection error over all views."""
    outlier_factor: float = Field(3.0, gt=1)
    """A view whose residual is above this times the median (and above 0.5 px) is dropped and the
    solution recomputed."""
    max_rms_px: float = Field(1.5, gt=0)
    """Reprojection RMS of the final solution above this is a failure."""


class BoardProcedure(StrictModel):
    """``rig calibrate board``: which board to print."""

    preset: Literal["table", "tool", "custom"] = "table"
    """``table``/``tool``: the hand-eye/intrinsics boards of the capture procedure; ``custom``: ``board``."""
    board: CharucoSpec = Field(default_factory=_table_board)
    margin_m: float = Field(0.01, ge=0)
    """White margin printed around the board."""
