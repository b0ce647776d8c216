"""Small, fast rotation maths for the per-tick hot path of the arm controller and simulated arm.

scipy's ``Rotation`` is the reference (and is used wherever speed does not matter), but each call
costs ~20-40 us of array-API overhead, which at 500 Hz with a dozen calls per tick is a large share of
a 2 ms period. These helpers do the same on Python floats (~1 us each). Quaternions are tuples
``(x, y, z, w)`` (scipy's scalar-last order); rotation vectors are 3 floats (axis * angle, rad).
Tests check them against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Quat = tuple[float, float, float, float]


def rotvec_to_quat(rv: Sequence[float]) -> Quat:
    x, y, z = float(rv[0]), float(rv[1]), float(rv[2])
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < 1e-6:
        scale = 0.5 - angle * angle / 48.0  # sin(a/2)/a, Taylor
    else:
        scale = math.sin(0.5 * angle) / angle
    return (x * scale, y * scale, z * scale, math.cos(0.5 * angle))


def quat_to_rotvec(q: Quat) -> NDArray[np.float64]:
    """Rotation vector with angle in [0, pi] (the canonical one, as scipy returns)."""
    x, y, z, w = q
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    n = math.sqrt(x * x + y * y + z * z)
    angle = 2.0 * math.atan2(n, w)
    if angle < 1e-6:
        scale = 2.0 / w if w > 0 else 2.0  # a / sin(a/2), Taylor around 0
    else:
        scale = angle / n
    return np.array([x * scale, y * scale, z * scale])


def quat_mul(a: Quat, b: Quat) -> Quat:
    """The rotation ``a * b`` (apply ``b`` first, then ``a``), like scipy's ``Ra * Rb``."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def quat_conj(q: Quat) -> Quat:
    return (-q[0], -q[1], -q[2], q[3])


def quat_normalize(q: Quat) -> Quat:
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def quat_angle(q: Quat) -> float:
    """Rotation angle of ``q`` in [0, pi]."""
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    return 2.0 * math.atan2(n, abs(q[3]))


def quat_to_matrix(q: Quat) -> NDArray[np.float64]:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def relative_rotvec(rv_from: Sequence[float], rv_to: Sequence[float]) -> NDArray[np.float64]:
    """Rotation vector of ``R_to * R_from^-1`` (base frame), angle in [0, pi]."""
    return quat_to_rotvec(quat_mul(rotvec_to_quat(rv_to), quat_conj(rotvec_to_quat(rv_from))))


def rotation_angle(rv_a: Sequence[float], rv_b: Sequence[float]) -> float:
    """Angle (rad, [0, pi]) of the rotation between two orientations given as rotation vectors."""
    return quat_angle(quat_mul(rotvec_to_quat(rv_b), quat_conj(rotvec_to_quat(rv_a))))
