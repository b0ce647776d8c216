"""The ``reach`` task: bring the tool tip onto a target marker on the table and stay there.

A flat red disc (:attr:`~robot.sim.world_state.ObjectKind.MARKER`, diameter ``2 * marker_radius_m``)
is placed uniformly at random (deterministic in the reset seed) inside ``x_range_m`` x ``y_range_m``
on the table. The task is solved once the tool tip (the TCP) has been, **continuously for
``hold_s`` seconds of simulated time** (the sum of the ``dt_s`` passed to :meth:`ReachTask.step`):

- within ``success_radius_m`` of the marker centre in x-y, and
- at most ``touch_height_m`` above the table.

Success is latched for the episode: once solved, :meth:`ReachTask.success` stays True until the next
``reset`` (the deploy summary asks "was the episode solved", not "is the tool still there").

Teleoperation for reach is planar: the collector holds the tool at a fixed low height (e.g. 3 cm)
with no rotation, so only x-y matter.
"""

from __future__ import annotations

import numpy as np

from robot.sim.world import FloatArray, WorldObject
from robot.sim.world_state import TABLE_Z_M, ObjectKind

MARKER_THICKNESS_M = 0.002
"""Rendered thickness of the marker disc (m); it lies on the table."""


class ReachTask:
    """Reach a random marker and hold the tool tip on it (see the module docstring).

    Args:
        x_range_m, y_range_m: region of the marker centre (base/world frame, m); keep it well
            inside the arm's workspace (default workspace x 0.25..0.65, y -0.35..0.35).
        marker_radius_m: radius of the drawn marker (m).
        success_radius_m: max x-y distance tip - marker centre (m).
        touch_height_m: max height of the tip above the table (m).
        hold_s: how long both conditions must hold without interruption (s of simulated time).

    Picklable (plain attributes only); construct in the parent, ``reset`` in the arm process.
    """

    def __init__(
        self,
        x_range_m: tuple[float, float] = (0.35, 0.55),
        y_range_m: tuple[float, float] = (-0.20, 0.20),
        marker_radius_m: float = 0.02,
        success_radius_m: float = 0.02,
        touch_height_m: float = 0.05,
        hold_s: float = 0.5,
    ):
        for name, (lo, hi) in (("x_range_m", x_range_m), ("y_range_m", y_range_m)):
            if not lo <= hi:
                raise ValueError(f"reach task: {name} must be (low, high) with low <= high, got {(lo, hi)}")
        if marker_radius_m <= 0 or success_radius_m <= 0 or touch_height_m <= 0 or hold_s < 0:
            raise ValueError(
                "reach task: marker_radius_m, success_radius_m, touch_height_m must be > 0 and hold_s >= 0"
            )
        self.x_range_m = (float(x_range_m[0]), float(x_range_m[1]))
        self.y_range_m = (float(y_range_m[0]), float(y_range_m[1]))
        self.marker_radius_m = float(marker_radius_m)
        self.success_radius_m = float(success_radius_m)
        self.touch_height_m = float(touch_height_m)
        self.hold_s = float(hold_s)
        self.marker_xy = np.array([np.mean(self.x_range_m), np.mean(self.y_range_m)])
        self.held_s = 0.0
        """Time (s) the tip has been on the marker without interruption, up to now."""
        self._solved = False

    def reset(self, seed: int) -> list[WorldObject]:
        """New episode: the marker at a uniform random x-y drawn from ``seed``; success cleared."""
        rng = np.random.default_rng(int(seed))
        self.marker_xy = np.array([rng.uniform(*self.x_range_m), rng.uniform(*self.y_range_m)])
        self.held_s = 0.0
        self._solved = False
        return self.objects()

    def on_target(self, tcp_pose: FloatArray) -> bool:
        """Whether the tip at ``tcp_pose`` satisfies the distance and height conditions now."""
        d_xy = float(np.hypot(*(np.asarray(tcp_pose[:2], float) - self.marker_xy)))
        return d_xy <= self.success_radius_m and float(tcp_pose[2]) - TABLE_Z_M <= self.touch_height_m

    def step(self, tcp_pose: FloatArray, dt_s: float) -> None:
        """Account ``dt_s`` seconds with the tip at ``tcp_pose`` (the pose at the end of the interval)."""
        if self.on_target(tcp_pose):
            self.held_s += float(dt_s)
            if self.held_s >= self.hold_s:
                self._solved = True
        else:
            self.held_s = 0.0

    def success(self) -> bool:
        """True once the tip was held on the marker for ``hold_s`` in this episode (latched)."""
        return self._solved

    def objects(self) -> list[WorldObject]:
        """The marker: pose = its centre on the table, size = (diameter x, diameter y, thickness) (m)."""
        d = 2.0 * self.marker_radius_m
        return [
            WorldObject(
                ObjectKind.MARKER,
                np.array([self.marker_xy[0], self.marker_xy[1], TABLE_Z_M, 0.0, 0.0, 0.0]),
                np.array([d, d, MARKER_THICKNESS_M]),
            )
        ]
