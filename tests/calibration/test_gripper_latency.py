"""`rig calibrate gripper-latency` on the simulated rig with a gripper: it finds a command delay it
was never told (the ground truth is set only on the simulated gripper), and the rig uses it."""

from __future__ import annotations

import pytest

from robot.calibration_data import load_calibration
from robot.config import config_path, load_config
from robot.env import Env
from robot.rig_config import RigConfig

RIG = ["--config", "rig/sim_pick_place.yaml"]


@pytest.mark.timeout(180)
def test_gripper_latency_finds_an_unseen_command_delay(tmp_path, calibrate, cal_file):
    truth_s = 0.0731  # the shipped sim gripper says 0.04 and the rig's fallback 0.04: neither is it
    rc, res, text = calibrate("gripper-latency", *RIG, f"gripper.sim.command_delay_s={truth_s}")
    assert rc == 0, text
    # One gripper tick at 50 Hz is the resolution of the sent-command times.
    assert abs(res["gripper_latency_ms"] - truth_s * 1e3) < 10.0, res
    cal = load_calibration(cal_file)
    lat = cal.gripper.action_latency
    assert abs(lat.value_s - truth_s) < 0.010
    # The arm's method: a response model chosen by BIC, the value its ramp lag (dead time + lags).
    assert lat.model == res["model"] in ("first_order", "second_order")
    assert lat.dead_time_s <= lat.value_s
    assert abs(lat.dead_time_s + sum(lat.time_constants_s) - lat.value_s) < 1e-9
    assert (tmp_path / "gripper_latency.png").is_file()
    # The rig's widths are then sent that much earlier.
    rig = load_config(RigConfig, config_path("rig/sim_pick_place.yaml"))
    env = Env(rig, spacemouse=False, calibration=cal)
    assert env.gripper_latency_s == cal.gripper.action_latency.value_s
    assert "gripper latency" in env.describe_timing() and "(calibration)" in env.describe_timing()


def test_gripper_latency_on_a_rig_without_gripper_is_one_clear_failure(calibrate, cal_file):
    rc, res, text = calibrate("gripper-latency", "--config", "rig/sim.yaml")
    assert rc == 1 and "has no gripper" in res["error"]
    assert not cal_file.exists()
