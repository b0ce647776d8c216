"""Poses as 4x4 homogeneous transforms, for the world, calibration and the cameras.

A pose is ``[x, y, z, rx, ry, rz]``: translation in metres and a rotation vector in radians; ``T``
maps a point in the child frame to the parent frame (``p_parent = R p_child + t``). OpenCV's
Rodrigues conversion (the same numbers calibration's OpenCV solvers use). Pure functions, no state.
"""

from __future__ import annotations

import cv2
import numpy as np


def pose_to_matrix(pose: np.ndarray | list[float]) -> np.ndarray:
    """4x4 homogeneous transform of a pose ``[x, y, z, rx, ry, rz]`` (m, rotation vector in rad)."""
    p = np.asarray(pose, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(p[3:6].reshape(3, 1))[0]
    T[:3, 3] = p[:3]
    return T


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pose_to_matrix`."""
    return np.concatenate([T[:3, 3], cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))[0].ravel()])


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (``R^T``, ``-R^T t``): ``T_b_a`` from ``T_a_b``."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def look_at_rotation(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rotation (columns = camera x, y, z in the parent frame) of an OpenCV camera at ``eye`` looking
    at ``target`` with the image's up direction as close to ``up`` as possible."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at: the view direction is parallel to the up direction; move the camera")
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)
