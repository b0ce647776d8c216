"""Record layouts for shared-memory structures: named fields with fixed shape and dtype.

A layout is declared up front, e.g. ``{"color": ((480, 640, 3), "uint8"), "capture_time": ((), "float64")}``
or derived from one example record (:func:`layout_from_example`). :class:`SlotArrays` places
``capacity`` slots of every field in one segment after a header of 8-byte atomic words, each field
64-byte aligned, and exposes them as numpy arrays of shape ``(capacity, *shape)``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Self

import numpy as np

from robot.shm._atomic64 import fence_acquire, fence_release  # noqa: F401 (re-exported for the ring)
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

    @functools.cached_property
    def limits(self) -> tuple[str, float, float]:
        """(dtype kind, min, max): what Python numbers written into this field must fit."""
        return (self.dtype.kind, *_limits(self.dtype))

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
        if any(d < 0 for d in shape):
            raise ValueError(f"field {name!r}: negative dimension in shape {shape}")
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


@functools.cache
def _limits(dtype: np.dtype) -> tuple[float, float]:
    """The value range of a numeric dtype (cached: np.iinfo/np.finfo cost microseconds a call)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "f":
        top = float(np.finfo(dtype).max)
        return -top, top
    return 0.0, 1.0  # bool


def _scalar_fits(value: Any, field: Field) -> bool:
    """A Python bool/int/float (or a sequence of them, as an array) fits the field by kind and value."""
    kind, lo, hi = field.limits
    if type(value) is float:
        return kind == "f" and (not math.isfinite(value) or -hi <= value <= hi)
    if type(value) is int:
        return kind == "f" or (kind in "iu" and lo <= value <= hi)
    dtype = field.dtype
    if isinstance(value, np.ndarray):  # from a Python sequence
        if value.size == 0:
            return value.dtype.kind in "biuf" and kind in "biuf"
        if value.dtype.kind == "b":
            return kind in "biuf"
        if value.dtype.kind in "iu":
            lo, hi = _limits(dtype)
            return kind == "f" or (kind in "iu" and lo <= value.min() and value.max() <= hi)
        if value.dtype.kind == "f":
            finite = value[np.isfinite(value)]
            return kind == "f" and (finite.size == 0 or np.abs(finite).max() <= _limits(dtype)[1])
        return False
    if isinstance(value, bool):
        return kind in "biuf"
    if isinstance(value, int):
        if kind in "iu":
            lo, hi = _limits(dtype)
            return lo <= value <= hi
        return kind == "f"
    if isinstance(value, float):
        return kind == "f" and (not math.isfinite(value) or abs(value) <= _limits(dtype)[1])
    return False


def checked_values(fields: tuple[Field, ...], record: Mapping[str, Any], what: str) -> list[Any]:
    """The record's values in field order, each checked against its field; nothing is written.

    A value must have exactly the field's shape (no broadcasting) and either its dtype, a dtype that
    casts to it safely (``np.can_cast(..., "safe")``), or be Python numbers whose kind and values fit
    it. Raises TypeError/ValueError naming ``what`` (the buffer), the field, the expected and the
    given shape/dtype. Costs O(fields) for arrays (no pass over their bytes).
    """
    check_record(fields, record, what)
    out = []
    for f in fields:
        value = record[f.name]
        if type(value) is np.ndarray and value.dtype is f.dtype and value.shape == f.shape:
            out.append(value)  # the common case, exact: no further checks
            continue
        if type(value) is float or type(value) is int:  # the common scalars, fast
            if f.shape != () or not _scalar_fits(value, f):
                _refuse(f, value, what)
            out.append(value)
            continue
        if isinstance(value, np.ndarray | np.generic):
            if value.shape != f.shape:
                raise ValueError(
                    f"{what}: field {f.name!r} expects shape {f.shape} {f.dtype}, got shape {value.shape}"
                )
            if value.dtype != f.dtype and not np.can_cast(value.dtype, f.dtype, "safe"):
                raise TypeError(
                    f"{what}: field {f.name!r} expects dtype {f.dtype} (or one that casts to it safely), "
                    f"got {value.dtype}"
                )
        else:
            if value is None or isinstance(value, str | bytes):
                raise TypeError(f"{what}: field {f.name!r} expects {f.dtype} {f.shape}, got {value!r}")
            given = value if isinstance(value, bool | int | float) else np.asarray(value)
            shape = () if isinstance(given, bool | int | float) else given.shape
            if shape != f.shape:
                raise ValueError(
                    f"{what}: field {f.name!r} expects shape {f.shape} {f.dtype}, got shape {shape}"
                )
            if not _scalar_fits(given, f):
                raise TypeError(
                    f"{what}: field {f.name!r} expects dtype {f.dtype}; the value {value!r} does not fit it"
                    if shape == ()
                    else f"{what}: field {f.name!r} expects dtype {f.dtype}; the given values do not fit it"
                )
            value = given
        out.append(value)
    return out


