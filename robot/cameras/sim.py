"""Simulated camera backend: renders the simulated world at the camera's frame times.

Timing contract (the ground truth that latency calibration must recover):

- Frame ``k`` is exposed at ``capture_time = t0 + k / fps`` (host monotonic seconds) on a fixed grid
  that never drifts. The image shows the world-state record whose ``time`` is the newest at or before
  ``capture_time`` (read from the sim arm's world ring, so a late wake-up still renders the right
  instant), and the screen image whose ``display_time`` is the newest at or before it.
- The frame reaches the host at ``receive_time = capture_time + latency_s + N(0, jitter_s)`` (clipped
  to >= capture_time and to the previous frame's receive time: frames arrive in order). It is put
  into the camera ring no earlier than ``receive_time`` (normally < 1 ms later; up to one render,
  ~1-3 ms, when a render is in progress at that moment). ``receive_time`` is the scheduled arrival.
- With probability ``drop_prob`` a frame is lost; ``frame_index`` keeps counting, so drops show up
  as gaps. If the process falls more than ``max_backlog_frames`` behind (a VM pause), the missed
  frames are skipped (also gaps), as a real camera's queue would overflow.
- Without a world ring (standalone use) the camera sees an empty table and the tool at
  ``sim.standalone_tcp_pose``.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from robot.cameras.backend import CameraIntrinsics, Frame
from robot.cameras.config import CameraConfig
from robot.geometry.camera_geometry import PlaneConfig
from robot.geometry.transforms import pose_to_matrix
from robot.shm.ring_buffer import RingBuffer
from robot.sim.render import SceneRenderer
from robot.timing import now, precise_wait

RENDER_GUARD_S = 0.001
SPIN_S = 0.0003  # short busy-wait: receive_time is the scheduled time, sub-ms wake-up is enough  # render this long after the exposure so the arm's record for it has landed
_WORLD_LOOKBACK = 16


def screen_layout(plane: PlaneConfig, channels: int = 3) -> dict[str, tuple[tuple[int, ...], str]]:
    """Ring layout of the images a ``screen`` plane shows: ``image`` (H, W, 3) or (H, W) uint8 and
    ``display_time`` (host monotonic s at which the image appears on the virtual screen)."""
    shape = (plane.screen_height_px, plane.screen_width_px) + ((channels,) if channels == 3 else ())
    return {"image": (shape, "uint8"), "display_time": ((), "float64")}


def create_screen_ring(plane: PlaneConfig, capacity: int = 16, channels: int = 3) -> RingBuffer:
    """A ring the calibration code writes ``{"image", "display_time"}`` records into and passes to
    ``Camera(config, screen_ring=...)``; the caller owns (closes) it."""
    return RingBuffer.create(screen_layout(plane, channels), capacity, label="screen")


def _newest_at_or_before(ring: RingBuffer, time_key: str, t: float) -> dict[str, Any] | None:
    """The ring record with the newest ``time_key`` <= t (the oldest available if all are later);
    None when the ring is empty.

    Never reads the whole ring: its oldest record is the one the writer replaces next, so a copy of
    all of it that takes longer than one write period (a loaded machine) is overwritten every time.
    Half the ring leaves the writer that many periods of slack."""
    k = min(_WORLD_LOOKBACK, ring.capacity // 2)
    while True:
        recs = ring.get_last(k)
        n = len(recs["counter"])
        if n == 0:
            return None
        times = recs[time_key]
        i = int(np.searchsorted(times, t, side="right")) - 1
        if i >= 0 or n < k or k == ring.capacity // 2:
            i = max(i, 0)
            return {key: v[i] for key, v in recs.items()}
        k = ring.capacity // 2


class _Pending:
    __slots__ = ("color", "depth", "capture_time", "receive_time", "frame_index")

    def __init__(self, color, depth, capture_time, receive_time, frame_index):
        self.color, self.depth = color, depth
        self.capture_time, self.receive_time, self.frame_index = capture_time, receive_time, frame_index


class SimCameraBackend:
    """Backend of :class:`robot.cameras.camera.Camera` for ``backend: sim`` (runs in the camera process)."""

    def __init__(self, cfg: CameraConfig, world_ring: RingBuffer | None, screen_ring: RingBuffer | None):
        self.cfg = cfg
        self.world_ring = world_ring
        self.screen_ring = screen_ring
        self._screen_planes = [n for n, p in cfg.sim.planes.items() if p.kind == "screen"]
        if screen_ring is not None and not self._screen_planes:
            raise ValueError(
                f"camera {cfg.name}: a screen ring was given but no plane of kind 'screen' is configured "
                "(add one under sim.planes)"
            )
        if cfg.sim.mount == "tool" and world_ring is None:
            pass  # standalone: the tool stays at sim.standalone_tcp_pose
        self.skipped_frames = 0

    def open(self):
        i = self.cfg.sim.intrinsics
        self.renderer = SceneRenderer(
            self.cfg.sim, self.cfg.width, self.cfg.height, want_depth=self.cfg.depth
        )
        self._standalone_tool = pose_to_matrix(self.cfg.sim.standalone_tcp_pose)
        # Warm up (texture caches, first-call overheads) before the clock starts.
        self._render(now())
        self._rng = np.random.default_rng(self.cfg.sim.seed)
        self._period_s = 1.0 / self.cfg.fps
        self._t0 = now() + 0.05
        self._k = 0
        self._last_receive = -math.inf
        self._pending: collections.deque[_Pending] = collections.deque()
        return CameraIntrinsics(i.fx, i.fy, i.cx, i.cy, self.cfg.width, self.cfg.height, (0.0,) * 5, 0.001)

    def close(self) -> None:
        self._pending = collections.deque()

    def _render(self, t: float) -> tuple[np.ndarray, np.ndarray | None]:
        world = None
        tool = self._standalone_tool
        if self.world_ring is not None:
            world = _newest_at_or_before(self.world_ring, "time", t)
            if world is not None:
                tool = pose_to_matrix(world["tcp_pose"])
        screen = None
        if self.screen_ring is not None:
            rec = _newest_at_or_before(self.screen_ring, "display_time", t)
            if rec is not None and rec["display_time"] <= t:
                screen = rec["image"]
        return self.renderer.render(world, tool, screen)

    def read(self, timeout_s: float):
        """Block until the next frame arrives (returns it) or ``timeout_s`` passes (returns None)."""
        deadline = now() + timeout_s
        sim = self.cfg.sim
        while True:
            t_cap = self._t0 + self._k * self._period_s
            if self._pending and self._pending[0].receive_time <= t_cap + RENDER_GUARD_S:
                p = self._pending[0]
                if p.receive_time > deadline:
                    precise_wait(deadline, SPIN_S)
                    return None
                precise_wait(p.receive_time, SPIN_S)
                self._pending.popleft()
                return Frame(p.color, p.depth, p.capture_time, p.receive_time, p.frame_index)
            if t_cap + RENDER_GUARD_S > deadline:
                precise_wait(deadline, SPIN_S)
                return None
            t = precise_wait(t_cap + RENDER_GUARD_S, SPIN_S)
            if t - t_cap > sim.max_backlog_frames * self._period_s:
                k_now = int((t - self._t0) / self._period_s)
                self.skipped_frames += k_now - self._k
                self._k = k_now
                continue
            index = self._k
            self._k += 1
            jitter = float(self._rng.normal(0.0, sim.jitter_s)) if sim.jitter_s > 0 else 0.0
            if sim.drop_prob > 0 and self._rng.random() < sim.drop_prob:
                continue
            color, depth = self._render(t_cap)
            receive = max(t_cap + max(sim.latency_s + jitter, 0.0), self._last_receive)
            self._last_receive = receive
            self._pending.append(_Pending(color, depth, t_cap, receive, index))
