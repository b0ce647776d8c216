"""Episode store: recorded demonstrations as one zarr group in the Diffusion Policy reference layout.

Layout (readable by the Diffusion Policy ``ReplayBuffer`` and written by it, so reference datasets
load here too)::

    <store>/data/<key>          (T, ...) arrays, all episodes concatenated along axis 0
    <store>/data/camera_<i>     (T, H, W, 3) uint8, one frame per chunk, image codec
    <store>/data/timestamp      (T,) host monotonic seconds of each step
    <store>/meta/episode_ends   (E,) int64, exclusive end index of each episode

The key set is free: whatever keys the first episode carries (``camera_<i>``, ``robot_eef_pose``,
``robot_joint``, ``action``, ``timestamp``, ...) are declared then, and every later episode must carry
the same keys with the same per-step shapes. A key whose steps are uint8 images (H, W, C) with C in
{1, 3, 4} is stored one frame per chunk with the image codec; every other key is stored with blosc
zstd in chunks of up to 1024 steps.

Crash safety. An episode becomes visible only when its ``meta/episode_ends`` entry is written, after
all its data is written. zarr's local store writes every chunk and metadata file to a temporary file
and renames it into place, so a killed process never leaves a torn file. A crash (even SIGKILL) in
the middle of episode N+1 therefore leaves N intact episodes plus trailing data past
``episode_ends[-1]``; opening the store in ``"a"`` mode truncates that trailing data and logs a
warning saying how many steps were dropped (``store.dropped_steps``). Durable means durable against
a crash of the process; against power loss only with ``fsync`` at the OS level (not done here).
One writer at a time: modes ``"a"``/``"w"`` take an exclusive ``flock`` on the store directory (the
kernel drops it when the process dies); a second writer gets EpisodeStoreError, readers are free.

Timing contract. zarr's per-call overhead is several ms, so nothing here writes to zarr on the
caller's thread while recording: ``EpisodeWriter.append`` copies one step into an in-memory batch
(microseconds to ~1 ms for 640x480 frames) and, every ``batch_steps`` steps, hands the batch to the
store's single writer thread, which writes whole chunks. ``append`` never blocks on zarr and never
waits for the writer; if the writer falls behind, batches queue up in memory and a warning is
logged. Episodes are written strictly in order, so ``begin_episode()`` may be called while the
previous episode's ``commit(wait=False)`` is still being written.

Image codec (``image_codec=``), measured by ``benchmarks/store_bench.py`` through this writer on the
2-core dev machine with rendered-looking 640x480 frames (gradients, moving shapes, sensor noise of
std 2 levels), one camera plus 3 low-dim keys. CPU ms/frame is process CPU time (all threads) per
frame, stable under load; write fps is wall clock on an idle-ish machine and halves under load:

===================  ====================================  ========  ===========  =========  =======
name                 codec                                 kB/frame  CPU ms/fr    write fps  PSNR dB
===================  ====================================  ========  ===========  =========  =======
``jpegxl`` (default) JPEG-XL lossy, distance 1.0, effort 3      8          10        ~125      40.6
``jpegxl_lossless``  JPEG-XL lossless, effort 1               447           4.4      ~200      exact
``jpeg2k``           JPEG 2000 level 50 (the reference's)     197          53         ~20      47.1
``blosc``            blosc zstd-3 bitshuffle                  617           6.6      ~145      exact
``raw``              uncompressed                             922           3.0      ~330      exact
===================  ====================================  ========  ===========  =========  =======

Baseline in the same run: plain zarr, raw, every step appended on the caller's thread: ~9 CPU
ms/frame, ~130 fps, and the caller blocked ~7 ms per step (p99 ~19 ms, idle machine). Through this
writer ``append`` costs ~0.1 ms (p50); its p99 is 1-5 ms on an idle machine and tens of ms when the
2 cores are oversubscribed (GIL and CPU shared with the writer thread and its encoders).

The default is the smallest codec whose CPU cost lets one core write >= 60 frames/s at 640x480 (3x
headroom over two cameras recorded at the 10 Hz control rate) with PSNR >= 38 dB: JPEG-XL lossy,
~110x smaller than raw (JPEG 2000 costs 5x too much CPU to record live). Use ``jpegxl_lossless``
where exact pixels matter.

The JPEG-XL and JPEG 2000 codecs plug into zarr only in zarr format 2
(``imagecodecs.numcodecs.register_codecs()``), so new stores are zarr format 2, like the reference's.
Stores in zarr format 3 (for example built by plain ``zarr`` with default codecs) are read and
appended to with their own codecs.

Reference compatibility. The metadata this store writes is read by the reference's environment
(zarr 2, imagecodecs from 2022): arrays record only the codec parameters set here, and existing
metadata is changed only in ``shape`` (``collection/store_meta.py``). ``compat="reference"`` (collect
config ``compat: reference``) also picks the reference's image codec, JPEG 2000.
``tests/collection/test_reference_compat.py`` reads our stores the way the reference does.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import imagecodecs.numcodecs
import numcodecs
import numpy as np
import zarr

from collection.store_meta import resize_rows, write_codecs

log = logging.getLogger(__name__)


def register_image_codecs() -> None:
    """Register imagecodecs_jpegxl / imagecodecs_jpeg2k / ... with numcodecs, so that zarr format 2 stores
    written with them (ours, and the Diffusion Policy reference datasets) open. Silent: imagecodecs
    prints one "already registered" line per codec (~70) when they were registered before, e.g. by
    the user's own ``register_codecs()`` call."""
    imagecodecs.numcodecs.register_codecs(verbose=False)


