"""A steppable simulated UR5: command delay, tracking response, speed/accel limits, UR5 kinematics
(:mod:`robot.geometry.ur_kinematics`).

Pure model: no processes, no threads, no wall clock. It advances only when :meth:`SimUR5.step` is
called with a time (any monotonic seconds; the controller uses host monotonic time), so it can run
behind the arm controller, behind the fake UR controller, or in a unit test at any speed.

Dynamics (TCP space, base frame):

- ``command_pose(pose, t)`` is a servo target (like ``servoL``). It becomes effective at
  ``t + action_delay_s`` (pure delay); until then the previous effective target is tracked.
- ``command_pose(pose, t, lookahead_time_s, gain)`` also applies the servo smoothing of the UR
  controller. UR documents ``servoj``/``servol``'s ``lookahead_time`` (0.03-0.2 s) as "smoothens the
  trajectory with this lookahead time" and ``gain`` (100-2000) as the "proportional gain for
  following target position"; the controller's filter itself is not published. Modelled as a first-
  order low-pass on the effective target with time constant
  :func:`servo_smoothing_time_constant_s` (``lookahead_time_s / 2 * 300 / gain``: lag grows with the
  lookahead, falls with the gain; ur_rtde's defaults 0.1 s / 300 give 50 ms). The arm's own tracking
  follows the smoothed target, so a smoothed arm is (at least) second order: a dead time + first-
  order fit mistakes the slow start of its response for dead time.
- Tracking, first order: the TCP velocity is driven towards ``error / tau`` (exact exponential
  discretisation), second order: ``accel = wn^2 * error - 2 * zeta * wn * velocity`` with
  ``wn = 1 / tau``. In both, the linear and angular speeds and accelerations are clipped to the limits.
- Joint positions come from the TCP pose by analytic UR5 inverse kinematics (``ur_analytic_ik.ur5``,
  the solution closest to the previous joints), so ``forward_kinematics(q) == tcp_pose``; joint speeds
  are finite differences. A commanded pose with no IK solution is *unreachable*: it is not accepted
  (the arm keeps its previous target) and :attr:`SimUR5.unreachable` is set until a reachable command
  arrives.
- ``stop(t)`` drops pending commands and decelerates to rest at the acceleration limits.
- ``halt(t)`` (protective stop / e-stop) stands still immediately.

Units: m, rad, s; poses ``[x, y, z, rx, ry, rz]`` (rotation vector), TCP speed
``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s, base frame).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.geometry.pose_math import (
    quat_conj,
    quat_mul,
    quat_normalize,
    quat_to_rotvec,
    rotvec_to_quat,
)
from robot.geometry.ur_kinematics import UR5_REFERENCE_Q, ur5_inverse_kinematics

FloatArray = NDArray[np.float64]

_MAX_SUBSTEP_S = 0.002

SERVO_REFERENCE_GAIN = 300.0
"""ur_rtde's default servoL/servoJ gain: the gain at which the smoothing lag is lookahead / 2."""


def servo_smoothing_time_constant_s(lookahead_time_s: float, gain: float) -> float:
    """Time constant (s) of the modelled UR servo smoothing (module docstring) for a servoL/servoJ
    ``lookahead_time_s`` (s) and ``gain``; 0 for a lookahead of 0 (no smoothing)."""
    if lookahead_time_s <= 0:
        return 0.0
    if gain <= 0:
        raise ValueError(f"servo gain must be > 0, got {gain}")
    return 0.5 * lookahead_time_s * SERVO_REFERENCE_GAIN / gain


