"""The arm behind the fake UR controller: the ``ArmModel`` interface and a built-in kinematic UR5.

The fake controller (``robot.fake_ur.server``) decodes what the ur_rtde client writes into the RTDE
input registers and calls an ``ArmModel``: servo targets, point-to-point moves, speed commands, stops.
Once per controller tick (2 ms on e-Series, 8 ms on CB3) it calls ``step(t)`` and publishes the
getters in the next RTDE data package.

Units and frames (UR conventions): joint angles in rad, joint speeds in rad/s, poses
``[x, y, z, rx, ry, rz]`` in m and an axis-angle rotation vector in rad, expressed in the UR base
frame, of the TCP (flange composed with the TCP offset set by ``set_tcp_offset``). TCP speeds are
``[vx, vy, vz, wx, wy, wz]`` in m/s and rad/s in the base frame. ``t`` is host monotonic time in s.

``KinematicArm`` is a deliberately simple stand-in: every joint tracks its target with a first-order
lag (time constant ``tracking_time_constant_s``) and a joint speed limit; ``move_*`` follow
trapezoidal-velocity paths (joint space for ``move_joints``, a straight line plus slerp for
``move_pose``). UR5 kinematics come from ``ur_analytic_ik.ur5``. The simulated UR5 of ``robot/sim``
plugs in through ``robot.fake_ur.sim_adapter`` when a test wants its dynamics and delay instead.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import ur_analytic_ik
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation, Slerp

FloatArray = NDArray[np.float64]

# Elbow up, tool pointing down, flange at about [0.45, 0, 0.33] m: the rig's start pose region, and
# away from the configurations where the analytic IK degenerates (shoulder/wrist aligned).
UR5_HOME_Q = np.array([2.8966, -1.6587, 1.9171, -1.8292, -1.5708, -1.8158])
UR5_JOINT_LIMIT_RAD = 2 * math.pi


@runtime_checkable
class ArmModel(Protocol):
    """What the fake controller needs from an arm. All methods are called from one thread.

    Commands take effect at host time ``t`` (s) and are followed by ``step(t)`` calls at the
    controller rate with non-decreasing ``t``. Getters return copies valid after the last step.
    """

    def reset(self, q: ArrayLike, t: float) -> None:
        """Place the arm at joints ``q`` (rad) at rest, dropping any motion."""

    def set_tcp_offset(self, tcp_offset_pose: ArrayLike) -> None:
        """Set the TCP as a pose ``[x, y, z, rx, ry, rz]`` relative to the flange (m, rad)."""

    def servo_joints(
        self, q: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> None:
        """Track joint target ``q`` (rad) from now on (servoJ), smoothed with servoJ's
        ``lookahead_time_s`` (s) and ``gain`` where the model applies them."""

    def servo_pose(
        self, pose: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> bool:
        """Track TCP target ``pose`` from now on (servoL; lookahead and gain as in servo_joints).
        False if the pose is unreachable."""

    def speed_joints(self, qd: ArrayLike, accel_rad_s2: float, t: float) -> None:
        """Move the joints at constant speed ``qd`` (rad/s) until the next command (speedJ)."""

    def speed_pose(self, xd: ArrayLike, accel_m_s2: float, t: float) -> None:
        """Move the TCP at constant speed ``xd`` (m/s, rad/s, base frame) until the next command."""

    def move_joints(self, q: ArrayLike, speed_rad_s: float, accel_rad_s2: float, t: float) -> bool:
        """Start a joint-space move to ``q`` (moveJ). False if it cannot start. See ``motion_done``."""

    def move_pose(self, pose: ArrayLike, speed_m_s: float, accel_m_s2: float, t: float) -> bool:
        """Start a straight-line TCP move to ``pose`` (moveL). False if the pose is unreachable."""

    def stop(self, accel: float, t: float) -> None:
        """End the current command and come to rest (servoStop, stopL, stopJ, speedStop)."""

    def halt(self, t: float) -> None:
        """Safety stop: stand still now and drop every command (protective stop, e-stop)."""

    def step(self, t: float) -> None:
        """Advance the model to host time ``t`` (s)."""

    def motion_done(self) -> bool:
        """True when no ``move_*`` is in progress (the arm reached the last move's goal)."""

    def move_progress(self) -> float:
        """Fraction of the current ``move_*`` completed, 0..1 (1 when none is running)."""

    @property
    def actual_q(self) -> FloatArray: ...
    @property
    def actual_qd(self) -> FloatArray: ...
    @property
    def actual_tcp_pose(self) -> FloatArray: ...
    @property
    def actual_tcp_speed(self) -> FloatArray: ...
    @property
    def target_q(self) -> FloatArray: ...
    @property
    def target_qd(self) -> FloatArray: ...
    @property
    def target_tcp_pose(self) -> FloatArray: ...
    @property
    def target_tcp_speed(self) -> FloatArray: ...


def rotvec_to_matrix(rotvec: ArrayLike) -> FloatArray:
    """Rodrigues' formula (scipy's Rotation costs ~30 us a call; this runs every 2 ms tick)."""
    r = np.asarray(rotvec, dtype=np.float64)
    angle = math.sqrt(float(r @ r))
    if angle < 1e-12:
        return np.eye(3)
    k = r / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


def matrix_to_rotvec(R: ArrayLike) -> FloatArray:
    """Rotation matrix -> rotation vector (angle in [0, pi])."""
    M = np.asarray(R, dtype=np.float64)
    cos = max(-1.0, min(1.0, (float(np.trace(M)) - 1.0) / 2.0))
    angle = math.acos(cos)
    w = np.array([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]])
    if angle < 1e-7:
        return 0.5 * w
    if math.pi - angle < 1e-3:  # near pi the skew part vanishes: use the robust library path
        return Rotation.from_matrix(M).as_rotvec()
    return angle / (2.0 * math.sin(angle)) * w


