"""Bounded single-producer single-consumer FIFO of fixed records in shared memory.

Timing contract: ``put`` and ``get_all`` never block; ``put`` raises :class:`QueueFull` at capacity
instead of waiting or dropping silently. The producer owns the write index, the consumer the read
index (both real atomics); a slot is rewritten only after the consumer has released it, so a record
is never read half-written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot.shm.layout import LayoutSpec, SlotArrays, SlotSegment, checked_values, parse_layout

_HEAD, _TAIL = 0, 8  # header words: records ever put; records ever taken (separate cache lines)


class QueueFull(RuntimeError):
    """The consumer has not drained the queue; the command was not enqueued."""


class CommandQueue(SlotSegment):
    """SPSC queue of records ``{name: array}``; pickles to its name so a child can attach."""

    def __init__(self, shm: Any, layout: LayoutSpec, capacity: int):
        self._fields = parse_layout(layout)
        self.capacity = self._check_capacity(capacity)
        self._shm = shm
        self._slots = SlotArrays(shm, self._fields, self.capacity, n_words=self.total_words(self.capacity))
        self._head = self._slots.words[_HEAD]
        self._tail = self._slots.words[_TAIL]
        self._field_items = [(f.name, self._slots.arrays[f.name]) for f in self._fields]
        self._pid = os.getpid()

    default_label = "queue"

    @staticmethod
    def header_words(capacity: int) -> int:
        return 16  # the head and tail counters, a cache line apart

    def __len__(self) -> int:
        return self._head.load() - self._tail.load()

    def put(self, record: Mapping[str, Any]) -> None:
        """Enqueue one record (producer side only). Raises QueueFull when ``capacity`` are pending.

        Values are checked as by ``RingBuffer.put`` (exact shapes, safe dtypes) before anything is
        written; the head advances only after the whole record is in its slot."""
        values = checked_values(self._fields, record, f"command queue {self.name}")
        h = self._head.load()
        if h - self._tail.load() >= self.capacity:
            raise QueueFull(
                f"command queue {self.name} is full ({self.capacity} pending): its consumer process "
                "is not draining it (stalled or dead?)"
            )
        slot = h % self.capacity
        for (_, arr), value in zip(self._field_items, values, strict=True):
            arr[slot] = value
        self._head.store(h + 1)

    def get_all(self) -> dict[str, np.ndarray]:
        """Dequeue everything pending (consumer side only), oldest first, as stacked arrays (n may be 0)."""
        t = self._tail.load()
        h = self._head.load()
        slots = np.arange(t, h, dtype=np.int64) % self.capacity
        out = {name: arr[slots] for name, arr in self._field_items}
        self._tail.store(h)
        return out

    def _drop_views(self) -> None:
        self._field_items = []
        self._head = self._tail = None
