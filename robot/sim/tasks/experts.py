"""Scripted experts for the simulated tasks: they drive the scripted SpaceMouse, not the arm.

An expert is a picklable callable ``expert(obs) -> (axes (6,), buttons (num_buttons,))`` evaluated by
the SpaceMouse process (:mod:`robot.scripted_teleop`) at its ``rate_hz`` on the newest records of the
rings it was handed: ``obs = {"arm": arm state record or None, "world": world-state record or None,
"time": host monotonic s}``. Its output goes through the same state ring a person's SpaceMouse fills,
so demonstrations take exactly the teleop path of a real rig.

Axes convention (what the experts assume the collector does with the published axes):

- The scripted backend publishes the expert's axes as they are (clipped to [-1, 1]); the SpaceMouse
  config's ``axis_map`` / ``sign`` / ``deadzone`` apply only to raw spacenavd events, i.e. they have
  already turned the device frame into the published frame ``[x, y, z, rx, ry, rz]`` = base frame.
- The collector turns published axes into a TCP velocity in the arm's base frame (= world frame):
  ``v_m_s = axes[:3] * max_speed_m_s`` (rotation axes unused by these tasks: the experts output 0).
  ``max_speed_m_s`` of an expert must equal the teleop's; if a rig publishes in another frame,
  ``axes_from_base`` (3x3, default identity) maps a wanted base-frame direction to published axes:
  ``axes[:3] = axes_from_base @ (v_m_s / max_speed_m_s)``.
- Tool position: ``obs["arm"][pose_key]`` (``actual_tcp_pose`` by default), or the world record's
  ``tcp_pose`` when no arm ring is handed over. Objects: ``obs["world"]["object_pose"][i]``.

Each expert notices a new episode by a change of the world record's ``episode_seed`` and then
reseeds its noise from ``(seed, episode_seed)``, so a demonstration is reproducible and two episodes
differ. With ``done_button`` set, it presses that button once (for ``press_s``) when the world record
reports ``task_success`` (a collector may end the episode on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ExpertBase", "ReachExpert"]


def tool_pose(obs: dict[str, Any], arm_ring: str, pose_key: str, world_ring: str) -> np.ndarray | None:
    """The TCP pose [x, y, z, rx, ry, rz] from the arm ring record, else from the world record."""
    arm = obs.get(arm_ring)
    if arm is not None and pose_key in arm:
        return np.asarray(arm[pose_key], float)
    world = obs.get(world_ring)
    if world is not None:
        return np.asarray(world["tcp_pose"], float)
    return None


@dataclass
class ExpertBase:
    """Shared parts of the task experts: axes convention, episode detection, noise, done button.

    Args:
        max_speed_m_s: TCP speed at full deflection; must match the teleop config of the collector.
        noise_std: stationary std of the Ornstein-Uhlenbeck noise added to the x-y axes (axis units).
        noise_tau_s: correlation time of that noise (s); smooth, human-like wobble.
        seed: base seed; the noise of each episode is seeded by ``(seed, episode_seed)``.
        axes_from_base: 3x3 matrix from a base-frame direction to published axes (identity).
        done_button: button pressed once when the world reports success (None: never).
        press_s: how long that press lasts (s).
        num_buttons: buttons in the returned state (must match the SpaceMouse config).
        arm_ring, pose_key, world_ring: where the tool pose and the world record come from.
    """

    max_speed_m_s: float = 0.15
    noise_std: float = 0.1
    noise_tau_s: float = 0.3
    seed: int = 0
    axes_from_base: Sequence[Sequence[float]] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    done_button: int | None = None
    press_s: float = 0.1
    num_buttons: int = 2
    arm_ring: str = "arm"
    pose_key: str = "actual_tcp_pose"
    world_ring: str = "world"
    _episode_seed: int | None = field(default=None, init=False, repr=False)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False)
    _noise: np.ndarray = field(default_factory=lambda: np.zeros(2), init=False, repr=False)
    _last_time: float | None = field(default=None, init=False, repr=False)
    _done_press_time: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_speed_m_s <= 0:
            raise ValueError(f"expert max_speed_m_s must be > 0, got {self.max_speed_m_s}")
        self.axes_from_base = np.asarray(self.axes_from_base, float).reshape(3, 3)
        if self.done_button is not None and not 0 <= self.done_button < self.num_buttons:
            raise ValueError(
                f"done_button {self.done_button} out of range; num_buttons is {self.num_buttons}"
            )

    # -- hooks for subclasses -------------------------------------------------------------------
    def on_new_episode(self, world: dict[str, Any]) -> None:
        """Called with the first world record of a new episode (after the noise was reseeded)."""

    def command(self, tcp_pose: np.ndarray, world: dict[str, Any], dt_s: float) -> np.ndarray:
        """Wanted TCP velocity as a fraction of ``max_speed_m_s`` (3,), base frame (norm <= 1)."""
        raise NotImplementedError

    # -- the callable ---------------------------------------------------------------------------
    def __call__(self, obs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        axes = np.zeros(6)
        buttons = np.zeros(self.num_buttons, bool)
        world = obs.get(self.world_ring)
        pose = tool_pose(obs, self.arm_ring, self.pose_key, self.world_ring)
        now = float(obs["time"])
        if world is None or pose is None:
            return axes, buttons
        ep = int(world["episode_seed"])
        if ep != self._episode_seed:
            self._episode_seed = ep
            self._rng = np.random.default_rng([int(self.seed) % 2**63, ep % 2**63])
            self._noise = np.zeros(2)
            self._last_time = None
            self._done_press_time = None
            self.on_new_episode(world)
        dt_s = 0.0 if self._last_time is None else min(max(now - self._last_time, 0.0), 0.1)
        self._last_time = now
        u = np.asarray(self.command(pose, world, dt_s), float)
        axes[:3] = np.clip(self.axes_from_base @ u, -1.0, 1.0)
        if self.done_button is not None and bool(world["task_success"]):
            if self._done_press_time is None:
                self._done_press_time = now
            if now - self._done_press_time < self.press_s:
                buttons[self.done_button] = True
        return axes, buttons

    def step_noise(self, dt_s: float) -> np.ndarray:
        """Advance the x-y Ornstein-Uhlenbeck noise by ``dt_s`` and return it (axis units)."""
        if self.noise_std > 0 and dt_s > 0 and self._rng is not None:
            a = dt_s / self.noise_tau_s
            self._noise += -a * self._noise + self.noise_std * np.sqrt(2 * a) * self._rng.standard_normal(2)
        return self._noise


def saturate(u: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """Scale ``u`` down to norm ``limit`` if longer (keeps the direction, unlike per-axis clipping)."""
    n = float(np.linalg.norm(u))
    return u * (limit / n) if n > limit else u


@dataclass
class ReachExpert(ExpertBase):
    """Saturated P-controller in axis space from the tool x-y to the marker x-y (world object
    ``object_index``).

    ``axes_xy = saturate(kp_per_m * (marker_xy - tool_xy) + noise)``: full speed farther than
    ``1 / kp_per_m`` from the marker, slowing linearly inside it, so the tip settles on the marker
    instead of overshooting the 2 cm success radius. The noise fades to 0 within ``slow_radius_m``.
    ``hold_z_m``: if set, the z axis steers the tip to that height (for a non-planar teleop);
    None (default) outputs z = 0 (planar teleop holds the height). Rotation axes are always 0.
    """

    kp_per_m: float = 8.0
    slow_radius_m: float = 0.04
    hold_z_m: float | None = None
    kp_z_per_m: float = 8.0
    object_index: int = 0

    def command(self, tcp_pose: np.ndarray, world: dict[str, Any], dt_s: float) -> np.ndarray:
        marker_xy = np.asarray(world["object_pose"][self.object_index][:2], float)
        err = marker_xy - tcp_pose[:2]
        fade = min(1.0, float(np.linalg.norm(err)) / self.slow_radius_m)
        u = np.zeros(3)
        u[:2] = saturate(self.kp_per_m * err + fade * self.step_noise(dt_s))
        if self.hold_z_m is not None:
            u[2] = np.clip(self.kp_z_per_m * (self.hold_z_m - tcp_pose[2]), -1.0, 1.0)
        return u
