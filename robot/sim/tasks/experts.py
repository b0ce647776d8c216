"""Scripted experts for the simulated tasks: they drive the scripted SpaceMouse, not the arm.

An expert is a picklable callable ``expert(obs) -> (axes (6,), buttons (num_buttons,))`` evaluated by
the SpaceMouse process (:mod:`robot.spacemouse.scripted`) at its ``rate_hz`` on the newest records of the
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

__all__ = ["ExpertBase", "PushTExpert", "ReachExpert"]


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


def _points_segments_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (..., ) from points ``p`` to segments ``a``-``b`` (all broadcast, last axis 2)."""
    ab = b - a
    den = np.maximum(np.sum(ab * ab, axis=-1), 1e-18)
    t = np.clip(np.sum((p - a) * ab, axis=-1) / den, 0.0, 1.0)
    return np.linalg.norm(a + t[..., None] * ab - p, axis=-1)


def _cross(o: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (p[..., 1] - o[..., 1]) * (
        q[..., 0] - o[..., 0]
    )


def segments_polygon_distance(a: np.ndarray, b: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance (m) between each segment ``a[i]``-``b[i]`` (S, 2) and the boundary of ``poly`` (n, 2)
    (0 where they cross); (S,)."""
    a, b = np.asarray(a, float)[:, None, :], np.asarray(b, float)[:, None, :]
    e0, e1 = poly[None, :, :], np.roll(poly, -1, axis=0)[None, :, :]
    d1, d2 = _cross(a, b, e0), _cross(a, b, e1)
    d3, d4 = _cross(e0, e1, a), _cross(e0, e1, b)
    crossing = np.any((d1 * d2 < 0) & (d3 * d4 < 0), axis=1)
    d = np.minimum.reduce(
        [
            _points_segments_distance(e0, a, b),
            _points_segments_distance(e1, a, b),
            _points_segments_distance(a, e0, e1),
            _points_segments_distance(b, e0, e1),
        ]
    ).min(axis=1)
    return np.where(crossing, 0.0, d)


def _inside(p: np.ndarray, poly: np.ndarray) -> bool:
    a, b = poly, np.roll(poly, -1, axis=0)
    crosses = (a[:, 1] > p[1]) != (b[:, 1] > p[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (p[1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return int(np.sum(crosses & (p[0] < x_at))) % 2 == 1


def shortest_clear_path(
    start: np.ndarray,
    goal: np.ndarray,
    poly: np.ndarray,
    nodes: np.ndarray,
    clearance_m: float,
    start_clearance_m: float | None = None,
) -> list[np.ndarray] | None:
    """Shortest path ``[start, ..., goal]`` through ``nodes`` (k, 2) whose segments keep ``clearance_m``
    from ``poly``'s boundary (a visibility graph, Dijkstra); None if there is none. Segments from
    ``start`` need only ``start_clearance_m`` (for a start already closer than ``clearance_m``)."""
    pts = np.vstack([start, goal, nodes])
    n = len(pts)
    i, j = np.triu_indices(n, 1)
    need = np.where(i == 0, clearance_m if start_clearance_m is None else start_clearance_m, clearance_m)
    ok = segments_polygon_distance(pts[i], pts[j], poly) >= need
    length = np.linalg.norm(pts[i] - pts[j], axis=1)
    w = np.full((n, n), np.inf)
    w[i[ok], j[ok]] = length[ok]
    w[j[ok], i[ok]] = length[ok]
    dist = np.full(n, np.inf)
    prev = np.full(n, -1)
    dist[0] = 0.0
    done = np.zeros(n, bool)
    for _ in range(n):
        u = int(np.argmin(np.where(done, np.inf, dist)))
        if not np.isfinite(dist[u]) or u == 1:
            break
        done[u] = True
        alt = dist[u] + w[u]
        better = alt < dist
        dist[better], prev[better] = alt[better], u
    if not np.isfinite(dist[1]):
        return None
    path, k = [], 1
    while k != 0:
        path.append(pts[k])
        k = int(prev[k])
    return [pts[0], *path[::-1]]


@dataclass
class PushTExpert(ExpertBase):
    """A scripted Push-T player: pick a push, go around the block to behind it, push, re-plan.

    Each call it reads the block pose (world object ``object_index``) and scores candidate pushes:
    contact points every ``contact_spacing_m`` along the T's edges, pushed along the inward edge
    normal. A push moves the block, per metre of tool travel, by the twist of a quasi-static pusher
    (translation along the push, spin ``(r x d) / friction_radius_m**2``, the ellipsoidal limit
    surface); its *rate* is how fast that reduces the pose error ``E = (centroid error x, y,
    rot_length_m * yaw error)``, its *value* the rate discounted by the travel to its pre-push point.

    - **approach**: back off to ``pusher_radius_m + clearance_m`` from the block if closer, then the
      shortest path to the pre-push point (``approach_gap_m`` outside the edge) that keeps that
      clearance, through the T's corners pushed outwards (a visibility graph), at full speed except
      on the last leg (``kp_per_m`` axis units per metre to go, at least ``approach_speed_min``);
      the noise is added here only;
    - **push**: along the push direction, tracking the contact point as the block turns, at a speed
      proportional to the error (``push_speed_min``..``push_speed_max`` axis units); re-plan when the
      push has lost most of its rate, the tool lost contact, or another push is much better.

    It stops (zero axes) once the world reports success or the coverage reaches ``done_coverage``.
    ``goal_pose``, ``bar_length_m``, ``bar_width_m`` must match the task (``TaskConfig`` passes them);
    ``workspace_min_m`` / ``workspace_max_m`` (x, y) keep pre-push points reachable. A heuristic, not
    an optimal planner: the tests measure its success rate.
    """

    goal_pose: Sequence[float] = (0.48, -0.03, np.pi / 4)
    bar_length_m: float = 0.12
    bar_width_m: float = 0.03
    pusher_radius_m: float = 0.012
    object_index: int = 0
    kp_per_m: float = 20.0
    approach_speed_min: float = 0.1
    rot_length_m: float = 0.06
    friction_radius_m: float = 0.04
    push_gain_per_m: float = 12.0
    push_speed_min: float = 0.03
    push_speed_max: float = 0.8
    lateral_gain_per_m: float = 20.0
    approach_gap_m: float = 0.01
    clearance_m: float = 0.005
    contact_spacing_m: float = 0.01
    travel_ref_m: float = 0.1
    switch_ratio: float = 1.5
    done_coverage: float = 0.97
    workspace_min_m: Sequence[float] = (0.25, -0.35)
    workspace_max_m: Sequence[float] = (0.65, 0.35)
    _state: str = field(default="plan", init=False, repr=False)
    _k: int = field(default=-1, init=False, repr=False)
    _path: list = field(default_factory=list, init=False, repr=False)
    _path_pose: np.ndarray | None = field(default=None, init=False, repr=False)
    _push_rate0: float = field(default=0.0, init=False, repr=False)
    _backing_off: bool = field(default=False, init=False, repr=False)
    _coverage_key: tuple | None = field(default=None, init=False, repr=False)
    _coverage: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        from robot.sim.tasks.pusht import t_centroid, t_outline

        self.goal_pose = np.asarray(self.goal_pose, float).reshape(3)
        L, W, r = self.bar_length_m, self.bar_width_m, self.pusher_radius_m
        outline = t_outline(L, W)
        self._outline = outline
        self._centroid = t_centroid(L, W)
        m = len(outline)
        edge_normals = []
        for i in range(m):
            e = outline[(i + 1) % m] - outline[i]
            edge_normals.append(np.array([e[1], -e[0]]) / np.linalg.norm(e))  # outward for a CCW outline
        convex = [
            i for i in range(m) if _cross(outline[i - 1], outline[i], outline[(i + 1) % m]) > 0
        ]  # left turn at vertex i
        # Path nodes: convex corners pushed out so that segments between neighbours keep the clearance.
        off = r + self.clearance_m + 0.003
        self._nodes = np.array([outline[i] + off * (edge_normals[i - 1] + edge_normals[i]) for i in convex])
        pts, normals = [], []
        for i in range(m):
            a, b = outline[i], outline[(i + 1) % m]
            length = float(np.linalg.norm(b - a))
            t_hat = (b - a) / length
            # Keep contacts off the ends: a convex end lets the tip slip off, a concave one blocks it.
            concave_margin = r + self.clearance_m + 0.003  # the pre-push point must clear the other edge
            m0 = 0.006 if i in convex else concave_margin
            m1 = 0.006 if (i + 1) % m in convex else concave_margin
            if length - m0 - m1 < 0:
                continue
            k = max(1, int((length - m0 - m1) // self.contact_spacing_m) + 1)
            for s in np.linspace(m0, length - m1, k):
                pts.append(a + t_hat * s)
                normals.append(edge_normals[i])
        self._pts = np.array(pts)
        self._normals = np.array(normals)
        rel = self._pts - self._centroid
        d = -self._normals
        arm = rel[:, 0] * d[:, 1] - rel[:, 1] * d[:, 0]  # moment arm of each push about the centroid
        c2 = self.friction_radius_m**2
        self._scale = 1.0 / (1.0 + arm**2 / c2)  # block travel per tool travel
        self._spin = arm / c2 * self._scale  # rad per metre of tool travel

    def on_new_episode(self, world: dict[str, Any]) -> None:
        self._state, self._k, self._path, self._path_pose = "plan", -1, [], None
        self._backing_off = False

    def command(self, tcp_pose: np.ndarray, world: dict[str, Any], dt_s: float) -> np.ndarray:
        from robot.sim.tasks.pusht import rot2, t_coverage, wrap_angle

        u = np.zeros(3)
        block = np.asarray(world["object_pose"][self.object_index], float)
        pose = np.array([block[0], block[1], block[5]])
        key = tuple(pose.tolist())
        if key != self._coverage_key:
            self._coverage_key = key
            self._coverage = t_coverage(pose, self.goal_pose, self.bar_length_m, self.bar_width_m)
        if bool(world["task_success"]) or self._coverage >= self.done_coverage:
            self._state = "done"
            return u
        tool = np.asarray(tcp_pose[:2], float)
        R = rot2(pose[2])
        centroid = pose[:2] + R @ self._centroid
        goal_centroid = self.goal_pose[:2] + rot2(self.goal_pose[2]) @ self._centroid
        yaw_err = wrap_angle(self.goal_pose[2] - pose[2])
        err = np.array([*(goal_centroid - centroid), self.rot_length_m * yaw_err])
        err_norm = float(np.linalg.norm(err)) + 1e-9
        d_w = -(self._normals @ R.T)  # push directions, world
        rate = (d_w @ err[:2] * self._scale + self.rot_length_m * err[2] * self._spin) / err_norm
        contact_w = pose[:2] + self._pts @ R.T
        pre_w = contact_w - d_w * (self.pusher_radius_m + self.approach_gap_m)
        lo = np.asarray(self.workspace_min_m, float) + 0.005
        hi = np.asarray(self.workspace_max_m, float) - 0.005
        feasible = np.all((pre_w >= lo) & (pre_w <= hi), axis=1)
        # Travel estimate: straight line, or around the block (the angle about its centroid).
        phi_tool = np.arctan2(*(tool - centroid)[::-1])
        phi_pre = np.arctan2(pre_w[:, 1] - centroid[1], pre_w[:, 0] - centroid[0])
        dphi = np.abs(np.remainder(phi_pre - phi_tool + np.pi, 2 * np.pi) - np.pi)
        travel = np.linalg.norm(pre_w - tool, axis=1) + 0.06 * dphi
        value = np.where(feasible & (rate > 0), rate / (1.0 + travel / self.travel_ref_m), -np.inf)
        best = int(np.argmax(value))
        if not np.isfinite(value[best]):
            return u  # no useful push reachable: hold still

        if self._state == "push":
            k = self._k
            lost = np.linalg.norm(tool - (contact_w[k] - d_w[k] * self.pusher_radius_m)) > (
                self.pusher_radius_m + 0.01
            )
            if lost or rate[k] <= 0.25 * self._push_rate0 or rate[best] > 3 * self.switch_ratio * rate[k]:
                self._state = "plan"
        if self._state in ("plan", "done"):
            self._k, self._state, self._path = best, "approach", []
        elif self._state == "approach" and value[best] > self.switch_ratio * value[self._k]:
            self._k, self._path = best, []
        k = self._k

        if self._state == "approach":
            outline_w = pose[:2] + self._outline @ R.T
            keep = self.pusher_radius_m + self.clearance_m
            a, b = outline_w, np.roll(outline_w, -1, axis=0)
            d_edges = _points_segments_distance(tool[None], a, b)
            d_tool = float(d_edges.min())
            inside = _inside(tool, outline_w)
            if inside or d_tool < self.pusher_radius_m + 0.003:
                self._backing_off = True
            if self._backing_off and not inside and d_tool >= self.pusher_radius_m + 0.006:
                self._backing_off = False
                self._path = []
            if self._backing_off:
                # In contact (just pushed, or put down next to it): back off along the outward normal.
                j = int(np.argmin(d_edges))
                e = b[j] - a[j]
                u[:2] = 0.6 * np.array([e[1], -e[0]]) / np.linalg.norm(e)
                return u
            moved = self._path_pose is None or (
                np.linalg.norm(pose[:2] - self._path_pose[:2]) > 0.002
                or abs(wrap_angle(pose[2] - self._path_pose[2])) > 0.02
            )
            if not self._path or moved:
                nodes_w = pose[:2] + self._nodes @ R.T
                path = shortest_clear_path(
                    tool, pre_w[k], outline_w, nodes_w, keep - 0.001, min(keep - 0.001, d_tool - 0.0005)
                )
                self._path_pose = pose
                # No clear path (should not happen with the margins above): go straight, backing
                # off whenever too close, rather than stand still.
                self._path = [pre_w[k]] if path is None else path[1:]
            while len(self._path) > 1 and np.linalg.norm(self._path[0] - tool) < 0.008:
                self._path.pop(0)
            target = self._path[0]
            dist = float(np.linalg.norm(target - tool))
            if len(self._path) == 1 and dist < 0.004:
                self._state, self._push_rate0 = "push", float(rate[k])
            else:
                gain = self.kp_per_m if len(self._path) == 1 else 3 * self.kp_per_m  # don't slow at corners
                fade = 1.0 if len(self._path) > 1 else min(1.0, dist / 0.04)  # no wobble on arrival
                # A floor on the speed: a pure P law would crawl the last centimetres.
                speed = min(1.0, max(gain * dist, self.approach_speed_min))
                u[:2] = saturate(speed * (target - tool) / max(dist, 1e-9) + fade * self.step_noise(dt_s))
                return u

        # push
        speed = float(np.clip(self.push_gain_per_m * err_norm, self.push_speed_min, self.push_speed_max))
        contact_tool = contact_w[k] - d_w[k] * self.pusher_radius_m
        off = contact_tool - tool
        lateral = off - (off @ d_w[k]) * d_w[k]
        u[:2] = saturate(speed * d_w[k] + self.lateral_gain_per_m * lateral)
        return u
