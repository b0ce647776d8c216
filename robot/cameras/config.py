"""Configuration of camera processes: one :class:`CameraConfig` per camera, several in a
:class:`MultiCameraConfig` (``configs/cameras/*.yaml``).

Cameras are a mapping ``name -> CameraConfig`` (not a list) so that every key can be overridden on
the command line, e.g. ``cameras.scene.sim.latency_s=0.12`` or
``cameras.wrist.sim.pose=[0.05,0,-0.08,0,0,0]``.

The simulated camera's geometry (``sim:``, its optics, mount and planes) and the frame conventions
are :mod:`robot.geometry.camera_geometry`'s, shared with the simulated world and calibration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from robot.config import StrictModel
from robot.geometry.camera_geometry import SimCameraConfig


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
