"""The pure simulated UR5 model: delay, tracking, limits, kinematics, unreachable targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot.arm.interpolator import pose_distance
from robot.geometry.ur_kinematics import ur5_forward_kinematics
from robot.sim.ur5_model import SimUR5, UR5ModelParams

START = np.array([0.45, 0.0, 0.2, math.pi, 0.0, 0.0])


def _run(model, t0, t1, dt=0.002):
    out = []
    for t in np.arange(t0 + dt, t1 + 1e-12, dt):
        model.step(t)
        out.append((t, model.tcp_pose, model.tcp_speed))
    return out


def test_pure_delay_then_first_order_response():
    p = UR5ModelParams(action_delay_s=0.05, tracking_time_constant_s=0.02, max_linear_accel_m_s2=1e3)
    m = SimUR5(p, START, t0=0.0)
    goal = START + [0.01, 0, 0, 0, 0, 0]
    assert m.command_pose(goal, 0.0)
    trace = _run(m, 0.0, 0.3)
    x = np.array([pose[0] for _, pose, _ in trace]) - START[0]
    ts = np.array([t for t, _, _ in trace])
    assert np.all(x[ts <= 0.05] == 0.0)  # nothing moves during the delay
    # One time constant after the delay: ~63% of the step (first order), finally at the goal.
    frac = np.interp(0.05 + 0.02, ts, x) / 0.01
    assert 0.55 < frac < 0.70
    assert x[-1] == pytest.approx(0.01, abs=1e-6)


def test_speed_and_acceleration_limits_hold():
    p = UR5ModelParams(action_delay_s=0.0, max_linear_speed_m_s=0.3, max_linear_accel_m_s2=2.0)
    m = SimUR5(p, START, t0=0.0)
    m.command_pose(START + [0.15, 0.1, 0.05, 0, 0, 0], 0.0)
    trace = _run(m, 0.0, 1.5)
    v = np.array([s[:3] for _, _, s in trace])
    speed = np.linalg.norm(v, axis=1)
    assert speed.max() <= 0.3 + 1e-9
    acc = np.linalg.norm(np.diff(v, axis=0), axis=1) / 0.002
    assert acc.max() <= 2.0 * (1 + 1e-6)
    assert pose_distance(trace[-1][1], START + [0.15, 0.1, 0.05, 0, 0, 0])[0] < 1e-4


@pytest.mark.parametrize("order", [1, 2])
def test_joints_match_tcp_pose_through_ur5_kinematics(order):
    p = UR5ModelParams(tracking_order=order)
    m = SimUR5(p, START, t0=0.0)
    rot = (Rotation.from_rotvec([0.2, -0.1, 0.5]) * Rotation.from_rotvec(START[3:])).as_rotvec()
    m.command_pose(np.concatenate([[0.55, -0.2, 0.1], rot]), 0.0)
    moved = 0.0
    for t in np.arange(0.008, 1.0, 0.008):
        m.step(t)
        lin, ang = pose_distance(ur5_forward_kinematics(m.q, p.tcp_offset_pose), m.tcp_pose)
        assert lin < 1e-9 and ang < 1e-9
        moved = max(moved, pose_distance(m.tcp_pose, START)[0])
    assert moved > 0.1
    assert np.all(np.isfinite(m.qd))


def test_unreachable_target_is_flagged_and_ignored():
    m = SimUR5(UR5ModelParams(), START, t0=0.0)
    assert not m.command_pose([1.5, 0, 0.2, math.pi, 0, 0], 0.0)
    assert m.unreachable
    _run(m, 0.0, 0.3)
    assert pose_distance(m.tcp_pose, START)[0] < 1e-12  # held the previous target
    assert m.command_pose(START, 0.3) and not m.unreachable


def test_no_drift_at_rest():
    m = SimUR5(UR5ModelParams(), START, t0=100.0)
    _run(m, 100.0, 105.0, dt=0.008)
    assert pose_distance(m.tcp_pose, START)[0] == 0.0


def test_stop_decelerates_at_the_accel_limit_and_holds():
    p = UR5ModelParams(action_delay_s=0.0, max_linear_accel_m_s2=4.0)
    m = SimUR5(p, START, t0=0.0)
    m.command_pose(START + [0.2, 0, 0, 0, 0, 0], 0.0)
    _run(m, 0.0, 0.1)
    v0 = np.linalg.norm(m.tcp_speed[:3])
    assert v0 > 0.1
    m.stop(0.1)
    trace = _run(m, 0.1, 0.5)
    speeds = np.array([np.linalg.norm(s[:3]) for _, _, s in trace])
    assert np.all(np.diff(speeds) <= 1e-12)  # monotonically slowing
    t_rest = trace[int(np.argmax(speeds == 0))][0]
    assert t_rest - 0.1 == pytest.approx(v0 / 4.0, abs=0.005)
    rest = m.tcp_pose
    _run(m, 0.5, 1.0)
    assert pose_distance(m.tcp_pose, rest)[0] == 0.0
