"""Scripted SpaceMouse expert of the ``pick_place`` task (axes and buttons, like a person would).

Phases (the tool keeps its orientation; teleop with ``rotation_locked``):

1. ``approach``: to ``travel_z_m`` above the box (x-y noise fading within ``slow_radius_m``);
2. ``descend``: down to the grasp height (TCP ``grasp_offset_m`` above the box centre);
3. ``dwell``: hold still there, fingers open, for ``dwell_s`` (0: close at once);
4. ``close``: hold the close button until the opening (world record ``gripper_width_m``) has stopped
   on the box for ``settle_s``;
5. ``carry``: up to ``travel_z_m``, then over the target;
6. ``place``: down until the box is ``drop_height_m`` above the table;
7. ``open``: hold the open button until the pads are clear of the box;
8. ``retreat``: back up to ``travel_z_m`` and stay.

If the box leaves the fingers while carrying (the opening grew), it starts over at ``approach``.
Buttons: ``close_button`` / ``open_button`` must match the teleop's gripper buttons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.sim.grasp import RELEASE_TOLERANCE_M
from robot.sim.tasks.experts import ExpertBase, saturate

_BOX, _TARGET = 0, 1


@dataclass
class PickPlaceExpert(ExpertBase):
    """See the module docstring. Gains in axis units per metre of error (full deflection at 1/kp)."""

    kp_per_m: float = 10.0
    travel_z_m: float = 0.10
    grasp_offset_m: float = 0.005
    drop_height_m: float = 0.004
    xy_tolerance_m: float = 0.004
    z_tolerance_m: float = 0.003
    slow_radius_m: float = 0.04
    dwell_s: float = 0.0
    settle_s: float = 0.15
    close_button: int = 0
    open_button: int = 1
    phase: str = field(default="approach", init=False)
    _since: float = field(default=0.0, init=False, repr=False)
    _buttons: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for b in (self.close_button, self.open_button):
            if not 0 <= b < self.num_buttons:
                raise ValueError(
                    f"pick_place expert: button {b} out of range (num_buttons {self.num_buttons})"
                )

    def on_new_episode(self, world: dict[str, Any]) -> None:
        self.phase = "approach"
        self._since = 0.0

    def __call__(self, obs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        self._buttons = np.zeros(self.num_buttons, bool)
        axes, buttons = super().__call__(obs)
        return axes, buttons | self._buttons

    def _goto(self, tcp: np.ndarray, goal: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        err = goal - tcp[:3]
        u = self.kp_per_m * err
        if noise is not None:
            u[:2] += min(1.0, float(np.linalg.norm(err[:2])) / self.slow_radius_m) * noise
        return saturate(u)

    def _at(self, tcp: np.ndarray, goal: np.ndarray) -> bool:
        return (
            float(np.linalg.norm(goal[:2] - tcp[:2])) <= self.xy_tolerance_m
            and abs(float(goal[2] - tcp[2])) <= self.z_tolerance_m
        )

    def command(self, tcp_pose: np.ndarray, world: dict[str, Any], dt_s: float) -> np.ndarray:
        box = np.asarray(world["object_pose"][_BOX], float)
        size = np.asarray(world["object_size"][_BOX], float)
        target = np.asarray(world["object_pose"][_TARGET], float)
        width = float(world["gripper_width_m"])
        box_centre_z = box[2] + size[2] / 2
        noise = self.step_noise(dt_s)
        self._since += dt_s
        above_box = np.array([box[0], box[1], self.travel_z_m])
        grasp = np.array([box[0], box[1], box_centre_z + self.grasp_offset_m])
        released = not np.isfinite(width) or width > size[0] + RELEASE_TOLERANCE_M
        if self.phase in ("carry", "place") and released:
            self._enter("approach")
        if self.phase == "approach":
            self._buttons[self.open_button] = not released or width < size[0] + 0.02
            if self._at(tcp_pose, above_box):
                self._enter("descend")
            return self._goto(tcp_pose, above_box, noise)
        if self.phase == "descend":
            if self._at(tcp_pose, grasp):
                self._enter("dwell" if self.dwell_s > 0 else "close")
            # Go down only once over the box (the fingers must not land on it).
            if float(np.linalg.norm(grasp[:2] - tcp_pose[:2])) > 2 * self.xy_tolerance_m:
                return self._goto(tcp_pose, above_box)
            return self._goto(tcp_pose, grasp)
        if self.phase == "dwell":
            if self._since >= self.dwell_s:
                self._enter("close")
            return self._goto(tcp_pose, grasp)
        if self.phase == "close":
            self._buttons[self.close_button] = True
            if np.isfinite(width) and width <= size[0] + 0.001:
                if self._since >= self.settle_s:
                    self._enter("carry")
            else:
                self._since = 0.0
            return self._goto(tcp_pose, grasp)
        if self.phase == "carry":
            self._buttons[self.close_button] = True
            if tcp_pose[2] < self.travel_z_m - 0.02:
                return self._goto(tcp_pose, np.array([tcp_pose[0], tcp_pose[1], self.travel_z_m]))
            above_target = np.array([target[0], target[1], self.travel_z_m])
            if self._at(tcp_pose, above_target):
                self._enter("place")
            return self._goto(tcp_pose, above_target, noise)
        if self.phase == "place":
            self._buttons[self.close_button] = True
            # TCP height that puts the box bottom drop_height_m above the table.
            offset = tcp_pose[2] - box[2]
            place = np.array([target[0], target[1], offset + self.drop_height_m])
            if self._at(tcp_pose, place) or box[2] <= self.drop_height_m + 0.001:
                self._enter("open")
            return self._goto(tcp_pose, place)
        if self.phase == "open":
            self._buttons[self.open_button] = True
            if released and width > size[0] + 0.015:
                self._enter("retreat")
            return np.zeros(3)
        # retreat
        return self._goto(tcp_pose, np.array([tcp_pose[0], tcp_pose[1], self.travel_z_m]))

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._since = 0.0
