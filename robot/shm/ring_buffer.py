"""Lock-free single-writer, many-reader ring buffer of fixed records in shared memory.

Timing contract: ``put`` never waits for readers (it is three atomic stores plus a copy of the record
into its slot). Readers never block the writer; a read that races with the writer either retries or
raises :class:`BufferOverrun`: a torn record (some fields or bytes from one write and some from
another) is never returned.

How: a global write counter ``count`` (records completely written) and a per-slot sequence number
(a seqlock). Writing record ``c`` into slot ``c % capacity`` stores ``seq = 2c + 1`` (busy), issues a
release fence, copies the fields, stores ``seq = 2c + 2`` (done) and then ``count = c + 1``. A reader
loads ``count``, copies the slots it wants, issues an acquire fence and then checks that each slot
still holds ``2c + 2`` for the record it expected; any other value means the writer touched the slot
during the copy. The counters are real atomics (sequentially consistent 64-bit loads/stores from the
``robot.shm._atomic64`` C extension; the ``atomics`` package costs ~4 us per operation here, more
than copying a frame).

Memory ordering (Boehm, "Can seqlocks get along with programming language memory models?", MSPC
2012): the data copies are plain (numpy) loads and stores, so the fences carry the argument. The
writer's release fence after the odd ``seq`` keeps its data stores from becoming visible before it;
the reader's acquire fence after the copy keeps its data loads from being satisfied after the
re-check. If a reader's copy saw any byte of a newer write, the fences pair up and the re-check sees
the odd (or newer) ``seq``. The argument holds under the C11 model, so on x86-64 (TSO; the fences
are compiler barriers, free) and on AArch64 (Jetson, Apple silicon, Graviton; ``dmb`` barriers);
it is tested on x86-64 only. The command queue needs no fences: it is single-producer
single-consumer and publishes with the sequentially consistent (release/acquire) head/tail words.

``put`` checks the record (exact shapes, safe dtypes) before it touches the slot. If the copy still
fails (an exception mid-copy), the slot is marked lost for its old record: readers leave that one
record out instead of waiting for a writer that is not writing.

Pass a RingBuffer to a child process as an argument: it pickles to its name and layout and the child
attaches (without owning it). The creating process owns the segment and unlinks it (see robot.shm.segments).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot.shm.layout import (
    LayoutSpec,
    SlotArrays,
    SlotSegment,
    checked_values,
    fence_acquire,
    fence_release,
    parse_layout,
)

_COUNT_WORD = 0  # header word 0: records written; words 1..capacity: per-slot sequence numbers
_LOST = 1 << 63  # seq = (2c + 2) | _LOST: record c's slot was damaged by a put that failed mid-copy


class BufferOverrun(RuntimeError):
    """The writer overwrote the records a reader asked for before the reader could copy them."""


class RingBuffer(SlotSegment):
    """Fixed-capacity ring of records ``{name: array of fixed shape and dtype}`` in shared memory.

    Create with :meth:`create` (owner) or :meth:`from_example`; children get it by pickling.
    """

    def __init__(self, shm: Any, layout: LayoutSpec, capacity: int, max_retries: int = 64):
        self._fields = parse_layout(layout)
        self.capacity = self._check_capacity(capacity)
        self.max_retries = max_retries
        self._shm = shm
        self._slots = SlotArrays(shm, self._fields, self.capacity, n_words=self.total_words(self.capacity))
        self._count = self._slots.words[_COUNT_WORD]
        self._seq = self._slots.words[1 : 1 + self.capacity]
        self._arrays = self._slots.arrays
        self._field_items = [(f.name, self._arrays[f.name]) for f in self._fields]
        self._pid = os.getpid()
        self.read_retries = 0  # reads of this handle that caught the writer in a slot and retried

    # ---- construction / lifecycle (create, from_example, attach, pickling, close: SlotSegment) ----
    default_label = "ring"
    min_capacity = 2

    @staticmethod
    def header_words(capacity: int) -> int:
        return 1 + capacity  # the write counter, then one sequence number per slot

    @property
    def keys(self) -> list[str]:
        return [f.name for f in self._fields]

    def _drop_views(self) -> None:
        self._field_items = []
        self._arrays = {}
        self._count = None
        self._seq = []

    # ---- writer -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of records completely written so far (the next record's counter)."""
        return self._count.load()

    def put(self, record: Mapping[str, Any]) -> int:
        """Write one record (every field of the layout, nothing else); returns its counter.

        Every value must have its field's exact shape and its dtype or one that casts to it safely
        (Python numbers: by value); checked before the slot is touched (TypeError/ValueError naming
        the field). Never blocks. Only one process may write to a ring.
        """
        values = checked_values(self._fields, record, f"ring buffer {self.name}")
        c = self._count.load()
        slot = c % self.capacity
        seq = self._seq[slot]
        seq.store(2 * c + 1)
        fence_release()  # the odd sequence number is visible before any of the new data
        try:
            for (_, arr), value in zip(self._field_items, values, strict=True):
                arr[slot] = value
        except BaseException:
            # Interrupted mid-copy: the slot's old record is damaged and the new one incomplete. Say
            # so (readers skip it as lost instead of waiting for a writer that is not writing) and
            # leave the count alone: the next put rewrites this slot.
            old = c - self.capacity
            seq.store((2 * old + 2) | _LOST if old >= 0 else _LOST)
            raise
        seq.store(2 * c + 2)  # release: the data before it
        self._count.store(c + 1)
        return c

    # ---- readers ------------------------------------------------------------------------------
    def _copy(self, counters: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Copy the records of ``counters``; returns the data, a mask of records that verified and a
        mask of records a failed put destroyed (they will never verify)."""
        slots = counters % self.capacity
        out = {name: arr[slots] for name, arr in self._field_items}  # fancy indexing copies
        fence_acquire()  # the data loads complete before the sequence numbers are checked again
        seqs = [self._seq[s].load() for s in slots.tolist()]
        expected = 2 * counters + 2
        got = np.array(seqs, dtype=np.uint64)
        ok = got == expected.astype(np.uint64)
        lost = got == (expected.astype(np.uint64) | np.uint64(_LOST))
        return out, ok, lost

    def _empty(self) -> dict[str, np.ndarray]:
        out = {f.name: np.empty((0, *f.shape), f.dtype) for f in self._fields}
        out["counter"] = np.empty(0, np.int64)
        return out

    def get_last(self, k: int = 1) -> dict[str, np.ndarray]:
        """The ``k`` newest records, oldest first, as ``{name: (n, *shape)}`` plus ``counter`` (n,).

        ``n = min(k, count)`` (0 before the first put). Non-blocking; retries when the writer laps
        the copy and raises BufferOverrun if it keeps doing so. Every returned record is complete
        and consistent across all its fields.
        """
        if not 1 <= k <= self.capacity:
            raise ValueError(f"get_last(k): k must be in [1, {self.capacity}], got {k}")
        for _ in range(self.max_retries):
            c = self._count.load()
            n = min(k, c)
            if n == 0:
                return self._empty()
            counters = np.arange(c - n, c, dtype=np.int64)
            out, ok, lost = self._copy(counters)
            if (ok | lost).all():  # a record lost to a failed put is gone for good: leave it out
                out = {key: v[ok] for key, v in out.items()}
                out["counter"] = counters[ok]
                return out
            self.read_retries += 1
        raise BufferOverrun(
            f"ring buffer {self.name}: the writer overwrote the newest {k} record(s) during "
            f"{self.max_retries} consecutive reads; read fewer records or enlarge the ring"
        )

    def latest(self) -> dict[str, Any]:
        """The newest record as ``{name: array of the field's shape}`` plus ``counter``; LookupError if empty."""
        recs = self.get_last(1)
        if len(recs["counter"]) == 0:
            raise LookupError(f"ring buffer {self.name} is empty: nothing has been written yet")
        return {k: v[0] for k, v in recs.items()}

    def get_since(self, counter: int, skip_overwritten: bool = False) -> dict[str, np.ndarray]:
        """Every record with counter >= ``counter``, oldest first (same format as get_last).

        Use the returned ``counter[-1] + 1`` as the next call's argument. If records from
        ``counter`` on were already overwritten, raises BufferOverrun naming how many were lost,
        unless ``skip_overwritten`` is set: then the oldest still-intact records are returned and the
        gap shows in ``counter``.
        """
        for _ in range(self.max_retries):
            c = self._count.load()
            start = max(int(counter), 0)
            if start >= c:
                return self._empty()
            oldest_safe = c - self.capacity + 1  # slot of c - capacity is the writer's next target
            if start < oldest_safe:
                if not skip_overwritten:
                    raise BufferOverrun(
                        f"ring buffer {self.name}: records {start}..{oldest_safe - 1} were overwritten "
                        f"before they were read ({oldest_safe - start} lost); read more often or enlarge the ring"
                    )
                start = oldest_safe
            counters = np.arange(start, c, dtype=np.int64)
            # (Never the writer's next slot, so never one a failed put marked lost.)
            out, ok, _ = self._copy(counters)
            if ok.all():
                out["counter"] = counters
                return out
            self.read_retries += 1
            if skip_overwritten and ok[-1]:
                # The writer lapped the oldest ones during the copy: keep the intact newest suffix.
                keep = slice(int(np.flatnonzero(~ok)[-1]) + 1, None)
                out = {k: v[keep] for k, v in out.items()}
                out["counter"] = counters[keep]
                return out
        raise BufferOverrun(f"ring buffer {self.name}: reader kept being lapped by the writer in get_since")
