"""The ``pick_place`` task: pick up a box with the gripper and put it down on a target marker.

A green box (:attr:`~robot.sim.world_state.ObjectKind.BOX`, ``box_size_m`` cube, random yaw within
``box_yaw_range_rad``) and a red target disc (``target_radius_m``) are placed at random (deterministic
in the reset seed) in ``x_range_m`` x ``y_range_m``, at least ``min_distance_m`` apart; with
``target_xy_m`` the target stays there (a fixed drop spot, like a bin) and only the box moves. The gripper
and the box follow :mod:`robot.sim.grasp`. The task is solved once the box has rested on the table,
released, with its centre within ``success_radius_m`` of the target centre (x-y), continuously for
``hold_s`` seconds of simulated time; success is latched until the next reset.

Objects (world record order): 0 the box, 1 the target.
"""

from __future__ import annotations

import numpy as np

from robot.sim.grasp import GraspModel
from robot.sim.world import FloatArray, WorldObject
from robot.sim.world_state import TABLE_Z_M, ObjectKind

TARGET_THICKNESS_M = 0.002


class PickPlaceTask:
    """Pick the box, place it on the target (see the module docstring). Picklable.

    Args:
        x_range_m, y_range_m: region of the box and target centres (m, base frame).
        box_size_m: edge of the cube (m); it must fit the gripper's 85 mm opening.
        box_yaw_range_rad: the box's yaw is drawn from (-r, r).
        target_radius_m: drawn radius of the target disc (m).
        success_radius_m: max x-y distance box centre - target centre (m).
        min_distance_m: min x-y distance between box and target at reset (m).
        hold_s: how long the box must rest on the target (s of simulated time).
        target_xy_m: a fixed target centre (m), or None: a random one per reset.
    """

    uses_gripper = True

    def __init__(
        self,
        x_range_m: tuple[float, float] = (0.35, 0.55),
        y_range_m: tuple[float, float] = (-0.15, 0.15),
        box_size_m: float = 0.04,
        box_yaw_range_rad: float = 0.0,
        target_radius_m: float = 0.035,
        success_radius_m: float = 0.03,
        min_distance_m: float = 0.12,
        hold_s: float = 0.3,
        target_xy_m: tuple[float, float] | None = None,
    ):
        if not 0 < box_size_m < 0.08:
            raise ValueError(f"pick_place task: box_size_m must be in (0, 0.08) m, got {box_size_m}")
        for name, (lo, hi) in (("x_range_m", x_range_m), ("y_range_m", y_range_m)):
            if not lo <= hi:
                raise ValueError(f"pick_place task: {name} must be (low, high), got {(lo, hi)}")
        self.x_range_m = (float(x_range_m[0]), float(x_range_m[1]))
        self.y_range_m = (float(y_range_m[0]), float(y_range_m[1]))
        self.box_size_m = float(box_size_m)
        self.box_yaw_range_rad = float(box_yaw_range_rad)
        self.target_radius_m = float(target_radius_m)
        self.success_radius_m = float(success_radius_m)
        self.min_distance_m = float(min_distance_m)
        self.hold_s = float(hold_s)
        self.fixed_target = (
            None if target_xy_m is None else np.asarray(target_xy_m, dtype=np.float64).reshape(2)
        )
        self.box_pose = np.array([0.45, 0.0, TABLE_Z_M, 0.0, 0.0, 0.0])
        self.target_xy = np.array([0.45, 0.1])
        self.grasp = GraspModel()
        self.held_s = 0.0
        self._solved = False

    def reset(self, seed: int) -> list[WorldObject]:
        rng = np.random.default_rng(int(seed))
        if self.fixed_target is None:
            box_xy = np.array([rng.uniform(*self.x_range_m), rng.uniform(*self.y_range_m)])
            for _ in range(1000):
                target = np.array([rng.uniform(*self.x_range_m), rng.uniform(*self.y_range_m)])
                if np.linalg.norm(target - box_xy) >= self.min_distance_m:
                    break
        else:
            target = self.fixed_target.copy()
            for _ in range(1000):
                box_xy = np.array([rng.uniform(*self.x_range_m), rng.uniform(*self.y_range_m)])
                if np.linalg.norm(target - box_xy) >= self.min_distance_m:
                    break
        yaw = rng.uniform(-self.box_yaw_range_rad, self.box_yaw_range_rad) if self.box_yaw_range_rad else 0.0
        self.box_pose = np.array([box_xy[0], box_xy[1], TABLE_Z_M, 0.0, 0.0, yaw])
        self.target_xy = target
        self.grasp.reset()
        self.held_s = 0.0
        self._solved = False
        return self.objects()

    def step(self, tcp_pose: FloatArray, dt_s: float, gripper_width_m: float = float("nan")) -> None:
        size = np.full(3, self.box_size_m)
        self.box_pose = self.grasp.step(tcp_pose, gripper_width_m, self.box_pose, size, dt_s)
        on_target = (
            self.grasp.resting
            and self.box_pose[2] <= TABLE_Z_M + 1e-6
            and float(np.linalg.norm(self.box_pose[:2] - self.target_xy)) <= self.success_radius_m
        )
        self.held_s = self.held_s + dt_s if on_target else 0.0
        if self.held_s >= self.hold_s:
            self._solved = True

    def success(self) -> bool:
        return self._solved

    def objects(self) -> list[WorldObject]:
        d = 2 * self.target_radius_m
        return [
            WorldObject(ObjectKind.BOX, self.box_pose.copy(), np.full(3, self.box_size_m)),
            WorldObject(
                ObjectKind.MARKER,
                np.array([self.target_xy[0], self.target_xy[1], TABLE_Z_M, 0.0, 0.0, 0.0]),
                np.array([d, d, TARGET_THICKNESS_M]),
            ),
        ]
