"""One camera = one process writing frames into its own shared-memory ring buffer.

``Camera(config, world_ring=None, screen_ring=None)`` creates the ring (owned by the parent) and,
on ``start()``, a child process that opens the backend (``sim`` renders the simulated world,
``realsense`` a RealSense by serial, ``playback`` a RealSense recording), publishes the intrinsics and
then writes one record per frame:

========================  ===========================  =========================================
field                     shape / dtype                meaning
========================  ===========================  =========================================
``color``                 (H, W, 3) uint8              RGB image (resized if ``resize`` is set)
``depth`` (if enabled)    (H, W) uint16                depth aligned to color, ``depth_scale_m``/unit
``capture_time``          float64                      host monotonic s when the scene looked so
``receive_time``          float64                      host monotonic s when the frame reached the host
``frame_index``           int64                        the device's frame counter (gaps = drops)
========================  ===========================  =========================================

Timing contract: the capture loop only grabs, optionally resizes and copies into the ring (never
encodes or writes files); readers (:class:`~robot.cameras.multi_camera.MultiCamera`, recorders, preview) never
block it. Readers must read at least every ``ring_capacity`` frames or lose the oldest ones.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from robot.cameras.backend import CameraIntrinsics
from robot.cameras.config import CameraConfig
from robot.process import ClosedOnFailedStart, DeviceProcess
from robot.shm.ring_buffer import RingBuffer
from robot.timing import now

_READ_TIMEOUT_S = 0.05
# Shared stats slots (float64), written by the camera process only.
_I_READY, _I_FX, _I_FY, _I_CX, _I_CY, _I_W, _I_H, _I_SCALE = range(8)
_I_DIST = 8  # 5 slots
_S_PUBLISHED, _S_DROPPED, _S_FIRST_RX, _S_LAST_RX, _S_LAT_SUM, _S_LAT_SQ, _S_LAT_MAX, _S_SKIPPED = range(
    13, 21
)
_S_ENDED = 21  # 1 once a playback recording has ended
_N_SHARED = 22


def frame_layout(config: CameraConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Ring layout of a camera's frames (see the module docstring)."""
    h, w = config.out_height, config.out_width
    layout: dict[str, tuple[tuple[int, ...], str]] = {"color": ((h, w, 3), "uint8")}
    if config.depth:
        layout["depth"] = ((h, w), "uint16")
    layout.update(
        {"capture_time": ((), "float64"), "receive_time": ((), "float64"), "frame_index": ((), "int64")}
    )
    return layout


def make_backend(config: CameraConfig, world_ring: RingBuffer | None, screen_ring: RingBuffer | None):
    """The backend object for ``config.backend`` (imports only what that backend needs)."""
    if config.backend == "sim":
        from robot.cameras.sim import SimCameraBackend

        return SimCameraBackend(config, world_ring, screen_ring)
    if config.backend in ("realsense", "playback"):
        from robot.cameras.realsense import RealSenseBackend

        return RealSenseBackend(config)
    raise ValueError(f"camera {config.name}: unknown backend {config.backend!r}")


