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

from robot.shm import attach_segment, create_segment, release_segment
from robot.shm_layout import (
    LayoutSpec,
    SlotArrays,
    check_record,
    layout_from_example,
    layout_to_spec,
    parse_layout,
)

_HEAD, _TAIL = 0, 8  # header words: records ever put; records ever taken (separate cache lines)


class QueueFull(RuntimeError):
    """The consumer has not drained the queue; the command was not enqueued."""


class CommandQueue:
    """SPSC queue of records ``{name: array}``; pickles to its name so a child can attach."""

    def __init__(self, shm: Any, layout: LayoutSpec, capacity: int):
        self._fields = parse_layout(layout)
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._shm = shm
        self._slots = SlotArrays(shm, self._fields, self.capacity, n_words=16)
        self._head = self._slots.words[_HEAD]
        self._tail = self._slots.words[_TAIL]
        self._field_items = [(f.name, self._slots.arrays[f.name]) for f in self._fields]
        self._pid = os.getpid()

    @classmethod
    def create(cls, layout: LayoutSpec, capacity: int, label: str = "queue") -> CommandQueue:
        fields = parse_layout(layout)
        shm = create_segment(SlotArrays.segment_size(fields, capacity, 16), label)
        return cls(shm, layout_to_spec(fields), capacity)

    @classmethod
    def from_example(cls, example: Mapping[str, Any], capacity: int, label: str = "queue") -> CommandQueue:
        return cls.create(layout_from_example(example), capacity, label)

    @classmethod
    def attach(cls, name: str, layout: LayoutSpec, capacity: int) -> CommandQueue:
        return cls(attach_segment(name), layout, capacity)

    def __reduce__(self) -> tuple:
        return (CommandQueue.attach, (self.name, layout_to_spec(self._fields), self.capacity))

    @property
    def name(self) -> str:
        return self._shm.name

    def __len__(self) -> int:
        return self._head.load() - self._tail.load()

    def put(self, record: Mapping[str, Any]) -> None:
        """Enqueue one record (producer side only). Raises QueueFull when ``capacity`` are pending."""
        check_record(self._fields, record, f"command queue {self.name}")
        h = self._head.load()
        if h - self._tail.load() >= self.capacity:
            raise QueueFull(
                f"command queue {self.name} is full ({self.capacity} pending): its consumer process "
                "is not draining it (stalled or dead?)"
            )
        slot = h % self.capacity
        for name, arr in self._field_items:
            arr[slot] = record[name]
        self._head.store(h + 1)

    def get_all(self) -> dict[str, np.ndarray]:
        """Dequeue everything pending (consumer side only), oldest first, as stacked arrays (n may be 0)."""
        t = self._tail.load()
        h = self._head.load()
        slots = np.arange(t, h, dtype=np.int64) % self.capacity
        out = {name: arr[slots] for name, arr in self._field_items}
        self._tail.store(h)
        return out

    def close(self) -> None:
        if self._shm is None:
            return
        self._field_items = []
        self._head = self._tail = None
        self._slots.release()
        release_segment(self._shm)
        self._shm = None

    def __enter__(self) -> CommandQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
