"""ServoRamp (robot/arm/servo_ramp.py): each servoL target bounded relative to the last one sent."""

from __future__ import annotations

import numpy as np
import pytest

from robot.arm.config import ArmLimits
from robot.arm.servo_ramp import MAX_STEP_TIME_S, ServoRamp
from robot.geometry.pose_math import rotation_angle

LIMITS = ArmLimits()  # 0.25 m/s, 0.8 rad/s, 1 m/s^2
PERIOD_S = 0.002
START = np.array([0.45, 0.0, 0.2, np.pi, 0.0, 0.0])


def ramp() -> ServoRamp:
    r = ServoRamp(LIMITS, PERIOD_S)
    r.reset(START)
    return r


def line(speed_m_s: float, n: int) -> list[np.ndarray]:
    """A trajectory along x at ``speed_m_s``, one target per period."""
    return [START + [speed_m_s * PERIOD_S * (i + 1), 0, 0, 0, 0, 0] for i in range(n)]


def test_a_trajectory_within_the_limits_passes_unchanged():
    r = ramp()
    for target in line(0.2, 100):
        out = r.next(target, (0.2, 0.0), PERIOD_S, np.zeros(6))
        np.testing.assert_array_equal(out, target)
    assert r.limited_steps == 0


def test_the_newest_of_many_queued_targets_is_reached_by_a_ramp_not_a_jump():
    r = ramp()
    far = START + [0.03, 0, 0, 0, 0, 0]  # 60 capped steps queued while the client was paused
    sent, steps = [START], []
    for _ in range(400):
        sent.append(r.next(far, (0.0, 0.0), PERIOD_S, np.zeros(6)))
        steps.append(np.linalg.norm(sent[-1][:3] - sent[-2][:3]))
    steps = np.asarray(steps)
    assert steps.max() <= LIMITS.max_linear_speed_m_s * PERIOD_S * (1 + 1e-9)
    speed = steps / PERIOD_S
    accel = np.abs(np.diff(speed)) / PERIOD_S
    assert np.all(accel[:50] <= LIMITS.max_linear_accel_m_s2 * (1 + 1e-6))  # from rest: exactly
    # Braking follows a discrete curve with a fractional number of steps: its last steps shrink
    # by up to ~8 % more than accel * dt^2 (measured 1.08 m/s^2 here).
    assert accel.max() <= 1.1 * LIMITS.max_linear_accel_m_s2
    np.testing.assert_allclose(sent[-1], far, atol=1e-12)  # arrives, never past
    assert np.all(np.diff([np.linalg.norm(p[:3] - START[:3]) for p in sent]) >= -1e-15)


def test_a_ramp_catches_up_with_a_moving_trajectory_and_merges_at_its_speed():
    r = ramp()
    traj = line(0.1, 1000)
    behind = 50  # the client resumes 50 periods behind the trajectory
    outs = [r.next(traj[i + behind], (0.1, 0.0), PERIOD_S, np.zeros(6)) for i in range(600)]
    steps = np.linalg.norm(np.diff([o[:3] for o in outs], axis=0), axis=1)
    assert steps.max() <= LIMITS.max_linear_speed_m_s * PERIOD_S * (1 + 1e-9)
    np.testing.assert_allclose(outs[-1], traj[599 + behind], atol=1e-9)  # caught up
    assert steps[-1] == pytest.approx(0.1 * PERIOD_S)  # at the trajectory's speed


def test_a_late_send_may_step_further_but_never_beyond_the_speed_over_the_capped_time():
    r = ramp()
    far = START + [0.03, 0, 0, 0, 0, 0]
    for _ in range(300):
        r.next(far, (0.0, 0.0), PERIOD_S, np.zeros(6))  # at the speed limit by now
    before = r.sent.copy()
    out = r.next(far, (0.0, 0.0), 0.5, np.full(6, 0.25 / np.sqrt(3)))  # sent 0.5 s later
    cap = LIMITS.max_linear_speed_m_s * max(2 * PERIOD_S, MAX_STEP_TIME_S)
    assert np.linalg.norm(out[:3] - before[:3]) <= cap * (1 + 1e-9)


def test_after_a_stall_the_ramp_starts_from_the_measured_speed():
    r = ramp()
    far = START + [0.05, 0, 0, 0, 0, 0]
    for _ in range(300):
        r.next(far, (0.0, 0.0), PERIOD_S, np.zeros(6))
    before = r.sent.copy()
    out = r.next(far, (0.0, 0.0), 0.3, np.zeros(6))  # the arm came to rest meanwhile
    step = np.linalg.norm(out[:3] - before[:3])
    assert step <= LIMITS.max_linear_accel_m_s2 * MAX_STEP_TIME_S * MAX_STEP_TIME_S * (1 + 1e-9)


def test_rotation_is_bounded_too_and_stays_on_the_path():
    r = ramp()
    goal = START.copy()
    goal[3:] = [np.pi, 0.0, 0.5]  # a large turn queued at once, with a translation
    goal[:3] += [0.01, 0, 0]
    prev = r.sent.copy()
    for _ in range(2000):
        out = r.next(goal, (0.0, 0.0), PERIOD_S, np.zeros(6))
        assert rotation_angle(prev[3:], out[3:]) <= LIMITS.max_angular_speed_rad_s * PERIOD_S * (1 + 1e-6)
        assert np.linalg.norm(out[:3] - prev[:3]) <= LIMITS.max_linear_speed_m_s * PERIOD_S * (1 + 1e-9)
        prev = out
    np.testing.assert_allclose(prev[:3], goal[:3], atol=1e-9)
    assert rotation_angle(prev[3:], goal[3:]) < 1e-9