register_image_codecs()

DEFAULT_IMAGE_CODEC = "jpegxl"
IMAGE_CODECS: tuple[str, ...] = ("jpegxl", "jpegxl_lossless", "jpeg2k", "blosc", "raw")
DEFAULT_BATCH_STEPS = 8
LOW_DIM_CHUNK_STEPS = 1024
# Log a warning when this many steps wait for the writer (at 10 Hz: 30 s behind).
BACKLOG_WARN_STEPS = 300

Mode = Literal["r", "a", "w"]
# ``compat``: None, or "reference" for stores the Diffusion Policy reference's reader opens.
COMPAT_MODES: tuple[str | None, ...] = (None, "reference")
REFERENCE_IMAGE_CODEC = "jpeg2k"

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


def validate_layout(path: Any, ends: list[int], lengths: Mapping[str, int]) -> int:
    """How many ``episode_ends`` entries are valid; EpisodeStoreError for anything but a crash's leftovers.

    The documented crash case (the only one repaired, and only when opening for append): valid,
    strictly increasing ends, then at most one trailing fill value (0) from a crash between resizing
    ``episode_ends`` and writing its entry, and rows beyond the last end in the data arrays. Anything
    else (ends that go down, ends past the data, arrays of different lengths under the episodes) is
    reported, naming the store, the array and what is wrong, and nothing is changed.
    """
    hint = f"Run `rig episodes check {path}` for a full report."
    n_valid = len(ends)
    if ends and ends[-1] == 0 and all(e > 0 for e in ends[:-1]):
        n_valid -= 1  # a crash's fill value
    prev = 0
    for i, e in enumerate(ends[:n_valid]):
        if e <= prev:
            raise EpisodeStoreError(
                f"episode store {path}: meta/episode_ends is not increasing at entry {i} "
                f"({prev} then {e}): episodes would overlap. {hint}"
            )
        prev = e
    n_steps = ends[n_valid - 1] if n_valid else 0
    for name, n in lengths.items():
        if n < n_steps:
            raise EpisodeStoreError(
                f"episode store {path}: array data/{name} has {n} rows, but meta/episode_ends says the "
                f"episodes end at step {n_steps}. {hint}"
            )
    return n_valid


# The imagecodecs codecs and the parameters we set; the store's metadata records exactly these
# (store_meta.write_compressor), which every imagecodecs version reads.
_IMAGECODECS: dict[str, tuple[Any, dict[str, Any]]] = {
    "jpegxl": (imagecodecs.numcodecs.Jpegxl, {"distance": 1.0, "effort": 3, "lossless": False}),
    "jpegxl_lossless": (imagecodecs.numcodecs.Jpegxl, {"lossless": True, "effort": 1}),
    "jpeg2k": (imagecodecs.numcodecs.Jpeg2k, {"level": 50}),
}


