"""Configuration of camera processes: one :class:`CameraConfig` per camera, several in a
:class:`MultiCameraConfig` (``configs/cameras/*.yaml``).

Cameras are a mapping ``name -> CameraConfig`` (not a list) so that every key can be overridden on
the command line, e.g. ``cameras.scene.sim.latency_s=0.12`` or
``cameras.wrist.sim.pose=[0.05,0,-0.08,0,0,0]``.

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
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from robot.config import StrictModel

Pose6 = list[float]

DOWN = [math.pi, 0.0, 0.0]  # rotation of a plane frame (or a tool) whose z axis points down


def _check_pose(v: list[float]) -> list[float]:
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

    _v_pose = field_validator("pose")(_check_pose)


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

    _v_pose = field_validator("pose", "standalone_tcp_pose")(_check_pose)

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


class PlaybackConfig(StrictModel):
    """Replay of a RealSense recording (``.db3`` from pyrealsense2 2.59's recorder, or ``.bag``).

    Frames are paced at their recorded rate; ``capture_time`` is the recorded device timestamp shifted
    onto the host clock (first frame = playback start), ``receive_time`` the host time it was read.
    """

    path: str = ""
    loop: bool = False


class CameraConfig(StrictModel):
    """One camera.

    ``width x height @ fps`` is the native capture mode; ``crop: [x, y, w, h]`` (native pixels) then
    ``resize: [w, h]`` happen in the camera process (the published intrinsics follow both). ``depth`` adds an aligned uint16 depth image
    (``depth_scale_m`` per unit, published with the intrinsics). ``exposure_us``/``gain``/
    ``white_balance_k``: None = auto, a number = fixed (RealSense only). ``sync``: RealSense hardware
    sync role (``master`` drives the sync cable, ``slave`` follows). ``ring_capacity``: frames kept in
    the camera's shared-memory ring (readers must keep up within that many frames).
    """

    name: str = ""
    backend: Literal["sim", "realsense", "playback"] = "sim"
    serial: str | None = None
    width: int = Field(640, ge=16)
    height: int = Field(480, ge=16)
    fps: float = Field(30.0, gt=0)
    depth: bool = False
    exposure_us: int | None = None
    gain: int | None = None
    white_balance_k: int | None = None
    crop: list[int] | None = None
    resize: list[int] | None = None
    sync: Literal["none", "master", "slave"] = "none"
    ring_capacity: int = Field(30, ge=4)
    sim: SimCameraConfig = Field(default_factory=SimCameraConfig)
    playback: PlaybackConfig = Field(default_factory=PlaybackConfig)

    @field_validator("resize")
    @classmethod
    def _v_resize(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or min(v) < 8):
            raise ValueError("resize is [width, height] in pixels")
        return v

    @field_validator("crop")
    @classmethod
    def _v_crop(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 4 or min(v) < 0 or min(v[2:]) < 8):
            raise ValueError("crop is [x, y, width, height] in native pixels")
        return v

    @model_validator(mode="after")
    def _crop_inside(self) -> CameraConfig:
        if self.crop and (
            self.crop[0] + self.crop[2] > self.width or self.crop[1] + self.crop[3] > self.height
        ):
            raise ValueError(f"crop {self.crop} does not fit in {self.width}x{self.height}")
        return self

    @property
    def out_width(self) -> int:
        return self.resize[0] if self.resize else (self.crop[2] if self.crop else self.width)

    @property
    def out_height(self) -> int:
        return self.resize[1] if self.resize else (self.crop[3] if self.crop else self.height)


class VideoConfig(StrictModel):
    """Episode video: H.264 mp4 per camera (PyAV/libx264), written by a separate process.

    ``throttle_s`` adds a sleep per encoded frame: it simulates a slow disk/encoder (tests, bench).
    ``preset``: x264 speed preset; ``ultrafast`` costs ~1.7 ms of CPU per 640x480 frame here
    (``veryfast`` ~3.4 ms) for files ~3x larger, which is what a 2-core capture machine can afford.
    ``nice``: the writer processes' niceness increment, so capture always wins the CPU.
    """

    codec: str = "libx264"
    crf: int = Field(23, ge=0, le=51)
    preset: str = "ultrafast"
    nice: int = Field(10, ge=0, le=19)
    threads: int = Field(1, ge=0, description="encoder threads per camera (0 = codec default)")
    throttle_s: float = Field(0.0, ge=0)


class MultiCameraConfig(StrictModel):
    """Several cameras (``cameras``: name -> CameraConfig, in order) and their episode video settings."""

    cameras: dict[str, CameraConfig] = Field(default_factory=dict)
    video: VideoConfig = Field(default_factory=VideoConfig)

    @model_validator(mode="after")
    def _names(self) -> MultiCameraConfig:
        for key, cam in self.cameras.items():
            if not cam.name:
                cam.name = key
            elif cam.name != key:
                raise ValueError(f"camera {key!r} has name {cam.name!r}: leave name out, the key names it")
        return self
