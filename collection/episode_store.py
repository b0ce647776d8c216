"""Episode store: recorded demonstrations as one zarr group in the Diffusion Policy reference layout.

``EpisodeStore.open(path, mode)`` is the one entry point; this module composes the store from its
parts, one concept each, and re-exports their public names (import them from here):

- ``collection/store_layout.py``: the layout (``data/<key>`` arrays of all episodes concatenated,
  ``meta/episode_ends``), the key set, and ``validate_layout``.
- ``collection/store_codecs.py``: image codecs (measured table, default ``jpegxl``) and a checksum
  of every chunk.
- ``collection/store_writer.py``: ``EpisodeWriter`` and the single background writer thread.
- ``collection/store_reader.py``: committed episodes, their timing, their arrays.
- ``collection/store_edit.py``: ``delete_last`` and the repair of a crash's leftovers on open.
- ``collection/store_attrs.py``: the store's own metadata (``dt_s``, ``action_time``,
  ``next_seed``, per-episode attributes).

Crash safety. An episode becomes visible only when its ``meta/episode_ends`` entry is written, after
all its data is written; a crash (even SIGKILL) mid-episode leaves the earlier episodes intact and
trailing data that opening in ``"a"`` mode truncates, logged (``store.dropped_steps``). Durable means
durable against a crash of the process; against power loss only with ``fsync`` at the OS level (not
done here). One writer at a time: modes ``"a"``/``"w"`` take an exclusive ``flock`` on the store
directory (the kernel drops it when the process dies); a second writer gets EpisodeStoreError,
readers are free.

Timing contract. Nothing writes to zarr on the caller's thread while recording:
``EpisodeWriter.append`` copies one step into an in-memory batch (microseconds to ~1 ms for 640x480
frames) and never blocks on zarr nor waits for the writer, which writes whole batches on its own
thread, strictly in order (``begin_episode()`` may follow ``commit(wait=False)`` at once). Opening
runs on the caller's thread: it reads ``meta/episode_ends`` and the arrays' metadata, and in ``"a"``
mode may truncate a crash's leftovers. ``close()`` blocks until every queued write is done.

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
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import zarr

from collection.store_attrs import StoreAttributes
from collection.store_codecs import (
    CHECKSUM_ATTR,
    DEFAULT_IMAGE_CODEC,
    IMAGE_CODECS,
    REFERENCE_IMAGE_CODEC,
    array_codecs,
    is_image_step,
    make_image_codec,
    register_image_codecs,
)
from collection.store_edit import StoreEditing
from collection.store_layout import (
    EpisodeStoreError,
    KeySpec,
    check_is_store,
    create_layout,
    looks_like_zarr,
    validate_layout,
)
from collection.store_meta import resize_rows
from collection.store_reader import (
    LATE_FACTOR,
    EpisodeInfo,
    StoreReading,
    episode_timing,
    open_root_readonly,
)
from collection.store_writer import DEFAULT_BATCH_STEPS, EpisodeWriter, StoreWriting

__all__ = [
    "CHECKSUM_ATTR",
    "COMPAT_MODES",
    "DEFAULT_BATCH_STEPS",
    "DEFAULT_IMAGE_CODEC",
    "IMAGE_CODECS",
    "LATE_FACTOR",
    "EpisodeInfo",
    "EpisodeStore",
    "EpisodeStoreError",
    "EpisodeWriter",
    "Mode",
    "array_codecs",
    "episode_timing",
    "is_image_step",
    "make_image_codec",
    "open_root_readonly",
    "register_image_codecs",
    "saved_episodes_note",
    "validate_layout",
]

log = logging.getLogger(__name__)

Mode = Literal["r", "a", "w"]
# ``compat``: None, or "reference" for stores the Diffusion Policy reference's reader opens.
COMPAT_MODES: tuple[str | None, ...] = (None, "reference")


class EpisodeStore(StoreReading, StoreWriting, StoreEditing, StoreAttributes):
    """A zarr episode store. Open with ``EpisodeStore.open(path, mode)``; use as a context manager.

    Reads (``episodes``, ``get_episode``) run on the caller's thread; every write runs on one writer
    thread, in the order it was asked for. ``n_episodes`` / ``n_steps`` count committed episodes.
    This class opens the store (and holds its writer lock); its reading, writing, editing and
    metadata live in the classes it is made of (see the module docstring).
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
        self._schema: dict[str, KeySpec] | None = None
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
        self._init_writer()
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

    def _open_group(self) -> zarr.Group:
        if self.path.suffix == ".zip":
            if self.mode != "r":
                raise EpisodeStoreError(f"{self.path}: zipped stores open read only (mode='r')")
            return open_root_readonly(self.path)
        if self.mode == "w":
            if self.path.exists() and not looks_like_zarr(self.path):
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

    def _create_group(self) -> zarr.Group:
        return create_layout(self.path, self.checksums)

    def _load(self) -> None:
        """Read the schema and episode ends; in "a" mode repair what a crash left behind."""
        root = self._group
        check_is_store(root, self.path)
        self._ee: zarr.Array = root["meta"]["episode_ends"]
        self._arrays = {name: arr for name, arr in root["data"].arrays()}
        ends = (
            [int(e) for e in self._read(self._ee, slice(None), "meta/episode_ends")]
            if self._ee.shape[0]
            else []
        )
        lengths = {name: a.shape[0] for name, a in self._arrays.items()}
        n_valid = validate_layout(self.path, ends, lengths)
        self._ends = ends[:n_valid]
        if self._arrays:
            self._schema = {
                k: KeySpec(tuple(a.shape[1:]), np.dtype(a.dtype)) for k, a in self._arrays.items()
            }
        self._repair(ends, n_valid, max(lengths.values()) if lengths else 0)

    def _set_rows(self, n_steps: int) -> None:
        """Every data array ``n_steps`` long; arrays already that long are not touched (store_meta)."""
        for k, arr in list(self._arrays.items()):
            self._arrays[k] = resize_rows(self._group, arr, n_steps)

    # ----------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Finish pending writes and stop the writer. An episode still open is discarded (logged)."""
        if self._closed:
            return
        self._stop_writer()
        self._closed = True
        self._release_writer_lock()
        if self._writer_error is not None:
            log.error("episode store %s: writer failed: %r", self.path, self._writer_error)

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def saved_episodes_note(path: str | Path) -> str:
    """What an interrupted run kept in the store at ``path``, for ``rig``'s ``interrupted: ...`` line."""
    try:
        n = EpisodeStore.open(path, "r").n_episodes
    except (FileNotFoundError, EpisodeStoreError):
        return f"nothing was saved ({path} was not created)"
    return f"{path} holds {n} saved episode{'s' if n != 1 else ''}"