def open_root_readonly(path: str | Path) -> zarr.Group:
    """The one read-only opener of an episode store's root group: a ``.zarr`` directory or a zipped
    store (``.zarr.zip``, as the reference distributes its datasets). zarr's errors pass through."""
    path = Path(path)
    store: Any = zarr.storage.ZipStore(path, mode="r") if path.suffix == ".zip" else str(path)
    return zarr.open_group(store, mode="r")


def make_image_codec(name: str) -> Any:
    """The numcodecs codec object for an image codec name (None for ``raw``). Raises ValueError."""
    if name in _IMAGECODECS:
        cls, params = _IMAGECODECS[name]
        return cls(**params)
    if name == "blosc":
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "raw":
        return None
    raise ValueError(f"unknown image codec {name!r}; choose one of {', '.join(IMAGE_CODECS)}")


def _low_dim_codec() -> Any:
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


# The root attribute that says the store's arrays carry checksums (written with the first such
# array): ``rig episodes check`` then requires the root attributes, which hold ``dt_s`` too.
CHECKSUM_ATTR = "checksums"
CHECKSUM_V2 = "crc32"  # numcodecs CRC32: the compressor of every array (zarr format 2)
CHECKSUM_V3 = "crc32c"  # zarr's crc32c codec: the last bytes-to-bytes codec (zarr format 3)


def array_codecs(zarr_format: int, codec: Any, checksums: bool) -> dict[str, Any]:
    """``create_array`` keyword arguments for an array compressed with ``codec`` (a numcodecs codec
    or None), with a checksum of every stored chunk when ``checksums``.

    Format 2 has one compressor after the filters: the codec becomes the (only) filter and numcodecs'
    CRC32 the compressor, so the checksum covers the bytes on disk and a flipped one is an error on
    read (``RuntimeError: Stored and computed crc32 checksum do not match``), not a changed value.
    Format 3: zarr's ``crc32c`` codec after the compressor.

    Cost, measured by ``benchmarks/collect_bench.py`` (sim rig, 2 cameras 640x480, an 85-step
    episode, with and without in the same run, CPU s of the process on the shared 2-core machine):
    saving 2.05 vs 1.99 CPU s (+3 %), training samples per CPU s 19.8 vs 20.1 (-2 %, within the
    run-to-run spread), dataset samples 28.0 vs 27.8; ``rig train``'s verification of every checksum
    before it starts 0.07 CPU s (0.015 without checksums, which reads only the low-dim arrays)."""
    if not checksums:
        return {"compressors": codec}
    if zarr_format == 2:
        return {"filters": [codec] if codec is not None else None, "compressors": numcodecs.CRC32()}
    from zarr.codecs import BloscCodec, Crc32cCodec

    if isinstance(codec, numcodecs.Blosc):
        cfg = codec.get_config()
        codec = BloscCodec(
            cname=cfg["cname"],
            clevel=cfg["clevel"],
            shuffle="shuffle" if cfg["shuffle"] == 1 else "bitshuffle",
        )
    return {"compressors": [codec, Crc32cCodec()] if codec is not None else [Crc32cCodec()]}


