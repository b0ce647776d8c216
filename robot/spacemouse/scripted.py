"""Scripted teleoperation: what drives the SpaceMouse process when no person holds a SpaceMouse.

Two sources, both run inside the SpaceMouse process at its ``rate_hz`` and published through the same
state ring a real SpaceMouse fills, so demonstrations go through the teleop path a person uses:

- :class:`TrajectoryPlayer` replays keyframes of (already normalized) axes and button states.
- an **expert**: any picklable callable ``expert(obs) -> (axes, buttons)`` where ``obs`` is
  ``{"<ring name>": newest record of that ring as {field: array} (or None while the ring is empty),
  "time": host monotonic s}`` and the result is ``axes`` (6,) (clipped to [-1, 1]) and ``buttons``
  (num_buttons,) bool (pressed state). The rings are handed to the SpaceMouse process by name, e.g.
  ``{"arm": arm_state_ring, "world": world_state_ring}``.

:class:`WaypointExpert` is the generic "follow these waypoints" expert. Axis convention it assumes
(the one ``rig collect`` maps SpaceMouse axes with): ``axes[:3]`` command a TCP linear velocity along
the base x, y, z axes and ``axes[3:]`` an angular velocity about the base axes, both proportional to
the axis value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

Expert = Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]


def build_expert(target: str, kwargs: Mapping[str, Any] | None = None) -> Expert:
    """Import ``'package.module:attr'`` and call it with ``kwargs`` (a class or a factory)."""
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"scripted expert {target!r} cannot be imported: {exc}") from exc
    return factory(**dict(kwargs or {}))


class TrajectoryPlayer:
    """Keyframes ``time_s`` (T,), ``axes`` (T, 6), ``buttons`` (T, n) sampled at a time since start.

    Axes are linearly interpolated (or held with ``interpolate=False``), buttons held from the last
    keyframe at or before ``t``. Before the first keyframe and after the last (unless ``loop``) the
    output is zero axes and released buttons.
    """

    def __init__(
        self,
        time_s: Sequence[float],
        axes: np.ndarray,
        buttons: np.ndarray | None = None,
        num_buttons: int = 2,
        loop: bool = False,
        interpolate: bool = True,
    ):
        self.time_s = np.asarray(time_s, dtype=np.float64)
        self.axes = np.asarray(axes, dtype=np.float64).reshape(len(self.time_s), 6)
        if buttons is None or np.size(buttons) == 0:
            buttons = np.zeros((len(self.time_s), num_buttons), bool)
        self.buttons = np.asarray(buttons, dtype=bool).reshape(len(self.time_s), num_buttons)
        if len(self.time_s) and np.any(np.diff(self.time_s) < 0):
            raise ValueError("scripted trajectory keyframe times must not decrease")
        self.loop = loop
        self.interpolate = interpolate
        self.num_buttons = num_buttons

    @property
    def duration_s(self) -> float:
        return float(self.time_s[-1]) if len(self.time_s) else 0.0

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(axes (6,), buttons (n,)) at ``t`` seconds since the replay started."""
        zero = (np.zeros(6), np.zeros(self.num_buttons, bool))
        if len(self.time_s) == 0:
            return zero
        if self.loop and self.duration_s > 0:
            t = t % self.duration_s
        if t < self.time_s[0] or t > self.time_s[-1]:
            return zero
        i = int(np.searchsorted(self.time_s, t, side="right")) - 1
        buttons = self.buttons[i].copy()
        if not self.interpolate or i + 1 >= len(self.time_s):
            return self.axes[i].copy(), buttons
        t0, t1 = self.time_s[i], self.time_s[i + 1]
        w = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return (1 - w) * self.axes[i] + w * self.axes[i + 1], buttons


