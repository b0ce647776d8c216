"""Pose trajectory interpolator and safety filter, in-process (no clock involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from robot.arm.config import ArmLimits
from robot.arm.interpolator import PoseTrajectoryInterpolator, pose_distance
from robot.arm.safety import SafetyFilter

DOWN = np.array([math.pi, 0.0, 0.0])


def pose(x, y, z, rot=DOWN):
    return np.concatenate([[x, y, z], rot])


def test_holds_end_poses_and_never_extrapolates():
    a, b = pose(0.4, 0.0, 0.2), pose(0.5, 0.1, 0.3)
    traj = PoseTrajectoryInterpolator([10.0, 12.0], [a, b])
    np.testing.assert_allclose(traj(5.0), traj(10.0))
    np.testing.assert_allclose(traj(5.0)[:3], a[:3])
    np.testing.assert_allclose(traj(100.0)[:3], b[:3])
    np.testing.assert_allclose(traj(11.0)[:3], (a[:3] + b[:3]) / 2)
    single = PoseTrajectoryInterpolator([3.0], [a])
    assert pose_distance(single(-1.0), a) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_rotation_is_slerped():
    r0 = Rotation.from_rotvec(DOWN)
    r1 = Rotation.from_rotvec([0, 0, 0.6]) * r0
    traj = PoseTrajectoryInterpolator(
        [0.0, 1.0], [pose(0.4, 0, 0.2, r0.as_rotvec()), pose(0.4, 0, 0.2, r1.as_rotvec())]
    )
    mid = Rotation.from_rotvec(traj(0.5)[3:])
    assert (mid * r0.inv()).magnitude() == pytest.approx(0.3, abs=1e-9)


FAST = dict(max_linear_speed_m_s=1e3, max_angular_speed_rad_s=1e3)


def test_later_waypoint_is_appended_after_trimming_the_past():
    traj = PoseTrajectoryInterpolator([0.0], [pose(0.4, 0, 0.2)])
    traj = traj.schedule_waypoint(pose(0.5, 0, 0.2), 1.0, curr_time=0.0, **FAST)
    traj = traj.schedule_waypoint(pose(0.5, 0.1, 0.2), 2.0, curr_time=0.5, last_waypoint_time=1.0, **FAST)
    np.testing.assert_allclose(traj.times, [0.5, 1.0, 2.0])
    np.testing.assert_allclose(traj(1.0)[:3], [0.5, 0, 0.2])
    np.testing.assert_allclose(traj(2.0)[:3], [0.5, 0.1, 0.2])


def test_earlier_waypoint_replaces_the_tail():
    traj = PoseTrajectoryInterpolator([0.0], [pose(0.4, 0, 0.2)])
    traj = traj.schedule_waypoint(pose(0.6, 0, 0.2), 2.0, curr_time=0.0, **FAST)
    traj = traj.schedule_waypoint(pose(0.4, 0.1, 0.2), 1.5, curr_time=1.0, last_waypoint_time=2.0, **FAST)
    np.testing.assert_allclose(traj.times, [1.0, 1.5])
    np.testing.assert_allclose(traj(1.0)[:3], [0.5, 0, 0.2])  # where the old path was at curr_time
    np.testing.assert_allclose(traj(1.5)[:3], [0.4, 0.1, 0.2])
    assert traj(2.0)[0] == pytest.approx(0.4)  # the old tail to x=0.6 is gone


def test_waypoint_in_the_past_is_ignored():
    traj = PoseTrajectoryInterpolator([0.0], [pose(0.4, 0, 0.2)])
    assert traj.schedule_waypoint(pose(0.6, 0, 0.2), 0.9, curr_time=1.0, **FAST) is traj


def test_too_fast_waypoint_is_stretched_to_the_speed_limit():
    traj = PoseTrajectoryInterpolator([0.0], [pose(0.4, 0, 0.2)])
    traj = traj.schedule_waypoint(
        pose(0.6, 0, 0.2), 0.1, curr_time=0.0, max_linear_speed_m_s=0.25, max_angular_speed_rad_s=1.0
    )
    assert traj.end_time == pytest.approx(0.8)
    rot = Rotation.from_rotvec([0, 0, 1.0]) * Rotation.from_rotvec(DOWN)
    traj = traj.schedule_waypoint(
        pose(0.6, 0, 0.2, rot.as_rotvec()),
        0.9,
        curr_time=0.8,
        last_waypoint_time=0.8,
        max_linear_speed_m_s=0.25,
        max_angular_speed_rad_s=0.5,
    )
    assert traj.end_time == pytest.approx(0.8 + 2.0)


def _speeds(traj, t0, t1, n=1500):
    ts = np.linspace(t0, t1, n)
    p = traj(ts)
    dt = np.diff(ts)
    lin = np.linalg.norm(np.diff(p[:, :3], axis=0), axis=1) / dt
    rots = Rotation.from_rotvec(p[:, 3:])
    ang = (rots[1:] * rots[:-1].inv()).magnitude() / dt
    return lin, ang


poses_st = st.tuples(
    st.floats(0.2, 0.7),
    st.floats(-0.4, 0.4),
    st.floats(0.0, 0.5),
    st.floats(-0.8, 0.8),
    st.floats(-0.8, 0.8),
    st.floats(-3.0, 3.0),
)
waypoint_st = st.tuples(
    poses_st, st.floats(-0.2, 0.6), st.floats(0.0, 0.3)
)  # pose, time offset, clock advance


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    waypoints=st.lists(waypoint_st, min_size=1, max_size=12),
    max_lin=st.floats(0.05, 1.0),
    max_ang=st.floats(0.2, 3.0),
)
def test_speed_limits_never_exceeded_for_random_waypoints(waypoints, max_lin, max_ang):
    """Property: whatever waypoints arrive (too close, out of order, in the past), the trajectory and
    the safety-filtered per-tick commands never exceed the speed limits."""
    t = 0.0
    traj = PoseTrajectoryInterpolator([t], [pose(0.45, 0, 0.2)])
    last_wp = None
    for (x, y, z, tilt_x, tilt_y, yaw), offset, advance in waypoints:
        t += advance
        rot = Rotation.from_rotvec([tilt_x, tilt_y, yaw]) * Rotation.from_rotvec(DOWN)
        wp_time = t + offset
        new = traj.schedule_waypoint(
            pose(x, y, z, rot.as_rotvec()),
            wp_time,
            max_linear_speed_m_s=max_lin,
            max_angular_speed_rad_s=max_ang,
            curr_time=t,
            last_waypoint_time=last_wp,
        )
        if new is not traj:
            last_wp = wp_time
        traj = new
        lin, ang = _speeds(traj, min(t, traj.start_time) - 0.1, max(t, traj.end_time) + 0.1)
        assert lin.max() <= max_lin * (1 + 1e-6) + 1e-9
        assert ang.max() <= max_ang * (1 + 1e-6) + 1e-9

    # The per-tick safety filter on top: each commanded step stays within the step limits.
    limits = ArmLimits(max_linear_speed_m_s=max_lin, max_angular_speed_rad_s=max_ang)
    dt = 1 / 125
    filt = SafetyFilter(limits, dt)
    # The controller's previous command is always one that passed the filter (inside the box); the
    # trajectory itself may start outside it (a waypoint below the box trims its start there).
    prev, _, _ = filt.validate(traj(traj.start_time))
    for tick_t in np.arange(traj.start_time, traj.end_time + 0.05, dt):
        cmd, _, _ = filt.limit_step(traj(tick_t), prev)
        lin_step, ang_step = pose_distance(prev, cmd)
        assert lin_step <= filt.max_step_m + 1e-9
        assert ang_step <= filt.max_step_rad + 1e-9
        assert np.all(cmd[:3] >= filt.box_min) and np.all(cmd[:3] <= filt.box_max)
        prev = cmd


def test_safety_rejects_nan_inf_and_absurd_rotation():
    f = SafetyFilter(ArmLimits(), 1 / 125)
    for bad in (
        pose(np.nan, 0, 0.2),
        pose(0.4, np.inf, 0.2),
        np.array([0.4, 0, 0.2, 10.0, 0, 0]),
        np.zeros(5),
    ):
        out, reason, _ = f.validate(bad)
        assert out is None and reason
    out, reason, clipped = f.validate(pose(0.45, 0, 0.2))
    assert reason is None and not clipped
    np.testing.assert_allclose(out, pose(0.45, 0, 0.2))


def test_safety_clips_out_of_workspace_targets_onto_the_box():
    limits = ArmLimits()
    f = SafetyFilter(limits, 1 / 125)
    out, reason, clipped = f.validate(pose(2.0, -1.0, -0.5))
    assert reason is None and clipped
    np.testing.assert_allclose(
        out[:3], [limits.workspace_max_m[0], limits.workspace_min_m[1], limits.workspace_min_m[2]]
    )
    cmd, clipped, limited = f.limit_step(pose(0.45, 0, -0.3), pose(0.45, 0, 0.021))
    assert clipped and not limited and cmd[2] == pytest.approx(limits.workspace_min_m[2])


def test_safety_limits_a_jump_to_one_step_in_its_direction():
    limits = ArmLimits(max_linear_speed_m_s=0.25, max_step_m=0.01)
    f = SafetyFilter(limits, 1 / 125)
    cmd, _, limited = f.limit_step(pose(0.6, 0, 0.2), pose(0.4, 0, 0.2))
    assert limited
    np.testing.assert_allclose(cmd[:3], [0.4 + 0.25 / 125, 0, 0.2])
    rot = (Rotation.from_rotvec([0, 0, 1.0]) * Rotation.from_rotvec(DOWN)).as_rotvec()
    cmd, _, limited = f.limit_step(pose(0.4, 0, 0.2, rot), pose(0.4, 0, 0.2))
    assert limited
    assert pose_distance(cmd, pose(0.4, 0, 0.2))[1] == pytest.approx(f.max_step_rad)
