"""The UR tests' heartbeat (tests/robot/arm/ur/beat.py) outlasts a test process the OS does not run.

On CI beside other work, a module-scoped trajectory fixture's controller exited with "no heartbeat
from the parent for 1.00 s" while its beating thread sat in a pytest worker that was not run, and
the three tests after it failed on the dead controller. Here the test process is stopped outright
(SIGSTOP from a helper, 1.5 s, then SIGCONT): the controller on the shipped e-Series config (1 s
watchdog) must still run afterwards. With the former thread in the test process it exits.
"""

from __future__ import annotations

import os
import signal
import time

import multiprocess
import pytest

from robot.process import DEFAULT_START_METHOD
from tests.robot.arm.ur.helpers import ESERIES, arm_on, make_fake, ur_config, wait_until

STOPPED_S = 1.5


def _stop_for(pid: int, seconds: float, out: object) -> None:
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        out.value = time.monotonic() - t0
        os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(90)
def test_arm_outlives_a_test_process_stopped_past_the_watchdog():
    version, name = ESERIES
    with make_fake(version) as fake, arm_on(ur_config(name, fake.host)) as arm:
        assert arm.config.heartbeat_timeout_s == 1.0  # the shipped watchdog, not widened
        ctx = multiprocess.get_context(DEFAULT_START_METHOD)
        stopped = ctx.Value("d", 0.0, lock=False)
        helper = ctx.Process(target=_stop_for, args=(os.getpid(), STOPPED_S, stopped), daemon=True)
        helper.start()
        helper.join(60)
        assert helper.exitcode == 0 and stopped.value >= STOPPED_S
        counter = arm.get_state()["counter"]
        # Still running: no error, and it keeps publishing states.
        wait_until(lambda: arm.get_state()["counter"] > counter + 10, 5, "new states", arm)
        arm.check()
        assert arm.stop_reason is None