def is_image_step(step_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether steps of this shape/dtype are stored as images (one frame per chunk, image codec)."""
    return dtype == np.uint8 and len(step_shape) == 3 and step_shape[-1] in (1, 3, 4)


@dataclass(frozen=True)
class EpisodeInfo:
    """One committed episode: steps ``[start, end)`` of every ``data/<key>`` array."""

    index: int
    start: int
    end: int
    length: int
    duration_s: float  # timestamp[end-1] - timestamp[start]; NaN without a ``timestamp`` key
    late_steps: int | None = None  # steps later than LATE_FACTOR * dt_s after the previous; None: no dt_s


# A step is late when it follows the previous one by more than this many periods.
LATE_FACTOR = 1.5


def episode_timing(ts: np.ndarray, dt_s: float | None) -> tuple[float, int | None]:
    """(duration_s, late_steps) of one episode's timestamps: the one definition the store, ``rig
    collect`` and ``rig episodes list`` print."""
    ts = np.asarray(ts, dtype=np.float64).reshape(len(ts), -1)[:, 0]
    if len(ts) == 0:
        return float("nan"), None
    late = None if dt_s is None else int(np.count_nonzero(np.diff(ts) > LATE_FACTOR * dt_s))
    return float(ts[-1] - ts[0]), late


@dataclass(frozen=True)
class _KeySpec:
    step_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_image(self) -> bool:
        return is_image_step(self.step_shape, self.dtype)


class EpisodeStoreError(RuntimeError):
    """The store cannot do what was asked (read-only, writer failed, not an episode store, ...)."""


class _Job:
    """One unit of work for the writer thread; ``future`` carries its result or exception."""

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
        job = self._store._submit(_Job("barrier"))
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
        job = self._store._submit(_Job("commit", token=self._token, length=self._n_steps, attrs=attrs))
        self._store._episode_closed(self)
        return job.future.result() if wait else job.future

    def discard(self, wait: bool = True) -> None:
        """Drop the episode: what was written of it is truncated away; it never becomes visible."""
        self._check_open()
        self._open = False
        self._buf = None
        self._n_buf = 0
        job = self._store._submit(_Job("discard", token=self._token))
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
        self._store._submit(_Job("batch", token=self._token, arrays=arrays, length=n))

    def _check_open(self) -> None:
        if not self._open:
            raise EpisodeStoreError("this episode was already committed or discarded; begin a new one")


class EpisodeStore:
    """A zarr episode store. Open with ``EpisodeStore.open(path, mode)``; use as a context manager.

    Reads (``episodes``, ``get_episode``) run on the caller's thread; every write runs on one writer
    thread, in the order it was asked for. ``n_episodes`` / ``n_steps`` count committed episodes.
    """

    def __init__(
        self,
        path: str | Path,
        mode: Mode,
        image_codec: str,
        batch_steps: int,
        compat: str | None = None,
        dt_s: float | None = None,
        action_time: str | None = None,
        checksums: bool = True,
    ) -> None:
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', got {mode!r}")
        if batch_steps < 1:
            raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
        make_image_codec(image_codec)  # validate the name early
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
        if compat == "reference":
            image_codec = REFERENCE_IMAGE_CODEC
        self.path = Path(path)
        self.mode: Mode = mode
        self.image_codec = image_codec
        self.checksums = checksums
        self._batch_steps = batch_steps
        self.dropped_steps = 0
        self._lock = threading.RLock()  # guards zarr metadata (shapes) between reader and writer
        self._lock_fd: int | None = None  # flock on the store directory while open for writing
        self._schema: dict[str, _KeySpec] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._ends: list[int] = []
        try:
            self._group = self._open_group()
            self._load()
            self.dt_s = self._check_dt_s(dt_s)
            self._check_action_time(action_time)
        except BaseException:
            self._release_writer_lock()
            raise
        # Writer state (writer thread only, except where noted).
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
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
        self._closed = False

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | Path,
        mode: Mode = "a",
        image_codec: str = DEFAULT_IMAGE_CODEC,
        batch_steps: int = DEFAULT_BATCH_STEPS,
        compat: str | None = None,
        dt_s: float | None = None,
        action_time: str | None = None,
        checksums: bool = True,
    ) -> EpisodeStore:
        """Open a store directory.

        ``mode``: ``"r"`` read only (trailing unfinished data is ignored, not removed); ``"a"`` read
        and append, created if missing, trailing data left by a crash truncated (with a logged
        warning and ``store.dropped_steps`` set); ``"w"`` create, deleting any existing store.
        ``image_codec`` applies to image arrays this store creates (see the module docstring);
        existing arrays keep their codecs. ``batch_steps``: steps per write handed to the writer.
        A path ending in ``.zip`` (a zipped reference dataset) opens read only. ``compat="reference"``:
        image arrays this store creates use the reference's codec (JPEG 2000), whatever ``image_codec``
        says, so that the Diffusion Policy reference's reader opens the store. ``dt_s``: the rig's step
        period, recorded in the store's attributes (``dt_s``) by the first writer that gives it; a
        different period for a store that has one is an EpisodeStoreError (one store, one rate).
        ``action_time``: the writer's action-time convention (:mod:`collection.action_time`), recorded
        in the store's attributes (``action_time``) when the store has no episodes yet; appending
        under another convention (or to a legacy store holding episodes without one) is an
        EpisodeStoreError (one store, one meaning of an action's time).
        ``checksums``: arrays this store creates carry a CRC32 of every chunk (``array_codecs``);
        existing arrays keep their codecs. False only to measure their cost.
        """
        return cls(path, mode, image_codec, batch_steps, compat, dt_s, action_time, checksums)

    def _check_action_time(self, convention: str | None) -> None:
        from collection import action_time

        stored = self._group.attrs.get(action_time.ATTR)
        if convention is None or self.mode == "r" or stored == convention:
            return
        if stored is None and not self._ends:
            self._group.attrs[action_time.ATTR] = convention
            return
        held = f"the {stored!r} rule" if stored is not None else "the legacy rule (no action_time attribute)"
        raise EpisodeStoreError(
            f"episode store {self.path} holds actions recorded under {held}, this writer records "
            f"{convention!r}; record into a new store, or convert this one first (`rig episodes "
            "convert-time`)"
        )

    @property
    def action_time(self) -> str | None:
        """The store's action-time convention (``action_time`` attribute; None: legacy)."""
        value = self._group.attrs.get("action_time")
        return None if value is None else str(value)

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's root attributes (a copy)."""
        return dict(self._group.attrs)

    def _check_dt_s(self, dt_s: float | None) -> float | None:
        stored = self._group.attrs.get("dt_s")
        if dt_s is None or self.mode == "r":
            return None if stored is None else float(stored)
        if stored is None:
            self._group.attrs["dt_s"] = float(dt_s)
            return float(dt_s)
        if abs(float(stored) - dt_s) > 1e-9:
            raise EpisodeStoreError(
                f"episode store {self.path} was recorded at dt_s={stored} s, this rig runs at {dt_s} s; "
                "record into a new store (one store, one step period)"
            )
        return float(stored)

    @property
    def next_seed(self) -> int | None:
        """The sim world seed the next recorded episode takes (``next_seed`` in the store's attributes,
        kept by ``rig collect`` so that appending continues the seeds instead of repeating worlds)."""
        value = self._group.attrs.get("next_seed")
        return None if value is None else int(value)

    @next_seed.setter
    def next_seed(self, seed: int) -> None:
        self._check_writable()
        self._group.attrs["next_seed"] = int(seed)

    def _open_group(self) -> zarr.Group:
        if self.path.suffix == ".zip":
            if self.mode != "r":
                raise EpisodeStoreError(f"{self.path}: zipped stores open read only (mode='r')")
            return open_root_readonly(self.path)
        if self.mode == "w":
            if self.path.exists() and not self._looks_like_zarr(self.path):
                # mode "w" deletes the directory: never do that to something that is not a store
                raise EpisodeStoreError(
                    f"{self.path} exists and is not a zarr store; refusing to overwrite it (mode='w'). "
                    "Choose a new path or delete it yourself."
                )
            if self.path.exists():
                self._acquire_writer_lock()  # never wipe a store another process is writing
            root = self._create_group()
            self._acquire_writer_lock()  # the wipe made a new directory
            return root
        if not self.path.exists():
            if self.mode == "r":
                raise FileNotFoundError(f"no episode store at {self.path}")
            root = self._create_group()
            self._acquire_writer_lock()
            return root
        if self.mode == "a" and self.path.is_dir():
            self._acquire_writer_lock()
        try:
            return zarr.open_group(self.path, mode="r" if self.mode == "r" else "r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise EpisodeStoreError(
                f"{self.path} is not a zarr episode store (expected a zarr group with data/ and "
                "meta/episode_ends)"
            ) from exc

    def _acquire_writer_lock(self) -> None:
        """One writer per store: an exclusive flock on the store directory, released by close() or by
        the kernel when the process dies (so a SIGKILLed collector never leaves a stale lock)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EpisodeStoreError(
                f"episode store {self.path} is already open for writing (by another process, e.g. a running "
                "'rig collect', or another EpisodeStore in this one); close that first, or open with mode='r'"
            ) from None
        self._release_writer_lock()
        self._lock_fd = fd

    def _release_writer_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the fd drops the flock
            self._lock_fd = None

    @staticmethod
    def _looks_like_zarr(path: Path) -> bool:
        return path.is_dir() and any((path / name).is_file() for name in (".zgroup", "zarr.json"))

    def _create_group(self) -> zarr.Group:
        root = zarr.open_group(self.path, mode="w", zarr_format=2)
        root.create_group("data")
        meta = root.create_group("meta")
        ee = meta.create_array(
            "episode_ends",
            shape=(0,),
            chunks=(4096,),
            dtype="int64",
            fill_value=0,
            **array_codecs(2, None, self.checksums),
        )
        if self.checksums:
            write_codecs(root, ee, None, {"id": CHECKSUM_V2})
            root.attrs[CHECKSUM_ATTR] = CHECKSUM_V2
        return root

    def _load(self) -> None:
        """Read the schema and episode ends; in "a" mode repair what a crash left behind."""
        root = self._group
        if "meta" not in root or "episode_ends" not in root["meta"] or "data" not in root:
            raise EpisodeStoreError(
                f"{self.path} is not an episode store: it lacks data/ or meta/episode_ends. "
                "Check the path (it should point at the .zarr directory)."
            )
        self._ee: zarr.Array = root["meta"]["episode_ends"]
        data = root["data"]
        self._arrays = {name: arr for name, arr in data.arrays()}
        ends = (
            [int(e) for e in self._read(self._ee, slice(None), "meta/episode_ends")]
            if self._ee.shape[0]
            else []
        )
        lengths = {name: a.shape[0] for name, a in self._arrays.items()}
        n_valid = validate_layout(self.path, ends, lengths)
        max_len = max(lengths.values()) if lengths else 0
        self._ends = ends[:n_valid]
        n_steps = self._ends[-1] if self._ends else 0
        bad_ends = len(ends) - n_valid
        self.dropped_steps = max_len - n_steps
        if self._arrays:
            self._schema = {
                k: _KeySpec(tuple(a.shape[1:]), np.dtype(a.dtype)) for k, a in self._arrays.items()
            }
        if bad_ends or self.dropped_steps:
            what = f"{self.dropped_steps} trailing steps of an unfinished episode"
            if bad_ends:
                what += f" and {bad_ends} invalid episode_ends entries"
            if self.mode == "a":
                log.warning("episode store %s: dropped %s (left by a crash)", self.path, what)
                self._truncate_to(n_steps, n_episodes=n_valid)
                if not self._ends and self._arrays:
                    # Nothing committed: forget the declared keys so the next episode declares them.
                    for name in list(self._arrays):
                        del self._group["data"][name]
                    self._arrays = {}
                    self._schema = None
            else:
                log.info("episode store %s: ignoring %s (open with mode='a' to drop it)", self.path, what)

    def _truncate_to(self, n_steps: int, n_episodes: int) -> None:
        with self._lock:
            self._ee = resize_rows(self._group, self._ee, n_episodes)
            self._set_rows(n_steps)

    def _set_rows(self, n_steps: int) -> None:
        """Every data array ``n_steps`` long; arrays already that long are not touched (store_meta)."""
        for k, arr in list(self._arrays.items()):
            self._arrays[k] = resize_rows(self._group, arr, n_steps)

    # ----------------------------------------------------------------------------- reading
    @property
    def n_episodes(self) -> int:
        """Committed episodes."""
        return len(self._ends)

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        """Steps in committed episodes."""
        try:
            return self._ends[-1]
        except IndexError:  # no episode (checked this way: the writer thread may pop meanwhile)
            return 0

    @property
    def keys(self) -> list[str]:
        """The data keys (empty until the first episode declares them)."""
        return list(self._schema) if self._schema else []

    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self._ends, dtype=np.int64)

    def _bounds(self, index: int) -> tuple[int, int, int]:
        ends = list(self._ends)
        n = len(ends)
        if not -n <= index < n:
            raise IndexError(f"episode {index} out of range: the store at {self.path} has {n} episodes")
        index %= n
        start = ends[index - 1] if index > 0 else 0
        return index, start, ends[index]

    def episodes(self) -> list[EpisodeInfo]:
        """Every committed episode, with ``duration_s`` from ``data/timestamp`` (NaN without it)."""
        ends = list(self._ends)
        if not ends:
            return []
        ts = None
        if "timestamp" in self._arrays:
            with self._lock:
                ts = np.asarray(
                    self._read(
                        self._arrays["timestamp"],
                        slice(0, ends[-1]),
                        "data/timestamp",
                        f"steps 0..{ends[-1] - 1}",
                    ),
                    dtype=np.float64,
                ).reshape(ends[-1], -1)
        out = []
        start = 0
        for i, end in enumerate(ends):
            timing = episode_timing(ts[start:end], self.dt_s) if ts is not None else (float("nan"), None)
            out.append(EpisodeInfo(i, start, end, end - start, *timing))
            start = end
        return out

    def get_episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays of one committed episode (negative index counts from the end)."""
        index, start, end = self._bounds(index)
        names = self.keys if keys is None else keys
        with self._lock:
            missing = [k for k in names if k not in self._arrays]
            if missing:
                raise KeyError(f"keys {missing} not in the store at {self.path}; it has {self.keys}")
            where = f"episode {index} (steps {start}..{end - 1} of the store)"
            return {k: self._read(self._arrays[k], slice(start, end), f"data/{k}", where) for k in names}

    def _read(self, arr: zarr.Array, rows: slice, name: str, where: str = "") -> np.ndarray:
        """``arr[rows]``; a codec's or checksum's error (a damaged chunk) becomes an EpisodeStoreError
        naming the store, the array and where."""
        try:
            return arr[rows]
        except Exception as exc:
            first = (str(exc).splitlines()[0] if str(exc) else "").rstrip(".")
            at = f" of {where}" if where else ""
            raise EpisodeStoreError(
                f"episode store {self.path}: {name}{at} cannot be read ({type(exc).__name__}: {first}); "
                f"`rig episodes check {self.path}` names every damaged chunk"
            ) from exc

    def iter_episodes(self, keys: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.get_episode(i, keys)

    # ----------------------------------------------------------------------------- writing
    def begin_episode(self) -> EpisodeWriter:
        """Start streaming a new episode. Only one episode may be open (not yet committed or
        discarded) at a time; the previous one's commit may still be in flight."""
        self._check_writable()
        self._raise_writer_error()
        if self._open_episode is not None and self._open_episode.is_open:
            raise EpisodeStoreError("an episode is already open; commit() or discard() it first")
        ep = EpisodeWriter(self, self._next_token, self._batch_steps)
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
        self._submit(_Job("batch", token=token, arrays=batch, length=length))
        job = self._submit(_Job("commit", token=token, length=length, attrs=attrs))
        return job.future.result() if wait else job.future

    def delete_last(self) -> EpisodeInfo:
        """Delete the last committed episode (waits for pending writes) and return what it was.

        episode_ends shrinks first, then the data: a crash in between leaves trailing data that the
        next open in "a" mode drops.
        """
        self._check_writable()
        if self._open_episode is not None and self._open_episode.is_open:
            raise EpisodeStoreError("an episode is being streamed; commit() or discard() it first")
        self.wait()
        if not self._ends:
            raise EpisodeStoreError(f"episode store {self.path} has no episode to delete")
        return self._submit(_Job("delete_last")).future.result()

    def wait(self) -> None:
        """Block until every write asked for so far is done."""
        if self._thread is not None:
            self._submit(_Job("barrier")).future.result()

    def close(self) -> None:
        """Finish pending writes and stop the writer. An episode still open is discarded (logged)."""
        if self._closed:
            return
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
        self._closed = True
        self._release_writer_lock()
        if self._writer_error is not None:
            log.error("episode store %s: writer failed: %r", self.path, self._writer_error)

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending_steps(self) -> int:
        """Steps queued for the writer thread and not yet written."""
        return self._queued_steps - self._written_steps

    # ----------------------------------------------------------------------------- internals
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

    def _schema_for_step(self, step: Mapping[str, Any]) -> dict[str, _KeySpec]:
        """Check one step against the declared keys (declaring them if none yet). Raises ValueError."""
        schema = self._schema
        if schema is None:
            schema = {}
            for k, v in step.items():
                a = np.asarray(v)
                if a.dtype == object:
                    raise ValueError(f"key {k!r}: cannot store values of type {type(v).__name__}")
                schema[k] = _KeySpec(tuple(a.shape), a.dtype)
            self._schema = schema
            return schema
        if step.keys() != schema.keys():
            missing = sorted(set(schema) - set(step))
            extra = sorted(set(step) - set(schema))
            raise ValueError(
                f"step keys do not match the store's keys {sorted(schema)}: missing {missing}, extra {extra}"
            )
        for k, spec in schema.items():
            v = step[k]
            shape = np.shape(v)
            if shape != spec.step_shape:
                raise ValueError(
                    f"key {k!r}: step shape {shape} does not match the store's {spec.step_shape}"
                )
            dtype = v.dtype if isinstance(v, np.ndarray) else np.asarray(v).dtype
            if dtype != spec.dtype and not np.can_cast(dtype, spec.dtype, "same_kind"):
                raise ValueError(f"key {k!r}: dtype {dtype} cannot be stored as the store's {spec.dtype}")
        return schema

    def _submit(self, job: _Job) -> _Job:
        if self._closed:
            raise EpisodeStoreError(f"episode store {self.path} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer_loop, name=f"episode-writer:{self.path.name}")
            self._thread.daemon = True  # a crash of the process is survivable by design
            self._thread.start()
            _LIVE_STORES.add(self)
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
                codec = _low_dim_codec()
            fmt = self._group.metadata.zarr_format
            self._arrays[k] = data.create_array(
                k,
                shape=(self.n_steps, *spec.step_shape),
                chunks=chunks,
                dtype=spec.dtype,
                fill_value=0,
                **array_codecs(fmt, codec, self.checksums),
            )
            if spec.is_image and self.image_codec in _IMAGECODECS:
                cls, params = _IMAGECODECS[self.image_codec]
                image = {"id": cls.codec_id, **params}
                if self.checksums:
                    write_codecs(self._group, self._arrays[k], [image], {"id": CHECKSUM_V2})
                else:
                    write_codecs(self._group, self._arrays[k], None, image)
                self._arrays[k] = self._group[self._arrays[k].path]
            if self.checksums and CHECKSUM_ATTR not in self._group.attrs:
                self._group.attrs[CHECKSUM_ATTR] = CHECKSUM_V2 if fmt == 2 else CHECKSUM_V3

    def _do_barrier(self, job: _Job) -> None:
        return None

    def _do_batch(self, job: _Job) -> None:
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

    def _do_commit(self, job: _Job) -> EpisodeInfo:
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

    def _do_discard(self, job: _Job) -> None:
        if job.token == self._w_token:
            self._w_token = -1
        self._set_rows(self.n_steps)

    def _set_episode_attrs(self, index: int, attrs: dict[str, Any] | None) -> None:
        # One root attribute (readers of the reference layout ignore it), keyed by episode index.
        every = dict(self._group.attrs.get("episode_attrs", {}))
        if attrs is None:
            if str(index) not in every:
                return  # leave a store without episode attributes untouched
            every.pop(str(index))
        else:
            every[str(index)] = attrs
        self._group.attrs["episode_attrs"] = every

    def episode_attrs(self, index: int) -> dict[str, Any]:
        """What ``commit(attrs=...)`` stored with episode ``index`` ({} if nothing)."""
        return dict(self._group.attrs.get("episode_attrs", {}).get(str(index), {}))

    def _do_delete_last(self, job: _Job) -> EpisodeInfo:
        info = self.episodes()[-1]
        self._set_episode_attrs(info.index, None)
        self._ee = resize_rows(self._group, self._ee, len(self._ends) - 1)
        self._ends.pop()
        self._set_rows(self.n_steps)
        return info


def saved_episodes_note(path: str | Path) -> str:
    """What an interrupted run kept in the store at ``path``, for ``rig``'s ``interrupted: ...`` line."""
    try:
        n = EpisodeStore.open(path, "r").n_episodes
    except (FileNotFoundError, EpisodeStoreError):
        return f"nothing was saved ({path} was not created)"
    return f"{path} holds {n} saved episode{'s' if n != 1 else ''}"