def _refuse(f: Field, value: Any, what: str) -> None:
    if f.shape != ():
        raise ValueError(f"{what}: field {f.name!r} expects shape {f.shape} {f.dtype}, got shape ()")
    raise TypeError(f"{what}: field {f.name!r} expects dtype {f.dtype}; the value {value!r} does not fit it")


def layout_fingerprint(kind: str, fields: tuple[Field, ...]) -> int:
    """A 63-bit fingerprint of a structure kind and its layout (stored in the segment's header)."""
    text = kind + ";" + ";".join(f"{f.name}:{f.shape}:{f.dtype.str}" for f in fields)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class SlotSegment:
    """What RingBuffer and CommandQueue share: a segment of :class:`SlotArrays` that the creating
    process owns (and unlinks, see robot.shm.segments) and that a child attaches to by unpickling.

    Subclasses give ``default_label``, ``min_capacity``, ``header_words(capacity)`` and an
    ``__init__(shm, layout, capacity)`` that sets ``_shm``, ``_fields`` (parsed layout), ``capacity``
    and ``_slots`` (with :meth:`total_words` header words), and ``_drop_views()`` that forgets their
    own views into the segment before it is closed.

    The last two header words hold the layout fingerprint and the capacity, written at create and
    checked at attach: a segment of another layout (even of the same size) is refused by name.
    Everything is validated before a segment is created, so a bad request leaves nothing behind.
    """

    default_label = "slots"
    min_capacity = 1
    _shm: Any
    _fields: tuple[Field, ...]
    _slots: SlotArrays
    capacity: int

    @staticmethod
    def header_words(capacity: int) -> int:
        raise NotImplementedError

    @classmethod
    def total_words(cls, capacity: int) -> int:
        return cls.header_words(capacity) + 2  # + layout fingerprint, capacity

    @classmethod
    def _check_capacity(cls, capacity: int) -> int:
        if int(capacity) != capacity or capacity < cls.min_capacity:
            raise ValueError(
                f"{cls.__name__} capacity must be an integer >= {cls.min_capacity}, got {capacity}"
            )
        return int(capacity)

    @classmethod
    def create(cls, layout: LayoutSpec, capacity: int, label: str | None = None) -> Self:
        fields = parse_layout(layout)
        capacity = cls._check_capacity(capacity)
        size = SlotArrays.segment_size(fields, capacity, cls.total_words(capacity))
        obj = cls(create_segment(size, label or cls.default_label), layout_to_spec(fields), capacity)
        words = obj._slots.words
        words[-2].store(layout_fingerprint(cls.__name__, fields))
        words[-1].store(capacity)
        return obj

    @classmethod
    def from_example(cls, example: Mapping[str, Any], capacity: int, label: str | None = None) -> Self:
        return cls.create(layout_from_example(example), capacity, label)

    @classmethod
    def attach(cls, name: str, layout: LayoutSpec, capacity: int) -> Self:
        """Attach to the segment ``name``; ValueError unless it holds this layout and capacity."""
        fields = parse_layout(layout)
        capacity = cls._check_capacity(capacity)
        shm = attach_segment(name)
        need = SlotArrays.segment_size(fields, capacity, cls.total_words(capacity))
        if shm.size < need:
            release_segment(shm)
            raise ValueError(
                f"{cls.__name__} {name}: the segment has {shm.size} bytes, the layout and capacity "
                f"{capacity} asked for need {need}: it holds another structure"
            )
        obj = cls(shm, layout, capacity)
        words = obj._slots.words
        stored_fp, stored_cap = words[-2].load(), words[-1].load()
        expected_fp = layout_fingerprint(cls.__name__, fields)
        if (stored_fp, stored_cap) != (expected_fp, capacity):
            obj.close()
            raise ValueError(
                f"{cls.__name__} {name}: the segment holds layout {stored_fp:016x} with capacity {stored_cap}, "
                f"the caller expects layout {expected_fp:016x} ({layout_to_spec(fields)}) with capacity "
                f"{capacity}"
            )
        return obj

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
