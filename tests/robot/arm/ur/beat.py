"""The UR tests' heartbeat: a small process of its own that keeps an arm controller's watchdog fed.

The shipped UR configs keep the controller's 1 s heartbeat watchdog on (``heartbeat_timeout_s: 1.0``),
so a test must beat at least once a second for as long as it holds the arm. A thread of the test's
own process did not: on a clean clone's CI run beside other work, the controller of a module-scoped
trajectory fixture exited with "no heartbeat from the parent for 1.00 s" while the test read the
fake's logs, and the three tests after it failed on the dead controller. A thread beats only when
the whole pytest worker runs and it holds the GIL; the kernel groups processes by session
(``sched_autogroup``), so one busy session next door leaves every thread of ours runnable but not
run (robot.fake_ur.handle._prioritize measured the fake's own ticks stalled up to 1.0 s that way).

So the beat comes from a process of its own, at real-time round-robin priority where permitted
(root, CAP_SYS_NICE), writing the controller's shared heartbeat value every ``period_s``. The
watchdog itself is tested elsewhere (tests/robot/arm/test_arm_process.py, with the parent's own
beats); that this beat outlasts a stopped test process, in tests/robot/arm/ur/test_ur_trajectory.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import multiprocess

from robot.process import DEFAULT_START_METHOD, DeviceProcess
from robot.timing import now


def _beat(value: Any, ready: Any, stop: Any, period_s: float) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    value.value = now()
    ready.set()
    while not stop.wait(period_s):
        value.value = now()


@contextlib.contextmanager
def beating(device: DeviceProcess, period_s: float = 0.1) -> Iterator[None]:
    """Beat ``device``'s heartbeat from a child process until the block ends (start it before the
    device, so no start-up gap counts against the watchdog); the child is joined on the way out."""
    ctx = multiprocess.get_context(DEFAULT_START_METHOD)
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(
        target=_beat,
        args=(device._heartbeat, ready, stop, period_s),  # the value the child's watchdog reads
        name=f"heartbeat of {device.name}",
        daemon=True,
    )
    proc.start()
    try:
        if not ready.wait(30.0):
            raise RuntimeError(f"heartbeat process for {device.name} did not start in 30 s")
        yield
    finally:
        stop.set()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
