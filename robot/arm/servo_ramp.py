"""The last limit before the arm: each servoL target, relative to the one the arm last received.

The controller's safety filter (robot/arm/safety.py) bounds the step between its consecutive
targets. That is not what the arm sees when a process stalls: targets queued while the ur_rtde
client was paused, or sent while the UR controller was not reading them, reach the arm as one jump
(the sum of many capped steps). :class:`ServoRamp` runs in the ur_rtde client
(robot/arm/ur_client.py), where the targets are actually sent, and bounds each of them relative to
the previous one *sent*:

* at most one target per controller period (the client sends one per new RTDE package, so the
  arm's controller, which reads the newest target each period, never takes two steps in one);
* each step at most ``max_linear_speed_m_s * period_s`` (and ``max_step_m``) in translation,
  ``max_angular_speed_rad_s * period_s`` (and ``max_step_rad``) in rotation;
* in sync (the newest target is one trajectory step from the last sent), the trajectory passes
  unchanged; behind it (after a stall), the target ramps toward the newest one: the speed rises
  from the arm's measured speed by at most ``max_linear_accel_m_s2 * period_s`` per step, and falls
  to the trajectory's own speed with that deceleration as it catches up (never overshooting).

Pure: no clock, no I/O. Poses ``[x, y, z, rx, ry, rz]`` (m, rotation vector rad), base frame.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.arm.config import ArmLimits
from robot.arm.pose_math import quat_angle, quat_conj, quat_mul, quat_to_rotvec, rotvec_to_quat

FloatArray = NDArray[np.float64]

_SYNC_TOLERANCE = 1e-9  # m / rad: the newest target is exactly one trajectory step ahead


class ServoRamp:
    """Bounds each servoL target relative to the previous one sent (see the module docstring).

    Args:
        limits: the arm config's limits (speeds, per-step caps, ``max_linear_accel_m_s2``).
        period_s: the controller period: one target per period.
    """

    def __init__(self, limits: ArmLimits, period_s: float):
        self.period_s = float(period_s)
        self.max_step_m = min(limits.max_linear_speed_m_s * self.period_s, limits.max_step_m)
        self.max_step_rad = min(limits.max_angular_speed_rad_s * self.period_s, limits.max_step_rad)
        self.accel_m_s2 = float(limits.max_linear_accel_m_s2)
        self.accel_rad_s2 = self.accel_m_s2 * limits.max_angular_speed_rad_s / limits.max_linear_speed_m_s
        self.sent: FloatArray | None = None  # the last target sent (what the arm received)
        self._speed_m_s = 0.0  # of the last step sent
        self._speed_rad_s = 0.0
        self.limited_steps = 0  # steps that were shortened (counted for the state / tests)

    def reset(self, measured_pose: ArrayLike, measured_speed: ArrayLike | None = None) -> None:
        """Start from the arm's measured pose (and TCP speed ``[vx..wz]``, m/s, rad/s): on connect,
        reconnect, or when the last target sent is unknown."""
        self.sent = np.asarray(measured_pose, dtype=np.float64).copy()
        self._speed_m_s = self._speed_rad_s = 0.0
        if measured_speed is not None:
            self.resume(measured_speed)

    def resume(self, measured_speed: ArrayLike) -> None:
        """After a gap in sending (this process or the UR controller stalled): the next ramp starts
        from the arm's measured TCP speed ``[vx..wz]`` if it is lower than the last step's."""
        v = np.asarray(measured_speed, dtype=np.float64)
        self._speed_m_s = min(self._speed_m_s, float(np.linalg.norm(v[:3])))
        self._speed_rad_s = min(self._speed_rad_s, float(np.linalg.norm(v[3:])))

    def next(self, desired: ArrayLike, trajectory_step: ArrayLike | None = None) -> FloatArray:
        """The target to send now toward ``desired`` (the newest target from the controller).

        ``trajectory_step``: ``(linear m, angular rad)`` the trajectory moved in its last period (the
        distance between the controller's last two targets), its speed to merge into; None: 0.
        """
        goal = np.asarray(desired, dtype=np.float64)
        if self.sent is None:
            raise RuntimeError("ServoRamp.next before reset(): the arm's pose is unknown")
        dt = self.period_s
        traj_lin, traj_ang = (0.0, 0.0) if trajectory_step is None else map(float, trajectory_step)
        prev = self.sent
        d = goal[:3] - prev[:3]
        dist = float(np.linalg.norm(d))
        q_prev = rotvec_to_quat(prev[3:])
        q_delta = quat_mul(rotvec_to_quat(goal[3:]), quat_conj(q_prev))
        angle = quat_angle(q_delta)
        in_sync = dist <= traj_lin + _SYNC_TOLERANCE and angle <= traj_ang + _SYNC_TOLERANCE
        if in_sync:
            step_lin, step_ang = min(dist, self.max_step_m), min(angle, self.max_step_rad)
        else:
            step_lin = self._ramp_step(dist, traj_lin / dt, self._speed_m_s, self.accel_m_s2, self.max_step_m)
            step_ang = self._ramp_step(
                angle, traj_ang / dt, self._speed_rad_s, self.accel_rad_s2, self.max_step_rad
            )
        # One fraction of the way for both, so that position and orientation stay on one path.
        frac = 1.0
        if dist > 0.0:
            frac = min(frac, step_lin / dist)
        if angle > 0.0:
            frac = min(frac, step_ang / angle)
        if frac >= 1.0:
            out = goal.copy()
        else:
            self.limited_steps += 1
            out = np.empty(6)
            out[:3] = prev[:3] + d * frac
            q_step = rotvec_to_quat(quat_to_rotvec(q_delta) * frac)
            out[3:] = quat_to_rotvec(quat_mul(q_step, q_prev))
        self._speed_m_s = dist * frac / dt
        self._speed_rad_s = angle * frac / dt
        self.sent = out
        return out.copy()

    def _ramp_step(self, dist: float, traj_speed: float, speed: float, accel: float, cap: float) -> float:
        """Length of the next step toward a target ``dist`` away that moves at ``traj_speed``:
        accelerate from ``speed`` at ``accel``, brake so as to arrive at the target's speed, never
        more than ``cap`` (the speed limit times the period)."""
        if dist <= 0.0:
            return 0.0
        dt = self.period_s
        speed_now = min(speed + accel * dt, traj_speed + math.sqrt(2.0 * accel * dist))
        return min(dist, cap, max(speed_now, 0.0) * dt)
