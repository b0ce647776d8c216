"""Why a simulated pick-and-place episode failed, read from the world-state records it went through.

:class:`PickPlaceOutcome` is fed world-state records (robot/sim/world_state.py: the box is the first
``BOX`` object, the drop spot the first ``MARKER``; ``gripper_width_m``; ``tcp_pose``) during an
episode, in any rate (the deploy loop gives it one per control tick), and says at the end what became of
the box. Causes of a failure, from what the world shows (the grasp model of robot/sim/grasp.py: a held
box moves with the tool; released, it falls to the table):

- ``missed grasp``: the fingers closed (``CLOSED_BELOW_M``) at least once, the box never left the table;
- ``dropped``: the box was lifted, and ended on the table farther than ``PLACE_RADIUS_M`` from the
  drop spot (released on the way);
- ``placed outside``: the box was lifted and ended on the table within ``PLACE_RADIUS_M`` of the drop
  spot, but not within the task's success radius (or not long enough);
- ``timeout``: the episode ran out with the box held, or without the fingers ever closing.

``first_grasp_offset_m`` is where the tool was relative to the box (TCP minus box centre, x and y, m)
when the fingers first closed, and ``first_grasp_height_m`` the TCP (the fingertips) above the box's
base then: a grasp needs the box between the pads (about 2 cm along x, 3 cm along y for the 4 cm box)
and the fingertips below the box's top (``box_size_m``); a closing above it is a grasp in the air.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from robot.sim.world_state import TABLE_Z_M, ObjectKind

CLOSED_BELOW_M = 0.06
"""An opening below this (m) counts as a grasp attempt (the 2F-85 opens to 0.085; the box is 0.04)."""
LIFTED_ABOVE_M = 0.005
"""A box whose base is this high (m) above the table has been lifted."""
PLACE_RADIUS_M = 0.06
"""A box that ends this close (m, x-y) to the drop spot was placed there, if not accurately enough."""

CAUSES = ("missed grasp", "dropped", "placed outside", "timeout")


class PickPlaceOutcome:
    """Accumulates world-state records of one episode; :meth:`result` classifies it."""

    def __init__(self) -> None:
        self.box_start_xy: np.ndarray | None = None
        self.target_xy: np.ndarray | None = None
        self.box_xy: np.ndarray | None = None
        self.box_z = TABLE_Z_M
        self.lifted = False
        self.grasp_attempts = 0
        self.first_grasp_offset: np.ndarray | None = None
        self.first_grasp_height: float | None = None
        self._closed = False

    @staticmethod
    def applies(world: Mapping[str, Any]) -> bool:
        """Whether ``world`` shows a gripper and a box (a pick-and-place scene)."""
        kinds = np.asarray(world["object_kind"])
        return bool(world["has_gripper"]) and bool(np.any(kinds == ObjectKind.BOX))

    def update(self, world: Mapping[str, Any]) -> None:
        kinds = np.asarray(world["object_kind"])
        boxes = np.flatnonzero(kinds == ObjectKind.BOX)
        if boxes.size == 0:
            return
        box = np.asarray(world["object_pose"][boxes[0]], float)
        if self.box_start_xy is None:
            self.box_start_xy = box[:2].copy()
            markers = np.flatnonzero(kinds == ObjectKind.MARKER)
            if markers.size:
                self.target_xy = np.asarray(world["object_pose"][markers[0]][:2], float).copy()
        self.box_xy, self.box_z = box[:2].copy(), float(box[2])
        if self.box_z > TABLE_Z_M + LIFTED_ABOVE_M:
            self.lifted = True
        width = float(world["gripper_width_m"])
        closed = np.isfinite(width) and width < CLOSED_BELOW_M
        if closed and not self._closed:
            self.grasp_attempts += 1
            if self.first_grasp_offset is None:
                self.first_grasp_offset = np.asarray(world["tcp_pose"][:2], float) - box[:2]
                self.first_grasp_height = float(world["tcp_pose"][2]) - float(box[2])
        self._closed = bool(closed)

    def result(self, success: bool) -> dict[str, Any]:
        """``cause`` (None on success, else one of :data:`CAUSES`), the box's start and end x-y (m), the
        end distance to the drop spot (m), grasp attempts, first grasp offset and height (m)."""
        held_at_end = self.box_z > TABLE_Z_M + LIFTED_ABOVE_M
        end_dist = None
        if self.box_xy is not None and self.target_xy is not None:
            end_dist = float(np.linalg.norm(self.box_xy - self.target_xy))
        if success:
            cause = None
        elif not self.lifted:
            cause = "missed grasp" if self.grasp_attempts else "timeout"
        elif held_at_end:
            cause = "timeout"
        elif end_dist is not None and end_dist <= PLACE_RADIUS_M:
            cause = "placed outside"
        else:
            cause = "dropped"

        def r(v: np.ndarray | None) -> list[float] | None:
            return None if v is None else [round(float(x), 4) for x in v]

        return {
            "cause": cause,
            "box_start_xy_m": r(self.box_start_xy),
            "box_end_xy_m": r(self.box_xy),
            "end_distance_to_target_m": None if end_dist is None else round(end_dist, 4),
            "lifted": self.lifted,
            "grasp_attempts": self.grasp_attempts,
            "first_grasp_offset_m": r(self.first_grasp_offset),
            "first_grasp_height_m": None
            if self.first_grasp_height is None
            else round(self.first_grasp_height, 4),
        }
