"""SpaceMouse buttons -> gripper width target, at the control rate (``teleop.gripper`` in a collect config).

Two ways to drive the gripper, combinable:

- ``close_button`` / ``open_button`` (default 0 and 1, the SpaceMouse's left and right buttons):
  while held, the target is closed (``closed_width_m``) / open (``open_width_m``, default the stroke);
  released, it stays where it was. Holding both: open wins (letting go is the safe side).
- ``toggle_button``: each press flips between open and closed.

The target is a width in metres (the action's 7th column); the gripper process moves the fingers at
the configured speed and stops them on an object (they then stay on it while the target is closed).
Set a button to null to disable it; a button with a teleop ``button_roles`` role cannot drive the gripper.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from robot.config import StrictModel


class GripperTeleopConfig(StrictModel):
    close_button: int | None = Field(0, ge=0)
    open_button: int | None = Field(1, ge=0)
    toggle_button: int | None = Field(None, ge=0)
    closed_width_m: float = Field(0.0, ge=0)
    """Target when closing (m); 0 squeezes whatever is between the pads with the configured force."""
    open_width_m: float | None = Field(None, gt=0)
    """Target when opening (m); None: the gripper's full stroke."""

    def buttons(self) -> list[int]:
        return [b for b in (self.close_button, self.open_button, self.toggle_button) if b is not None]


class GripperTeleop:
    """Integrates button states into a width target (see the module docstring)."""

    def __init__(self, config: GripperTeleopConfig, max_width_m: float):
        self.config = config
        self.open_width_m = min(config.open_width_m or max_width_m, max_width_m)
        self.closed_width_m = min(config.closed_width_m, self.open_width_m)
        self.width_m = self.open_width_m
        self._toggle_was_down = False

    def reset(self) -> float:
        """Open (the start of an episode); returns the target width (m)."""
        self.width_m = self.open_width_m
        self._toggle_was_down = False
        return self.width_m

    def update(self, buttons: Sequence[bool]) -> float:
        """One control step with the current button states; returns the target width (m)."""
        cfg = self.config

        def down(b: int | None) -> bool:
            return b is not None and b < len(buttons) and bool(buttons[b])

        toggle = down(cfg.toggle_button)
        if toggle and not self._toggle_was_down:
            closed = self.width_m <= self.closed_width_m
            self.width_m = self.open_width_m if closed else self.closed_width_m
        self._toggle_was_down = toggle
        if down(cfg.close_button):
            self.width_m = self.closed_width_m
        if down(cfg.open_button):
            self.width_m = self.open_width_m
        return self.width_m
