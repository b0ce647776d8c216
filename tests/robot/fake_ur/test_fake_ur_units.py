"""Unit tests of the fake UR controller's pieces: wire format, raw RTDE setup, control-script loop."""

from __future__ import annotations

import math
import socket
import struct

import numpy as np
import pytest

from robot.fake_ur import FakeURController, KinematicArm
from robot.fake_ur import protocol as P
from robot.fake_ur.arm_model import ur5_fk, ur5_ik_closest
from robot.fake_ur.script import ControlScript, Registers, register_offset_from_script
from tests.robot.fake_ur.helpers import fk_pose, pose_distance, run_client

pytestmark = pytest.mark.timeout(30)

Q0 = np.array([0.3, -1.4, 1.5, -1.7, -1.5, 0.2])


def test_packet_reader_reassembles_arbitrary_splits():
    data = P.encode_packet(ord("V"), b"\x00\x02") + P.encode_controller_version(5, 11, 6, 108)
    reader = P.PacketReader()
    got = []
    for i in range(len(data)):  # one byte at a time
        got += list(reader.feed(data[i : i + 1]))
    assert got[0] == (ord("V"), b"\x00\x02")
    assert got[1] == (ord("v"), struct.pack(">IIII", 5, 11, 6, 108))


def test_recipe_round_trip_and_types():
    names = ["timestamp", "actual_q", "robot_mode", "joint_mode", "actual_digital_input_bits", "payload_cog"]
    types = [P.output_type(n) for n in names]
    assert types == ["DOUBLE", "VECTOR6D", "INT32", "VECTOR6INT32", "UINT64", "VECTOR3D"]
    recipe = P.Recipe(1, names, types)
    values = {
        "timestamp": 1.5,
        "actual_q": np.arange(6.0),
        "robot_mode": 7,
        "joint_mode": [253] * 6,
        "actual_digital_input_bits": 2**40,
        "payload_cog": (0.0, 0.0, 0.05),
    }
    body = recipe.pack(values)
    assert len(body) == recipe.size_bytes == 8 + 48 + 4 + 24 + 8 + 24
    back = recipe.unpack(body)
    assert back["actual_q"] == list(np.arange(6.0))
    assert back["robot_mode"] == 7 and back["actual_digital_input_bits"] == 2**40
    assert P.output_type("no_such_variable") is None
    assert P.output_type("output_int_register_47") == "INT32"
    assert P.output_type("output_int_register_48") is None
    assert P.input_type("input_double_register_3") == "DOUBLE"
    assert P.input_type("output_double_register_3") is None  # outputs cannot be written


def _rtde_request(sock: socket.socket, reader: P.PacketReader, packet_type: int, payload: bytes = b""):
    sock.sendall(P.encode_packet(packet_type, payload))
    while True:
        for ptype, body in reader.feed(sock.recv(4096)):
            if ptype == packet_type:
                return body


