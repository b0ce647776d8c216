"""What every camera backend shares: the backend protocol and the records it returns.

A backend (``realsense``, ``sim``) runs inside the camera process of :mod:`robot.cameras.camera`, which
chooses it by ``config.backend``. Backends import their types from here, never from the camera module,
so the dependency goes one way: ``camera`` -> backends -> ``backend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the frames in the ring (after any resize), in pixels.

    ``distortion`` is OpenCV's (k1, k2, p1, p2, k3) (Brown-Conrady for RealSense color; zeros in sim).
    ``depth_scale_m``: metres per unit of the ``depth`` image.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    depth_scale_m: float = 0.001

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def cropped(self, x: int, y: int, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of the ``width x height`` window at pixel ``(x, y)`` of these images."""
        return CameraIntrinsics(
            self.fx, self.fy, self.cx - x, self.cy - y, width, height, self.distortion, self.depth_scale_m
        )

    def resized(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of the same camera after resizing its images to ``width x height``."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
            self.distortion,
            self.depth_scale_m,
        )


@dataclass
class Frame:
    """One frame from a backend (native resolution); times are host monotonic seconds."""

    color: np.ndarray
    depth: np.ndarray | None
    capture_time: float
    receive_time: float
    frame_index: int


class CameraBackend(Protocol):
    """What a backend offers the camera process (all calls happen in the camera process)."""

    def open(self) -> CameraIntrinsics:
        """Open the device; return native intrinsics. Raise with a message for the person at the rig."""

    def read(self, timeout_s: float) -> Frame | None:
        """Block up to ``timeout_s`` for the next frame; None on timeout."""

    def close(self) -> None: ...
