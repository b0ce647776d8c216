"""Takeover: a person takes the arm from the policy with the SpaceMouse, and gives it back.

The toggle is the config's key (``takeover.key``) or SpaceMouse button (``takeover.button``, an odd
number of presses since the last tick). While it is on, the policy is paused (its request in flight
is cancelled and a late result ignored) and each loop tick sends the SpaceMouse target
(:class:`collection.teleop.TeleopMapper`) stamped as teleop does (``teleop_target_time``: far enough
ahead that the arm never stops between ticks); the SpaceMouse buttons drive the gripper, from the
width it was last sent. On release the plan restarts from the last commanded pose and the policy
is asked again at once.

Timing contract. Everything here runs on the runner's loop thread, once per tick, and never waits:
a toggle costs one ``cancel`` of the policy client; a takeover tick one SpaceMouse read and one send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from collection.gripper_teleop import GripperTeleop
from collection.teleop import TeleopMapper, teleop_step_s, teleop_target_time
from deploy.config import DeployConfig
from deploy.scheduler import ActionPlan, PlannedAction, WidthPlan


class Takeover:
    """The runner's takeover (``DeployRunner`` sets this state in its ``__init__``)."""

    cfg: DeployConfig
    env: Any
    client: Any
    mapper: TeleopMapper
    grip: GripperTeleop | None
    plan: ActionPlan
    width_plan: WidthPlan
    period_s: float
    action_latency_s: float
    margin_s: float
    _button_count: int | None

    # DeployRunner's and ChunkHandling's:
    say: Callable[[str], None]
    _commanded_pose: Callable[[], np.ndarray]
    _width_now: Callable[[dict[str, Any]], float]
    _send: Callable[[list[PlannedAction], float], int]

    def _takeover_toggled(self, keys: list[str]) -> bool:
        toggled = self.cfg.takeover.key is not None and self.cfg.takeover.key in keys
        btn = self.cfg.takeover.button
        sm = getattr(self.env, "spacemouse", None)
        if btn is not None and sm is not None:
            presses = np.asarray(sm.latest()["button_presses"])
            if btn < len(presses):
                count = int(presses[btn])
                if self._button_count is None:
                    self._button_count = count
                elif count != self._button_count:
                    toggled = toggled or (count - self._button_count) % 2 == 1
                    self._button_count = count
        return toggled

    def _start_takeover(self, t: float, ep: dict[str, Any]) -> None:
        ep["takeover"] = True
        ep["takeover_since"] = t
        self.client.cancel()
        ep.pop("pending_request", None)
        pose = self._commanded_pose()
        self.mapper.reset(pose)
        self.plan.reset(pose, t)
        self.width_plan.reset()
        if self.grip is not None:  # the buttons drive the gripper from the width it was sent last
            self.grip.width_m = self._width_now(self.env.get_obs(1))
            self.env.gripper.set_width(self.grip.width_m)  # (this also drops the policy's pending widths)
        self.say(
            "TAKEOVER: policy paused, the arm follows the SpaceMouse"
            + (" (its buttons drive the gripper)" if self.grip is not None else "")
            + "; press again to give it back"
        )

    def _end_takeover(self, t: float, ep: dict[str, Any]) -> None:
        ep["takeover"] = False
        ep["takeover_s"] += t - ep["takeover_since"]
        self.width_plan.reset()  # the policy starts from the width the person left
        last = self.plan.committed[-1] if self.plan.committed else None
        if last is not None:
            self.plan.reset(last.pose, last.target_time)
        else:
            self.plan.reset(self._commanded_pose(), t)
        ep["next_cycle"] = t
        self.say("takeover released: the policy continues from here")

    def _teleop_tick(self, t: float, skipped: int) -> None:
        sm = self.env.spacemouse
        if sm is None:
            return
        state = sm.latest()
        target = self.mapper.update(state["axes"], state["buttons"], teleop_step_s(self.period_s, skipped))
        t_target = teleop_target_time(t, self.period_s, self.action_latency_s, self.margin_s)
        row = PlannedAction(target.copy(), t_target, -1, 0)
        self._send([row], t)
        self.plan.committed.append(row)
        if self.grip is not None:  # as in collection: the buttons' width, at once (a level)
            w = self.grip.update(state["buttons"])
            if w != self.env.gripper.get_state()["target_width_m"]:
                self.env.gripper.set_width(w)