def test_raw_rtde_setup_answers_not_found_and_in_use():
    with FakeURController(version="3.15") as fake:
        a = socket.create_connection((fake.host, 30004), timeout=5)
        b = socket.create_connection((fake.host, 30004), timeout=5)
        ra, rb = P.PacketReader(), P.PacketReader()
        try:
            assert _rtde_request(a, ra, P.RTDE_REQUEST_PROTOCOL_VERSION, b"\x00\x02") == b"\x01"
            assert struct.unpack(">IIII", _rtde_request(a, ra, P.RTDE_GET_URCONTROL_VERSION))[:2] == (3, 15)
            body = _rtde_request(
                a, ra, P.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, struct.pack(">d", 125.0) + b"timestamp,bogus,"
            )
            assert body[1:].decode() == "DOUBLE,NOT_FOUND"
            body = _rtde_request(a, ra, P.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_0,")
            assert body == b"\x01INT32"
            _rtde_request(b, rb, P.RTDE_REQUEST_PROTOCOL_VERSION, b"\x00\x02")
            body = _rtde_request(
                b, rb, P.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_0,input_int_register_1,"
            )
            assert body[1:].decode() == "IN_USE,INT32"
        finally:
            a.close()
            b.close()
        # Closing the owner frees its registers.
        fake.wait_until(lambda st: not st["connections"], timeout_s=2)
        c = socket.create_connection((fake.host, 30004), timeout=5)
        try:
            rc = P.PacketReader()
            _rtde_request(c, rc, P.RTDE_REQUEST_PROTOCOL_VERSION, b"\x00\x02")
            assert (
                _rtde_request(c, rc, P.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_0,")
                == b"\x01INT32"
            )
        finally:
            c.close()


def test_dashboard_answers_what_ur_rtde_checks():
    with FakeURController(version="5.11") as fake:
        with socket.create_connection((fake.host, 29999), timeout=5) as s:
            f = s.makefile("rw", newline="\n")
            assert f.readline().startswith("Connected: Universal Robots Dashboard Server")
            replies = {}
            for cmd in (
                "PolyscopeVersion",
                "get serial number",
                "is in remote control",
                "stop",
                "robotmode",
                "nonsense",
            ):
                f.write(cmd + "\n")
                f.flush()
                replies[cmd] = f.readline().rstrip("\n")
    assert replies["PolyscopeVersion"].startswith("URSoftware 5.11.")
    assert replies["get serial number"].isdigit()
    assert "true" in replies["is in remote control"]
    assert replies["stop"] == "Stopped"
    assert replies["robotmode"] == "Robotmode: RUNNING"
    assert "could not understand" in replies["nonsense"]


def test_register_offset_is_read_from_the_injected_script_text():
    text = "def rtde_control():\n    global reg_offset_float = # float register offset\n24    global reg_offset_int = # int register offset\n24    global x = 1\nend\n"
    assert register_offset_from_script(text) == 24
    assert register_offset_from_script(text.replace("\n24", "\n0")) == 0


def _script(offset: int = 0):
    regs = Registers()
    arm = KinematicArm(Q0)
    return regs, arm, ControlScript(regs, arm, offset, 0.0)


def _run(script, arm, t, n, dt=0.002):
    for _ in range(n):
        t += dt
        script.tick(t)
        arm.step(t)
    return t


def test_script_blocking_move_answers_ready_then_done_then_ready_after_clear():
    regs, arm, script = _script()
    assert regs.output_int[0] == 1 and regs.output_int[2] == 65536  # ready, async status reset
    goal = Q0 + np.array([0.1, 0, 0, 0, 0, 0])
    regs.input_int[0] = 1  # moveJ
    regs.input_double[:6] = goal
    regs.input_double[6:8] = (1.0, 2.0)
    t = _run(script, arm, 0.0, 5)
    assert regs.output_int[0] == 1  # still moving
    t = _run(script, arm, t, 500)
    assert regs.output_int[0] == 2  # done
    np.testing.assert_allclose(arm.actual_q, goal, atol=1e-4)
    regs.input_int[0] = 0  # clear
    _run(script, arm, t, 1)
    assert regs.output_int[0] == 1


def test_script_async_move_reports_running_bit_and_finishes():
    regs, arm, script = _script()
    regs.input_int[0] = 1
    regs.input_double[:6] = Q0 + 0.05
    regs.input_double[6:8] = (1.0, 2.0)
    regs.input_int[1] = 1  # async
    t = _run(script, arm, 0.0, 1)
    assert regs.output_int[0] == 2  # done at once
    assert regs.output_int[2] & (1 << 15)  # running
    op_id = regs.output_int[2] >> 24
    t = _run(script, arm, t, 500)
    assert not regs.output_int[2] & (1 << 15)
    assert regs.output_int[2] >> 24 == op_id


def test_script_servo_streaming_keeps_ready_and_stop_script_ends_program():
    regs, arm, script = _script()
    target = ur5_fk(Q0 + 0.02)
    regs.input_int[0] = 24  # servoL
    regs.input_double[:6] = target
    t = _run(script, arm, 0.0, 100)
    assert regs.output_int[0] == 1
    dp, dr = pose_distance(arm.actual_tcp_pose, target)
    assert dp < 1e-4 and dr < 1e-4
    regs.input_int[0] = 255
    _run(script, arm, t, 1)
    assert script.stopped


def test_kinematic_arm_moveL_follows_a_straight_line_and_fk_matches():
    arm = KinematicArm(Q0, tracking_time_constant_s=1e-4)
    start = arm.actual_tcp_pose
    goal = start.copy()
    goal[:3] += (0.05, -0.04, 0.03)
    assert arm.move_pose(goal, 0.1, 1.0, 0.0)
    t = 0.0
    worst = 0.0
    direction = (goal[:3] - start[:3]) / np.linalg.norm(goal[:3] - start[:3])
    while not arm.motion_done() and t < 5:
        t += 0.002
        arm.step(t)
        off = arm.actual_tcp_pose[:3] - start[:3]
        worst = max(worst, float(np.linalg.norm(off - direction * (off @ direction))))
    assert arm.motion_done()
    assert worst < 1e-3
    dp, dr = pose_distance(arm.actual_tcp_pose, goal)
    assert dp < 1e-4 and dr < 1e-4
    dp, dr = pose_distance(arm.actual_tcp_pose, fk_pose(arm.actual_q))
    assert dp < 1e-9 and dr < 1e-9
    q = ur5_ik_closest(goal, Q0, np.zeros(6))
    dp, dr = pose_distance(fk_pose(q), goal)
    assert dp < 1e-8 and dr < 1e-8


def test_rtde_watchdog_stops_the_program_when_the_client_stops_kicking():
    with FakeURController(version="5.11") as fake:
        out = run_client("watchdog", fake.host, timeout_s=30)
        st = fake.state()
    assert out["set_ok"] is True
    assert out["running_while_kicked"] is True
    # Stopped, and not before the watchdog's period (0.5 s) after the last kick.
    assert out["stopped_after_s"] is not None and out["stopped_after_s"] >= 0.4, out
    assert st["watchdog_trips"] == 1


def _half_rise_time_s(lookahead_time_s: float, gain: float, servo_joints: bool = False) -> float:
    """Time from a 5 mm servo step until the fake's sim arm covered half of it (s)."""
    from robot.fake_ur.sim_adapter import SimArmAdapter
    from robot.sim.ur5_model import UR5ModelParams
    from tests.robot.fake_ur.helpers import servo_through_script

    params = UR5ModelParams(action_delay_s=0.01, tracking_time_constant_s=0.01, max_linear_accel_m_s2=1e3)
    arm = SimArmAdapter(Q0, params)
    start = arm.actual_tcp_pose
    goal = start + np.array([0.0, 0.005, 0, 0, 0, 0])
    period_s = 0.002
    targets = np.repeat(goal[None], int(1.0 / period_s), axis=0)
    ts, measured = servo_through_script(arm, targets, period_s, lookahead_time_s, gain, servo_joints)
    frac = (measured[:, 1] - start[1]) / 0.005
    assert frac[-1] == pytest.approx(1.0, abs=0.01)  # it gets there
    return float(ts[np.argmax(frac >= 0.5)] - period_s)  # the step was sent at the first tick


def test_sim_arm_lag_grows_with_servo_lookahead_and_falls_with_gain():
    base = _half_rise_time_s(0.0, 300.0)  # no smoothing: delay + tracking only
    assert base == pytest.approx(0.01 + 0.01 * math.log(2), abs=0.003)
    short, long = _half_rise_time_s(0.03, 300.0), _half_rise_time_s(0.2, 300.0)
    assert base < short < long
    # The smoothing's half time is (lookahead / 2) * (300 / gain) * ln 2 on top of the arm's own lag.
    assert long - base > 0.5 * 0.1 * math.log(2)
    high_gain = _half_rise_time_s(0.2, 2000.0)
    assert base < high_gain < long
    # servoJ goes through the same smoothing.
    assert _half_rise_time_s(0.2, 300.0, servo_joints=True) == pytest.approx(long, abs=0.003)
