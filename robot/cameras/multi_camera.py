"""Several camera processes started, read, recorded and stopped together.

``MultiCamera(configs, world_ring=None)`` owns one :class:`~robot.cameras.camera.Camera` per config (each
with its own ring) and, while recording, one :class:`~robot.cameras.video_recorder.VideoRecorder` process per
camera. Readers never block the cameras; every read method is non-blocking and returns copies.

Time alignment (:meth:`MultiCamera.get_frames`): every camera is sampled at the same target times by
``capture_time``, taking for each target the newest frame captured at or before it (so the newest
frame is included when a target equals its capture time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.camera import Camera
from robot.cameras.config import CameraConfig, MultiCameraConfig, VideoConfig
from robot.process import ClosedOnFailedStart, DeviceProcessError
from robot.shm.ring_buffer import RingBuffer

log = logging.getLogger(__name__)


def _as_config_map(configs: Any) -> tuple[dict[str, CameraConfig], VideoConfig]:
    if isinstance(configs, MultiCameraConfig):
        return dict(configs.cameras), configs.video
    if isinstance(configs, Mapping):
        out = {}
        for key, cfg in configs.items():
            if not cfg.name:
                cfg = cfg.model_copy(update={"name": key})
            out[key] = cfg
        return out, VideoConfig()
    out = {}
    for i, cfg in enumerate(configs):
        name = cfg.name or f"camera_{i}"
        if name in out:
            raise ValueError(f"two cameras are named {name!r}; camera names must be unique")
        out[name] = cfg if cfg.name else cfg.model_copy(update={"name": name})
    return out, VideoConfig()


def align_indices(capture_times: np.ndarray, target_times: np.ndarray) -> np.ndarray:
    """For each target time, the index of the newest capture time <= it (0 if all are later)."""
    idx = np.searchsorted(capture_times, target_times, side="right") - 1
    return np.clip(idx, 0, len(capture_times) - 1)


class MultiCamera(ClosedOnFailedStart):
    """Start/stop all cameras, read time-aligned frames, statistics, episode video.

    ``configs``: a :class:`~robot.cameras.config.MultiCameraConfig`, a mapping ``name -> CameraConfig``
    or a sequence of CameraConfig (unnamed ones become ``camera_<i>``). ``world_ring``: the sim arm's
    world-state ring, given to every sim camera. ``screen_rings``: ``{camera name: ring}`` for sim
    cameras with a screen plane. ``video``: episode video settings (default: from the
    MultiCameraConfig, else defaults). ``preload_video``: start the video writer processes together
    with the cameras (else at the first :meth:`start_recording`): spawning them costs ~1-2 s of both
    cores on a small machine, during which cameras may skip frames, so a recorder should preload.
    """

    def __init__(
        self,
        configs: MultiCameraConfig | Mapping[str, CameraConfig] | Sequence[CameraConfig],
        world_ring: RingBuffer | None = None,
        screen_rings: Mapping[str, RingBuffer] | None = None,
        video: VideoConfig | None = None,
        preload_video: bool = False,
    ):
        cfgs, video_cfg = _as_config_map(configs)
        if not cfgs:
            raise ValueError("MultiCamera needs at least one camera config")
        self.video_config = video or video_cfg
        screen_rings = dict(screen_rings or {})
        unknown = set(screen_rings) - set(cfgs)
        if unknown:
            raise ValueError(f"screen_rings for unknown cameras {sorted(unknown)}; cameras: {list(cfgs)}")
        cfgs = _assign_realsense_serials(cfgs)
        self.cameras: dict[str, Camera] = {}
        try:
            for name, cfg in cfgs.items():
                world = world_ring if cfg.backend == "sim" else None
                self.cameras[name] = Camera(cfg, world, screen_rings.get(name))
        except BaseException:
            self.close()
            raise
        self._recorders: dict[str, Any] = {}
        self._ended: set[str] = set()  # playback cameras whose recording's end was reported
        self._recording: dict[str, Path] | None = None
        self._started = False
        self._preload_video = preload_video

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> None:
        """Start every camera process (in parallel); with ``wait``, return once all are ready.

        If any camera fails to start, all are stopped and the first failure is raised
        (:class:`~robot.process.DeviceProcessError` naming the camera, with its traceback).
        """
        try:
            for cam in self.cameras.values():
                cam.start(wait=False)
            if self._preload_video:
                self._start_recorders()
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self._started = True

    def wait_ready(self) -> None:
        for cam in self.cameras.values():
            cam.wait_ready()

    def stop(self) -> None:
        """Stop recording (finishing the files) and every camera process. Rings stay readable."""
        if self._recording is not None:
            try:
                self.stop_recording()
            except Exception:
                pass
        for rec in self._recorders.values():
            rec.stop()
        self._recorders = {}
        for cam in self.cameras.values():
            cam.stop(wait=False)
        for cam in self.cameras.values():
            if cam._proc is not None and cam._proc.pid is not None:
                cam.join(cam.stop_timeout_s)
        self._started = False

    def close(self) -> None:
        """Stop everything and free every ring. Idempotent."""
        try:
            self.stop()
        finally:
            for cam in self.cameras.values():
                cam.close()

    def check(self) -> None:
        """Raise DeviceProcessError (camera name + traceback) for the first camera or recorder that
        failed or died; the others keep running. Logs (once, as a warning) the end of a replayed
        recording. Call it from the main loop."""
        for cam in self.cameras.values():
            cam.check()
        for rec in self._recorders.values():
            rec.check()
        for name, cam in self.cameras.items():
            if cam.config.backend == "playback" and name not in self._ended and cam.stats()["ended"]:
                self._ended.add(name)
                st = cam.stats()
                log.warning(
                    "camera %s: end of recording %s (%d frames, %d missing from the recording); no frame comes "
                    "after it",
                    name,
                    cam.config.playback.path,
                    st["frames"],
                    st["dropped"],
                )

    def failures(self) -> dict[str, str]:
        """``{camera name: error text}`` of cameras that failed or died (without raising)."""
        out = {}
        for name, cam in self.cameras.items():
            try:
                cam.check()
            except DeviceProcessError as exc:
                out[name] = str(exc)
        return out

    # ------------------------------------------------------------------ reading
    @property
    def names(self) -> list[str]:
        return list(self.cameras)

    def intrinsics(self) -> dict[str, Any]:
        """``{name: CameraIntrinsics}`` (after start)."""
        return {name: cam.intrinsics for name, cam in self.cameras.items()}

    def get_last(self, k: int = 1) -> dict[str, dict[str, np.ndarray]]:
        """The ``k`` newest frames of every camera (oldest first), not aligned; non-blocking."""
        return {name: cam.ring.get_last(k) for name, cam in self.cameras.items()}

    def get_frames(
        self, k: int = 1, dt_s: float | None = None, target_times: Sequence[float] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Time-aligned frames: every camera sampled at the same ``target_times``.

        Default targets: ``k`` times ``dt_s`` apart (default: the first camera's frame period) ending at
        the oldest of the cameras' newest capture times, so every camera has a frame at or before
        every target. Each camera's result holds its ring fields stacked over the targets (the
        newest frame captured at or before each target) plus ``target_time``. Raises LookupError when a
        camera has no frame yet, or when its ring no longer holds one at or before the first target
        (it keeps ``ring_capacity`` frames: another camera lagging by about that long, as a starved
        camera process does on a loaded machine): a frame captured after its target is never returned
        in its place.
        """
        newest = {}
        for name, cam in self.cameras.items():
            last = cam.ring.get_last(1)
            if len(last["counter"]) == 0:
                raise LookupError(f"camera {name} has not delivered a frame yet")
            newest[name] = float(last["capture_time"][0])
        if target_times is None:
            first = next(iter(self.cameras.values())).config
            dt = dt_s if dt_s is not None else 1.0 / first.fps
            t_end = min(newest.values())
            targets = t_end - dt * np.arange(k - 1, -1, -1, dtype=np.float64)
        else:
            targets = np.asarray(target_times, dtype=np.float64)
        earliest = float(targets.min())  # explicit targets need not be sorted
        out = {}
        for name, cam in self.cameras.items():
            span = float(newest[name] - earliest)
            n = min(cam.ring.capacity - 1, max(2, int(math.ceil(span * cam.config.fps)) + 3))
            recs = cam.ring.get_last(n)
            if recs["capture_time"][0] > earliest:
                slowest = min(newest, key=newest.get)
                why = (
                    f"camera {slowest}'s newest frame is {newest[name] - newest[slowest]:.2f} s behind its own"
                    if newest[slowest] < newest[name]
                    else f"the targets reach {span:.2f} s back from its newest frame, "
                    f"further than the frames it holds (its ring keeps {cam.ring.capacity})"
                )
                raise LookupError(
                    f"camera {name} holds no frame captured at or before {earliest:.3f} (its oldest of "
                    f"{len(recs['capture_time'])} is {recs['capture_time'][0] - earliest:.3f} s later): {why}"
                )
            idx = align_indices(recs["capture_time"], targets)
            sel = {key: v[idx] for key, v in recs.items()}
            sel["target_time"] = targets.copy()
            out[name] = sel
        return out

    def stats(self) -> dict[str, dict[str, float]]:
        """Per camera: ``frames``, ``dropped`` (frame_index gaps), ``fps`` (mean delivered),
        ``latency_mean_s``/``latency_std_s``/``latency_max_s`` (receive - capture), ``age_s`` of the newest
        frame, and while/after recording the writer's ``video_frames``, ``video_dropped``,
        ``video_backlog``/``video_max_backlog`` (frames)."""
        out = {}
        for name, cam in self.cameras.items():
            st = cam.stats()
            rec = self._recorders.get(name)
            if rec is not None:
                st.update(rec.stats())
            out[name] = st
        return out

    # ------------------------------------------------------------------ episode video
    def start_recording(self, directory: str | Path, episode: int) -> dict[str, Path]:
        """Record every camera from its next frame on into ``directory/episode_<episode>/<name>.mp4``
        (H.264) plus ``<name>.timestamps.npz`` (per-frame ``frame_index``, ``capture_time``,
        ``receive_time``). Encoding happens in one writer process per camera (started on the first
        call, reused afterwards), never in the capture processes. Returns the mp4 paths."""
        from robot.cameras.video_recorder import episode_dir

        if self._recording is not None:
            raise RuntimeError("already recording; call stop_recording() first")
        out_dir = episode_dir(directory, episode)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._start_recorders()
        paths = {}
        self._record_start = {}
        for name, rec in self._recorders.items():
            paths[name] = out_dir / f"{name}.mp4"
            self._record_start[name] = self.cameras[name].ring.count
            rec.begin(paths[name], self._record_start[name])
        self._recording = paths
        return paths

    def stop_recording(self, timeout_s: float = 60.0) -> dict[str, Path]:
        """Finish the episode's files: every frame received before this call is written (or counted as
        dropped if the writer fell more than a ring behind). Blocks until the files are closed.
        Returns ``{name: mp4 path}``; per-camera results are in :attr:`last_recording`: ``{name: {"path",
        "timestamps" (sidecar path), "frames" (written), "dropped" (lost by a writer that fell more than
        a ring behind), "max_backlog", "start_counter", "end_counter"}}`` (ring counters: the episode
        holds records start_counter .. end_counter - 1)."""
        if self._recording is None:
            raise RuntimeError("not recording")
        ends = {name: self.cameras[name].ring.count for name in self._recorders}
        for name, rec in self._recorders.items():
            rec.request_end(ends[name])
        self.last_recording = {}
        for name, rec in self._recorders.items():
            result = rec.wait_end(timeout_s)
            result.update(start_counter=self._record_start[name], end_counter=ends[name])
            self.last_recording[name] = result
        paths = self._recording
        self._recording = None
        return paths

    def _start_recorders(self) -> None:
        """Start one writer process per camera (once; they serve every later episode)."""
        from robot.cameras.video_recorder import VideoRecorder

        if self._recorders:
            return
        recorders = {
            name: VideoRecorder(cam.ring, name, cam.config.fps, self.video_config)
            for name, cam in self.cameras.items()
        }
        try:
            for rec in recorders.values():
                rec.start(wait=False)
            for rec in recorders.values():
                rec.wait_ready()
        except BaseException:
            for rec in recorders.values():
                rec.stop()
            raise
        self._recorders = recorders

    @property
    def is_recording(self) -> bool:
        return self._recording is not None


def _assign_realsense_serials(cfgs: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
    """RealSense configs without a serial get the connected cameras' serials in sorted order."""
    missing = [n for n, c in cfgs.items() if c.backend == "realsense" and not c.serial]
    if not missing:
        return cfgs
    from robot.cameras.realsense import list_devices

    taken = {c.serial for c in cfgs.values() if c.serial}
    free = sorted(d["serial"] for d in list_devices() if d["serial"] not in taken)
    if len(free) < len(missing):
        raise RuntimeError(
            f"cameras {missing} have no serial and only {len(free)} unassigned RealSense camera(s) are "
            f"connected ({free or 'none'}); connect them or set serial in the config"
        )
    out = dict(cfgs)
    for name, serial in zip(missing, free, strict=False):
        out[name] = cfgs[name].model_copy(update={"serial": serial})
    return out
