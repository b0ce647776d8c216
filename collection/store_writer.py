"""The episode store's background writer: episodes streamed step by step (``EpisodeWriter``) or whole,
written into zarr by one writer thread per store, in the order they were asked for.

Timing contract. zarr's per-call overhead is several ms, so nothing here writes to zarr on the
caller's thread while recording: ``EpisodeWriter.append`` copies one step into an in-memory batch
(microseconds to ~1 ms for 640x480 frames) and, every ``batch_steps`` steps, hands the batch to the
store's single writer thread, which writes whole chunks. ``append`` never blocks on zarr and never
waits for the writer; if the writer falls behind, batches queue up in memory and a warning is
logged. Episodes are written strictly in order, so ``begin_episode()`` may be called while the
previous episode's ``commit(wait=False)`` is still being written.

Measured by ``benchmarks/store_bench.py`` (2-core dev machine, one 640x480 camera plus 3 low-dim
keys): plain zarr, raw, every step appended on the caller's thread: ~9 CPU ms/frame, ~130 fps, and
the caller blocked ~7 ms per step (p99 ~19 ms, idle machine). Through this writer ``append`` costs
~0.1 ms (p50); its p99 is 1-5 ms on an idle machine and tens of ms when the 2 cores are
oversubscribed (GIL and CPU shared with the writer thread and its encoders). The codecs' own cost
is in ``collection/store_codecs.py``.

Durability. A commit writes the episode's data first and its ``meta/episode_ends`` entry last (zarr
writes synchronously, each file through a rename), so a crash at any point leaves the committed
episodes intact; a writer error is latched: every later call raises it. A store still writing at
interpreter exit is closed first, finishing what was queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from collection.store_codecs import (
    CHECKSUM_ATTR,
    CHECKSUM_V2,
    CHECKSUM_V3,
    IMAGECODECS,
    LOW_DIM_CHUNK_STEPS,
    array_codecs,
    low_dim_codec,
    make_image_codec,
)
from collection.store_layout import EpisodeStoreError, KeySpec, StoreState, check_step
from collection.store_meta import resize_rows, write_codecs
from collection.store_reader import EpisodeInfo, episode_timing

if TYPE_CHECKING:
    from collection.episode_store import EpisodeStore

# One logger for the whole store, whichever file speaks.
log = logging.getLogger("collection.episode_store")

DEFAULT_BATCH_STEPS = 8
# Log a warning when this many steps wait for the writer (at 10 Hz: 30 s behind).
BACKLOG_WARN_STEPS = 300

# Stores with a live writer thread; closed at interpreter exit so that a commit(wait=False) still in
# flight is finished rather than lost with the daemon writer thread. This must run before
# concurrent.futures shuts its executors down (zarr encodes through asyncio.to_thread), which happens
# in threading's exit hooks, before atexit: hence threading._register_atexit (what concurrent.futures
# itself uses; hooks run last-registered first).
_LIVE_STORES: weakref.WeakSet[EpisodeStore] = weakref.WeakSet()


def _close_live_stores() -> None:
    for store in list(_LIVE_STORES):
        store.close()


threading._register_atexit(_close_live_stores)  # type: ignore[attr-defined]


class Job:
    """One unit of work for the writer thread; ``future`` carries its result or exception. ``kind``
    names the store's ``_do_<kind>`` method that runs it."""

    __slots__ = ("kind", "token", "arrays", "length", "attrs", "future")

    def __init__(
        self,
        kind: str,
        token: int = -1,
        arrays: dict[str, np.ndarray] | None = None,
        length: int = 0,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.token = token
        self.arrays = arrays
        self.length = length
        self.attrs = attrs
        self.future: Future[Any] = Future()


class EpisodeWriter:
    """Streams one episode into the store, one step at a time. Get one from ``store.begin_episode()``.

    Used from one thread. ``append`` is cheap and never touches zarr; ``commit`` makes the episode
    visible once all its data is written; ``discard`` drops it.
    """

    def __init__(self, store: EpisodeStore, token: int, batch_steps: int) -> None:
        self._store = store
        self._token = token
        self._batch_steps = batch_steps
        self._buf: dict[str, np.ndarray] | None = None
        self._n_buf = 0
        self._n_steps = 0
        self._open = True
        self._timestamps: list[float] = []  # for ``timing`` while the episode is still being written

    @property
    def n_steps(self) -> int:
        """Steps appended so far."""
        return self._n_steps

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def timing(self) -> tuple[float, int | None]:
        """(duration_s, late_steps) of the steps appended so far, as ``EpisodeInfo`` will say."""
        return episode_timing(np.asarray(self._timestamps), self._store.dt_s)

    def append(self, step: Mapping[str, Any]) -> None:
        """Add one step: ``{key: array}`` without the leading time axis (``timestamp`` a scalar).

        Copies the arrays (the caller may reuse its buffers). Never blocks on zarr: every
        ``batch_steps`` steps the batch is queued for the writer thread. The first step of the first
        episode of an empty store declares the key set. Raises ValueError on a wrong key set, shape or
        dtype, and EpisodeStoreError if the writer thread has failed.
        """
        self._check_open()
        self._store._raise_writer_error()
        schema = self._store._schema_for_step(step)
        if self._buf is None:
            self._buf = {
                k: np.empty((self._batch_steps, *spec.step_shape), dtype=spec.dtype)
                for k, spec in schema.items()
            }
        i = self._n_buf
        for key, value in step.items():
            self._buf[key][i] = value
        if "timestamp" in step:
            self._timestamps.append(float(self._buf["timestamp"][i].flat[0]))
        self._n_buf += 1
        self._n_steps += 1
        if self._n_buf == self._batch_steps:
            self._hand_over()

    def flush(self, wait: bool = True) -> None:
        """Hand the partial batch to the writer; with ``wait``, block until everything appended so far
        is written to the data arrays (still invisible until ``commit``)."""
        self._check_open()
        self._hand_over()
        job = self._store._submit(Job("barrier"))
        if wait:
            job.future.result()

    def commit(
        self, wait: bool = True, attrs: Mapping[str, Any] | None = None
    ) -> EpisodeInfo | Future[EpisodeInfo]:
        """Finish the episode: its data is written, then its ``meta/episode_ends`` entry, then
        ``attrs`` (JSON-able, e.g. the latencies seen while recording; see ``episode_attrs``).

        With ``wait`` (default) blocks until the episode is durable (survives a crash of this process)
        and returns its EpisodeInfo; otherwise returns a Future of it at once, and
        ``store.begin_episode()`` may be called right away. Raises ValueError for an empty episode
        (discard it instead).
        """
        self._check_open()
        if self._n_steps == 0:
            raise ValueError("cannot commit an episode with no steps; call discard() instead")
        self._hand_over()
        self._open = False
        job = self._store._submit(Job("commit", token=self._token, length=self._n_steps, attrs=attrs))
        self._store._episode_closed(self)
        return job.future.result() if wait else job.future

    def discard(self, wait: bool = True) -> None:
        """Drop the episode: what was written of it is truncated away; it never becomes visible."""
        self._check_open()
        self._open = False
        self._buf = None
        self._n_buf = 0
        job = self._store._submit(Job("discard", token=self._token))
        self._store._episode_closed(self)
        if wait:
            job.future.result()

    def _hand_over(self) -> None:
        if self._n_buf == 0 or self._buf is None:
            return
        n = self._n_buf
        arrays = self._buf if n == self._batch_steps else {k: v[:n] for k, v in self._buf.items()}
        self._buf = None  # the writer owns the old buffer now
        self._n_buf = 0
        self._store._submit(Job("batch", token=self._token, arrays=arrays, length=n))

    def _check_open(self) -> None:
        if not self._open:
            raise EpisodeStoreError("this episode was already committed or discarded; begin a new one")


class StoreWriting(StoreState):
    """The writing half of ``EpisodeStore``: the writer thread and the jobs it runs. ``EpisodeStore``
    sets the store's state when it opens it and calls ``_init_writer`` for the writer's own."""

    n_steps: int  # StoreReading's
    _set_rows: Callable[[int], None]  # EpisodeStore's
    _set_episode_attrs: Callable[[int, dict[str, Any] | None], None]  # StoreAttributes'

    def _init_writer(self) -> None:
        # Writer state (writer thread only, except where noted).
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._w_token = -1
        self._w_base = 0
        self._w_written = 0
        # Steps queued / written: each counter has one writing thread, so no lock is needed.
        self._queued_steps = 0
        self._written_steps = 0
        self._backlog_warned = False
        self._next_token = 0
        self._open_episode: EpisodeWriter | None = None

    def begin_episode(self) -> EpisodeWriter:
        """Start streaming a new episode. Only one episode may be open (not yet committed or
        discarded) at a time; the previous one's commit may still be in flight."""
        self._check_writable()
        self._raise_writer_error()
        if self._open_episode is not None and self._open_episode.is_open:
            raise EpisodeStoreError("an episode is already open; commit() or discard() it first")
        ep = EpisodeWriter(self, self._next_token, self._batch_steps)  # type: ignore[arg-type]
        self._next_token += 1
        self._open_episode = ep
        return ep

    def add_episode(
        self, arrays: Mapping[str, Any], wait: bool = True, attrs: Mapping[str, Any] | None = None
    ) -> EpisodeInfo | Future[EpisodeInfo]:
        """Append a whole episode ``{key: (T, ...) array}``; atomic (data first, then episode_ends,
        then ``attrs`` as ``commit`` writes them).

        Gives the same stored data as streaming the same steps. Blocks until durable and returns its
        EpisodeInfo, or with ``wait=False`` returns a Future of it.
        """
        self._check_writable()
        if self._open_episode is not None and self._open_episode.is_open:
            raise EpisodeStoreError("an episode is being streamed; commit() or discard() it first")
        self._raise_writer_error()
        lengths = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in arrays.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ValueError(f"episode arrays must share their first (time) axis; got lengths {lengths}")
        length = int(next(iter(lengths.values())))
        if length == 0:
            raise ValueError("cannot add an episode with no steps")
        first = {k: np.asarray(v)[0] for k, v in arrays.items()}
        schema = self._schema_for_step(first)
        # Copy when the caller gets control back before the write (it may reuse its arrays).
        batch = {
            k: np.array(arrays[k], dtype=spec.dtype, copy=None if wait else True)
            for k, spec in schema.items()
        }
        token = self._next_token
        self._next_token += 1
        self._submit(Job("batch", token=token, arrays=batch, length=length))
        job = self._submit(Job("commit", token=token, length=length, attrs=attrs))
        return job.future.result() if wait else job.future

    def wait(self) -> None:
        """Block until every write asked for so far is done."""
        if self._thread is not None:
            self._submit(Job("barrier")).future.result()

    @property
    def pending_steps(self) -> int:
        """Steps queued for the writer thread and not yet written."""
        return self._queued_steps - self._written_steps

    def _stop_writer(self) -> None:
        """Discard an open episode (logged), finish the queued writes and end the writer thread."""
        if self._open_episode is not None and self._open_episode.is_open:
            log.warning(
                "episode store %s: closing with an open episode of %d steps; it is discarded",
                self.path,
                self._open_episode.n_steps,
            )
            try:
                self._open_episode.discard(wait=False)
            except EpisodeStoreError:
                pass
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _check_writable(self) -> None:
        if self._closed:
            raise EpisodeStoreError(f"episode store {self.path} is closed")
        if self.mode == "r":
            raise EpisodeStoreError(f"episode store {self.path} is open read only; open it with mode='a'")

    def _raise_writer_error(self) -> None:
        if self._writer_error is not None:
            raise EpisodeStoreError(
                f"the writer of episode store {self.path} failed ({self._writer_error!r}); nothing more can "
                "be written. Check free disk space and permissions, then reopen the store (unfinished data "
                "is dropped on open)."
            ) from self._writer_error

    def _episode_closed(self, ep: EpisodeWriter) -> None:
        if self._open_episode is ep:
            self._open_episode = None

    def _schema_for_step(self, step: Mapping[str, Any]) -> dict[str, KeySpec]:
        """Check one step against the declared keys (declaring them if none yet). Raises ValueError."""
        self._schema = check_step(self._schema, step)
        return self._schema

    def _submit(self, job: Job) -> Job:
        if self._closed:
            raise EpisodeStoreError(f"episode store {self.path} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer_loop, name=f"episode-writer:{self.path.name}")
            self._thread.daemon = True  # a crash of the process is survivable by design
            self._thread.start()
            _LIVE_STORES.add(self)  # type: ignore[arg-type]
        if job.kind == "batch":
            self._queued_steps += job.length
            if self.pending_steps > BACKLOG_WARN_STEPS and not self._backlog_warned:
                self._backlog_warned = True
                log.warning(
                    "episode store %s: the writer is %d steps behind; the image codec %r may be too slow "
                    "for this frame rate and camera count (memory grows until it catches up)",
                    self.path,
                    self.pending_steps,
                    self.image_codec,
                )
        self._queue.put(job)
        return job

    def _writer_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.kind == "batch":
                self._written_steps += job.length
            if self._writer_error is not None:
                job.future.set_exception(
                    EpisodeStoreError(
                        f"episode store {self.path}: writer failed earlier: {self._writer_error!r}"
                    )
                )
                continue
            try:
                with self._lock:
                    result = getattr(self, f"_do_{job.kind}")(job)
            except BaseException as exc:  # noqa: BLE001 - reported through the future and later calls
                self._writer_error = exc
                log.error("episode store %s: writing failed: %r", self.path, exc)
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
                if self.pending_steps < BACKLOG_WARN_STEPS // 2:
                    self._backlog_warned = False

    def _ensure_arrays(self) -> None:
        assert self._schema is not None
        data = self._group["data"]
        for k, spec in self._schema.items():
            if k in self._arrays:
                continue
            if spec.is_image:
                chunks = (1, *spec.step_shape)
                codec = make_image_codec(self.image_codec)
            else:
                step_bytes = max(1, int(np.prod(spec.step_shape, dtype=np.int64)) * spec.dtype.itemsize)
                chunks = (max(1, min(LOW_DIM_CHUNK_STEPS, (4 << 20) // step_bytes)), *spec.step_shape)
                codec = low_dim_codec()
            fmt = self._group.metadata.zarr_format
            self._arrays[k] = data.create_array(
                k,
                shape=(self.n_steps, *spec.step_shape),
                chunks=chunks,
                dtype=spec.dtype,
                fill_value=0,
                **array_codecs(fmt, codec, self.checksums),
            )
            if spec.is_image and self.image_codec in IMAGECODECS:
                cls, params = IMAGECODECS[self.image_codec]
                image = {"id": cls.codec_id, **params}
                if self.checksums:
                    write_codecs(self._group, self._arrays[k], [image], {"id": CHECKSUM_V2})
                else:
                    write_codecs(self._group, self._arrays[k], None, image)
                self._arrays[k] = self._group[self._arrays[k].path]
            if self.checksums and CHECKSUM_ATTR not in self._group.attrs:
                self._group.attrs[CHECKSUM_ATTR] = CHECKSUM_V2 if fmt == 2 else CHECKSUM_V3

    def _do_barrier(self, job: Job) -> None:
        return None

    def _do_batch(self, job: Job) -> None:
        if job.token != self._w_token:
            self._w_token = job.token
            self._w_base = self.n_steps
            self._w_written = 0
        self._ensure_arrays()
        pos = self._w_base + self._w_written
        n = job.length
        assert job.arrays is not None
        self._set_rows(pos + n)
        for k, arr in self._arrays.items():
            # Every chunk is stored, even one that equals the fill value (zarr's default skips those):
            # `rig episodes check` then knows a missing chunk file is damage, not a black frame.
            arr.with_config({"write_empty_chunks": True})[pos : pos + n] = job.arrays[k]
        self._w_written += n

    def _do_commit(self, job: Job) -> EpisodeInfo:
        if job.token != self._w_token or self._w_written != job.length:
            raise EpisodeStoreError(
                f"internal: commit of {job.length} steps but {self._w_written} were written for this episode"
            )
        start = self._w_base
        end = start + job.length
        self._set_rows(end)
        # Data is on disk (zarr writes synchronously); only now does the episode become visible.
        e = len(self._ends)
        self._ee = resize_rows(self._group, self._ee, e + 1)
        self._ee.with_config({"write_empty_chunks": True})[e] = end
        self._ends.append(end)
        self._w_token = -1
        if job.attrs is not None:
            self._set_episode_attrs(e, dict(job.attrs))
        timing: tuple[float, int | None] = (float("nan"), None)
        if "timestamp" in self._arrays:
            timing = episode_timing(self._arrays["timestamp"][start:end], self.dt_s)
        return EpisodeInfo(e, start, end, end - start, *timing)

    def _do_discard(self, job: Job) -> None:
        if job.token == self._w_token:
            self._w_token = -1
        self._set_rows(self.n_steps)