@dataclass(frozen=True)
class UR5ModelParams:
    """Ground truth of the simulated arm (see the module docstring). Units in the names."""

    action_delay_s: float = 0.03
    tracking_time_constant_s: float = 0.02
    tracking_order: int = 1
    damping_ratio: float = 1.0
    max_linear_speed_m_s: float = 1.0
    max_linear_accel_m_s2: float = 5.0
    max_angular_speed_rad_s: float = 3.0
    max_angular_accel_rad_s2: float = 15.0
    tcp_offset_pose: tuple[float, ...] = (0.0, 0.0, 0.10, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.tracking_order not in (1, 2):
            raise ValueError(f"tracking_order must be 1 or 2, got {self.tracking_order}")
        if self.action_delay_s < 0 or self.tracking_time_constant_s <= 0:
            raise ValueError("action_delay_s must be >= 0 and tracking_time_constant_s > 0")


def _clip_norm(v: FloatArray, max_norm: float) -> FloatArray:
    n = float(np.linalg.norm(v))
    return v * (max_norm / n) if n > max_norm else v


def _braking_speed(error: FloatArray, accel: float) -> float:
    return math.sqrt(2.0 * accel * float(np.linalg.norm(error)))


class SimUR5:
    """The simulated UR5 (see the module docstring).

    Args:
        params: dynamics and delay.
        start_pose: initial TCP pose (the arm starts at rest there); must be reachable.
        t0: model time of the start (s).
        q_reference: joints used to pick the IK branch at the start (elbow up, facing +x by default).

    Raises:
        ValueError: ``start_pose`` is out of reach.
    """

    def __init__(
        self,
        params: UR5ModelParams,
        start_pose: ArrayLike,
        t0: float = 0.0,
        q_reference: ArrayLike | None = None,
    ):
        self.params = params
        self._tcp_offset = np.asarray(params.tcp_offset_pose, dtype=np.float64)
        self._q_ref = np.asarray(UR5_REFERENCE_Q if q_reference is None else q_reference, dtype=np.float64)
        self.reset(start_pose, t0)

    # ------------------------------------------------------------------ commands
    def reset(self, pose: ArrayLike, t: float) -> None:
        """Place the arm at rest at TCP ``pose`` at time ``t``, dropping every command."""
        pose = np.asarray(pose, dtype=np.float64).reshape(6)
        q = ur5_inverse_kinematics(pose, self._q_ref, self._tcp_offset)
        if q is None:
            raise ValueError(f"simulated UR5: start pose {pose.round(4).tolist()} is out of the arm's reach")
        self._t = float(t)
        self._pos = pose[:3].copy()
        self._quat = rotvec_to_quat(pose[3:])
        self._vel = np.zeros(3)
        self._omega = np.zeros(3)
        self._q = q
        self._qd = np.zeros(6)
        self._target_pose = self.tcp_pose  # effective (delayed) target
        self._commanded_pose = self._target_pose.copy()  # last accepted command (not yet delayed)
        # The servo smoothing's output (what the tracking follows) and its time constant (s).
        self._smoothing_tau_s = 0.0
        self._reset_smoothing()
        self._pending: deque[tuple[float, FloatArray, float]] = deque()
        self._stopping = False
        self._halted = False
        self.unreachable = False
        self._q_target_hint = q.copy()

    def command_pose(
        self,
        pose: ArrayLike,
        t: float,
        lookahead_time_s: float = 0.0,
        gain: float = SERVO_REFERENCE_GAIN,
    ) -> bool:
        """Servo target ``pose`` issued at time ``t``; it takes effect at ``t + action_delay_s``,
        smoothed as servoL with ``lookahead_time_s`` (s) and ``gain`` would be (module docstring;
        a lookahead of 0: no smoothing).

        Returns False (and sets :attr:`unreachable`) when the pose has no IK solution; the command is
        then ignored. A command also ends a ``stop``/``halt``.
        """
        pose = np.asarray(pose, dtype=np.float64).reshape(6)
        q = ur5_inverse_kinematics(pose, self._q_target_hint, self._tcp_offset)
        if q is None:
            self.unreachable = True
            return False
        self.unreachable = False
        self._q_target_hint = q
        self._stopping = False
        self._halted = False
        self._commanded_pose = pose.copy()
        tau_s = servo_smoothing_time_constant_s(lookahead_time_s, gain)
        self._pending.append((float(t) + self.params.action_delay_s, pose.copy(), tau_s))
        return True

    def set_action_delay(self, action_delay_s: float) -> None:
        """Change the ground-truth delay for commands issued from now on (a drill: the arm's latency
        drifting mid-run, e.g. a loaded controller); commands already pending keep their time."""
        if action_delay_s < 0:
            raise ValueError(f"action_delay_s must be >= 0, got {action_delay_s}")
        self.params = replace(self.params, action_delay_s=float(action_delay_s))

    def stop(self, t: float) -> None:
        """Drop pending commands and decelerate to rest at the acceleration limits (servoStop)."""
        self._pending.clear()
        self._stopping = True

    def halt(self, t: float) -> None:
        """Stand still now and drop every command (protective stop / e-stop)."""
        self._pending.clear()
        self._halted = True
        self._vel[:] = 0.0
        self._omega[:] = 0.0
        self._qd[:] = 0.0
        self._target_pose = self.tcp_pose
        self._commanded_pose = self._target_pose.copy()
        self._reset_smoothing()

    def _reset_smoothing(self) -> None:
        """The target is where the arm is (at rest, stopped or halted): nothing left to smooth."""
        self._target_quat = self._quat
        self._smoothed_pos = self._pos.copy()
        self._smoothed_quat = self._quat

    # ------------------------------------------------------------------ dynamics
    def step(self, t: float) -> None:
        """Advance the model to time ``t`` (s). Times earlier than the model time are ignored."""
        t = float(t)
        if t <= self._t:
            return
        q_prev, t_prev = self._q, self._t
        while self._t < t:
            # Pending targets take effect exactly at their time: split the substep there. One due
            # within a nanosecond counts as due now (else the split below would be empty).
            while self._pending and self._pending[0][0] <= self._t + 1e-9:
                _, self._target_pose, self._smoothing_tau_s = self._pending.popleft()
                self._target_quat = rotvec_to_quat(self._target_pose[3:])
                if self._smoothing_tau_s <= 0:
                    self._smoothed_pos = self._target_pose[:3].copy()
                    self._smoothed_quat = self._target_quat
            dt = min(_MAX_SUBSTEP_S, t - self._t)
            if self._pending:
                dt = min(dt, self._pending[0][0] - self._t)
            if dt < 1e-9:
                self._t = t
                break
            self._substep(self._t + dt, dt)
        q = ur5_inverse_kinematics(self.tcp_pose, q_prev, self._tcp_offset)
        if q is not None:
            self._q = q
            self._qd = (q - q_prev) / (t - t_prev)
        self._t = t

    def _substep(self, t_end: float, dt: float) -> None:
        p = self.params
        if self._halted:
            self._t = t_end
            return
        tau = p.tracking_time_constant_s
        if self._stopping:
            v_new = self._vel - _clip_norm(self._vel, p.max_linear_accel_m_s2 * dt)
            w_new = self._omega - _clip_norm(self._omega, p.max_angular_accel_rad_s2 * dt)
            self._advance(v_new, w_new, dt, t_end)
            if not np.any(v_new) and not np.any(w_new):
                # At rest: hold here from now on.
                self._target_pose = self.tcp_pose
                self._commanded_pose = self._target_pose.copy()
                self._reset_smoothing()
            return
        self._smooth(dt)
        pos_err = self._smoothed_pos - self._pos
        rot_err = quat_to_rotvec(quat_mul(self._smoothed_quat, quat_conj(self._quat)))
        if p.tracking_order == 1:
            # Velocity that closes the error exactly like exp(-dt/tau) over this step.
            # Never faster than what can still brake to rest on the remaining error at the
            # acceleration limit, so an accelerated step response does not overshoot.
            gain = (1.0 - math.exp(-dt / tau)) / dt
            v_des = _clip_norm(
                pos_err * gain, min(p.max_linear_speed_m_s, _braking_speed(pos_err, p.max_linear_accel_m_s2))
            )
            w_des = _clip_norm(
                rot_err * gain,
                min(p.max_angular_speed_rad_s, _braking_speed(rot_err, p.max_angular_accel_rad_s2)),
            )
            v_new = self._vel + _clip_norm(v_des - self._vel, p.max_linear_accel_m_s2 * dt)
            w_new = self._omega + _clip_norm(w_des - self._omega, p.max_angular_accel_rad_s2 * dt)
        else:
            wn = 1.0 / tau
            zeta = p.damping_ratio
            a = _clip_norm(wn * wn * pos_err - 2 * zeta * wn * self._vel, p.max_linear_accel_m_s2)
            alpha = _clip_norm(wn * wn * rot_err - 2 * zeta * wn * self._omega, p.max_angular_accel_rad_s2)
            v_new = _clip_norm(self._vel + a * dt, p.max_linear_speed_m_s)
            w_new = _clip_norm(self._omega + alpha * dt, p.max_angular_speed_rad_s)
            # Trapezoidal position update: moving at the new speed over the whole step would make
            # the response lead by about half a step, which a latency calibration would see.
            v_mean = 0.5 * (self._vel + v_new)
            w_mean = 0.5 * (self._omega + w_new)
            self._advance(v_new, w_new, dt, t_end, v_mean, w_mean)
            return
        self._advance(v_new, w_new, dt, t_end)

    def _smooth(self, dt: float) -> None:
        """Advance the servo smoothing (first-order low-pass, exact over ``dt``) towards the target."""
        if self._smoothing_tau_s <= 0:
            return  # the smoothed target was set to the target when it took effect
        k = 1.0 - math.exp(-dt / self._smoothing_tau_s)
        self._smoothed_pos = self._smoothed_pos + k * (self._target_pose[:3] - self._smoothed_pos)
        err = quat_to_rotvec(quat_mul(self._target_quat, quat_conj(self._smoothed_quat)))
        self._smoothed_quat = quat_normalize(quat_mul(rotvec_to_quat(k * err), self._smoothed_quat))

    def _advance(
        self,
        v_new: FloatArray,
        w_new: FloatArray,
        dt: float,
        t_end: float,
        v_mean: FloatArray | None = None,
        w_mean: FloatArray | None = None,
    ) -> None:
        """Set the speeds to ``v_new``/``w_new`` and move at ``v_mean``/``w_mean`` (default: the new
        speeds) over ``dt``."""
        self._vel = v_new
        self._omega = w_new
        self._pos = self._pos + (v_new if v_mean is None else v_mean) * dt
        w_move = w_new if w_mean is None else w_mean
        self._quat = quat_normalize(quat_mul(rotvec_to_quat(w_move * dt), self._quat))
        self._t = t_end

    # ------------------------------------------------------------------ state (copies)
    @property
    def time(self) -> float:
        """Model time of the current state (s)."""
        return self._t

    @property
    def tcp_pose(self) -> FloatArray:
        return np.concatenate([self._pos, quat_to_rotvec(self._quat)])

    @property
    def tcp_speed(self) -> FloatArray:
        return np.concatenate([self._vel, self._omega])

    @property
    def q(self) -> FloatArray:
        return self._q.copy()

    @property
    def qd(self) -> FloatArray:
        return self._qd.copy()

    @property
    def target_pose(self) -> FloatArray:
        """The last accepted command (before the delay)."""
        return self._commanded_pose.copy()

    @property
    def effective_target_pose(self) -> FloatArray:
        """The target the arm is tracking now (after the delay)."""
        return self._target_pose.copy()

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    @property
    def is_halted(self) -> bool:
        return self._halted

    @property
    def at_rest(self) -> bool:
        return not np.any(self._vel) and not np.any(self._omega)
