"""The simulated parallel gripper's geometry and grasp model (good enough for pick-and-place).

Geometry, in the tool frame (z out of the tool, down at the table in the default pose; the TCP at
the fingertips): two pads ``FINGER_THICKNESS_M`` thick, ``FINGER_DEPTH_M`` deep (along y) and
``FINGER_LENGTH_M`` long (from the TCP up, along -z), their inner faces at ``x = +-width / 2``; a palm
across their tops. The renderer draws exactly this.

Grasp model (boxes only):

- An object is *between the fingers* when its centre lies inside the opening in x, and its extent
  overlaps the pads in y and z. Closing fingers stop on it at its extent along the tool x axis
  (:func:`obstacle_width`; the simulated gripper reads it from the world record, which also gives
  the Robotiq-style object detection).
- It is *held* once the opening is within ``GRIP_TOLERANCE_M`` of that extent: from then on it moves
  rigidly with the tool, re-centred between the pads (fingers centre what they squeeze).
- It is released when the opening grows past the extent by ``RELEASE_TOLERANCE_M``; it then falls
  (free fall, ``GRAVITY_M_S2``) to the table and lands flat, keeping its yaw and x-y.

Everything is in the world (= arm base) frame, metres, seconds; poses ``[x, y, z, rx, ry, rz]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from robot.sim.world_state import TABLE_Z_M, ObjectKind

FINGER_LENGTH_M = 0.045
FINGER_DEPTH_M = 0.022
FINGER_THICKNESS_M = 0.008
PALM_HEIGHT_M = 0.012
GRIP_TOLERANCE_M = 0.0015
RELEASE_TOLERANCE_M = 0.003
GRAVITY_M_S2 = 9.81


def _matrix(pose: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(pose[3:]).as_matrix()
    T[:3, 3] = pose[:3]
    return T


def box_in_tool(
    tcp_pose: np.ndarray, box_pose: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The box's centre (3,) and half extents along the tool axes (3,), in the tool frame (m)."""
    T_tool = _matrix(np.asarray(tcp_pose, float))
    T_box = _matrix(np.asarray(box_pose, float))
    centre_world = T_box[:3, :3] @ np.array([0.0, 0.0, size[2] / 2]) + T_box[:3, 3]
    R_tb = T_tool[:3, :3].T @ T_box[:3, :3]
    centre = T_tool[:3, :3].T @ (centre_world - T_tool[:3, 3])
    half = np.abs(R_tb) @ (np.asarray(size, float) / 2)
    return centre, half


def between_fingers(centre: np.ndarray, half: np.ndarray, width_m: float) -> bool:
    """Whether a box (tool-frame centre, half extents) is inside an opening of ``width_m``."""
    return (
        abs(centre[0]) < width_m / 2
        and 2 * half[0] <= width_m + GRIP_TOLERANCE_M
        and abs(centre[1]) < half[1] + FINGER_DEPTH_M / 2
        and centre[2] - half[2] < 0.0
        and centre[2] + half[2] > -FINGER_LENGTH_M
    )


def obstacle_width(world: Mapping[str, Any], width_m: float) -> float | None:
    """The width (m) at which fingers now ``width_m`` apart stop closing on a box between them, or
    None; ``world`` is a world-state record (robot/sim/world_state.py)."""
    kinds = np.asarray(world["object_kind"])
    best = None
    for i in np.flatnonzero(kinds == ObjectKind.BOX):
        size = np.asarray(world["object_size"][i], float)
        centre, half = box_in_tool(world["tcp_pose"], world["object_pose"][i], size)
        if between_fingers(centre, half, width_m):
            best = max(best or 0.0, 2 * float(half[0]))
    return best


class GraspModel:
    """Holds, carries, releases and drops one box (see the module docstring). Picklable.

    ``step(tcp_pose, width_m, box_pose, box_size, dt_s) -> box_pose``; ``held`` says whether the box
    moves with the tool now. ``width_m`` NaN means no gripper reading yet (nothing is grasped).
    """

    def __init__(self) -> None:
        self.held = False
        self._rel: np.ndarray | None = None  # T_tool_box while held
        self._fall_speed_m_s = 0.0

    def reset(self) -> None:
        self.held = False
        self._rel = None
        self._fall_speed_m_s = 0.0

    def step(
        self, tcp_pose: np.ndarray, width_m: float, box_pose: np.ndarray, size: np.ndarray, dt_s: float
    ) -> np.ndarray:
        tcp_pose = np.asarray(tcp_pose, float)
        box_pose = np.asarray(box_pose, float).copy()
        centre, half = box_in_tool(tcp_pose, box_pose, size)
        extent = 2 * float(half[0])
        if self.held and not (np.isfinite(width_m) and width_m <= extent + RELEASE_TOLERANCE_M):
            self.held, self._rel, self._fall_speed_m_s = False, None, 0.0
        if (
            not self.held
            and np.isfinite(width_m)
            and width_m <= extent + GRIP_TOLERANCE_M
            and between_fingers(centre, half, width_m + 2 * GRIP_TOLERANCE_M)
        ):
            self.held = True
            T_tool = _matrix(tcp_pose)
            rel = np.linalg.inv(T_tool) @ _matrix(box_pose)
            rel[0, 3] -= centre[0]  # the pads centre the box between them
            self._rel = rel
        if self.held:
            T = _matrix(tcp_pose) @ self._rel
            box_pose[:3] = T[:3, 3]
            box_pose[3:] = Rotation.from_matrix(T[:3, :3]).as_rotvec()
            return box_pose
        if box_pose[2] > TABLE_Z_M:  # released above the table: free fall, then it lands flat
            self._fall_speed_m_s += GRAVITY_M_S2 * dt_s
            box_pose[2] = max(TABLE_Z_M, box_pose[2] - self._fall_speed_m_s * dt_s)
            if box_pose[2] <= TABLE_Z_M:
                yaw = Rotation.from_rotvec(box_pose[3:]).as_euler("ZYX")[0]
                box_pose[3:] = Rotation.from_euler("z", yaw).as_rotvec()
                self._fall_speed_m_s = 0.0
        return box_pose

    @property
    def resting(self) -> bool:
        return not self.held and self._fall_speed_m_s == 0.0
