"""One host clock and precise fixed-rate loops.

Every timestamp in the project is ``time.monotonic()`` seconds on the host (system-wide, monotonic,
shared by all processes). :func:`precise_wait` sleeps until shortly before a deadline and spins the
rest, which brings the wake-up error from the scheduler's ~0.1-1 ms down to microseconds (VM pauses
still cause multi-ms outliers; :class:`RateLoop` reports them as overruns rather than drifting).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

now = time.monotonic

DEFAULT_SPIN_S = 0.0008


def precise_wait(deadline: float, spin_s: float = DEFAULT_SPIN_S) -> float:
    """Block until ``time.monotonic() >= deadline`` and return the wake-up time.

    Sleeps until ``spin_s`` before the deadline, then busy-waits. Returns immediately (with the current
    time) if the deadline has passed. ``spin_s`` trades CPU for accuracy: 0.5-1 ms covers the usual
    sleep overshoot on Linux.
    """
    remaining = deadline - now()
    if remaining > spin_s:
        time.sleep(remaining - spin_s)
    t = now()
    while t < deadline:
        t = now()
    return t


@dataclass(frozen=True)
class Tick:
    """One iteration of a :class:`RateLoop`.

    ``index`` counts scheduled periods since the start (it jumps when periods are skipped),
    ``deadline`` is the scheduled start time, ``time`` the actual wake-up time (both host monotonic s),
    ``overrun`` is True when the previous iteration ran past this deadline, and ``skipped`` counts the
    whole periods that were skipped to get back on the grid.
    """

    index: int
    deadline: float
    time: float
    overrun: bool
    skipped: int

    @property
    def error_s(self) -> float:
        return self.time - self.deadline


class RateLoop:
    """Fixed-rate loop on the grid ``start_time + k / rate_hz`` that never drifts and never bursts.

    Usage::

        loop = RateLoop(500.0)
        while running:
            tick = loop.wait()   # returns at the next grid point
            ...                  # work for this period

    If the work overruns a deadline, ``wait`` returns at once for the late tick (flagged ``overrun``)
    and the following tick goes back on the grid, skipping missed periods instead of running them
    back to back. ``overruns`` counts late ticks.
    """

    def __init__(self, rate_hz: float, start_time: float | None = None, spin_s: float = DEFAULT_SPIN_S):
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.rate_hz = float(rate_hz)
        self.period_s = 1.0 / self.rate_hz
        self.spin_s = spin_s
        self.start_time = now() if start_time is None else float(start_time)
        self._next_index = 0
        self.overruns = 0
        self.ticks = 0

    def deadline(self, index: int) -> float:
        return self.start_time + index * self.period_s

    def wait(self) -> Tick:
        """Wait for the next grid point (see class docstring) and describe it."""
        index = self._next_index
        deadline = self.deadline(index)
        t = now()
        overrun = False
        skipped = 0
        if t > deadline + self.period_s:
            # Later than a whole period: report, skip the missed grid points, run this one now.
            overrun = True
            late_index = int((t - self.start_time) / self.period_s)
            skipped = late_index - index
            index = late_index
            deadline = self.deadline(index)
        elif t > deadline:
            overrun = t - deadline > 0.5 * self.period_s
        else:
            t = precise_wait(deadline, self.spin_s)
        if overrun:
            self.overruns += 1
        self._next_index = index + 1
        self.ticks += 1
        return Tick(index, deadline, t, overrun, skipped)
