"""SpaceMouse axes -> TCP target pose, at the control rate, with speed limits and task locks.

Each control step ``dt_s`` the target moves by ``axes[:3] * max_linear_speed_m_s * dt_s`` (base
frame) and rotates by ``axes[3:] * max_angular_speed_rad_s * dt_s`` (rotation vector, base frame),
then is clipped into the arm's workspace. Locks for tasks that need them: ``planar`` keeps z at
``lock_z_m`` (pushing, reaching on a table), ``rotation_locked`` keeps the start orientation.
A button can be given the role ``rotation_unlock`` (rotation only while held, as in the Diffusion
Policy reference) or ``translation_lock``. The gripper's buttons are ``gripper``
(:mod:`collection.gripper_teleop`); they are used only on a rig with a gripper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy.spatial.transform import Rotation

from collection.gripper_teleop import GripperTeleopConfig
from robot.config import StrictModel

ButtonRole = Literal["none", "rotation_unlock", "translation_lock"]


class TeleopConfig(StrictModel):
    max_linear_speed_m_s: float = Field(0.15, gt=0)
    """TCP speed at full deflection (m/s). Scripted experts assume the same value."""
    max_angular_speed_rad_s: float = Field(0.6, gt=0)
    planar: bool = False
    """Keep the TCP at ``lock_z_m`` (or the start height when None)."""
    lock_z_m: float | None = None
    rotation_locked: bool = False
    """Keep the start orientation whatever the rotation axes say."""
    button_roles: list[ButtonRole] = Field(default_factory=lambda: ["none", "none"])
    gripper: GripperTeleopConfig = Field(default_factory=GripperTeleopConfig)
    """Buttons that close/open the gripper (only on a rig with a gripper)."""

    @model_validator(mode="after")
    def _gripper_buttons_free(self) -> TeleopConfig:
        taken = [
            b for b in self.gripper.buttons() if b < len(self.button_roles) and self.button_roles[b] != "none"
        ]
        if taken:
            raise ValueError(
                f"teleop.gripper: button {taken[0]} also has the role {self.button_roles[taken[0]]!r} in "
                "teleop.button_roles; give the gripper other buttons or set them to null"
            )
        return self


MAX_TELEOP_STEP_S = 0.25
"""The most control time one teleop step stands for (a loop stalled longer does not jump the target)."""


def teleop_step_s(period_s: float, skipped: int) -> float:
    """Control time a loop tick stands for: its period plus the whole periods the loop skipped to get
    back on its grid (a loaded machine), at most :data:`MAX_TELEOP_STEP_S`. Integrating this instead of
    one period keeps the TCP at the speed the SpaceMouse asks for when ticks are skipped."""
    return min(period_s * (1 + max(int(skipped), 0)), max(period_s, MAX_TELEOP_STEP_S))


def teleop_target_time(t: float, period_s: float, action_latency_s: float, margin_s: float) -> float:
    """When a teleop target computed at host time ``t`` (s) by a loop of period ``period_s`` is to be
    reached: two periods plus the margin after it is sent, and it is sent ``action_latency_s`` early
    (``Env.exec_actions``). The next target then always arrives a period before this one is reached,
    so the arm follows the SpaceMouse without stopping between targets (a target sent only one period
    ahead is reached, held, then ramped away from: stop and go)."""
    return t + action_latency_s + margin_s + 2 * period_s


class TeleopMapper:
    """Integrates SpaceMouse axes into a TCP target pose (see module docstring)."""

    def __init__(
        self, config: TeleopConfig, workspace_min_m: Sequence[float], workspace_max_m: Sequence[float]
    ):
        self.config = config
        self.lo = np.asarray(workspace_min_m, float)
        self.hi = np.asarray(workspace_max_m, float)
        self.position = np.zeros(3)
        self.rotation = Rotation.identity()
        self._start_rotation = Rotation.identity()

    def reset(self, pose: Sequence[float]) -> np.ndarray:
        """Start integrating from ``pose`` (normally the arm's current target). Returns the target."""
        pose = np.asarray(pose, float)
        self.position = pose[:3].copy()
        if self.config.planar and self.config.lock_z_m is not None:
            self.position[2] = self.config.lock_z_m
        self.position = np.clip(self.position, self.lo, self.hi)
        self.rotation = Rotation.from_rotvec(pose[3:])
        self._start_rotation = self.rotation
        return self.target()

    def target(self) -> np.ndarray:
        return np.concatenate([self.position, self.rotation.as_rotvec()])

    def update(self, axes: Sequence[float], buttons: Sequence[bool], dt_s: float) -> np.ndarray:
        """Advance by one control step of ``dt_s`` seconds; returns the new target pose (6,)."""
        cfg = self.config
        axes = np.clip(np.asarray(axes, float), -1.0, 1.0)
        held = {role for role, b in zip(cfg.button_roles, buttons, strict=False) if b}
        rotate = not cfg.rotation_locked
        if "rotation_unlock" in cfg.button_roles:
            rotate = rotate and "rotation_unlock" in held
        if "translation_lock" not in held:
            self.position = self.position + axes[:3] * cfg.max_linear_speed_m_s * dt_s
            if cfg.planar:
                self.position[2] = (
                    cfg.lock_z_m
                    if cfg.lock_z_m is not None
                    else self.position[2] - (axes[2] * cfg.max_linear_speed_m_s * dt_s)
                )
            self.position = np.clip(self.position, self.lo, self.hi)
        if rotate:
            delta = Rotation.from_rotvec(axes[3:] * cfg.max_angular_speed_rad_s * dt_s)
            self.rotation = delta * self.rotation
        elif cfg.rotation_locked:
            self.rotation = self._start_rotation
        return self.target()
