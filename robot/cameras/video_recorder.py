"""Episode video: one writer process per camera encodes its ring into H.264 mp4 files (PyAV).

Timing contract: capture never waits for the writer. The writer reads the camera ring with
``get_since`` (readers never block the ring's writer); if encoding or the disk falls more than the
ring's capacity behind, the overwritten frames are skipped and **counted** (``dropped``), never
hidden and never allowed to stall capture. ``backlog`` is how many received frames are not yet
encoded.

Files per camera and episode (see :func:`episode_dir`): ``<name>.mp4`` (H.264, yuv420p, presentation
times = capture times relative to the episode's first frame, 1/90000 s time base) and
``<name>.timestamps.npz`` with one entry per encoded frame: ``frame_index``, ``capture_time``,
``receive_time`` (host monotonic s) and ``ring_counter``; plus ``dropped`` (frames the writer lost).
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.config import VideoConfig
from robot.process import DeviceProcess, DeviceProcessError
from robot.shm.ring_buffer import RingBuffer

TIME_BASE = Fraction(1, 90000)
_S_RECORDING, _S_WRITTEN, _S_DROPPED, _S_BACKLOG, _S_MAX_BACKLOG, _S_ENCODE_S = range(6)


def episode_dir(directory: str | Path, episode: int) -> Path:
    """Where an episode's videos go: ``directory/episode_<episode:06d>``."""
    return Path(directory) / f"episode_{int(episode):06d}"


def sidecar_path(mp4_path: str | Path) -> Path:
    p = Path(mp4_path)
    return p.with_name(p.stem + ".timestamps.npz")