class Camera(ClosedOnFailedStart, DeviceProcess):
    """A camera process and its frame ring.

    Parameters: ``config`` (:class:`~robot.cameras.config.CameraConfig`), ``world_ring`` (sim only: the
    sim arm's world-state ring, read by pickled handle), ``screen_ring`` (sim only: images for a
    ``screen`` plane, see :func:`robot.cameras.sim.create_screen_ring`).

    Parent-side API: ``start(wait=True)`` (returns once the device is open and the intrinsics are
    published; raises :class:`~robot.process.DeviceProcessError` with the child's traceback), ``.ring``
    (the :class:`~robot.shm.ring_buffer.RingBuffer`, layout :func:`frame_layout`), ``.intrinsics``,
    ``get_last(k)``, ``stats()``, ``check()``, ``stop()``, ``close()`` (stop and free the ring); as a
    context manager it starts and closes.
    """

    def __init__(
        self,
        config: CameraConfig,
        world_ring: RingBuffer | None = None,
        screen_ring: RingBuffer | None = None,
        *,
        ready_timeout_s: float = 30.0,
        start_method: str | None = None,
    ):
        if not config.name:
            raise ValueError("CameraConfig.name must be set (MultiCameraConfig fills it from the key)")
        super().__init__(
            f"camera {config.name} ({config.backend})",
            ready_timeout_s=ready_timeout_s,
            start_method=start_method,
        )
        self.config = config
        self.world_ring = world_ring
        self.screen_ring = screen_ring
        self._shared = self._ctx.Array("d", _N_SHARED, lock=False)
        self.ring = RingBuffer.create(frame_layout(config), config.ring_capacity, label=f"cam_{config.name}")
        self._closed = False

    # ------------------------------------------------------------------ child side
    def setup(self) -> None:
        cfg = self.config
        self._backend = make_backend(cfg, self.world_ring, self.screen_ring)
        intr = self._backend.open()
        if (intr.width, intr.height) != (cfg.width, cfg.height):
            raise RuntimeError(
                f"camera {cfg.name}: device delivers {intr.width}x{intr.height}, config asks "
                f"{cfg.width}x{cfg.height}; fix width/height in the camera config"
            )
        if cfg.crop:
            intr = intr.cropped(*cfg.crop)
        if cfg.resize:
            intr = intr.resized(cfg.out_width, cfg.out_height)
        s = self._shared
        s[_I_FX], s[_I_FY], s[_I_CX], s[_I_CY] = intr.fx, intr.fy, intr.cx, intr.cy
        s[_I_W], s[_I_H], s[_I_SCALE] = intr.width, intr.height, intr.depth_scale_m
        for i, d in enumerate(intr.distortion[:5]):
            s[_I_DIST + i] = d
        s[_I_READY] = 1.0
        self._last_index: int | None = None
        self._resize = tuple(cfg.resize) if cfg.resize else None
        x, y, w, h = cfg.crop or (0, 0, cfg.width, cfg.height)
        self._crop = (slice(y, y + h), slice(x, x + w)) if cfg.crop else None

    def run_loop(self) -> None:
        s = self._shared
        ring = self.ring
        has_depth = self.config.depth
        while not self.should_stop():
            frame = self._backend.read(_READ_TIMEOUT_S)
            if frame is None:
                if getattr(self._backend, "ended", False):
                    s[_S_ENDED] = 1.0
                continue
            color, depth = frame.color, frame.depth
            if self._crop is not None:
                color = color[self._crop]
                depth = None if depth is None else depth[self._crop]
            if self._resize is not None:
                color = cv2.resize(color, self._resize, interpolation=cv2.INTER_AREA)
                if depth is not None:
                    depth = cv2.resize(depth, self._resize, interpolation=cv2.INTER_NEAREST)
            rec: dict[str, Any] = {
                "color": color,
                "capture_time": frame.capture_time,
                "receive_time": frame.receive_time,
                "frame_index": frame.frame_index,
            }
            if has_depth:
                rec["depth"] = depth if depth is not None else 0
            ring.put(rec)
            # Stats (single writer; the parent may read a field mid-update: they are indicative).
            if self._last_index is not None and frame.frame_index > self._last_index + 1:
                s[_S_DROPPED] += frame.frame_index - self._last_index - 1
            self._last_index = frame.frame_index
            lat = frame.receive_time - frame.capture_time
            if s[_S_PUBLISHED] == 0:
                s[_S_FIRST_RX] = frame.receive_time
            s[_S_LAST_RX] = frame.receive_time
            s[_S_LAT_SUM] += lat
            s[_S_LAT_SQ] += lat * lat
            s[_S_LAT_MAX] = max(s[_S_LAT_MAX], lat)
            s[_S_SKIPPED] = getattr(self._backend, "skipped_frames", 0)
            s[_S_PUBLISHED] += 1

    def teardown(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()

    # ------------------------------------------------------------------ parent side
    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the frames in the ring, published by the camera process once it opened the
        device (so: available after ``start()`` returned). Raises RuntimeError before that."""
        s = self._shared
        if s[_I_READY] != 1.0:
            raise RuntimeError(f"{self.name}: intrinsics are known once the camera has started")
        return CameraIntrinsics(
            s[_I_FX],
            s[_I_FY],
            s[_I_CX],
            s[_I_CY],
            int(s[_I_W]),
            int(s[_I_H]),
            tuple(s[_I_DIST : _I_DIST + 5]),
            s[_I_SCALE],
        )

    def get_last(self, k: int = 1) -> dict[str, np.ndarray]:
        """The ``k`` newest frames, oldest first (see :meth:`RingBuffer.get_last`); non-blocking."""
        return self.ring.get_last(k)

    def stats(self) -> dict[str, float]:
        """Counters since start: ``frames`` published, ``dropped`` (frame_index gaps: device/sim drops and
        frames skipped after a stall), ``fps`` (mean delivered rate), ``latency_mean_s``/``latency_std_s``/
        ``latency_max_s`` of receive_time - capture_time, ``age_s`` of the newest frame, ``ended``
        (playback: the recording has ended and no frame will come)."""
        s = self._shared
        n = s[_S_PUBLISHED]
        span = s[_S_LAST_RX] - s[_S_FIRST_RX]
        mean = s[_S_LAT_SUM] / n if n else float("nan")
        var = s[_S_LAT_SQ] / n - mean * mean if n else float("nan")
        return {
            "frames": int(n),
            "dropped": int(s[_S_DROPPED]),
            "fps": (n - 1) / span if n > 1 and span > 0 else 0.0,
            "latency_mean_s": mean,
            "latency_std_s": float(np.sqrt(max(var, 0.0))) if n else float("nan"),
            "latency_max_s": s[_S_LAT_MAX] if n else float("nan"),
            "age_s": now() - s[_S_LAST_RX] if n else float("nan"),
            "ended": bool(s[_S_ENDED]),
        }

    def close(self) -> None:
        """Stop the process (if running) and free the ring. Idempotent."""
        if self._closed:
            return
        try:
            if self.is_alive:
                self.stop(wait=True)
            elif self._proc is not None and self.exitcode is not None:
                self._proc.join(0.1)  # reap
        finally:
            self._closed = True
            self.ring.close()
