"""The gripper tests' fake UR controller with a Robotiq unit behind its URCap socket
(robot/fake_ur/gripper.py), loopback only."""

from __future__ import annotations

import pytest

from robot.fake_ur.handle import FakeURController

# This fake unit stops at counts other than 0/255, as real ones do: calibration has to find them.
UNIT = {"open_count": 6, "closed_count": 221, "activation_s": 0.2}


@pytest.fixture
def fake():
    """A fake e-Series controller (in this process) with the ``UNIT`` gripper; ended after the test."""
    with FakeURController("5.11", gripper_params=dict(UNIT)) as f:
        yield f
