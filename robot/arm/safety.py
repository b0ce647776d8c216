"""Safety filter between the trajectory and the arm: reject absurd targets, clip the rest.

Two stages, both pure functions of their inputs (no clock):

1. :meth:`SafetyFilter.validate` on every *incoming* command pose: a pose that is not 6 finite
   numbers, or whose rotation vector is longer than ``max_rotvec_norm_rad``, is **rejected** (the
   controller logs it, sets ``REJECTED_TARGET`` in the status and the arm holds its trajectory).
   A pose outside the workspace box is **clipped** onto the box (``WORKSPACE_CLIPPED``).
2. :meth:`SafetyFilter.limit_step` on every *tick*: the commanded pose is clipped to the box, and the
   step from the previous commanded pose is shortened to at most
   ``min(max_linear_speed_m_s * dt_s, max_step_m)`` in translation and
   ``min(max_angular_speed_rad_s * dt_s, max_step_rad)`` in rotation (``SPEED_LIMITED``), keeping
   its direction. A too-fast trajectory is therefore followed late, never fast.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.arm.config import ArmLimits
from robot.geometry.pose_math import quat_angle, quat_conj, quat_mul, quat_to_rotvec, rotvec_to_quat

FloatArray = NDArray[np.float64]


class SafetyFilter:
    """Workspace box, speed and per-tick step limits for TCP pose targets.

    Args:
        limits: the configured limits.
        dt_s: controller period (s); the per-tick step is bounded by speed * dt_s.
    """

    def __init__(self, limits: ArmLimits, dt_s: float):
        self.limits = limits
        self.dt_s = float(dt_s)
        self.box_min = np.asarray(limits.workspace_min_m, dtype=np.float64)
        self.box_max = np.asarray(limits.workspace_max_m, dtype=np.float64)
        self.max_step_m = min(limits.max_linear_speed_m_s * self.dt_s, limits.max_step_m)
        self.max_step_rad = min(limits.max_angular_speed_rad_s * self.dt_s, limits.max_step_rad)

    def validate(self, pose: ArrayLike) -> tuple[FloatArray | None, str | None, bool]:
        """Check an incoming target. Returns ``(pose_or_None, rejection_reason_or_None, clipped)``.

        Rejected (``None, reason``): wrong shape, NaN/inf, rotation vector norm above the limit.
        Otherwise the returned pose is clipped to the workspace box and ``clipped`` says whether
        that changed it.
        """
        p = np.asarray(pose, dtype=np.float64)
        if p.shape != (6,):
            return None, f"target pose must have 6 values [x,y,z,rx,ry,rz], got shape {p.shape}", False
        if not np.all(np.isfinite(p)):
            return None, f"target pose has NaN/inf: {p.tolist()}", False
        norm = float(np.linalg.norm(p[3:]))
        if norm > self.limits.max_rotvec_norm_rad:
            return (
                None,
                f"target rotation vector norm {norm:.3f} rad exceeds {self.limits.max_rotvec_norm_rad:.3f} "
                "(limits.max_rotvec_norm_rad): not a sane orientation",
                False,
            )
        clipped_pos = np.clip(p[:3], self.box_min, self.box_max)
        clipped = bool(np.any(clipped_pos != p[:3]))
        return np.concatenate([clipped_pos, p[3:]]), None, clipped

    def limit_step(self, target: ArrayLike, previous: ArrayLike) -> tuple[FloatArray, bool, bool]:
        """Clip ``target`` to the box and bound the step from ``previous`` (the last commanded pose).

        Returns ``(pose, workspace_clipped, speed_limited)``.
        """
        t = np.asarray(target, dtype=np.float64)
        prev = np.asarray(previous, dtype=np.float64)
        pos = np.clip(t[:3], self.box_min, self.box_max)
        clipped = bool(np.any(pos != t[:3]))
        limited = False
        d = pos - prev[:3]
        dist = float(np.linalg.norm(d))
        if dist > self.max_step_m:
            pos = prev[:3] + d * (self.max_step_m / dist)
            limited = True
        q_prev = rotvec_to_quat(prev[3:])
        q_delta = quat_mul(rotvec_to_quat(t[3:]), quat_conj(q_prev))
        angle = quat_angle(q_delta)
        if angle > self.max_step_rad:
            q_step = rotvec_to_quat(quat_to_rotvec(q_delta) * (self.max_step_rad / angle))
            rotvec = quat_to_rotvec(quat_mul(q_step, q_prev))
            limited = True
        else:
            rotvec = t[3:]
        return np.concatenate([pos, rotvec]), clipped, limited
