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
from typing import Any, Self

import numpy as np

from robot.shm._atomic64 import load as _atomic_load
from robot.shm._atomic64 import store as _atomic_store
from robot.shm.segments import attach_segment, create_segment, release_segment

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


class AtomicWord:
    """A 64-bit unsigned word in shared memory with sequentially consistent load/store.

    Real atomics (GCC ``__atomic`` builtins in the ``robot.shm._atomic64`` C extension), not numpy stores:
    the order of stores to these words is the order every process observes. The address stays valid
    while the owning :class:`SlotArrays` holds its view of the segment.
    """

    __slots__ = ("addr",)

    def __init__(self, addr: int):
        self.addr = addr

    def load(self) -> int:
        return _atomic_load(self.addr)

    def store(self, value: int) -> None:
        _atomic_store(self.addr, value)


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
        # The header view pins the mapping (and the words' addresses) until release().
        self._header = np.ndarray((n_words,), dtype=np.uint64, buffer=shm.buf, offset=0)
        base = self._header.ctypes.data
        self.words = [AtomicWord(base + 8 * i) for i in range(n_words)]
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
        self._header = None


def check_record(fields: tuple[Field, ...], record: Mapping[str, Any], what: str) -> None:
    """Raise KeyError naming missing and unexpected keys of ``record``."""
    if len(record) == len(fields) and all(f.name in record for f in fields):
        return
    names = {f.name for f in fields}
    missing = sorted(names - set(record))
    extra = sorted(set(record) - names)
    raise KeyError(f"{what}: record keys do not match the layout (missing {missing}, unexpected {extra})")


class SlotSegment:
    """What RingBuffer and CommandQueue share: a segment of :class:`SlotArrays` that the creating
    process owns (and unlinks, see robot.shm.segments) and that a child attaches to by unpickling.

    Subclasses give ``default_label``, ``header_words(capacity)`` and an ``__init__(shm, layout,
    capacity)`` that sets ``_shm``, ``_fields`` (parsed layout), ``capacity`` and ``_slots``, and
    ``_drop_views()`` that forgets their own views into the segment before it is closed.
    """

    default_label = "slots"
    _shm: Any
    _fields: tuple[Field, ...]
    _slots: SlotArrays
    capacity: int

    @staticmethod
    def header_words(capacity: int) -> int:
        raise NotImplementedError

    @classmethod
    def create(cls, layout: LayoutSpec, capacity: int, label: str | None = None) -> Self:
        fields = parse_layout(layout)
        size = SlotArrays.segment_size(fields, capacity, cls.header_words(capacity))
        return cls(create_segment(size, label or cls.default_label), layout_to_spec(fields), capacity)

    @classmethod
    def from_example(cls, example: Mapping[str, Any], capacity: int, label: str | None = None) -> Self:
        return cls.create(layout_from_example(example), capacity, label)

    @classmethod
    def attach(cls, name: str, layout: LayoutSpec, capacity: int) -> Self:
        return cls(attach_segment(name), layout, capacity)

    def __reduce__(self) -> tuple:
        return (type(self).attach, (self.name, self.layout, self.capacity))

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return layout_to_spec(self._fields)

    def _drop_views(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop every view and close; the owner also unlinks. Idempotent."""
        if self._shm is None:
            return
        self._drop_views()
        self._slots.release()
        release_segment(self._shm)
        self._shm = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
