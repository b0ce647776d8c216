"""Shared pieces of the arm-controller-on-fake-UR tests (robot/fake_ur + the real ur_rtde client).

The arm controller runs in a spawned child, so ur_rtde lives there: a hung client call is bounded
by the DeviceProcess timeouts (start: ready timeout, stop: terminate, then kill), and every test
carries a ``pytest.mark.timeout`` on top.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from robot.arm.config import ArmConfig
from robot.arm.controller import ArmController
from robot.config import config_path, load_config
from robot.fake_ur.handle import FakeURController
from robot.fake_ur.observe import hold  # noqa: F401 (the tests' wait, shared with benchmarks)
from tests.robot.arm.ur.beat import beating
from tests.waiting import wait_until as shared_wait_until

# The simulated UR5 behind the fake controller (robot.sim.ur5_model.UR5ModelParams fields): the
# same ground truth as the arm controller's own sim backend (configs/arm/sim_ur5.yaml).
ARM_DELAY_S = 0.03
ARM_TAU_S = 0.02
ARM_PARAMS = {"action_delay_s": ARM_DELAY_S, "tracking_time_constant_s": ARM_TAU_S}

# (fake controller version, arm config) per UR generation.
CB3 = ("3.15", "ur5_cb3")
ESERIES = ("5.11", "ur5e")

SERVOL, SERVO_STOP, SET_PAYLOAD, SET_TCP, STOP_SCRIPT = "24", "16", "17", "29", "255"


def make_fake(version: str) -> FakeURController:
    """A fake UR controller in a child process with the simulated UR5 behind it (not started)."""
    return FakeURController(version, process=True, arm_kind="sim", arm_params=dict(ARM_PARAMS))


def ur_config(name: str, host: str, *overrides: str) -> ArmConfig:
    """``configs/arm/<name>.yaml`` as shipped, pointed at ``host`` (its 1 s heartbeat watchdog stays on:
    tests wait with :func:`wait_until` / :func:`hold`, which beat, or keep it fed with :func:`arm_on`)."""
    return load_config(ArmConfig, config_path(f"arm/{name}.yaml"), [f"host={host}", *overrides])


@contextlib.contextmanager
def arm_on(config: ArmConfig) -> Iterator[ArmController]:
    """An arm controller on ``config`` whose heartbeat is fed every 0.1 s by a process of its own
    (:func:`tests.robot.arm.ur.beat.beating`) while the test analyses between its waits.

    A test's analysis of the logs between two waits (fake-controller RPCs, numpy) took over the
    watchdog's 1 s on a host at load 16, and the controller rightly brought the arm to rest and
    exited ("no heartbeat from the parent for 1.00 s"); a beating thread of the test's own process
    then still missed the second once on CI beside other work (beat.py says why). The watchdog itself
    has its own tests.
    """
    arm = ArmController(config)
    try:
        with beating(arm), arm:
            yield arm
    finally:
        arm.close()  # its rings, also when the heartbeat process failed to start (idempotent)


def wait_until(
    cond: Callable[[], Any],
    timeout_s: float,
    what: str,
    arm: ArmController | None = None,
    check: bool = True,
) -> None:
    """tests.waiting.wait_until, beating ``arm``'s heartbeat meanwhile (after ``arm.check()`` unless
    ``check`` is False)."""

    def beat() -> None:
        if check:
            arm.check()
        arm.heartbeat()

    shared_wait_until(cond, timeout_s, what, each=beat if arm is not None else None)


def servo_packets(fake: FakeURController) -> int:
    """servoL data packages the fake received so far (one per ``servoL`` call, all connections)."""
    return int(fake.state()["command_packets"].get(SERVOL, 0))


def unique_robot_times(history: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the records that carry a new RTDE package (the controller may read one twice)."""
    rt = history["robot_time"]
    return np.flatnonzero(np.concatenate([[True], np.diff(rt) > 0]))
