"""UR5 / UR5e kinematics: joints <-> TCP pose, for the real arm's controller (its home pose), the
simulated arm and the fake UR controller alike.

Analytic, through ``ur_analytic_ik`` (the UR5's and UR5e's DH parameters). Poses ``[x, y, z, rx, ry,
rz]`` (m, rotation vector in rad) in the base frame; joints in rad. Pure functions.
"""

from __future__ import annotations

import math

import numpy as np
import ur_analytic_ik
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from robot.geometry.pose_math import quat_to_matrix, rotvec_to_quat

FloatArray = NDArray[np.float64]

# Elbow-up, wrist-down configuration facing +x: IK solutions near it keep a tidy arm in the workspace.
UR5_REFERENCE_Q = np.array([math.pi, -math.pi / 2, math.pi / 2, -math.pi / 2, -math.pi / 2, 0.0])


def _pose_to_matrix(pose: ArrayLike) -> FloatArray:
    """``[x, y, z, rx, ry, rz]`` -> 4x4 homogeneous transform."""
    p = np.asarray(pose, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(rotvec_to_quat(p[3:6]))
    T[:3, 3] = p[:3]
    return T


def _matrix_to_pose(T: ArrayLike) -> FloatArray:
    """4x4 homogeneous transform -> ``[x, y, z, rx, ry, rz]``."""
    M = np.asarray(T, dtype=np.float64)
    return np.concatenate([M[:3, 3], Rotation.from_matrix(M[:3, :3]).as_rotvec()])


def ur5_forward_kinematics(
    q: ArrayLike, tcp_offset_pose: ArrayLike | None = None, model: str = "ur5"
) -> FloatArray:
    """UR5 (or ``model="ur5e"``) joints (rad) -> TCP pose in the base frame (``tcp_offset_pose``
    relative to the flange)."""
    kin = getattr(ur_analytic_ik, model)
    qq = [float(v) for v in np.asarray(q, dtype=np.float64).reshape(6)]
    if tcp_offset_pose is None:
        return _matrix_to_pose(kin.forward_kinematics(*qq))
    return _matrix_to_pose(kin.forward_kinematics_with_tcp(*qq, _pose_to_matrix(tcp_offset_pose)))


def ur5_inverse_kinematics(
    pose: ArrayLike, q_near: ArrayLike, tcp_offset_pose: ArrayLike
) -> FloatArray | None:
    """The IK solution for TCP ``pose`` closest to ``q_near`` (each joint unwrapped to within pi of
    ``q_near``), or None when the pose is out of the UR5's reach."""
    qn = np.asarray(q_near, dtype=np.float64).reshape(6)
    sols = ur_analytic_ik.ur5.inverse_kinematics_closest_with_tcp(
        _pose_to_matrix(pose), _pose_to_matrix(tcp_offset_pose), *[float(v) for v in qn]
    )
    if not sols:
        return None
    q = np.asarray(sols[0], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        return None
    return qn + (q - qn + math.pi) % (2 * math.pi) - math.pi
