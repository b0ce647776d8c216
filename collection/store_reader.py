"""Reading an episode store: committed episodes, their bounds and timing, and their arrays.

Timing contract. Reads run on the caller's thread and see committed episodes only (``episode_ends``
as loaded or last committed); an episode still being written is invisible. They take the store's
lock only around zarr calls, so a read may wait for the writer thread's job in progress (one batch:
``batch_steps`` frames through the image codec, ~10 CPU ms each for jpegxl at 640x480, see
``collection/store_codecs.py``), never for the jobs queued behind it. A codec's or checksum's error (a damaged chunk) is an EpisodeStoreError naming the
store, the array and the steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from collection.store_layout import EpisodeStoreError, StoreState


def open_root_readonly(path: str | Path) -> zarr.Group:
    """The one read-only opener of an episode store's root group: a ``.zarr`` directory or a zipped
    store (``.zarr.zip``, as the reference distributes its datasets). zarr's errors pass through."""
    path = Path(path)
    store: Any = zarr.storage.ZipStore(path, mode="r") if path.suffix == ".zip" else str(path)
    return zarr.open_group(store, mode="r")


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


class StoreReading(StoreState):
    """The reading half of ``EpisodeStore`` (which sets this state when it opens the store)."""

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
