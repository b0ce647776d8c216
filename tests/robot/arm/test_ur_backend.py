"""The ur_rtde backend through the real arm controller process, against the fake UR controller
(robot/fake_ur: speaks RTDE/dashboard/script to the real ur_rtde client; the simulated UR5 behind it)."""

from __future__ import annotations

import pytest

from robot.arm.backend import StatusFlag
from robot.arm.controller import ArmController, ArmFaultError
from robot.arm.interpolator import pose_distance
from robot.arm.ur_client import parse_polyscope_version
from robot.fake_ur.handle import FakeURController
from robot.process import DeviceProcessError
from tests.robot.arm.ur.helpers import arm_on, hold, ur_config, wait_until


@pytest.mark.timeout(120)
def test_servo_fake_ur5e_fault_reconnect_and_clean_exit():
    with FakeURController("5.11", process=True, arm_kind="sim") as fake:
        cfg = ur_config("ur5e", fake.host)
        with arm_on(cfg) as arm:  # beaten from a process of its own (tests/robot/arm/ur/beat.py)
            p0 = arm.get_state()["actual_tcp_pose"]
            assert pose_distance(p0, fake.state()["actual_tcp_pose"])[0] < 1e-6
            goal = p0 + [0.04, -0.03, 0.02, 0, 0, 0]
            arm.servo_to(goal, 0.5)
            wait_until(
                lambda: pose_distance(fake.state()["actual_tcp_pose"], goal)[0] < 1e-3, 10, "arm at goal", arm
            )
            arm.check()
            s = arm.get_state()
            assert pose_distance(s["actual_tcp_pose"], goal)[0] < 2e-3
            assert s["robot_time"] > 0 and s["receive_time"] >= s["capture_time"]
            # Protective stop: published, check() explains it, the controller stops commanding.
            fake.inject_protective_stop()
            wait_until(
                lambda: arm.get_state()["status_flags"] & StatusFlag.PROTECTIVE_STOP,
                5,
                "fault published",
                arm,
                check=False,
            )
            with pytest.raises(ArmFaultError, match="PROTECTIVE STOP"):
                arm.check()
            held = fake.state()["actual_tcp_pose"]
            arm.servo_to(p0, 0.5)  # ignored while faulted
            hold(arm, 0.5)
            assert pose_distance(fake.state()["actual_tcp_pose"], held)[0] < 1e-6
            # The operator clears it; reconnect resumes without restarting anything.
            fake.clear_faults()
            arm.reconnect(timeout_s=30)
            arm.check()
            arm.servo_to(p0, 0.5)
            wait_until(
                lambda: pose_distance(fake.state()["actual_tcp_pose"], p0)[0] < 1e-3, 10, "back at start", arm
            )
            arm.check()
        assert arm.exitcode == 0
        # On exit the controller stopped the control script (servoStop + stopScript).
        wait_until(lambda: fake.state()["runtime_state"] != 2, 5, "control script stopped")


@pytest.mark.timeout(60)
def test_500hz_refused_on_a_cb3_controller():
    with FakeURController("3.15", process=True) as fake:
        arm = ArmController(ur_config("ur5e", fake.host))
        try:
            with pytest.raises(DeviceProcessError, match=r"PolyScope 3\.15 \(CB3\).*125 Hz.*rate_hz is 500"):
                arm.start()
        finally:
            arm.stop()
            arm.close()


def test_polyscope_version_parsing():
    assert parse_polyscope_version("URSoftware 5.11.6.108 (Jul 13 2022)") == (5, 11)
    assert parse_polyscope_version("URSoftware 3.15.7.106331 (Dec 14 2021)") == (3, 15)
    with pytest.raises(ValueError):
        parse_polyscope_version("Stopped")