def pose_to_matrix(pose: ArrayLike) -> FloatArray:
    """UR pose ``[x, y, z, rx, ry, rz]`` (m, rotation vector rad) -> 4x4 homogeneous matrix."""
    p = np.asarray(pose, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = rotvec_to_matrix(p[3:6])
    T[:3, 3] = p[:3]
    return T


def matrix_to_pose(T: ArrayLike) -> FloatArray:
    """4x4 homogeneous matrix -> UR pose ``[x, y, z, rx, ry, rz]``."""
    M = np.asarray(T, dtype=np.float64)
    return np.concatenate([M[:3, 3], matrix_to_rotvec(M[:3, :3])])


def ur5_fk(q: ArrayLike, tcp_offset: ArrayLike | None = None) -> FloatArray:
    """Forward kinematics of the UR5: joints (rad) -> TCP pose in the UR base frame."""
    qq = [float(v) for v in np.asarray(q, dtype=np.float64)]
    if tcp_offset is None:
        return matrix_to_pose(ur_analytic_ik.ur5.forward_kinematics(*qq))
    return matrix_to_pose(ur_analytic_ik.ur5.forward_kinematics_with_tcp(*qq, pose_to_matrix(tcp_offset)))


def _rotation_delta(rotvec_from: ArrayLike, rotvec_to: ArrayLike) -> FloatArray:
    """Rotation vector of R_to * R_from^-1 (base-frame angular displacement)."""
    return matrix_to_rotvec(rotvec_to_matrix(rotvec_to) @ rotvec_to_matrix(rotvec_from).T)


def _pose_error(T_goal: FloatArray, T: FloatArray) -> FloatArray:
    rot = matrix_to_rotvec(T_goal[:3, :3] @ T[:3, :3].T)
    return np.concatenate([T_goal[:3, 3] - T[:3, 3], rot])


def _ur5_ik_newton(
    T_goal: FloatArray, T_tcp: FloatArray, q_near: FloatArray, iterations: int = 12
) -> FloatArray | None:
    """Damped least-squares IK from ``q_near`` (stays on q_near's branch, as a servoing arm does)."""
    q = q_near.copy()
    fk = ur_analytic_ik.ur5.forward_kinematics_with_tcp
    h = 1e-7
    for _ in range(iterations):
        T = fk(*q, T_tcp)
        err = _pose_error(T_goal, T)
        if float(np.max(np.abs(err))) < 1e-10:
            return q
        J = np.empty((6, 6))
        for j in range(6):
            dq = q.copy()
            dq[j] += h
            J[:, j] = _pose_error(fk(*dq, T_tcp), T) / h
        lam = 1e-6
        step = J.T @ np.linalg.solve(J @ J.T + lam * np.eye(6), err)
        q = q + step
    T = fk(*q, T_tcp)
    if float(np.max(np.abs(_pose_error(T_goal, T)))) < 1e-8:
        return q
    return None


def ur5_ik_closest(pose: ArrayLike, q_near: ArrayLike, tcp_offset: ArrayLike) -> FloatArray | None:
    """Inverse kinematics solution closest to ``q_near``, or None when the pose is unreachable.

    Small steps (servoing, interpolated moves) are solved by Newton iterations from ``q_near`` so the
    arm never jumps between IK branches; large jumps fall back to ``ur_analytic_ik``'s closest
    analytic solution.
    """
    qn = np.asarray(q_near, dtype=np.float64)
    T_goal = pose_to_matrix(pose)
    T_tcp = pose_to_matrix(tcp_offset)
    q = _ur5_ik_newton(T_goal, T_tcp, qn)
    if q is not None and float(np.max(np.abs(q - qn))) < 0.5:
        return q
    sols = ur_analytic_ik.ur5.inverse_kinematics_closest_with_tcp(T_goal, T_tcp, *[float(v) for v in qn])
    if not sols:
        return q
    qa = np.asarray(sols[0], dtype=np.float64)
    if not np.all(np.isfinite(qa)):
        return q
    # The solver returns angles in (-pi, pi]; pick the 2*pi-equivalent nearest q_near per joint.
    qa = qn + (qa - qn + math.pi) % (2 * math.pi) - math.pi
    if q is not None and np.linalg.norm(q - qn) <= np.linalg.norm(qa - qn):
        return q
    return qa


def _trapezoid_duration(distance: float, speed: float, accel: float) -> float:
    distance = abs(distance)
    if distance == 0.0:
        return 0.0
    if distance < speed * speed / accel:  # triangle profile never reaches ``speed``
        return 2.0 * math.sqrt(distance / accel)
    return distance / speed + speed / accel


def _trapezoid_fraction(tau: float, duration: float) -> float:
    """Fraction of the path covered at time ``tau`` of a symmetric trapezoid lasting ``duration``.

    The profile is rescaled to ``duration`` with a fixed 25% ramp share (accel/decel), which keeps
    velocity continuous; exact UR blending is not modelled.
    """
    if duration <= 0.0 or tau >= duration:
        return 1.0
    if tau <= 0.0:
        return 0.0
    r = 0.25  # ramp share of the duration
    x = tau / duration
    vmax = 1.0 / (1.0 - r)  # area under the normalised profile is 1
    if x < r:
        return 0.5 * vmax * x * x / r
    if x > 1.0 - r:
        y = 1.0 - x
        return 1.0 - 0.5 * vmax * y * y / r
    return 0.5 * vmax * r + vmax * (x - r)


class MoveProfile:
    """A point-to-point move timed by a trapezoidal speed profile (UR moveJ / moveL, no blending).

    ``kind == "joints"``: straight line in joint space, timed by the largest joint travel at
    ``speed`` rad/s. ``kind == "pose"``: straight TCP line plus slerp of the orientation, timed by
    the longer of the translation at ``speed`` m/s and the rotation at ``speed * rot_per_lin`` rad/s.
    """

    def __init__(self, kind: str, start: FloatArray, goal: FloatArray, t0: float, duration_s: float):
        self.kind = kind
        self.start = start
        self.goal = goal
        self.t0 = t0
        self.duration_s = duration_s
        self._slerp: Slerp | None = None
        if kind == "pose":
            self._slerp = Slerp([0.0, 1.0], Rotation.from_rotvec(np.stack([start[3:], goal[3:]])))

    @classmethod
    def joints(
        cls, q_start: ArrayLike, q_goal: ArrayLike, speed: float, accel: float, t0: float
    ) -> MoveProfile:
        start = np.asarray(q_start, dtype=np.float64).copy()
        goal = np.asarray(q_goal, dtype=np.float64).copy()
        dist = float(np.max(np.abs(goal - start)))
        return cls("joints", start, goal, t0, _trapezoid_duration(dist, max(speed, 1e-3), max(accel, 1e-3)))

    @classmethod
    def pose(
        cls,
        pose_start: ArrayLike,
        pose_goal: ArrayLike,
        speed: float,
        accel: float,
        t0: float,
        rot_per_lin: float,
    ) -> MoveProfile:
        start = np.asarray(pose_start, dtype=np.float64).copy()
        goal = np.asarray(pose_goal, dtype=np.float64).copy()
        lin = float(np.linalg.norm(goal[:3] - start[:3]))
        ang = float(np.linalg.norm(_rotation_delta(start[3:], goal[3:])))
        v, a = max(speed, 1e-4), max(accel, 1e-4)
        duration = max(
            _trapezoid_duration(lin, v, a), _trapezoid_duration(ang, v * rot_per_lin, a * rot_per_lin)
        )
        return cls("pose", start, goal, t0, duration)

    @property
    def end_time(self) -> float:
        return self.t0 + self.duration_s

    def progress(self, t: float) -> float:
        """Fraction of the time elapsed, 0..1."""
        return 1.0 if self.duration_s <= 0 else min(1.0, max(0.0, (t - self.t0) / self.duration_s))

    def at(self, t: float) -> FloatArray:
        """Joints (kind "joints") or TCP pose (kind "pose") of the path at time ``t``."""
        s = _trapezoid_fraction(t - self.t0, self.duration_s)
        if self._slerp is None:
            return self.start + s * (self.goal - self.start)
        return np.concatenate(
            [self.start[:3] + s * (self.goal[:3] - self.start[:3]), self._slerp(s).as_rotvec()]
        )


class KinematicArm:
    """Built-in UR5 model for the fake controller (see the module docstring for the dynamics).

    Args:
        q0: initial joints (rad); the UR5 "home" pose by default.
        tracking_time_constant_s: first-order lag of each joint towards its target.
        max_joint_speed_rad_s: joint speed limit applied to the actual motion.
        rotation_speed_per_linear: moveL times rotations as if the tool turned at this many rad/s per
            m/s of requested linear speed (UR blends both; the fake keeps it simple).
    """

    def __init__(
        self,
        q0: ArrayLike | None = None,
        *,
        tracking_time_constant_s: float = 0.01,
        max_joint_speed_rad_s: float = math.pi,
        rotation_speed_per_linear: float = 4.0,
    ):
        self._tau = float(tracking_time_constant_s)
        self._qd_max = float(max_joint_speed_rad_s)
        self._rot_per_lin = float(rotation_speed_per_linear)
        self._tcp = np.zeros(6)
        self._t: float | None = None
        self.reset(UR5_HOME_Q if q0 is None else q0, 0.0)

    # --- commands -------------------------------------------------------------------------------
    def reset(self, q: ArrayLike, t: float) -> None:
        self._q = np.asarray(q, dtype=np.float64).copy()
        self._qd = np.zeros(6)
        self._q_target = self._q.copy()
        self._qd_target = np.zeros(6)
        self._mode = "hold"
        self._move: MoveProfile | None = None
        self._speed = np.zeros(6)
        self._t = None
        self._pose = ur5_fk(self._q, self._tcp)
        self._tcp_speed = np.zeros(6)
        self.unreachable_count = 0

    def set_tcp_offset(self, tcp_offset_pose: ArrayLike) -> None:
        self._tcp = np.asarray(tcp_offset_pose, dtype=np.float64).copy()
        self._pose = ur5_fk(self._q, self._tcp)

    def servo_joints(
        self, q: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> None:
        # Lookahead and gain are ignored here: the kinematic arm's own first-order lag applies.
        self._mode = "servo"
        self._move = None
        self._q_target = np.clip(np.asarray(q, dtype=np.float64), -UR5_JOINT_LIMIT_RAD, UR5_JOINT_LIMIT_RAD)

    def servo_pose(
        self, pose: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> bool:
        q = ur5_ik_closest(pose, self._q_target, self._tcp)
        if q is None:
            self.unreachable_count += 1
            return False
        self.servo_joints(q, t)
        return True

    def speed_joints(self, qd: ArrayLike, accel_rad_s2: float, t: float) -> None:
        self._mode = "speedj"
        self._move = None
        self._speed = np.asarray(qd, dtype=np.float64).copy()

    def speed_pose(self, xd: ArrayLike, accel_m_s2: float, t: float) -> None:
        self._mode = "speedl"
        self._move = None
        self._speed = np.asarray(xd, dtype=np.float64).copy()

    def move_joints(self, q: ArrayLike, speed_rad_s: float, accel_rad_s2: float, t: float) -> bool:
        self._mode = "move"
        self._move = MoveProfile.joints(self._q_target, q, speed_rad_s, accel_rad_s2, t)
        return True

    def move_pose(self, pose: ArrayLike, speed_m_s: float, accel_m_s2: float, t: float) -> bool:
        if ur5_ik_closest(pose, self._q_target, self._tcp) is None:
            self.unreachable_count += 1
            return False
        start = ur5_fk(self._q_target, self._tcp)
        self._mode = "move"
        self._move = MoveProfile.pose(start, pose, speed_m_s, accel_m_s2, t, self._rot_per_lin)
        return True

    def stop(self, accel: float, t: float) -> None:
        # Decelerating over a few ms is below what tests resolve: hold the current actual joints.
        self._mode = "hold"
        self._move = None
        self._q_target = self._q.copy()
        self._qd_target = np.zeros(6)

    def halt(self, t: float) -> None:
        self.stop(0.0, t)
        self._qd = np.zeros(6)

    # --- simulation -----------------------------------------------------------------------------
    def step(self, t: float) -> None:
        if self._t is None:
            self._t = t
            return
        dt = t - self._t
        if dt <= 0.0:
            return
        self._t = t
        q_prev_target = self._q_target.copy()
        if self._mode == "move" and self._move is not None:
            self._q_target = self._eval_move(t)
        elif self._mode == "speedj":
            self._q_target = self._q_target + self._speed * dt
        elif self._mode == "speedl":
            pose = ur5_fk(self._q_target, self._tcp)
            pose[:3] += self._speed[:3] * dt
            rot = Rotation.from_rotvec(self._speed[3:] * dt) * Rotation.from_rotvec(pose[3:])
            pose[3:] = rot.as_rotvec()
            q = ur5_ik_closest(pose, self._q_target, self._tcp)
            if q is None:
                self.unreachable_count += 1
                self.stop(0.0, t)
            else:
                self._q_target = q
        self._q_target = np.clip(self._q_target, -UR5_JOINT_LIMIT_RAD, UR5_JOINT_LIMIT_RAD)
        self._qd_target = (self._q_target - q_prev_target) / dt

        # First-order tracking, limited to the joint speed limit.
        alpha = 1.0 - math.exp(-dt / self._tau) if self._tau > 0 else 1.0
        dq = (self._q_target - self._q) * alpha
        dq = np.clip(dq, -self._qd_max * dt, self._qd_max * dt)
        q_new = self._q + dq
        self._qd = dq / dt
        pose_old = self._pose
        self._q = q_new
        self._pose = ur5_fk(self._q, self._tcp)
        self._tcp_speed = np.concatenate(
            [
                (self._pose[:3] - pose_old[:3]) / dt,
                _rotation_delta(pose_old[3:], self._pose[3:]) / dt,
            ]
        )
        if self._mode == "move" and self._move is not None and t >= self._move.end_time:
            if float(np.max(np.abs(self._q - self._q_target))) < 1e-4:
                self._move = None
                self._mode = "hold"

    def _eval_move(self, t: float) -> FloatArray:
        m = self._move
        assert m is not None
        if m.kind == "joints":
            return m.at(t)
        q = ur5_ik_closest(m.at(t), self._q_target, self._tcp)
        if q is None:  # passes through a singularity / out of reach: stop where we are
            self.unreachable_count += 1
            self._move = None
            self._mode = "hold"
            return self._q_target
        return q

    def motion_done(self) -> bool:
        return self._move is None

    def move_progress(self) -> float:
        if self._move is None or self._t is None:
            return 1.0
        return self._move.progress(self._t)

    # --- getters --------------------------------------------------------------------------------
    @property
    def actual_q(self) -> FloatArray:
        return self._q.copy()

    @property
    def actual_qd(self) -> FloatArray:
        return self._qd.copy()

    @property
    def actual_tcp_pose(self) -> FloatArray:
        return self._pose.copy()

    @property
    def actual_tcp_speed(self) -> FloatArray:
        return self._tcp_speed.copy()

    @property
    def target_q(self) -> FloatArray:
        return self._q_target.copy()

    @property
    def target_qd(self) -> FloatArray:
        return self._qd_target.copy()

    @property
    def target_tcp_pose(self) -> FloatArray:
        return ur5_fk(self._q_target, self._tcp)

    @property
    def target_tcp_speed(self) -> FloatArray:
        # Linear part only matters to clients; derive it from the joint target speed numerically.
        h = 1e-3
        p0 = ur5_fk(self._q_target, self._tcp)
        p1 = ur5_fk(self._q_target + self._qd_target * h, self._tcp)
        return np.concatenate([(p1[:3] - p0[:3]) / h, _rotation_delta(p0[3:], p1[3:]) / h])
