"""The simulated world: a table at ``z = TABLE_Z_M``, the tool at the arm's TCP, and task objects.

The simulated arm backend owns one :class:`SimWorld`, steps it every controller tick with the arm's
TCP pose, and writes :meth:`SimWorld.record` into the world-state ring
(:data:`robot.sim.world_state.WORLD_STATE_LAYOUT`) that the simulated cameras render.

Task hook: anything implementing :class:`Task` (the reach / Push-T tasks live elsewhere). A task is
constructed in the parent and pickled into the arm controller process, so it must be picklable (plain
attributes; create heavy state such as a physics space in ``reset``).

Frames and units: world frame = arm base frame, metres, radians, poses ``[x, y, z, rx, ry, rz]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.sim.world_state import MAX_OBJECTS, TABLE_Z_M, ObjectKind

FloatArray = NDArray[np.float64]


@dataclass
class WorldObject:
    """One task object: what it is, where it is, how big (kind-specific extents, m)."""

    kind: ObjectKind
    pose: FloatArray = field(default_factory=lambda: np.zeros(6))
    size: FloatArray = field(default_factory=lambda: np.zeros(3))


@runtime_checkable
class Task(Protocol):
    """Hook for task objects in the simulated world. Methods run in the arm controller process.

    - ``reset(seed)``: place the objects for a new episode (deterministic in ``seed``); returns them.
    - ``step(tcp_pose, dt_s)``: advance object physics by ``dt_s`` seconds with the tool at
      ``tcp_pose`` (the tool is a vertical cylinder of radius TOOL_TIP_RADIUS_M at the TCP).
    - ``success()``: True when the task is solved in the current state.
    - ``objects()``: the current objects (at most MAX_OBJECTS).
    """

    def reset(self, seed: int) -> list[WorldObject]: ...

    def step(self, tcp_pose: FloatArray, dt_s: float) -> None: ...

    def success(self) -> bool: ...

    def objects(self) -> list[WorldObject]: ...


class NoTask:
    """The empty table: no objects, never successful."""

    def reset(self, seed: int) -> list[WorldObject]:
        return []

    def step(self, tcp_pose: FloatArray, dt_s: float) -> None:
        pass

    def success(self) -> bool:
        return False

    def objects(self) -> list[WorldObject]:
        return []


class TouchMarkerTask:
    """A trivial task for tests: a flat marker disc on the table at a seeded random (x, y); success
    once the tool tip has come within ``radius_m`` of it (x, y) and below ``touch_height_m``.

    Args:
        x_range_m, y_range_m: where the marker may be placed (base frame, m).
        radius_m: marker radius (m), also the success radius.
        touch_height_m: the tip must be at most this high above the table (m).
    """

    def __init__(
        self,
        x_range_m: tuple[float, float] = (0.35, 0.55),
        y_range_m: tuple[float, float] = (-0.2, 0.2),
        radius_m: float = 0.03,
        touch_height_m: float = 0.03,
    ):
        self.x_range_m = x_range_m
        self.y_range_m = y_range_m
        self.radius_m = radius_m
        self.touch_height_m = touch_height_m
        self._marker = WorldObject(ObjectKind.MARKER)
        self._touched = False

    def reset(self, seed: int) -> list[WorldObject]:
        rng = np.random.default_rng(seed)
        x = rng.uniform(*self.x_range_m)
        y = rng.uniform(*self.y_range_m)
        self._marker = WorldObject(
            ObjectKind.MARKER,
            np.array([x, y, TABLE_Z_M, 0, 0, 0.0]),
            np.array(
                [2 * self.radius_m, 2 * self.radius_m, 0.002]
            ),  # renderer: diameters x, y and a thickness
        )
        self._touched = False
        return self.objects()

    def step(self, tcp_pose: FloatArray, dt_s: float) -> None:
        d_xy = np.linalg.norm(np.asarray(tcp_pose[:2]) - self._marker.pose[:2])
        if d_xy <= self.radius_m and tcp_pose[2] - TABLE_Z_M <= self.touch_height_m:
            self._touched = True

    def success(self) -> bool:
        return self._touched

    def objects(self) -> list[WorldObject]:
        return [self._marker]


class SimWorld:
    """Table + tool + task objects; produces world-state records.

    Args:
        task: the task hook (``NoTask()`` if None).
    """

    def __init__(self, task: Task | None = None):
        self.task: Task = NoTask() if task is None else task
        self.seed = 0
        self._success = False
        self.has_gripper = False
        self.gripper_width_m = float("nan")

    def reset(self, seed: int) -> None:
        """Start a new episode of the task with ``seed``."""
        self.seed = int(seed)
        objs = self.task.reset(self.seed)
        self._check_objects(objs)
        self._success = False

    def step(self, tcp_pose: ArrayLike, dt_s: float, gripper_width_m: float | None = None) -> None:
        """Advance the task objects by ``dt_s`` (s) with the tool at ``tcp_pose`` and, on a rig with a
        gripper, its opening ``gripper_width_m`` (m; NaN before the gripper's first reading). Tasks
        that grasp (``uses_gripper = True``) get the opening as a keyword argument."""
        if gripper_width_m is not None:
            self.has_gripper = True
            self.gripper_width_m = float(gripper_width_m)
        if dt_s > 0:
            pose = np.asarray(tcp_pose, dtype=np.float64)
            if getattr(self.task, "uses_gripper", False):
                self.task.step(pose, float(dt_s), gripper_width_m=self.gripper_width_m)
            else:
                self.task.step(pose, float(dt_s))
        self._success = bool(self.task.success())

    @property
    def success(self) -> bool:
        return self._success

    @staticmethod
    def _check_objects(objs: list[WorldObject]) -> None:
        if len(objs) > MAX_OBJECTS:
            raise ValueError(f"task has {len(objs)} objects; the world state holds at most {MAX_OBJECTS}")

    def record(self, time_s: float, tcp_pose: ArrayLike, q: ArrayLike) -> dict[str, Any]:
        """The world-state record (WORLD_STATE_LAYOUT) for physical time ``time_s`` (host monotonic s)."""
        objs = self.task.objects()
        self._check_objects(objs)
        pose = np.zeros((MAX_OBJECTS, 6))
        kind = np.zeros(MAX_OBJECTS, dtype=np.int32)
        size = np.zeros((MAX_OBJECTS, 3))
        for i, o in enumerate(objs):
            pose[i] = o.pose
            kind[i] = int(o.kind)
            size[i] = o.size
        return {
            "time": float(time_s),
            "tcp_pose": np.asarray(tcp_pose, dtype=np.float64),
            "q": np.asarray(q, dtype=np.float64),
            "object_pose": pose,
            "object_kind": kind,
            "object_size": size,
            "episode_seed": self.seed,
            "task_success": self._success,
            "has_gripper": self.has_gripper,
            "gripper_width_m": self.gripper_width_m,
        }