class EpisodeMp4:
    """One open mp4 being written: frames in, presentation times from their capture times (host s);
    ``close()`` renames the ``.part`` file into place and writes the ``.timestamps.npz`` sidecar.
    Used by the writer processes and by ``rig episodes export --video``."""

    def __init__(self, path: Path, width: int, height: int, fps: float, cfg: VideoConfig):
        import av

        self.path = path
        self.tmp_path = path.with_name(path.name + ".part")
        self.container = av.open(str(self.tmp_path), "w", format="mp4")
        self.stream = self.container.add_stream(cfg.codec, rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = TIME_BASE
        if cfg.threads:
            self.stream.codec_context.thread_count = cfg.threads
        if cfg.codec in ("libx264", "h264"):
            self.stream.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        self.t0: float | None = None
        self.last_pts = -1
        self.rows: list[tuple[int, float, float, int]] = []
        self.dropped = 0

    def add(
        self, color: np.ndarray, capture_time: float, receive_time: float, frame_index: int, counter: int
    ) -> None:
        import av

        if self.t0 is None:
            self.t0 = capture_time
        pts = max(int(round((capture_time - self.t0) / TIME_BASE)), self.last_pts + 1)
        self.last_pts = pts
        frame = av.VideoFrame.from_ndarray(color, format="rgb24")
        frame.pts, frame.time_base = pts, TIME_BASE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.rows.append((frame_index, capture_time, receive_time, counter))

    def close(self) -> dict[str, Any]:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        if self.rows:
            self.tmp_path.replace(self.path)  # a crash mid-episode leaves only a .part file
        else:  # no frame came (a very short episode on a starved machine): no mp4, an empty sidecar
            self.tmp_path.unlink(missing_ok=True)
        rows = np.array(self.rows, dtype=np.float64).reshape(-1, 4)
        side = sidecar_path(self.path)
        np.savez(
            side,
            frame_index=rows[:, 0].astype(np.int64),
            capture_time=rows[:, 1],
            receive_time=rows[:, 2],
            ring_counter=rows[:, 3].astype(np.int64),
            dropped=np.int64(self.dropped),
        )
        return {
            "path": str(self.path),
            "timestamps": str(side),
            "frames": len(self.rows),
            "dropped": self.dropped,
        }


class VideoRecorder(DeviceProcess):
    """Writer process for one camera ring (started once, records many episodes).

    Parent API: ``begin(path, start_counter)`` starts an episode at ring record ``start_counter``
    (returns at once); ``request_end(end_counter)`` + ``wait_end(timeout_s)`` finish it after record
    ``end_counter - 1`` and return ``{"path", "timestamps", "frames", "dropped", "max_backlog"}``;
    ``stats()`` gives live ``video_frames``, ``video_dropped``, ``video_backlog``,
    ``video_max_backlog``, ``video_encode_ms`` (mean per frame).
    """

    def __init__(self, ring: RingBuffer, camera_name: str, fps: float, config: VideoConfig | None = None):
        super().__init__(f"video recorder {camera_name}", ready_timeout_s=30.0, stop_timeout_s=30.0)
        self.ring = ring
        self.camera_name = camera_name
        self.fps = float(fps)
        self.config = config or VideoConfig()
        self._cmd_recv, self._cmd_send = self._ctx.Pipe(duplex=False)
        self._res_recv, self._res_send = self._ctx.Pipe(duplex=False)
        self._shared = self._ctx.Array("d", 6, lock=False)

    # ------------------------------------------------------------------ parent side
    def begin(self, path: str | Path, start_counter: int) -> None:
        self._cmd_send.send(("begin", str(path), int(start_counter)))

    def request_end(self, end_counter: int) -> None:
        self._cmd_send.send(("end", int(end_counter)))

    def wait_end(self, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not self._res_recv.poll(0.05):
            self.check()
            if time.monotonic() > deadline:
                raise DeviceProcessError(
                    f"{self.name}: video not finished after {timeout_s:.0f} s (encoder far behind or disk stalled)"
                )
        result = self._res_recv.recv()
        if isinstance(result, str):
            raise DeviceProcessError(f"{self.name}: {result}")
        return result

    def stats(self) -> dict[str, float]:
        s = self._shared
        n = s[_S_WRITTEN]
        return {
            "video_frames": int(n),
            "video_dropped": int(s[_S_DROPPED]),
            "video_backlog": int(s[_S_BACKLOG]),
            "video_max_backlog": int(s[_S_MAX_BACKLOG]),
            "video_encode_ms": 1000 * s[_S_ENCODE_S] / n if n else float("nan"),
        }

    # ------------------------------------------------------------------ child side
    def setup(self) -> None:
        import av  # noqa: F401  (fail at start, not at the first episode, if PyAV is missing)

        if self.config.nice:
            os.nice(self.config.nice)  # capture processes win the CPU; a late writer only drops, counted

        layout = self.ring.layout
        if "color" not in layout:
            raise ValueError(f"{self.name}: ring has no 'color' field")
        self._h, self._w = layout["color"][0][:2]
        self._episode: EpisodeMp4 | None = None
        self._next = 0
        self._end: int | None = None
        self._max_backlog_ep = 0

    def run_loop(self) -> None:
        s = self._shared
        while not self.should_stop():
            if self._cmd_recv.poll(0 if self._episode is not None else 0.01):
                self._command(self._cmd_recv.recv())
                continue
            if self._episode is None:
                continue
            count = self.ring.count
            backlog = count - self._next
            if self._end is not None:
                backlog = min(backlog, self._end - self._next)
            s[_S_BACKLOG] = max(backlog, 0)
            self._max_backlog_ep = max(self._max_backlog_ep, backlog)
            s[_S_MAX_BACKLOG] = max(s[_S_MAX_BACKLOG], backlog)
            if self._end is not None and self._next >= self._end:
                self._finish()
                continue
            if backlog <= 0:
                time.sleep(0.002)
                continue
            self._encode_some()
        if self._episode is not None:  # stopped mid-episode: still close a playable file
            self._end = self._next
            self._finish()

    def _command(self, cmd: tuple) -> None:
        if cmd[0] == "begin":
            if self._episode is not None:
                self._res_send.send("begin while an episode is open")
                return
            path = Path(cmd[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._episode = EpisodeMp4(path, self._w, self._h, self.fps, self.config)
            self._next, self._end, self._max_backlog_ep = cmd[2], None, 0
        elif cmd[0] == "end":
            if self._episode is None:
                self._res_send.send("end without an open episode")
                return
            self._end = cmd[1]

    def _encode_some(self) -> None:
        ep = self._episode
        s = self._shared
        recs = self.ring.get_since(self._next, skip_overwritten=True)
        counters = recs["counter"]
        if len(counters) == 0:
            return
        limit = len(counters) if self._end is None else int(np.searchsorted(counters, self._end))
        lost = int(counters[0]) - self._next
        if self._end is not None:
            lost = min(lost, self._end - self._next)
        if lost > 0:  # the camera lapped us: these frames are gone; say so
            ep.dropped += lost
            s[_S_DROPPED] += lost
        for i in range(limit):
            t = time.perf_counter()
            ep.add(
                recs["color"][i],
                float(recs["capture_time"][i]),
                float(recs["receive_time"][i]),
                int(recs["frame_index"][i]),
                int(counters[i]),
            )
            if self.config.throttle_s:
                time.sleep(self.config.throttle_s)
            s[_S_ENCODE_S] += time.perf_counter() - t
            s[_S_WRITTEN] += 1
            self._next = int(counters[i]) + 1
            if self._cmd_recv.poll():  # stay responsive to "end" while working off a backlog
                break
        else:
            if self._end is not None and limit < len(counters):
                self._next = max(self._next, self._end)  # everything of the episode is handled

    def _finish(self) -> None:
        ep = self._episode
        self._episode = None
        try:
            result = ep.close()
        except Exception as exc:  # report to the parent, keep the process for the next episode
            self._res_send.send(f"could not finish {ep.path}: {exc}")
            return
        result["max_backlog"] = self._max_backlog_ep
        self._shared[_S_BACKLOG] = 0
        self._res_send.send(result)
