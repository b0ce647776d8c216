"""Torn-read stress harness for :class:`~robot.shm.ring_buffer.RingBuffer` (tests and benchmarks).

The writer fills every byte of each frame with ``counter % 251`` and stores the counter in two more
fields, as fast as it can. A reader checks that every record it is handed is internally consistent
(all bytes and all fields agree with the record's counter) and that counters increase; overruns
(reads the buffer refused) are counted separately, never mistaken for data.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from robot.shm.ring_buffer import BufferOverrun, RingBuffer

FRAME_SHAPE = (480, 640, 3)


def stress_layout(frame_shape: tuple[int, ...] = FRAME_SHAPE) -> dict[str, tuple[Any, str]]:
    return {"frame": (frame_shape, "uint8"), "value": ((), "int64"), "stamp": ((2,), "float64")}


def writer(ring: RingBuffer, duration_s: float, start_event: Any = None) -> int:
    """Put frames as fast as possible for ``duration_s``; returns the number written."""
    frame = np.empty(ring.layout["frame"][0], np.uint8)
    if start_event is not None:
        start_event.wait(10)
    end = time.monotonic() + duration_s
    n = 0
    while time.monotonic() < end:
        c = ring.count
        frame.fill(c % 251)
        ring.put({"frame": frame, "value": c, "stamp": (float(c), -float(c))})
        n += 1
    return n


def reader(ring: RingBuffer, duration_s: float, k: int, result_conn: Any, start_event: Any = None) -> None:
    """Call ``get_last(k)`` in a loop; send the counts of reads, records, torn records, overruns
    (BufferOverrun raised), retries (torn copies detected and re-read) and non-increasing counters."""
    stats = {"reads": 0, "records": 0, "torn": 0, "overruns": 0, "non_increasing": 0}
    if start_event is not None:
        start_event.wait(10)
    last = -1
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        try:
            recs = ring.get_last(k)
        except BufferOverrun:
            stats["overruns"] += 1
            continue
        stats["reads"] += 1
        counters = recs["counter"]
        for i, c in enumerate(counters.tolist()):
            stats["records"] += 1
            frame = recs["frame"][i]
            expect = c % 251
            consistent = (
                recs["value"][i] == c
                and recs["stamp"][i, 0] == c
                and recs["stamp"][i, 1] == -c
                and frame.min() == expect
                and frame.max() == expect
            )
            if not consistent:
                stats["torn"] += 1
        if len(counters):
            if np.any(np.diff(counters) <= 0) or counters[-1] < last:
                stats["non_increasing"] += 1
            last = int(counters[-1])
    stats["retries"] = ring.read_retries
    result_conn.send(stats)
    ring.close()
