"""One lock, for the whole machine, around what `rig shm clean` must not race.

/dev/shm is shared by every xdist worker and by every suite running on the machine. A test that leaves a
dead run's semaphores there to be found, or that runs `rig shm clean` on the real /dev/shm, holds this
lock: another test's clean would otherwise remove those semaphores between the kill and the look (seen
beside three busy loops, where the CLI's start-up takes seconds). The Makefile's last `rig shm clean`
takes it too, through flock(1) (the same flock(2) lock that filelock takes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

SHM_CLEAN_LOCK = "/tmp/rig-tests-shm-clean.lock"


@contextlib.contextmanager
def shm_clean_lock(timeout_s: float = 120.0) -> Iterator[None]:
    from filelock import FileLock  # (a dependency of torch)

    with FileLock(SHM_CLEAN_LOCK, timeout=timeout_s):
        yield
