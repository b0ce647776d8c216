"""Camera geometry shared by the simulated world, the cameras and calibration: a simulated camera's
optics, mount and the planes it sees (config models), and the pinhole projection.

Frames and conventions (used by the simulated backend and by calibration):

- A pose is ``[x, y, z, rx, ry, rz]``: translation in metres and a rotation vector in radians.
- ``sim.pose`` is the **camera-to-parent** transform ``T_parent_cam``: a point ``p_cam`` in the camera
  frame is at ``R p_cam + t`` in the parent frame. The parent is the world (= arm base frame, z up,
  table at z=0) when ``sim.mount == "world"`` and the tool frame (the TCP pose ``tcp_pose`` of the
  world state) when ``sim.mount == "tool"`` (a wrist camera).
- The camera frame is OpenCV's: x right, y down (in the image), z forward along the optical axis.
  Pixel coordinates are OpenCV's too: the centre of the top-left pixel is (0, 0), so a point
  ``p_cam`` projects to ``u = fx x/z + cx``, ``v = fy y/z + cy``.
- A plane's ``pose`` is the **plane-to-parent** transform. The plane frame is that of an OpenCV
  ChArUco board / an image: origin at the board's (image's) top-left corner, x along the columns,
  y along the rows, z = x cross y, so the printed/visible side faces **-z** (a board lying face up on
  the table has its z axis pointing down, e.g. rotation ``[pi, 0, 0]``). For a ChArUco plane, the
  board's object points (``board.getChessboardCorners()``) are exactly plane-frame coordinates.

``SimCameraConfig`` (a camera config's ``sim:`` block) also carries the injected timing faults of the
simulated camera (latency, jitter, drops), so that one block configures it. Pure: config models and
functions, no processes, no clocks.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from robot.config import StrictModel
from robot.geometry.transforms import look_at_rotation, pose_to_matrix

Pose6 = list[float]

DOWN = [math.pi, 0.0, 0.0]  # rotation of a plane frame (or a tool) whose z axis points down


def check_pose(v: list[float]) -> list[float]:
    if len(v) != 6:
        raise ValueError(f"a pose is [x, y, z, rx, ry, rz] (6 numbers), got {len(v)}")
    return [float(x) for x in v]


class SimIntrinsics(StrictModel):
    """Ideal pinhole intrinsics of a simulated camera, in pixels of the native ``width x height``."""

    fx: float = 615.0
    fy: float = 615.0
    cx: float = 319.5
    cy: float = 239.5


class CharucoSpec(StrictModel):
    """A ChArUco board as ``cv2.aruco.CharucoBoard((squares_x, squares_y), square, marker, dict)``."""

    squares_x: int = Field(7, ge=2)
    squares_y: int = Field(5, ge=2)
    square_length_m: float = Field(0.04, gt=0)
    marker_length_m: float = Field(0.03, gt=0)
    dictionary: str = "DICT_5X5_100"
    px_per_square: int = Field(64, ge=8, description="texture resolution of the rendered board")
    margin_m: float = Field(0.01, ge=0, description="white border around the board")

    @model_validator(mode="after")
    def _marker_fits(self) -> CharucoSpec:
        if self.marker_length_m >= self.square_length_m:
            raise ValueError("charuco.marker_length_m must be smaller than square_length_m")
        return self


class PlaneConfig(StrictModel):
    """An extra textured plane in the simulated scene (see the module docstring for its frame).

    ``kind``:
      - ``charuco``: a ChArUco board (``charuco`` spec; its size follows from the spec),
      - ``screen``: a display of ``width_m x height_m`` whose image (``screen_width_px x
        screen_height_px``) the calibration code supplies at run time through the camera's
        ``screen_ring`` (see :func:`robot.cameras.sim.create_screen_ring`); black when no image yet,
      - ``texture``: a seeded random texture of ``width_m x height_m`` (clutter, tests).
    ``mount``: ``world`` (pose in the world frame) or ``tool`` (pose in the tool frame; moves with the
    arm).
    """

    kind: Literal["charuco", "screen", "texture"] = "charuco"
    mount: Literal["world", "tool"] = "world"
    pose: Pose6 = Field(default_factory=lambda: [0.4, -0.1, 0.0005, *DOWN])
    width_m: float = Field(0.3, gt=0)
    height_m: float = Field(0.2, gt=0)
    charuco: CharucoSpec = Field(default_factory=CharucoSpec)
    screen_width_px: int = Field(320, ge=8)
    screen_height_px: int = Field(240, ge=8)
    texture_seed: int = 0
    double_sided: bool = Field(False, description="draw the texture on the back too (else plain grey)")

    _v_pose = field_validator("pose")(check_pose)


class SimCameraConfig(StrictModel):
    """The simulated camera: optics, mount, and the injected (ground-truth) timing faults.

    Timing model: the camera exposes frame k at ``capture_time = t0 + k / fps`` (host monotonic s)
    and renders the world state whose ``time`` is the newest at or before it; the frame reaches the
    host at ``receive_time = capture_time + latency_s + jitter`` where jitter is zero-mean Gaussian
    with standard deviation ``jitter_s`` (clipped so that receive_time >= capture_time and receive
    order is kept). With probability ``drop_prob`` a frame is lost (a gap in ``frame_index``).
    """

    intrinsics: SimIntrinsics = Field(default_factory=SimIntrinsics)
    mount: Literal["world", "tool"] = "world"
    pose: Pose6 = Field(
        default_factory=lambda: [1.05, 0.0, 0.55, 0.0, 0.0, 0.0],
        description="camera-to-parent transform [x,y,z,rx,ry,rz] (m, rad); see the module docstring",
    )
    look_at: list[float] | None = Field(
        None,
        description="if set, [x,y,z] in the parent frame the optical axis points at; replaces the "
        "rotation part of pose (image up ~ parent +z, or tool -x for tool mounts)",
    )
    latency_s: float = Field(0.0, ge=0)
    jitter_s: float = Field(0.0, ge=0)
    drop_prob: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    standalone_tcp_pose: Pose6 = Field(
        default_factory=lambda: [0.5, 0.0, 0.3, *DOWN],
        description="tool pose used when no world ring is given (standalone tests, preview)",
    )
    table_extent_m: list[float] = Field(
        default_factory=lambda: [-0.25, 1.05, -0.75, 0.75], description="[x_min, x_max, y_min, y_max]"
    )
    planes: dict[str, PlaneConfig] = Field(default_factory=dict)
    max_backlog_frames: int = Field(
        10, ge=1, description="if the process falls this many frames behind (VM pause), skip frames"
    )

    _v_pose = field_validator("pose", "standalone_tcp_pose")(check_pose)

    @field_validator("look_at")
    @classmethod
    def _v_look_at(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and len(v) != 3:
            raise ValueError("look_at is a point [x, y, z]")
        return v

    @field_validator("table_extent_m")
    @classmethod
    def _v_extent(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or v[0] >= v[1] or v[2] >= v[3]:
            raise ValueError("table_extent_m is [x_min, x_max, y_min, y_max] with min < max")
        return v


def camera_to_parent(sim: SimCameraConfig) -> np.ndarray:
    """``T_parent_cam`` of a sim camera (world or tool parent), honouring ``sim.look_at``."""
    T = pose_to_matrix(sim.pose)
    if sim.look_at is not None:
        up = np.array([0.0, 0.0, 1.0]) if sim.mount == "world" else np.array([-1.0, 0.0, 0.0])
        T[:3, :3] = look_at_rotation(T[:3, 3], np.asarray(sim.look_at), up)
    return T


def camera_matrix(sim: SimCameraConfig) -> np.ndarray:
    """The 3x3 pinhole matrix ``K`` of a sim camera's intrinsics (pixels)."""
    i = sim.intrinsics
    return np.array([[i.fx, 0.0, i.cx], [0.0, i.fy, i.cy], [0.0, 0.0, 1.0]])


def project_points(K: np.ndarray, T_cam_world: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Pinhole projection (pixels, OpenCV convention) of (N, 3) world points; helper for tests/calibration."""
    p = points_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    return np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], axis=1)


def charuco_board(spec: CharucoSpec) -> cv2.aruco.CharucoBoard:
    """The OpenCV board of a :class:`CharucoSpec` (what calibration should detect)."""
    name = spec.dictionary if spec.dictionary.startswith("DICT_") else "DICT_" + spec.dictionary
    try:
        dict_id = getattr(cv2.aruco, name)
    except AttributeError:
        raise ValueError(f"unknown ArUco dictionary {spec.dictionary!r} (e.g. DICT_5X5_100)") from None
    dictionary = cv2.aruco.getPredefinedDictionary(dict_id)
    return cv2.aruco.CharucoBoard(
        (spec.squares_x, spec.squares_y), spec.square_length_m, spec.marker_length_m, dictionary
    )
