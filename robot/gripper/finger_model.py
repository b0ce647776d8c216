"""Finger motion of a parallel gripper, shared by the simulated gripper and the fake URCap.

The opening ``width_m`` moves toward the target at the commanded speed (a constant-speed ramp, as the
Robotiq fingers do), from ``command_delay_s`` after the command. When it closes onto an obstacle
(an object of width ``obstacle_width_m`` between the pads) it stops there and reports contact, the way
the Robotiq reports ``OBJ = 2``; when it opens onto one (the pads inside a hollow object of inner width
``outer_obstacle_width_m``) it stops there with ``OBJ = 1``; otherwise it stops at the target
(``OBJ = 3``). Times are host monotonic seconds; :meth:`FingerModel.step` is exact for any step length.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ObjectStatus(IntEnum):
    """Robotiq ``gOBJ``."""

    MOVING = 0
    CONTACT_OPENING = 1
    CONTACT_CLOSING = 2
    AT_TARGET = 3


class FingerModel:
    """Args: max_width_m: stroke (m); width_m: initial opening (default fully open);
    command_delay_s: command -> motion starts (s); t0: host monotonic s of the initial state."""

    def __init__(
        self, max_width_m: float, width_m: float | None = None, command_delay_s: float = 0.0, t0: float = 0.0
    ):
        self.max_width_m = float(max_width_m)
        self.width_m = self.max_width_m if width_m is None else float(width_m)
        self.target_width_m = self.width_m
        self.speed_m_s = 0.1
        self.command_delay_s = float(command_delay_s)
        self.status = ObjectStatus.AT_TARGET
        self.time = float(t0)
        self._pending: deque[tuple[float, float, float]] = deque()
        self._announced = False  # a command reported as MOVING before it is in effect

    def command(
        self, target_width_m: float, speed_m_s: float, t: float, report_at_once: bool = False
    ) -> None:
        """Go to ``target_width_m`` (clipped to the stroke) at ``speed_m_s``, from ``t + command_delay_s``.

        ``report_at_once``: the status is MOVING from ``t`` on (not only once the motion starts), as a
        Robotiq reports ``OBJ 0`` in the same status read that echoes the new request."""
        target = min(max(float(target_width_m), 0.0), self.max_width_m)
        self._pending.append((float(t) + self.command_delay_s, target, max(float(speed_m_s), 1e-6)))
        if report_at_once:
            self._announced = True
            self.status = ObjectStatus.MOVING

    def stop(self) -> None:
        """Stop where the fingers are (drops commands not yet in effect)."""
        self._pending.clear()
        self._announced = False
        self.target_width_m = self.width_m
        if self.status == ObjectStatus.MOVING:
            self.status = ObjectStatus.AT_TARGET

    def step(
        self, t: float, obstacle_width_m: float | None = None, outer_obstacle_width_m: float | None = None
    ) -> None:
        """Advance to host time ``t`` with an object of ``obstacle_width_m`` between the pads, and the
        pads inside a hollow object of inner width ``outer_obstacle_width_m`` (None: none)."""
        while self._pending and self._pending[0][0] <= t:
            t_cmd, target, speed = self._pending.popleft()
            self._advance(t_cmd, obstacle_width_m, outer_obstacle_width_m)
            self.target_width_m, self.speed_m_s = target, speed
            self.status = ObjectStatus.MOVING
        if not self._pending:
            self._announced = False
        self._advance(t, obstacle_width_m, outer_obstacle_width_m)

    def _advance(self, t: float, obstacle: float | None, outer: float | None = None) -> None:
        dt = max(0.0, t - self.time)
        self.time = max(self.time, t)
        if self.status != ObjectStatus.MOVING:
            # Contact is kept while the object stays; if it is gone (slipped, taken) the fingers go on.
            if self.status == ObjectStatus.CONTACT_CLOSING and (
                obstacle is None or obstacle < self.width_m - 1e-4
            ):
                self.status = ObjectStatus.MOVING
            elif self.status == ObjectStatus.CONTACT_OPENING and (
                outer is None or outer > self.width_m + 1e-4
            ):
                self.status = ObjectStatus.MOVING
            else:
                return
        closing = self.target_width_m < self.width_m
        step = self.speed_m_s * dt
        if closing:
            stop_at = self.target_width_m
            if obstacle is not None and obstacle <= self.width_m + 1e-9 and obstacle > self.target_width_m:
                stop_at = obstacle
            self.width_m = max(stop_at, self.width_m - step)
            if self.width_m <= stop_at + 1e-12:
                self._settle(
                    ObjectStatus.CONTACT_CLOSING if stop_at > self.target_width_m else ObjectStatus.AT_TARGET
                )
        else:
            stop_at = self.target_width_m
            if outer is not None and outer >= self.width_m - 1e-9 and outer < self.target_width_m:
                stop_at = outer
            self.width_m = min(stop_at, self.width_m + step)
            if self.width_m >= stop_at - 1e-12:
                self._settle(
                    ObjectStatus.CONTACT_OPENING if stop_at < self.target_width_m else ObjectStatus.AT_TARGET
                )

    def _settle(self, status: ObjectStatus) -> None:
        # A command already reported as moving but not yet in effect keeps the status at MOVING.
        self.status = ObjectStatus.MOVING if self._announced and self._pending else status

    @property
    def moving(self) -> bool:
        return self.status == ObjectStatus.MOVING

    @property
    def object_detected(self) -> bool:
        return self.status in (ObjectStatus.CONTACT_CLOSING, ObjectStatus.CONTACT_OPENING)
