"""The world-state record shared by the simulated arm (the only writer) and simulated cameras.

The sim arm controller steps the world (arm, tool, task objects) and publishes one record per
step into a :class:`~robot.shm.ring_buffer.RingBuffer` with :data:`WORLD_STATE_LAYOUT`; each simulated
camera reads the record nearest to the time it "exposes" a frame and renders it. No globals, no
pickled state: the ring is the only channel.

Frames and units: one world frame = the arm's base frame, metres and radians, z up, the table
surface at ``z = TABLE_Z_M``. Poses are ``[x, y, z, rx, ry, rz]`` (rotation vector). ``time`` is host
monotonic seconds: the physical time at which the world looked like this (not when it was written).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

MAX_OBJECTS = 8
TABLE_Z_M = 0.0
TOOL_TIP_RADIUS_M = 0.012  # the rendered tool tip (a disc/sphere at the TCP)
TOOL_BODY_LENGTH_M = 0.10  # rendered tool body above the tip, along the tool z axis


class ObjectKind(IntEnum):
    """What an ``object_pose`` row is; sizes come from the task config shared by arm and cameras."""

    NONE = 0
    MARKER = 1  # flat disc lying on the table (reach target)
    T_BLOCK = 2  # the Push-T block (extruded T), pose = its reference point, yaw about z
    BOX = 3  # generic box


def t_outline(bar_length_m: float, bar_width_m: float) -> np.ndarray:
    """The T block's outline (8, 2) in its own frame, counter-clockwise seen from +z (m): the bar
    along x from y = 0 to the bar width, the stem up to y = bar length (shared by the renderer and
    the Push-T task's physics)."""
    L, W = bar_length_m, bar_width_m
    return np.array(
        [
            [-L / 2, 0.0],
            [L / 2, 0.0],
            [L / 2, W],
            [W / 2, W],
            [W / 2, L],
            [-W / 2, L],
            [-W / 2, W],
            [-L / 2, W],
        ]
    )


WORLD_STATE_LAYOUT = {
    "time": ((), "float64"),
    "tcp_pose": ((6,), "float64"),
    "q": ((6,), "float64"),
    "object_pose": ((MAX_OBJECTS, 6), "float64"),
    "object_kind": ((MAX_OBJECTS,), "int32"),
    "object_size": ((MAX_OBJECTS, 3), "float64"),  # kind-specific extents in metres
    "episode_seed": ((), "int64"),
    "task_success": ((), "bool"),  # the task hook's success() after this step (added by the arm issue)
    "has_gripper": ((), "bool"),  # the tool is a parallel gripper (robot/sim/grasp.py); False: a bare tip
    "gripper_width_m": (
        (),
        "float64",
    ),  # its opening between the pads (m), as the gripper process last read it
}