@dataclass
class Waypoint:
    """A TCP target in the base frame: ``pose`` [x, y, z] (m) or [x, y, z, rx, ry, rz] (rotation vector,
    rad); on arrival, ``press`` buttons are pressed for the expert's ``press_s``, and the expert
    stays ``hold_s`` at the waypoint (counted from arrival) before moving on."""

    pose: np.ndarray
    press: tuple[int, ...] = ()
    hold_s: float = 0.0

    @classmethod
    def coerce(cls, w: Waypoint | Mapping[str, Any] | Sequence[float]) -> Waypoint:
        if isinstance(w, Waypoint):
            wp = w
        elif isinstance(w, Mapping):
            wp = cls(np.asarray(w["pose"], float), tuple(w.get("press", ())), float(w.get("hold_s", 0.0)))
        else:
            wp = cls(np.asarray(w, float))
        wp.pose = np.asarray(wp.pose, float)
        if wp.pose.shape not in ((3,), (6,)):
            raise ValueError(f"waypoint pose must have 3 or 6 values, got {wp.pose.tolist()}")
        wp.press = tuple(int(b) for b in wp.press)
        return wp


@dataclass
class WaypointExpert:
    """Steer the TCP through ``waypoints`` with a saturated P-controller in SpaceMouse axis space.

    Each call: read the TCP pose ``obs[arm_ring][pose_key]`` ([x, y, z, rx, ry, rz], base frame),
    command ``axes[:3] = clip(kp_pos * (target_xyz - xyz))`` and, for 6-value waypoints,
    ``axes[3:] = clip(kp_rot * rotvec(R_target * R_tcp^-1))``. A waypoint is reached within
    ``pos_tol_m`` and ``rot_tol_rad``; then its buttons are pressed for ``press_s`` (released
    afterwards, so each press is one press event) and the expert waits ``hold_s``. After the last
    waypoint it outputs zero axes for ever (``done`` is True). Before the arm ring has a record it
    outputs zeros. ``kp_pos`` is axis units per metre (10: full deflection 10 cm away), ``kp_rot``
    axis units per radian. Times come from ``obs["time"]`` (host monotonic s).
    """

    waypoints: Sequence[Any]
    kp_pos: float = 10.0
    kp_rot: float = 3.0
    pos_tol_m: float = 0.005
    rot_tol_rad: float = 0.03
    press_s: float = 0.1
    num_buttons: int = 2
    arm_ring: str = "arm"
    pose_key: str = "actual_tcp_pose"
    index: int = field(default=0, init=False)
    _arrived_time: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.waypoints = [Waypoint.coerce(w) for w in self.waypoints]
        for w in self.waypoints:
            bad = [b for b in w.press if not 0 <= b < self.num_buttons]
            if bad:
                raise ValueError(f"waypoint presses button(s) {bad}; num_buttons is {self.num_buttons}")

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    def __call__(self, obs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        axes = np.zeros(6)
        buttons = np.zeros(self.num_buttons, bool)
        arm = obs.get(self.arm_ring)
        if arm is None or self.done:
            return axes, buttons
        now = float(obs["time"])
        pose = np.asarray(arm[self.pose_key], float)
        pos_err, rot_err = self._errors(self.waypoints[self.index], pose)
        if self._arrived_time is None:
            if np.linalg.norm(pos_err) <= self.pos_tol_m and np.linalg.norm(rot_err) <= self.rot_tol_rad:
                self._arrived_time = now
        if self._arrived_time is not None:
            wp = self.waypoints[self.index]
            since = now - self._arrived_time
            if since < self.press_s and wp.press:
                buttons[list(wp.press)] = True
            if since >= max(wp.hold_s, self.press_s if wp.press else 0.0):
                # Move on; arrival at the next waypoint is checked from the next call, so a press
                # there is always preceded by at least one tick with every button released.
                self.index += 1
                self._arrived_time = None
                if self.done:
                    return axes, buttons
                pos_err, rot_err = self._errors(self.waypoints[self.index], pose)
        # Keep correcting while pressing/holding so the TCP stays on the waypoint.
        axes[:3] = np.clip(self.kp_pos * pos_err, -1.0, 1.0)
        axes[3:] = np.clip(self.kp_rot * rot_err, -1.0, 1.0)
        return axes, buttons

    @staticmethod
    def _errors(wp: Waypoint, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position error (m) and rotation error (rotation vector in the base frame, rad)."""
        rot_err = np.zeros(3)
        if wp.pose.shape == (6,):
            rot_err = (Rotation.from_rotvec(wp.pose[3:]) * Rotation.from_rotvec(pose[3:]).inv()).as_rotvec()
        return wp.pose[:3] - pose[:3], rot_err
