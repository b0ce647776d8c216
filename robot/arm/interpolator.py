"""Time-parameterised TCP pose trajectory: position piecewise linear, rotation slerp, speed-limited.

A trajectory is a list of waypoints ``(time, pose)`` with strictly increasing times (host monotonic
seconds) and poses ``[x, y, z, rx, ry, rz]`` (metres, rotation vector in radians, base frame).
Evaluating it at ``t`` interpolates between the surrounding waypoints; before the first waypoint it
returns the first pose and after the last one the last pose: it holds, it never extrapolates.

Objects are immutable: :meth:`PoseTrajectoryInterpolator.schedule_waypoint`,
:meth:`~PoseTrajectoryInterpolator.drive_to_waypoint` and :meth:`~PoseTrajectoryInterpolator.trim`
return a new trajectory, so the controller can swap it in one assignment.

Speed contract: within a segment the position moves at constant linear speed and the rotation at
constant angular speed (slerp). ``schedule_waypoint``/``drive_to_waypoint`` stretch the new segment
so that neither exceeds the given ``max_linear_speed_m_s`` / ``max_angular_speed_rad_s``; segments
kept from the old trajectory were checked when they were added. Hence, when every waypoint was added
through these methods with the same limits, the trajectory never exceeds them anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation, Slerp

from robot.geometry.pose_math import quat_mul, quat_to_rotvec, rotation_angle, rotvec_to_quat

FloatArray = NDArray[np.float64]


def pose_distance(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Linear distance (m) and rotation angle (rad, in [0, pi]) between two 6-D poses."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lin = float(np.linalg.norm(a[:3] - b[:3]))
    return lin, rotation_angle(a[3:6], b[3:6])


def _conj(q: tuple) -> tuple:
    return (-q[0], -q[1], -q[2], q[3])


class PoseTrajectoryInterpolator:
    """Piecewise pose trajectory (see the module docstring).

    Args:
        times: waypoint times, host monotonic s, strictly increasing (one waypoint is allowed: the
            trajectory then holds that pose forever).
        poses: (n, 6) poses, metres and rotation-vector radians.
    """

    def __init__(self, times: Sequence[float] | ArrayLike, poses: ArrayLike):
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 6)
        if len(times) == 0 or len(times) != len(poses):
            raise ValueError(f"need as many times as poses (>= 1), got {len(times)} and {len(poses)}")
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(poses))):
            raise ValueError("waypoint times and poses must be finite")
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            raise ValueError(f"waypoint times must be strictly increasing, got {times.tolist()}")
        self._times = times
        self._positions = poses[:, :3].copy()
        self._rotations = Rotation.from_rotvec(poses[:, 3:])
        # Slerp needs two keyframes; a single waypoint is a constant trajectory.
        self._slerp = Slerp(times, self._rotations) if len(times) > 1 else None
        # Per-tick fast path (scalar t): the same slerp on Python floats, see robot/geometry/pose_math.py.
        self._quats = [tuple(q) for q in self._rotations.as_quat().reshape(-1, 4).tolist()]
        self._deltas = [
            quat_to_rotvec(quat_mul(self._quats[i + 1], _conj(self._quats[i]))) for i in range(len(times) - 1)
        ]
        self._first = np.concatenate([self._positions[0], quat_to_rotvec(self._quats[0])])
        self._last = np.concatenate([self._positions[-1], quat_to_rotvec(self._quats[-1])])

    # ------------------------------------------------------------------ inspection
    @property
    def times(self) -> FloatArray:
        """Waypoint times (host monotonic s), a copy."""
        return self._times.copy()

    @property
    def poses(self) -> FloatArray:
        """(n, 6) waypoint poses, a copy."""
        return np.concatenate([self._positions, self._rotations.as_rotvec().reshape(-1, 3)], axis=1)

    @property
    def start_time(self) -> float:
        return float(self._times[0])

    @property
    def end_time(self) -> float:
        """Time of the last waypoint; from then on the trajectory holds its last pose."""
        return float(self._times[-1])

    def __len__(self) -> int:
        return len(self._times)

    def __call__(self, t: float | ArrayLike) -> FloatArray:
        """Pose(s) at time(s) ``t`` (host monotonic s): shape (6,) for a scalar, (n, 6) for an array.

        Times outside ``[start_time, end_time]`` give the first/last pose (hold, no extrapolation).
        """
        if np.ndim(t) == 0:
            return self._eval_scalar(float(t))
        tt = np.clip(np.atleast_1d(np.asarray(t, dtype=np.float64)), self._times[0], self._times[-1])
        if self._slerp is None:
            out = np.tile(self.poses[0], (len(tt), 1))
        else:
            pos = np.stack([np.interp(tt, self._times, self._positions[:, i]) for i in range(3)], axis=1)
            out = np.concatenate([pos, self._slerp(tt).as_rotvec().reshape(-1, 3)], axis=1)
        return out

    def _eval_scalar(self, t: float) -> FloatArray:
        times = self._times
        if t <= times[0]:
            return self._first.copy()
        if t >= times[-1]:
            return self._last.copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        s = (t - times[i]) / (times[i + 1] - times[i])
        pos = self._positions[i] + s * (self._positions[i + 1] - self._positions[i])
        q = quat_mul(rotvec_to_quat(self._deltas[i] * s), self._quats[i])
        return np.concatenate([pos, quat_to_rotvec(q)])

    # ------------------------------------------------------------------ editing (returns new objects)
    def trim(self, start_time: float, end_time: float) -> PoseTrajectoryInterpolator:
        """The same path restricted to ``[start_time, end_time]`` (waypoints inserted at both ends)."""
        if end_time < start_time:
            raise ValueError(f"trim: end_time {end_time} < start_time {start_time}")
        inner = (self._times > start_time) & (self._times < end_time)
        times = np.concatenate([[start_time], self._times[inner], [end_time]])
        if end_time == start_time:
            times = times[:1]
        return PoseTrajectoryInterpolator(times, self(times))

    def schedule_waypoint(
        self,
        pose: ArrayLike,
        time: float,
        *,
        max_linear_speed_m_s: float,
        max_angular_speed_rad_s: float,
        curr_time: float,
        last_waypoint_time: float | None = None,
    ) -> PoseTrajectoryInterpolator:
        """Add ``pose`` to be reached at ``time`` (host monotonic s); returns the new trajectory.

        - ``time <= curr_time``: the waypoint is in the past and ignored (``self`` is returned).
        - ``time`` later than ``last_waypoint_time`` (the previous scheduled waypoint): the past is
          trimmed off and the pose is appended after the existing waypoints.
        - ``time`` earlier than that: the tail after ``curr_time`` is replaced by a segment from the
          current pose to ``pose``.
        The new segment lasts at least long enough that neither speed limit is exceeded, so a
        waypoint that is too close in time is reached late, at the limit speed, rather than fast.
        """
        if not (max_linear_speed_m_s > 0 and max_angular_speed_rad_s > 0):
            raise ValueError("speed limits must be > 0")
        if time <= curr_time:
            return self
        if last_waypoint_time is not None and time > last_waypoint_time:
            keep_until = max(last_waypoint_time, curr_time)
        else:
            keep_until = curr_time
        keep_until = min(keep_until, time)
        start = min(max(curr_time, self.start_time), keep_until)
        trimmed = self.trim(start, keep_until)
        return trimmed._append(pose, time, max_linear_speed_m_s, max_angular_speed_rad_s)

    def drive_to_waypoint(
        self,
        pose: ArrayLike,
        time: float,
        *,
        max_linear_speed_m_s: float,
        max_angular_speed_rad_s: float,
        curr_time: float,
    ) -> PoseTrajectoryInterpolator:
        """Replace everything after ``curr_time`` by one segment to ``pose`` at ``time`` (stretched
        for the speed limits like :meth:`schedule_waypoint`). Used for ``servo_to`` and ``home``."""
        time = max(time, curr_time)
        trimmed = self.trim(curr_time, curr_time)
        return trimmed._append(pose, time, max_linear_speed_m_s, max_angular_speed_rad_s)

    def _append(
        self, pose: ArrayLike, time: float, max_lin: float, max_ang: float
    ) -> PoseTrajectoryInterpolator:
        pose = np.asarray(pose, dtype=np.float64).reshape(6)
        last_t = self.end_time
        lin, ang = pose_distance(self(last_t), pose)
        duration = max(time - last_t, lin / max_lin, ang / max_ang)
        if duration <= 0.0:
            # Same pose at the same time: nothing to add.
            return self
        # Guard against float rounding making a stretched segment a hair too fast.
        duration = max(duration, math.nextafter(duration, math.inf))
        times = np.concatenate([self._times, [last_t + duration]])
        poses = np.concatenate([self.poses, pose[None]], axis=0)
        return PoseTrajectoryInterpolator(times, poses)
