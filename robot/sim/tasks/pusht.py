"""The ``pusht`` task: push a T-shaped block onto a fixed T-shaped goal with the tool tip (2-D physics).

The Diffusion Policy paper's Push-T, on the simulated table, in rigid-body physics (``pymunk``).

**Geometry and pose of the T** (what the world state publishes for ``ObjectKind.T_BLOCK``, and what
the camera renderer draws). In the block's own frame (metres, z up, origin on the table):

- the *bar*: ``x in [-L/2, L/2]``, ``y in [0, W]``;
- the *stem*: ``x in [-W/2, W/2]``, ``y in [W, L]``;

with ``L = bar_length_m`` (0.12) and ``W = bar_width_m`` (0.03): a T whose bar is ``L`` long and ``W``
wide, whose stem is ``W`` wide and whose overall height is ``L`` (the reference Push-T's 4:1 T).
The block is ``block_height_m`` (0.03) thick. ``pose = [x, y, TABLE_Z_M, 0, 0, yaw]``: ``(x, y)`` is the
frame's origin = **the middle of the bar's outer edge**, ``yaw`` (rad, in (-pi, pi]) the rotation about
+z (so the stem points along ``(-sin yaw, cos yaw)``); ``size = [L, W, block_height_m]``. The goal
``goal_pose = (x, y, yaw)`` uses the same convention. See :func:`t_outline` and :func:`t_centroid`.

**Physics.** Top-down, no gravity in the plane. Table friction is Coulomb friction (``table_friction``) at
support points spread over the T's footprint (:func:`t_support_points`), solved as velocity
constraints, so the block slides and turns as a pushed block does and stops when not pushed. The pusher is a kinematic circle of radius ``pusher_radius_m`` (the rendered
tool tip) at the TCP's x-y, which touches the block only while the tip is low enough to hit its side
(``tcp z - TABLE_Z_M < block_height_m + pusher_radius_m``). A tip lowered onto (into) the block, or
lifted and put down across it, passes through it until it is out again instead of blasting it away.
Steps are split into substeps of at most ``max_substep_s``. Internally pymunk works in millimetres.

**Success**: the block covers at least ``success_coverage`` (0.95) of the goal's area (exact polygon
overlap, :func:`t_coverage`); latched for the episode like reach, and :attr:`PushTTask.max_coverage`
keeps the best value of the episode (the reference's reward).
"""

from __future__ import annotations

import math

import numpy as np
import pymunk

from robot.sim.world import FloatArray, WorldObject
from robot.sim.world_state import TABLE_Z_M, TOOL_TIP_RADIUS_M, ObjectKind, t_outline

G_M_S2 = 9.81
_MM = 1000.0  # pymunk works in millimetres: its default tolerances are tuned for units of that size

EXPERT_SHARED_PARAMS = ("goal_pose", "bar_length_m", "bar_width_m", "pusher_radius_m")
"""Task parameters the Push-T expert must share with the task (``TaskConfig.make_expert`` passes them)."""

DEFAULT_GOAL_POSE = (0.48, -0.03, math.pi / 4)
"""Goal (x m, y m, yaw rad) of the T's reference point: its centroid is near (0.45, 0.0)."""


# -- geometry (numpy only; shared by the task, the expert and tests) ---------------------------------
def t_parts(bar_length_m: float, bar_width_m: float) -> list[np.ndarray]:
    """The T as two disjoint rectangles (bar, stem), each (4, 2) counter-clockwise, block frame (m)."""
    L, W = bar_length_m, bar_width_m
    bar = np.array([[-L / 2, 0.0], [L / 2, 0.0], [L / 2, W], [-L / 2, W]])
    stem = np.array([[-W / 2, W], [W / 2, W], [W / 2, L], [-W / 2, L]])
    return [bar, stem]


def t_area(bar_length_m: float, bar_width_m: float) -> float:
    return bar_length_m * bar_width_m + bar_width_m * (bar_length_m - bar_width_m)


def t_centroid(bar_length_m: float, bar_width_m: float) -> np.ndarray:
    """Centroid (2,) of the T in its block frame (m): on the stem axis, ``(0, cy)``."""
    L, W = bar_length_m, bar_width_m
    a_bar, a_stem = L * W, W * (L - W)
    return np.array([0.0, (a_bar * W / 2 + a_stem * (W + L) / 2) / (a_bar + a_stem)])


