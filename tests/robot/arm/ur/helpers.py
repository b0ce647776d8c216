"""Shared pieces of the arm-controller-on-fake-UR tests (robot/fake_ur + the real ur_rtde client).

The arm controller runs in a spawned child, so ur_rtde lives there: a hung client call is bounded
by the DeviceProcess timeouts (start: ready timeout, stop: terminate, then kill), and every test
carries a ``pytest.mark.timeout`` on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robot.arm.config import ArmConfig
from robot.arm.controller import ArmController
from robot.config import config_path, load_config
from robot.fake_ur.handle import FakeURController
from robot.fake_ur.observe import hold  # noqa: F401 (the tests' wait, shared with benchmarks)

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
    tests wait with :func:`wait_until` / :func:`hold`, which beat)."""
    return load_config(ArmConfig, config_path(f"arm/{name}.yaml"), [f"host={host}", *overrides])


def wait_until(
    cond: Callable[[], Any],
    timeout_s: float,
    what: str,
    arm: ArmController | None = None,
    check: bool = True,
) -> None:
    """Poll ``cond`` until true, beating ``arm``'s heartbeat (and calling ``arm.check()`` first
    unless ``check`` is False); AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if arm is not None:
            if check:
                arm.check()
            arm.heartbeat()
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")


def servo_packets(fake: FakeURController) -> int:
    """servoL data packages the fake received so far (one per ``servoL`` call, all connections)."""
    return int(fake.state()["command_packets"].get(SERVOL, 0))


def unique_robot_times(history: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the records that carry a new RTDE package (the controller may read one twice)."""
    rt = history["robot_time"]
    return np.flatnonzero(np.concatenate([[True], np.diff(rt) > 0]))
