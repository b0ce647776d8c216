"""The real ur_rtde 1.6.5 client against the fake UR controller: connection, state, motion commands."""

from __future__ import annotations

import numpy as np
import pytest

from robot.fake_ur import FakeURController
from tests.robot.fake_ur.helpers import fk_pose, pose_distance, run_client

pytestmark = pytest.mark.timeout(60)

Q_START = [0.3, -1.4, 1.5, -1.7, -1.5, 0.2]  # away from singular configurations


def test_receive_interface_reads_state_consistent_with_fk():
    with FakeURController(version="5.11", initial_q=Q_START) as fake:
        out = run_client("receive", fake.host, timeout_s=20)
        assert out["connected"] is True
        np.testing.assert_allclose(out["actual_q"], Q_START, atol=1e-9)
        np.testing.assert_allclose(out["target_q"], Q_START, atol=1e-9)
        dp, dr = pose_distance(out["actual_tcp_pose"], fk_pose(Q_START))
        assert dp < 1e-9 and dr < 1e-9
        dp, dr = pose_distance(out["target_tcp_pose"], fk_pose(Q_START))
        assert dp < 1e-9 and dr < 1e-9
        assert out["timestamp_advance_s"] > 0.05  # data keeps streaming
        assert out["robot_mode"] == 7  # RUNNING
        assert out["safety_mode"] == 1  # NORMAL
        assert out["safety_status_bits"] == 1
        assert out["runtime_state"] == 1  # no program before a control interface uploads it
        assert not out["protective_stopped"] and not out["emergency_stopped"]
        conns = [c for c in fake.state()["connections"] if c["kind"] == "rtde"]
        assert conns == []  # the client disconnected


@pytest.mark.parametrize(
    ("version", "servo_dt_s", "arm_kind"),
    [("5.11", 0.002, "kinematic"), ("3.15", 0.008, "kinematic"), ("5.11", 0.002, "sim")],
    ids=["e-series", "cb3", "e-series-sim-arm"],
)
def test_control_interface_runs_script_and_moves_the_arm(version, servo_dt_s, arm_kind):
    with FakeURController(version=version, initial_q=Q_START, arm_kind=arm_kind) as fake:
        out = run_client("control_basics", fake.host, {"servo_dt_s": servo_dt_s}, timeout_s=40)
        st = fake.state()
    assert out["program_running"] is True
    np.testing.assert_allclose(out["start_q"], Q_START, atol=1e-9)

    # moveL: blocking, returns True once the TCP reached the goal along a line.
    assert out["moveL_ok"] is True
    dp, dr = pose_distance(out["pose_after_moveL"], out["moveL_goal"])
    assert dp < 1e-3 and dr < 1e-3

    # moveJ: joints at the goal, and the reported TCP pose is FK of the reported joints.
    assert out["moveJ_ok"] is True
    np.testing.assert_allclose(out["q_after_moveJ"], out["moveJ_goal"], atol=1e-3)

    # servoL stream: the TCP followed the commanded line to its end.
    assert out["servo_ok"] is True
    dp, dr = pose_distance(out["pose_after_servo"], out["servo_final_target"])
    assert dp < 2e-3 and dr < 2e-3
    servo_travel = np.subtract(out["pose_after_servo"][:3], out["servo_start_pose"][:3])
    np.testing.assert_allclose(servo_travel, [-0.04, 0.0, 0.0], atol=2e-3)
    assert out["servoStop_ok"] is True

    # setTcp: the reported pose is now FK(q) composed with the 10 cm offset, and getTCPOffset reads it.
    assert out["setTcp_ok"] is True
    np.testing.assert_allclose(out["tcp_offset"], [0, 0, 0.1, 0, 0, 0], atol=1e-12)
    dp, dr = pose_distance(out["pose_with_tcp"], fk_pose(out["q_with_tcp"], [0, 0, 0.1, 0, 0, 0]))
    assert dp < 1e-9 and dr < 1e-9
    assert out["setPayload_ok"] is True
    assert out["payload"] == pytest.approx(1.5)

    assert out["program_running_after_stop"] is True
    assert st["runtime_state"] == 1
    # Every call reached the script as the command id ur_rtde documents (moveL 3, moveJ 1, servoL 24,
    # servoStop 16, setTcp 29, getTCPOffset 40, setPayload 17, stopScript 255).
    for cmd in ("3", "1", "24", "16", "29", "40", "17", "255"):
        assert st["command_counts"].get(cmd, 0) >= 1, (cmd, st["command_counts"])
    assert not st["unsupported_commands"]
    assert st["script_uploads"] == 1
    assert st["tcp_offset"] == [0, 0, 0.1, 0, 0, 0]
    assert not st["errors"]