def rot2(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


def to_world(points: np.ndarray, pose_xy_yaw: np.ndarray) -> np.ndarray:
    """Block-frame points (..., 2) to the world, for a pose ``(x, y, yaw)``."""
    p = np.asarray(pose_xy_yaw, float)
    return np.asarray(points, float) @ rot2(p[2]).T + p[:2]


def _clip(subject: list[tuple[float, float]], clip: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: ``subject`` polygon clipped by the convex CCW polygon ``clip``.

    Plain floats: for 4-gons this is ~20x faster than numpy (it runs every physics step).
    """
    out = subject
    n = len(clip)
    for i in range(n):
        if not out:
            break
        ax, ay = clip[i]
        bx, by = clip[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        side = [ex * (py - ay) - ey * (px - ax) for px, py in out]  # >= 0: inside (left of the edge)
        res = []
        m = len(out)
        for j in range(m):
            (px, py), (qx, qy) = out[j], out[(j + 1) % m]
            sp, sq = side[j], side[(j + 1) % m]
            if sp >= 0:
                res.append((px, py))
            if (sp >= 0) != (sq >= 0):
                w = sp / (sp - sq)
                res.append((px + (qx - px) * w, py + (qy - py) * w))
        out = res
    return out


def polygon_area(poly: np.ndarray | list[tuple[float, float]]) -> float:
    """Signed area (m^2) of a polygon (n, 2): positive when counter-clockwise."""
    n = len(poly)
    if n < 3:
        return 0.0
    a = 0.0
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        a += x0 * y1 - x1 * y0
    return 0.5 * float(a)


def _parts_world(
    pose: np.ndarray, bar_length_m: float, bar_width_m: float
) -> list[list[tuple[float, float]]]:
    x, y, yaw = (float(v) for v in pose)
    c, s = math.cos(yaw), math.sin(yaw)
    return [
        [(x + c * px - s * py, y + s * px + c * py) for px, py in part.tolist()]
        for part in t_parts(bar_length_m, bar_width_m)
    ]


def t_overlap_area(pose_a: np.ndarray, pose_b: np.ndarray, bar_length_m: float, bar_width_m: float) -> float:
    """Exact area (m^2) shared by two Ts at poses ``(x, y, yaw)`` (sum over their convex parts)."""
    pa = _parts_world(pose_a, bar_length_m, bar_width_m)
    pb = _parts_world(pose_b, bar_length_m, bar_width_m)
    total = 0.0
    for a in pa:
        # Rectangles: centre = middle of a diagonal, bounding radius = half the diagonal.
        ax, ay, ar = (a[0][0] + a[2][0]) / 2, (a[0][1] + a[2][1]) / 2, math.dist(a[0], a[2]) / 2
        for b in pb:
            bx, by, br = (b[0][0] + b[2][0]) / 2, (b[0][1] + b[2][1]) / 2, math.dist(b[0], b[2]) / 2
            if math.hypot(ax - bx, ay - by) >= ar + br:  # bounding circles apart: no overlap
                continue
            total += max(0.0, polygon_area(_clip(a, b)))
    return total


def t_coverage(
    block_pose: np.ndarray, goal_pose: np.ndarray, bar_length_m: float, bar_width_m: float
) -> float:
    """Fraction (0..1) of the goal T's area covered by the block T (poses ``(x, y, yaw)``)."""
    area = t_area(bar_length_m, bar_width_m)
    return t_overlap_area(block_pose, goal_pose, bar_length_m, bar_width_m) / area


def wrap_angle(a: float) -> float:
    """``a`` wrapped to (-pi, pi]."""
    w = math.remainder(a, 2 * math.pi)
    return math.pi if w == -math.pi else w


def t_support_points(bar_length_m: float, bar_width_m: float, n_bar: int = 4) -> np.ndarray:
    """Points (k, 2) in the block frame, each the centre of an equal-area cell of the T (friction)."""
    L, W = bar_length_m, bar_width_m
    cell = L / n_bar  # bar cells are cell x W; the stem gets cells of W x cell (nearly) too
    bar = [((i + 0.5) * cell - L / 2, W / 2) for i in range(n_bar)]
    n_stem = max(1, round((L - W) / cell))
    stem = [(0.0, W + (j + 0.5) * (L - W) / n_stem) for j in range(n_stem)]
    return np.array(bar + stem)


# -- the task ---------------------------------------------------------------------------------------
class PushTTask:
    """Push-T on the simulated table (see the module docstring for geometry, physics and success).

    Args:
        goal_pose: goal T ``(x m, y m, yaw rad)`` of its reference point (middle of the bar's outer edge).
        bar_length_m, bar_width_m, block_height_m: T dimensions (m).
        block_mass_kg: mass of the block.
        table_friction: Coulomb friction coefficient block-table.
        pusher_friction: friction coefficient tool tip-block.
        pusher_radius_m: radius of the tool tip circle (m); the rendered tip by default.
        centroid_x_range_m, centroid_y_range_m: where reset places the block's **centroid** (m).
        max_initial_coverage: reset redraws poses that already cover more of the goal than this.
        clear_xy_m, clear_radius_m: reset keeps the block this far from this point (the tool's
            start x-y, where the tip comes down), so it does not start under the tool.
        success_coverage: coverage of the goal needed for success (the paper: 0.95).
        max_substep_s: longest physics substep (s).
    """

    def __init__(
        self,
        goal_pose: tuple[float, float, float] = DEFAULT_GOAL_POSE,
        bar_length_m: float = 0.12,
        bar_width_m: float = 0.03,
        block_height_m: float = 0.03,
        block_mass_kg: float = 0.1,
        table_friction: float = 0.3,
        pusher_friction: float = 0.3,
        pusher_radius_m: float = TOOL_TIP_RADIUS_M,
        centroid_x_range_m: tuple[float, float] = (0.38, 0.52),
        centroid_y_range_m: tuple[float, float] = (-0.15, 0.15),
        max_initial_coverage: float = 0.3,
        clear_xy_m: tuple[float, float] = (0.45, 0.0),
        clear_radius_m: float = 0.03,
        success_coverage: float = 0.95,
        max_substep_s: float = 0.002,
    ):
        if not 0 < bar_width_m < bar_length_m:
            raise ValueError(
                f"pusht task: need 0 < bar_width_m < bar_length_m, got {bar_width_m}, {bar_length_m}"
            )
        if min(block_height_m, block_mass_kg, pusher_radius_m, max_substep_s) <= 0 or table_friction < 0:
            raise ValueError("pusht task: sizes, mass, radius and max_substep_s must be > 0, friction >= 0")
        if not 0 < success_coverage <= 1:
            raise ValueError(f"pusht task: success_coverage must be in (0, 1], got {success_coverage}")
        self.goal_pose = np.array(goal_pose, float).reshape(3)
        self.bar_length_m = float(bar_length_m)
        self.bar_width_m = float(bar_width_m)
        self.block_height_m = float(block_height_m)
        self.block_mass_kg = float(block_mass_kg)
        self.table_friction = float(table_friction)
        self.pusher_friction = float(pusher_friction)
        self.pusher_radius_m = float(pusher_radius_m)
        self.centroid_x_range_m = tuple(map(float, centroid_x_range_m))
        self.centroid_y_range_m = tuple(map(float, centroid_y_range_m))
        self.max_initial_coverage = float(max_initial_coverage)
        self.clear_xy_m = np.array(clear_xy_m, float)
        self.clear_radius_m = float(clear_radius_m)
        self.success_coverage = float(success_coverage)
        self.max_substep_s = float(max_substep_s)
        self.max_coverage = 0.0
        """Best coverage of the goal during this episode (0..1)."""
        self._solved = False
        self._block_pose = self.goal_pose.copy()  # (x, y, yaw) of the reference point, m / rad
        self._space: pymunk.Space | None = None

    # -- pickling: the pymunk objects are rebuilt from plain state --------------------------------
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_pm") and k != "_space"}
        state["_physics"] = None
        if self._space is not None:
            b, p = self._pm_block, self._pm_pusher
            state["_physics"] = {
                "block": (tuple(b.position), b.angle, tuple(b.velocity), b.angular_velocity),
                "pusher": (tuple(p.position), self._pm_pusher_shape.sensor, self._pusher_low),
            }
        return state

    def __setstate__(self, state: dict) -> None:
        physics = state.pop("_physics")
        self.__dict__.update(state)
        self._space = None
        if physics is not None:
            self._build_space()
            (pos, angle, vel, ang_vel) = physics["block"]
            self._pm_block.angle = angle  # before the position (pymunk keeps the centre of gravity)
            self._pm_block.position = pos
            self._pm_block.velocity, self._pm_block.angular_velocity = vel, ang_vel
            ppos, sensor, low = physics["pusher"]
            self._pm_pusher.position = ppos
            self._pm_pusher_shape.sensor = sensor
            self._pusher_low = low
            self._space.reindex_shapes_for_body(self._pm_block)
            self._space.reindex_shapes_for_body(self._pm_pusher)

    # -- physics -----------------------------------------------------------------------------------
    def _build_space(self) -> None:
        space = pymunk.Space()
        space.gravity = (0.0, 0.0)
        space.collision_slop = 0.05  # mm
        space.iterations = 20
        block = pymunk.Body()
        shapes = []
        area = t_area(self.bar_length_m, self.bar_width_m) * _MM**2
        for part in t_parts(self.bar_length_m, self.bar_width_m):
            s = pymunk.Poly(block, [tuple(v) for v in part * _MM], radius=0.0)
            s.density = self.block_mass_kg / area
            s.friction = 1.0
            s.elasticity = 0.0
            shapes.append(s)
        space.add(block, *shapes)
        # Table friction: Coulomb friction at support points spread evenly over the footprint, each a
        # velocity-only pivot (max_bias 0) whose force is capped at its share of mu m g. Distributed
        # point friction gives the real coupling of sliding and spinning (an off-centre push turns
        # the block about a point between its centroid and the far end), which one force cap and
        # one torque cap would not.
        points = t_support_points(self.bar_length_m, self.bar_width_m)
        f_mm = self.table_friction * self.block_mass_kg * G_M_S2 * _MM / len(points)  # kg mm / s^2
        for pt in points:
            anchor = (float(pt[0] * _MM), float(pt[1] * _MM))
            pivot = pymunk.PivotJoint(space.static_body, block, block.local_to_world(anchor), anchor)
            pivot.max_bias = 0.0
            pivot.max_force = f_mm
            space.add(pivot)
        pusher = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        pusher_shape = pymunk.Circle(pusher, self.pusher_radius_m * _MM)
        pusher_shape.friction = self.pusher_friction
        pusher_shape.elasticity = 0.0
        pusher_shape.sensor = True
        pusher.position = (-1e6, -1e6)
        space.add(pusher, pusher_shape)
        self._space = space
        self._pm_block, self._pm_block_shapes = block, shapes
        self._pm_pusher, self._pm_pusher_shape = pusher, pusher_shape
        self._pusher_low = False

    def _set_block_pose(self, pose: np.ndarray) -> None:
        # Angle first: pymunk keeps the centre of gravity fixed when the angle is set.
        self._pm_block.angle = float(pose[2])
        self._pm_block.position = (pose[0] * _MM, pose[1] * _MM)
        self._pm_block.velocity = (0.0, 0.0)
        self._pm_block.angular_velocity = 0.0
        self._space.reindex_shapes_for_body(self._pm_block)

    def _read_block_pose(self) -> np.ndarray:
        b = self._pm_block
        return np.array([b.position.x / _MM, b.position.y / _MM, wrap_angle(b.angle)])

    def _pusher_overlaps_block(self) -> bool:
        pos = self._pm_pusher.position
        r = self.pusher_radius_m * _MM
        return any(s.point_query(pos).distance < r for s in self._pm_block_shapes)

    # -- Task protocol ------------------------------------------------------------------------------
    def reset(self, seed: int) -> list[WorldObject]:
        """New episode: the block at a random pose drawn from ``seed`` (centroid uniform in the
        ranges, yaw uniform), away from the goal and the clear point; success cleared."""
        rng = np.random.default_rng(int(seed))
        c_local = t_centroid(self.bar_length_m, self.bar_width_m)
        outline = t_outline(self.bar_length_m, self.bar_width_m)
        for _ in range(1000):
            centroid = np.array(
                [rng.uniform(*self.centroid_x_range_m), rng.uniform(*self.centroid_y_range_m)]
            )
            yaw = rng.uniform(-math.pi, math.pi)
            pose = np.array([*(centroid - rot2(yaw) @ c_local), yaw])
            if (
                t_coverage(pose, self.goal_pose, self.bar_length_m, self.bar_width_m)
                > self.max_initial_coverage
            ):
                continue
            if _point_polygon_distance(self.clear_xy_m, to_world(outline, pose)) < self.clear_radius_m:
                continue
            break
        else:
            raise ValueError(
                "pusht task: no initial block pose satisfies the reset constraints; widen the ranges"
            )
        self._build_space()
        self._set_block_pose(pose)
        self._block_pose = pose
        self._solved = False
        self.max_coverage = self.coverage()
        return self.objects()

    def step(self, tcp_pose: FloatArray, dt_s: float) -> None:
        """Advance the physics by ``dt_s`` s with the tool tip moving (linearly) to ``tcp_pose``."""
        if self._space is None:
            raise RuntimeError("pusht task: step() before reset(); reset the world first")
        tip = np.asarray(tcp_pose, float)
        target = (tip[0] * _MM, tip[1] * _MM)
        low = tip[2] - TABLE_Z_M < self.block_height_m + self.pusher_radius_m
        pusher, shape = self._pm_pusher, self._pm_pusher_shape
        n = max(1, math.ceil(dt_s / self.max_substep_s - 1e-9))
        h = dt_s / n
        if low and self._pusher_low:
            start = np.array(pusher.position)
            pusher.velocity = tuple((np.array(target) - start) / dt_s)
        else:
            # Put down (or lifted): teleport to the target, colliding only once clear of the block.
            pusher.position = target
            pusher.velocity = (0.0, 0.0)
            self._space.reindex_shapes_for_body(pusher)
            shape.sensor = True
        self._pusher_low = bool(low)
        for _ in range(n):
            if low and shape.sensor and not self._pusher_overlaps_block():
                shape.sensor = False
            self._space.step(h)
        pusher.position = target
        pusher.velocity = (0.0, 0.0)
        self._space.reindex_shapes_for_body(pusher)
        self._block_pose = self._read_block_pose()
        cov = self.coverage()
        self.max_coverage = max(self.max_coverage, cov)
        if cov >= self.success_coverage:
            self._solved = True

    def success(self) -> bool:
        """True once the block covered ``success_coverage`` of the goal in this episode (latched)."""
        return self._solved

    def set_block_pose(self, pose: tuple[float, float, float] | np.ndarray) -> None:
        """Put the block at rest at ``(x m, y m, yaw rad)`` (after ``reset``; for tests and scenarios)."""
        if self._space is None:
            raise RuntimeError("pusht task: set_block_pose() before reset()")
        pose = np.asarray(pose, float).reshape(3)
        self._set_block_pose(pose)
        self._block_pose = self._read_block_pose()
        self.max_coverage = max(self.max_coverage, self.coverage())
        if self.coverage() >= self.success_coverage:
            self._solved = True

    @property
    def block_pose(self) -> np.ndarray:
        """The block's ``(x m, y m, yaw rad)`` (reference point, see the module docstring)."""
        return self._block_pose.copy()

    def coverage(self) -> float:
        """Fraction of the goal's area the block covers now (0..1)."""
        key = tuple(self._block_pose.tolist())
        if self.__dict__.get("_coverage_key") != key:  # the block is at rest most of the time
            self._coverage_key = key
            self._coverage = t_coverage(self._block_pose, self.goal_pose, self.bar_length_m, self.bar_width_m)
        return self._coverage

    def objects(self) -> list[WorldObject]:
        """The block: ``pose = [x, y, TABLE_Z_M, 0, 0, yaw]``, ``size = [L, W, block_height_m]``."""
        x, y, yaw = self._block_pose
        return [
            WorldObject(
                ObjectKind.T_BLOCK,
                np.array([x, y, TABLE_Z_M, 0.0, 0.0, yaw]),
                np.array([self.bar_length_m, self.bar_width_m, self.block_height_m]),
            )
        ]


def _point_polygon_distance(p: np.ndarray, poly: np.ndarray) -> float:
    """Distance (m) from ``p`` to a polygon's boundary, 0 inside (even-odd rule)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.einsum("ij,ij->i", ab, ab), 0.0, 1.0)
    d = float(np.min(np.linalg.norm(a + t[:, None] * ab - p, axis=1)))
    crosses = (a[:, 1] > p[1]) != (b[:, 1] > p[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (p[1] - a[:, 1]) * ab[:, 0] / ab[:, 1]
    inside = int(np.sum(crosses & (p[0] < x_at))) % 2 == 1
    return 0.0 if inside else d
