"""How many torch threads training uses: ``training.torch_threads`` (a number, ``auto``, or null).

On a 2-core machine shared with other work, two intra-op threads that wait on each other train
5-10x slower than one (measured: 6-8.5 s/step with 2 threads, 1.4-2.3 steps/s with 1), while on an
idle machine 2 threads are faster (4.7 against 3.3 steps/s). Neither number is right everywhere, and
a load average says little about the next minutes, so ``auto`` measures: after ``warmup`` steps it
times ``probe`` steps with every core the process may use and ``probe`` steps with one thread, then
keeps the faster and says so (one line each: the plan at start, the choice with both speeds). Under
``torchrun`` each rank takes its share of the cores, unmeasured. A number is used as given; null
leaves torch's default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadChooser:
    """Sets torch's thread count around training steps (see the module docstring).

    Call :meth:`before_step` before and :meth:`after_step` after each optimizer step; ``say`` gets the
    lines to print. Times are host monotonic seconds.
    """

    def __init__(
        self,
        setting: int | str | None,
        say: Callable[[str], None],
        world_size: int = 1,
        warmup: int = 3,
        probe: int = 6,
    ) -> None:
        self.say = say
        self.warmup, self.probe = warmup, probe
        self.cores = available_cores()
        self.chosen: int | None = None
        self.candidates: list[int] = []
        self._times: dict[int, list[float]] = {}
        self._n = 0
        self._t = 0.0
        if setting is None:
            self.chosen = torch.get_num_threads()
            self.say(f"torch threads: {self.chosen} (torch's default; training.torch_threads=auto measures)")
        elif setting != "auto":
            self.chosen = int(setting)
            self.say(f"torch threads: {self.chosen} (training.torch_threads)")
        elif world_size > 1 or self.cores <= 1:
            self.chosen = max(1, self.cores // max(world_size, 1))
            self.say(f"torch threads: {self.chosen} ({self.cores} cores shared by {world_size} ranks)")
        else:
            self.candidates = [self.cores, 1]
            self.say(
                f"torch threads: auto: timing {self.cores} and 1 over steps {warmup + 1}-"
                f"{warmup + 2 * probe} ({self.cores} cores; other work on the machine can make 1 faster)"
            )
        torch.set_num_threads(self.chosen if self.chosen is not None else self.cores)

    def _phase_threads(self) -> int | None:
        """The thread count step ``self._n`` is timed with, or None (warm-up or decided)."""
        k = self._n - self.warmup
        if self.chosen is not None or k < 0:
            return None
        return self.candidates[min(k // self.probe, len(self.candidates) - 1)]

    def before_step(self) -> None:
        n = self._phase_threads()
        if n is not None and torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self._t = time.perf_counter()

    def after_step(self) -> None:
        n = self._phase_threads()
        if n is not None:
            self._times.setdefault(n, []).append(time.perf_counter() - self._t)
            if self._n - self.warmup + 1 >= self.probe * len(self.candidates):
                self._decide()
        self._n += 1

    def _decide(self) -> None:
        med = {n: float(np.median(t)) for n, t in self._times.items()}
        self.chosen = min(med, key=lambda n: med[n])
        torch.set_num_threads(self.chosen)
        speeds = ", ".join(f"{n} thread{'s' if n > 1 else ''} {1.0 / med[n]:.2f} steps/s" for n in med)
        self.say(f"torch threads: {self.chosen} ({speeds})")
