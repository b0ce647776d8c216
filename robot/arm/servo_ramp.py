"""The last limit before the arm: each servoL target, relative to the one the arm last received.

The controller's safety filter (robot/arm/safety.py) bounds the step between its consecutive
targets. That is not what the arm sees when a process stalls: targets queued while the ur_rtde
client was paused, or sent while the UR controller was not reading them, reach the arm as one jump
(the sum of many capped steps). :class:`ServoRamp` runs in the ur_rtde client
(robot/arm/ur_client.py), where the targets are actually sent, and bounds each of them relative to
the previous one *sent*:

* at most one target per controller period (the client sends one per new RTDE package, so the
  arm's controller, which reads the newest target each period, never takes two in one period);
* each step at most ``max_linear_speed_m_s`` (``max_angular_speed_rad_s``) times the controller
  time since the previous target was sent (the RTDE timestamps of the packages that let them go),
  that time counted as at least one period and at most ``max(2 periods, 10 ms)``
  (:data:`MAX_STEP_TIME_S`): a client that a loaded host lets send only every few periods keeps
  the arm near the speed limit on average, and one stalled longer follows late, never fast;
* in sync (the newest target is as far from the last sent as the trajectory moves in that time),
  the trajectory passes unchanged; behind it (after a stall), the target ramps toward the newest
  one: the speed rises at most at ``max_linear_accel_m_s2`` from the last step's speed (after a
  stall of more than :data:`STALL_S`: from the arm's measured speed), and falls to the trajectory's
  own speed with that deceleration as it catches up (never overshooting it).

So the step between two targets the arm receives is at most ``max_linear_speed_m_s *
max(2 periods, 10 ms)`` (2.5 mm at 500 Hz, 4 mm at 125 Hz with the shipped 0.25 m/s), and at most
one period's worth when the client keeps up.

Pure: no clock, no I/O. Poses ``[x, y, z, rx, ry, rz]`` (m, rotation vector rad), base frame.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.arm.config import ArmLimits
from robot.geometry.pose_math import quat_angle, quat_conj, quat_mul, quat_to_rotvec, rotvec_to_quat

FloatArray = NDArray[np.float64]

_SYNC_TOLERANCE = 1e-9  # m / rad: the newest target is exactly as far ahead as the trajectory moved
MAX_STEP_TIME_S = 0.01  # the step time counts at most max(2 periods, this)
STALL_S = 0.05  # no target sent for longer: the arm may have slowed, the ramp starts from its speed


class ServoRamp:
    """Bounds each servoL target relative to the previous one sent (see the module docstring).

    Args:
        limits: the arm config's limits (speeds, per-step caps, ``max_linear_accel_m_s2``).
        period_s: the controller period: one target per period at most.
    """

    def __init__(self, limits: ArmLimits, period_s: float):
        self.period_s = float(period_s)
        self.max_step_time_s = max(2 * self.period_s, MAX_STEP_TIME_S)
        self.max_speed_m_s = float(limits.max_linear_speed_m_s)
        self.max_speed_rad_s = float(limits.max_angular_speed_rad_s)
        self.max_step_m = float(limits.max_step_m)
        self.max_step_rad = float(limits.max_step_rad)
        self.accel_m_s2 = float(limits.max_linear_accel_m_s2)
        self.accel_rad_s2 = self.accel_m_s2 * limits.max_angular_speed_rad_s / limits.max_linear_speed_m_s
        self.sent: FloatArray | None = None  # the last target sent (what the arm received)
        self._speed_m_s = 0.0  # of the last step sent
        self._speed_rad_s = 0.0
        self.limited_steps = 0  # steps that were shortened

    def reset(self, measured_pose: ArrayLike) -> None:
        """Start from the arm's measured pose, at rest: on connect, reconnect, or whenever the last
        target sent is unknown."""
        self.sent = np.asarray(measured_pose, dtype=np.float64).copy()
        self._speed_m_s = self._speed_rad_s = 0.0

    def next(
        self,
        desired: ArrayLike,
        trajectory_speed: tuple[float, float],
        elapsed_s: float,
        measured_speed: ArrayLike,
    ) -> FloatArray:
        """The target to send now toward ``desired`` (the newest target from the controller).

        Args:
            trajectory_speed: ``(m/s, rad/s)`` of the controller's trajectory (its last two targets),
                the speed to merge into.
            elapsed_s: controller time (RTDE timestamps) since the previous target was sent.
            measured_speed: the arm's TCP speed ``[vx..wz]`` (m/s, rad/s): a ramp after a stall
                starts from it.
        """
        if self.sent is None:
            raise RuntimeError("ServoRamp.next before reset(): the arm's pose is unknown")
        goal = np.asarray(desired, dtype=np.float64)
        if elapsed_s > STALL_S:  # stalled: the arm may have slowed down meanwhile
            v = np.asarray(measured_speed, dtype=np.float64)
            self._speed_m_s = min(self._speed_m_s, float(np.linalg.norm(v[:3])))
            self._speed_rad_s = min(self._speed_rad_s, float(np.linalg.norm(v[3:])))
        dt = min(max(float(elapsed_s), self.period_s), self.max_step_time_s)
        traj_lin, traj_ang = float(trajectory_speed[0]), float(trajectory_speed[1])
        prev = self.sent
        d = goal[:3] - prev[:3]
        dist = float(np.linalg.norm(d))
        q_prev = rotvec_to_quat(prev[3:])
        q_delta = quat_mul(rotvec_to_quat(goal[3:]), quat_conj(q_prev))
        angle = quat_angle(q_delta)
        cap_lin = min(self.max_speed_m_s * dt, self.max_step_m)
        cap_ang = min(self.max_speed_rad_s * dt, self.max_step_rad)
        in_sync = dist <= traj_lin * dt + _SYNC_TOLERANCE and angle <= traj_ang * dt + _SYNC_TOLERANCE
        if in_sync:
            step_lin, step_ang = min(dist, cap_lin), min(angle, cap_ang)
        else:
            step_lin = self._ramp_step(dist, traj_lin, self._speed_m_s, self.accel_m_s2, cap_lin, dt)
            step_ang = self._ramp_step(angle, traj_ang, self._speed_rad_s, self.accel_rad_s2, cap_ang, dt)
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

    @staticmethod
    def _ramp_step(
        dist: float, traj_speed: float, speed: float, accel: float, cap: float, dt: float
    ) -> float:
        """Length of the next step toward a target ``dist`` away that moves at ``traj_speed``:
        accelerate from ``speed`` at ``accel``, brake so as to arrive at the target's speed, never
        more than ``cap``."""
        if dist <= 0.0:
            return 0.0
        # The speed from which steps shrinking by accel * dt^2 each cover ``dist`` exactly (the
        # discrete form of sqrt(2 a d): that one brakes harder than ``accel`` on its last steps).
        brake = accel * dt * (math.sqrt(0.25 + 2.0 * dist / (accel * dt * dt)) - 0.5)
        speed_now = min(speed + accel * dt, traj_speed + brake)
        return min(dist, cap, max(speed_now, 0.0) * dt)
