"""Plug robot/sim's simulated UR5 (``robot.sim.ur5_model.SimUR5``) into the fake UR controller.

``SimUR5`` is a TCP-space servo model (command delay, first/second-order tracking, speed and
acceleration limits, UR5 kinematics). ``SimArmAdapter`` gives it the ``ArmModel`` interface:

* servoL -> ``command_pose``; servoJ -> ``command_pose(FK(q))``, both with the client's
  ``lookahead_time`` and ``gain`` (the sim's model of the UR's servo smoothing, see
  ``robot.sim.ur5_model``);
* moveJ / moveL -> a trapezoidal path (``MoveProfile``) streamed into ``command_pose`` every tick;
  the move is done once the path ended and the arm settled on the goal (the sim's delay and lag
  make this later than the path's end, as on a real arm);
* speedJ / speedL -> a target integrated every tick; stop -> ``stop``; halt -> ``halt``;
* setTcp -> the sim is rebuilt at rest with the new TCP offset (its dynamics act on the TCP).

The arm therefore behaves the same behind the fake controller as behind the arm controller's sim
backend, which uses the same ``SimUR5``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from robot.fake_ur.arm_model import FloatArray, MoveProfile, ur5_fk, ur5_ik_closest
from robot.fake_ur.server import ServerOptions
from robot.sim.ur5_model import SimUR5, UR5ModelParams

_SETTLED_POSITION_M = 1e-4
_SETTLED_ROTATION_RAD = 1e-3


class SimArmAdapter:
    """``ArmModel`` over a ``SimUR5`` (see the module docstring).

    Args:
        q0: initial joints (rad).
        params: ``robot.sim.ur5_model.UR5ModelParams``; its TCP offset is replaced by the offset the
            client sets (none until setTcp).
        rotation_speed_per_linear: moveL timing of rotations, as in ``KinematicArm``.
    """

    def __init__(
        self, q0: ArrayLike, params: UR5ModelParams | None = None, rotation_speed_per_linear: float = 4.0
    ):
        base = params if params is not None else UR5ModelParams()
        self._params = dataclasses.replace(base, tcp_offset_pose=(0.0,) * 6)
        self._rot_per_lin = rotation_speed_per_linear
        self._tcp = np.zeros(6)
        self._t = 0.0
        self.reset(q0, 0.0)

    def _build(self, q: FloatArray, t: float) -> None:
        self._params = dataclasses.replace(self._params, tcp_offset_pose=tuple(float(v) for v in self._tcp))
        self._sim = SimUR5(self._params, ur5_fk(q, self._tcp), t0=t, q_reference=q)

    # --- commands -------------------------------------------------------------------------------
    def reset(self, q: ArrayLike, t: float) -> None:
        self._build(np.asarray(q, dtype=np.float64), t)
        self._t = t
        self._move: MoveProfile | None = None
        self._speed: tuple[str, FloatArray] | None = None
        self._target_pose = self._sim.tcp_pose

    def set_tcp_offset(self, tcp_offset_pose: ArrayLike) -> None:
        self._tcp = np.asarray(tcp_offset_pose, dtype=np.float64).copy()
        self._build(self._sim.q, self._sim.time)
        self._move = None
        self._speed = None
        self._target_pose = self._sim.tcp_pose

    def _command(
        self, pose: FloatArray, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> bool:
        ok = bool(self._sim.command_pose(pose, t, lookahead_time_s, gain))
        if ok:
            self._target_pose = np.asarray(pose, dtype=np.float64).copy()
        return ok

    def servo_joints(
        self, q: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> None:
        self._move, self._speed = None, None
        self._command(ur5_fk(q, self._tcp), t, lookahead_time_s, gain)

    def servo_pose(
        self, pose: ArrayLike, t: float, lookahead_time_s: float = 0.0, gain: float = 300.0
    ) -> bool:
        self._move, self._speed = None, None
        return self._command(np.asarray(pose, dtype=np.float64), t, lookahead_time_s, gain)

    def speed_joints(self, qd: ArrayLike, accel_rad_s2: float, t: float) -> None:
        self._move = None
        self._speed = ("joints", np.asarray(qd, dtype=np.float64).copy())

    def speed_pose(self, xd: ArrayLike, accel_m_s2: float, t: float) -> None:
        self._move = None
        self._speed = ("pose", np.asarray(xd, dtype=np.float64).copy())

    def move_joints(self, q: ArrayLike, speed_rad_s: float, accel_rad_s2: float, t: float) -> bool:
        self._speed = None
        self._move = MoveProfile.joints(self.target_q, q, speed_rad_s, accel_rad_s2, t)
        return True

    def move_pose(self, pose: ArrayLike, speed_m_s: float, accel_m_s2: float, t: float) -> bool:
        if ur5_ik_closest(pose, self._sim.q, self._tcp) is None:
            return False
        self._speed = None
        self._move = MoveProfile.pose(self._target_pose, pose, speed_m_s, accel_m_s2, t, self._rot_per_lin)
        return True

    def stop(self, accel: float, t: float) -> None:
        self._move, self._speed = None, None
        self._sim.stop(t)

    def halt(self, t: float) -> None:
        self._move, self._speed = None, None
        self._sim.halt(t)
        self._target_pose = self._sim.tcp_pose

    # --- simulation -----------------------------------------------------------------------------
    def step(self, t: float) -> None:
        dt = t - self._t
        if dt <= 0:
            return
        if self._move is not None:
            if self._move.kind == "joints":
                self._command(ur5_fk(self._move.at(t), self._tcp), t)
            else:
                self._command(self._move.at(t), t)
            if t >= self._move.end_time and self._settled_on(self._move):
                self._move = None
        elif self._speed is not None:
            kind, v = self._speed
            if kind == "joints":
                q = ur5_ik_closest(self._target_pose, self._sim.q, self._tcp)
                if q is not None:
                    self._command(ur5_fk(q + v * dt, self._tcp), t)
            else:
                pose = self._target_pose.copy()
                pose[:3] += v[:3] * dt
                pose[3:] = (Rotation.from_rotvec(v[3:] * dt) * Rotation.from_rotvec(pose[3:])).as_rotvec()
                self._command(pose, t)
        self._sim.step(t)
        self._t = t

    def _settled_on(self, move: MoveProfile) -> bool:
        goal = ur5_fk(move.goal, self._tcp) if move.kind == "joints" else move.goal
        pose = self._sim.tcp_pose
        rot = (Rotation.from_rotvec(goal[3:]) * Rotation.from_rotvec(pose[3:]).inv()).magnitude()
        return (
            float(np.linalg.norm(goal[:3] - pose[:3])) < _SETTLED_POSITION_M
            and float(rot) < _SETTLED_ROTATION_RAD
            and float(np.linalg.norm(self._sim.tcp_speed)) < 1e-3
        )

    def motion_done(self) -> bool:
        return self._move is None

    def move_progress(self) -> float:
        return 1.0 if self._move is None else self._move.progress(self._t)

    # --- getters --------------------------------------------------------------------------------
    @property
    def actual_q(self) -> FloatArray:
        return self._sim.q

    @property
    def actual_qd(self) -> FloatArray:
        return self._sim.qd

    @property
    def actual_tcp_pose(self) -> FloatArray:
        return self._sim.tcp_pose

    @property
    def actual_tcp_speed(self) -> FloatArray:
        return self._sim.tcp_speed

    @property
    def target_q(self) -> FloatArray:
        q = ur5_ik_closest(self._target_pose, self._sim.q, self._tcp)
        return self._sim.q if q is None else q

    @property
    def target_qd(self) -> FloatArray:
        return np.zeros(6)

    @property
    def target_tcp_pose(self) -> FloatArray:
        return self._target_pose.copy()

    @property
    def target_tcp_speed(self) -> FloatArray:
        return np.zeros(6)


def make_sim_arm(options: ServerOptions) -> SimArmAdapter:
    """The sim UR5 at ``options.initial_q`` with ``UR5ModelParams(**options.arm_params)``."""
    return SimArmAdapter(options.initial_q, UR5ModelParams(**options.arm_params))
