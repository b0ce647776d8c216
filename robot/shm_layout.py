"""Record layouts for shared-memory structures: named fields with fixed shape and dtype.

A layout is declared up front, e.g. ``{"color": ((480, 640, 3), "uint8"), "capture_time": ((), "float64")}``
or derived from one example record (:func:`layout_from_example`). :class:`SlotArrays` places
``capacity`` slots of every field in one segment after a header of 8-byte atomic words, each field
64-byte aligned, and exposes them as numpy arrays of shape ``(capacity, *shape)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import atomics
import numpy as np

ALIGN = 64
RESERVED = ("counter",)


@dataclass(frozen=True)
class Field:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


LayoutSpec = Mapping[str, tuple[Any, Any]]


def parse_layout(layout: LayoutSpec) -> tuple[Field, ...]:
    """Validate ``{name: (shape, dtype)}`` into fields; raises ValueError on bad input."""
    if not layout:
        raise ValueError("a shared-memory layout needs at least one field")
    fields = []
    for name, spec in layout.items():
        if name in RESERVED:
            raise ValueError(f"field name {name!r} is reserved")
        try:
            shape, dtype = spec
            shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"field {name!r}: expected (shape, dtype), got {spec!r}") from exc
        if dtype.hasobject:
            raise ValueError(f"field {name!r}: object dtypes cannot live in shared memory")
        fields.append(Field(str(name), shape, dtype))
    return tuple(fields)


def layout_from_example(example: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Layout matching one example record (numpy arrays or scalars)."""
    out = {}
    for name, value in example.items():
        arr = np.asarray(value)
        out[name] = (arr.shape, arr.dtype)
    return out


def layout_to_spec(fields: tuple[Field, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {f.name: (f.shape, f.dtype.str) for f in fields}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class SlotArrays:
    """One segment holding ``n_words`` atomic uint64 header words and ``capacity`` slots per field.

    The header words and field arrays are views into ``shm``; :meth:`release` drops every view so
    that the segment can be closed safely (numpy 2 views outliving ``close()`` segfault).
    """

    def __init__(
        self, shm: shared_memory.SharedMemory, fields: tuple[Field, ...], capacity: int, n_words: int
    ):
        self.shm = shm
        self.fields = fields
        self.capacity = capacity
        self._views = []
        self.words = []
        for i in range(n_words):
            view = atomics.atomicview(buffer=shm.buf[i * 8 : i * 8 + 8], atype=atomics.UINT)
            self._views.append(view)
            # One view kept entered for the buffer's life: re-entering per call costs ~50 us.
            self.words.append(view.__enter__())
        offset = _align(n_words * 8)
        self.arrays: dict[str, np.ndarray] = {}
        for f in fields:
            self.arrays[f.name] = np.ndarray(
                (capacity, *f.shape), dtype=f.dtype, buffer=shm.buf, offset=offset
            )
            offset = _align(offset + capacity * f.nbytes)

    @staticmethod
    def segment_size(fields: tuple[Field, ...], capacity: int, n_words: int) -> int:
        size = _align(n_words * 8)
        for f in fields:
            size = _align(size + capacity * f.nbytes)
        return size

    def release(self) -> None:
        self.arrays = {}
        self.words = []
        views, self._views = self._views, []
        for view in views:
            try:
                view.__exit__(None, None, None)
            except Exception:
                pass

    def __del__(self) -> None:
        # An attached ring dropped without close() (e.g. in a child at exit): leave the views cleanly.
        self.release()


def check_record(fields: tuple[Field, ...], record: Mapping[str, Any], what: str) -> None:
    """Raise KeyError naming missing and unexpected keys of ``record``."""
    if len(record) == len(fields) and all(f.name in record for f in fields):
        return
    names = {f.name for f in fields}
    missing = sorted(names - set(record))
    extra = sorted(set(record) - names)
    raise KeyError(f"{what}: record keys do not match the layout (missing {missing}, unexpected {extra})")
