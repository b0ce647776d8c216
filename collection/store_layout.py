"""What an episode store holds, and what a valid one looks like: the layout, its key set, and the
one validator of ``episode_ends`` that the store, ``rig episodes check`` and the dataset share.

Layout (the Diffusion Policy reference layout: readable by its ``ReplayBuffer`` and written by it,
so reference datasets load here too)::

    <store>/data/<key>          (T, ...) arrays, all episodes concatenated along axis 0
    <store>/data/camera_<i>     (T, H, W, 3) uint8, one frame per chunk, image codec
    <store>/data/timestamp      (T,) host monotonic seconds of each step
    <store>/meta/episode_ends   (E,) int64, exclusive end index of each episode

The key set is free: whatever keys the first episode carries (``camera_<i>``, ``robot_eef_pose``,
``robot_joint``, ``action``, ``timestamp``, ...) are declared then, and every later episode must carry
the same keys with the same per-step shapes (``check_step``). Nothing here blocks or writes except
``create_layout``, which makes an empty store.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from collection.store_codecs import CHECKSUM_ATTR, CHECKSUM_V2, array_codecs, is_image_step
from collection.store_meta import write_codecs


class EpisodeStoreError(RuntimeError):
    """The store cannot do what was asked (read-only, writer failed, not an episode store, ...)."""


@dataclass(frozen=True)
class KeySpec:
    """One declared key: the shape and dtype of each of its steps."""

    step_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_image(self) -> bool:
        return is_image_step(self.step_shape, self.dtype)


class StoreState:
    """The state ``EpisodeStore`` sets when it opens a store, shared by its parts (reading, writing,
    editing, metadata). Guarded by ``_lock`` where the writer thread and readers both touch it."""

    path: Path
    mode: str
    image_codec: str
    checksums: bool
    dt_s: float | None
    dropped_steps: int
    _batch_steps: int
    _closed: bool
    _lock: threading.RLock  # guards zarr metadata (shapes) between reader and writer
    _group: zarr.Group
    _schema: dict[str, KeySpec] | None
    _arrays: dict[str, zarr.Array]
    _ee: zarr.Array  # meta/episode_ends
    _ends: list[int]  # committed episode ends, as in memory


def check_step(schema: dict[str, KeySpec] | None, step: Mapping[str, Any]) -> dict[str, KeySpec]:
    """The key set ``step`` must match: ``schema`` after checking ``step`` against it, or, when no key
    is declared yet (``schema`` None), the key set ``step`` declares. Raises ValueError naming the key
    whose set, shape or dtype does not fit."""
    if schema is None:
        declared = {}
        for k, v in step.items():
            a = np.asarray(v)
            if a.dtype == object:
                raise ValueError(f"key {k!r}: cannot store values of type {type(v).__name__}")
            declared[k] = KeySpec(tuple(a.shape), a.dtype)
        return declared
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
            raise ValueError(f"key {k!r}: step shape {shape} does not match the store's {spec.step_shape}")
        dtype = v.dtype if isinstance(v, np.ndarray) else np.asarray(v).dtype
        if dtype != spec.dtype and not np.can_cast(dtype, spec.dtype, "same_kind"):
            raise ValueError(f"key {k!r}: dtype {dtype} cannot be stored as the store's {spec.dtype}")
    return schema


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


def check_is_store(root: zarr.Group, path: Path) -> None:
    """EpisodeStoreError unless ``root`` has ``data/`` and ``meta/episode_ends``."""
    if "meta" not in root or "episode_ends" not in root["meta"] or "data" not in root:
        raise EpisodeStoreError(
            f"{path} is not an episode store: it lacks data/ or meta/episode_ends. "
            "Check the path (it should point at the .zarr directory)."
        )


def looks_like_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr directory (format 2 or 3): what mode "w" may delete."""
    return path.is_dir() and any((path / name).is_file() for name in (".zgroup", "zarr.json"))


def create_layout(path: Path, checksums: bool) -> zarr.Group:
    """A new, empty store at ``path`` (zarr format 2, deleting what was there): ``data/`` and an empty
    ``meta/episode_ends``, with a checksum of every chunk when ``checksums``."""
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.create_group("data")
    meta = root.create_group("meta")
    ee = meta.create_array(
        "episode_ends",
        shape=(0,),
        chunks=(4096,),
        dtype="int64",
        fill_value=0,
        **array_codecs(2, None, checksums),
    )
    if checksums:
        write_codecs(root, ee, None, {"id": CHECKSUM_V2})
        root.attrs[CHECKSUM_ATTR] = CHECKSUM_V2
    return root
