"""Push-T: geometry and coverage, seeded reset, pymunk physics, pickling, config, and the expert in a loop."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from robot.sim.render import object_footprint
from robot.sim.tasks import load_task_config, make_expert, make_task
from robot.sim.tasks.experts import PushTExpert
from robot.sim.tasks.pusht import (
    PushTTask,
    polygon_area,
    rot2,
    t_area,
    t_centroid,
    t_coverage,
    t_outline,
    to_world,
)
from robot.sim.world_state import ObjectKind
from tests.robot.sim.closed_loop import run_closed_loop

pytestmark = pytest.mark.timeout(120)
L, W = 0.12, 0.03


def _tip(x: float, y: float, z: float = 0.03) -> np.ndarray:
    return np.array([x, y, z, np.pi, 0.0, 0.0])


def _centroid(pose: np.ndarray) -> np.ndarray:
    return pose[:2] + rot2(pose[2]) @ t_centroid(L, W)


# -- geometry ----------------------------------------------------------------------------------------
def test_t_outline_is_ccw_with_the_documented_shape():
    outline = t_outline(L, W)
    assert polygon_area(outline) == pytest.approx(t_area(L, W)) == pytest.approx(L * W + W * (L - W))
    # Bar spans x in [-L/2, L/2], y in [0, W]; the stem reaches y = L; the origin is mid bar edge.
    assert outline[:, 0].min() == -L / 2 and outline[:, 0].max() == L / 2
    assert outline[:, 1].min() == 0 and outline[:, 1].max() == L
    c = t_centroid(L, W)
    assert c[0] == 0 and W < c[1] < L / 2


def test_renderer_draws_the_same_t_region():
    """The camera renderer's T_BLOCK footprint covers exactly this module's T (same vertices)."""
    fp = object_footprint(ObjectKind.T_BLOCK, np.array([L, W, 0.03]))
    assert abs(polygon_area(fp)) == pytest.approx(t_area(L, W))
    assert sorted(map(tuple, np.round(fp, 9))) == sorted(map(tuple, np.round(t_outline(L, W), 9)))


def test_coverage_is_one_at_the_goal_and_drops_when_displaced():
    goal = np.array([0.48, -0.03, math.pi / 4])
    assert t_coverage(goal, goal, L, W) == pytest.approx(1.0)
    assert t_coverage(goal + [0.003, 0, 0], goal, L, W) < 0.95
    assert t_coverage(goal + [0, -0.003, 0], goal, L, W) < 0.95
    assert t_coverage(goal + [0, 0, 0.05], goal, L, W) < 0.95
    assert 0.95 < t_coverage(goal + [0.0005, 0, 0.005], goal, L, W) < 1.0
    assert t_coverage(goal + [0.3, 0, 0], goal, L, W) == 0.0
    # A half-turn about the centroid overlaps only the stem/bar crossing.
    c = _centroid(goal)
    flipped_yaw = goal[2] + math.pi
    flipped = np.array([*(c - rot2(flipped_yaw) @ t_centroid(L, W)), flipped_yaw])
    assert 0.0 < t_coverage(flipped, goal, L, W) < 0.5


def test_coverage_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    goal = np.array([0.48, -0.03, math.pi / 4])
    outline = t_outline(L, W)
    pts = rng.uniform(-0.1, 0.1, (100_000, 2)) + _centroid(goal)
    in_goal = MplPath(to_world(outline, goal)).contains_points(pts)
    for _ in range(5):
        pose = goal + rng.normal(0, [0.02, 0.02, 0.5])
        in_block = MplPath(to_world(outline, pose)).contains_points(pts)
        mc = (in_goal & in_block).sum() / in_goal.sum()
        assert t_coverage(pose, goal, L, W) == pytest.approx(mc, abs=0.01)


# -- reset -------------------------------------------------------------------------------------------
def test_reset_is_deterministic_in_the_seed_and_respects_its_constraints():
    a, b = PushTTask(), PushTTask()
    poses = []
    for seed in range(40):
        pa, pb = a.reset(seed)[0], b.reset(seed)[0]
        np.testing.assert_array_equal(pa.pose, pb.pose)
        assert pa.kind == ObjectKind.T_BLOCK
        np.testing.assert_array_equal(pa.size, [L, W, 0.03])
        assert pa.pose[2] == 0 and pa.pose[3] == 0 and pa.pose[4] == 0 and -math.pi < pa.pose[5] <= math.pi
        pose = np.array([pa.pose[0], pa.pose[1], pa.pose[5]])
        c = _centroid(pose)
        assert 0.38 <= c[0] <= 0.52 and -0.15 <= c[1] <= 0.15
        assert a.coverage() <= 0.3 and not a.success()
        assert not MplPath(to_world(t_outline(L, W), pose)).contains_point((0.45, 0.0))
        poses.append(pose)
    poses = np.array(poses)
    assert len(np.unique(poses[:, 2])) == 40 and np.ptp(poses[:, 2]) > 4.0  # yaw spread over the circle


# -- physics -----------------------------------------------------------------------------------------
def _task_with_block(pose=(0.45, 0.0, 0.0)) -> PushTTask:
    task = PushTTask(clear_xy_m=(0.3, 0.3))
    task.reset(0)
    task.set_block_pose(pose)
    return task


def test_block_stays_still_when_not_pushed():
    task = _task_with_block()
    start = task.block_pose
    # Tool low but far away, then high right over the block (sweeping across it), for 3 s.
    for i in range(150):
        task.step(_tip(0.30, 0.25 - i * 0.001), 0.008)
    for i in range(225):
        task.step(_tip(0.35 + i * 0.001, 0.05, z=0.10), 0.008)
    np.testing.assert_allclose(task.block_pose, start, atol=1e-9)


def test_pushing_through_the_centroid_translates_the_block_and_it_stops_after():
    task = _task_with_block((0.45, 0.0, 0.0))  # bar along x at y in [0, 0.03], stem up to y = 0.12
    c0 = _centroid(task.block_pose)
    r = task.pusher_radius_m
    y = -r - 0.01  # below the bar's outer edge, pushing +y through the centroid
    for _ in range(100):  # 0.8 s at 0.1 m/s = 8 cm of tool travel, 7 cm of it in contact
        task.step(_tip(c0[0], y), 0.008)
        y += 0.1 * 0.008
    moved = _centroid(task.block_pose) - c0
    assert moved[1] == pytest.approx(0.07, abs=0.005) and abs(moved[0]) < 0.002
    assert abs(task.block_pose[2]) < 0.02
    after_push = task.block_pose
    for _ in range(125):  # tool stays put (in contact, not pushing) for 1 s
        task.step(_tip(c0[0], y), 0.008)
    slide = np.linalg.norm(task.block_pose[:2] - after_push[:2])
    assert slide < 0.004  # friction stops it within mm (v^2 / 2 mu g = 1.7 mm)
    settled = task.block_pose
    for _ in range(125):
        task.step(_tip(c0[0], y - 0.05), 0.008)
    np.testing.assert_allclose(task.block_pose, settled, atol=1e-9)


def test_off_centre_push_turns_the_block():
    task = _task_with_block((0.45, 0.0, 0.0))
    r = task.pusher_radius_m
    x, y = 0.45 + 0.05, -r - 0.005  # under the bar's right end, pushing +y: turns counter-clockwise
    for _ in range(100):
        task.step(_tip(x, y), 0.008)
        y += 0.08 * 0.008
    assert task.block_pose[2] > 0.2


def test_tip_put_down_on_the_block_passes_through_it_instead_of_blasting_it():
    task = _task_with_block((0.45, 0.0, 0.0))
    start = task.block_pose
    c = start[:2] + [0.0, 0.08]  # on the stem, 5 cm above the bar (block frame = world here)
    task.step(_tip(c[0], c[1], z=0.10), 0.008)
    task.step(_tip(c[0], c[1], z=0.03), 0.008)  # lowered inside the stem
    x = c[0]
    for _ in range(40):  # slide out sideways through the stem's side
        x += 0.001
        task.step(_tip(x, c[1]), 0.008)
    np.testing.assert_allclose(task.block_pose, start, atol=1e-9)
    for _ in range(40):  # now clear of it: coming back pushes it
        x -= 0.001
        task.step(_tip(x, c[1]), 0.008)
    assert _centroid(task.block_pose)[0] < _centroid(start)[0] - 0.005 and task.block_pose[2] > 0.05


def test_success_needs_95_percent_coverage_and_is_latched():
    task = PushTTask()
    task.reset(1)
    goal = task.goal_pose
    task.set_block_pose(goal + [0.004, 0, 0])
    task.step(_tip(0.3, 0.3, 0.2), 0.01)
    assert not task.success() and task.coverage() < 0.95
    task.set_block_pose(goal + [0.001, 0, 0])
    task.step(_tip(0.3, 0.3, 0.2), 0.01)
    assert task.success() and task.coverage() >= 0.95 and task.max_coverage >= 0.95
    task.set_block_pose(goal + [0.05, 0, 0])
    task.step(_tip(0.3, 0.3, 0.2), 0.01)
    assert task.success() and task.coverage() < 0.5
    task.reset(1)
    assert not task.success() and task.max_coverage < 0.3


def test_task_pickles_before_reset_and_mid_push():
    task = make_task("pusht")
    clone = pickle.loads(pickle.dumps(task))
    np.testing.assert_array_equal(clone.reset(5)[0].pose, task.reset(5)[0].pose)
    task = _task_with_block((0.45, 0.0, 0.3))
    y = -0.02
    for _ in range(40):
        task.step(_tip(0.47, y), 0.008)
        y += 0.1 * 0.008
    assert task.block_pose[1] > 0.0  # in contact and moving
    clone = pickle.loads(pickle.dumps(task))
    np.testing.assert_array_equal(clone.block_pose, task.block_pose)
    for _ in range(40):
        task.step(_tip(0.47, y), 0.008)
        clone.step(_tip(0.47, y), 0.008)
        y += 0.1 * 0.008
    np.testing.assert_allclose(clone.block_pose, task.block_pose, atol=2e-4)


def test_step_before_reset_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before reset"):
        PushTTask().step(_tip(0.4, 0.0), 0.01)


# -- config and expert ---------------------------------------------------------------------------------
def test_pusht_config_passes_the_task_geometry_to_the_expert():
    cfg = load_task_config("pusht", ["params.goal_pose=[0.45,0.0,0.5]", "params.bar_length_m=0.14"])
    task, expert = cfg.make_task(), cfg.make_expert()
    assert isinstance(task, PushTTask) and isinstance(expert, PushTExpert)
    np.testing.assert_array_equal(expert.goal_pose, task.goal_pose)
    assert expert.bar_length_m == task.bar_length_m == 0.14
    assert expert.max_speed_m_s == cfg.expert["max_speed_m_s"]
    assert isinstance(make_expert("pusht"), PushTExpert)
    pickle.loads(pickle.dumps(expert))


def test_expert_defaults_match_the_task_defaults():
    task, expert = PushTTask(), PushTExpert()
    np.testing.assert_allclose(expert.goal_pose, task.goal_pose)
    assert (expert.bar_length_m, expert.bar_width_m) == (task.bar_length_m, task.bar_width_m)
    assert expert.pusher_radius_m == task.pusher_radius_m


def test_expert_outputs_planar_axes_and_stops_when_solved():
    task = PushTTask()
    task.reset(2)
    expert = PushTExpert()
    from robot.sim.world import SimWorld

    world = SimWorld(task)
    world.reset(2)
    obs = {"arm": {"actual_tcp_pose": _tip(0.45, 0.0)}, "world": world.record(0, _tip(0.45, 0), np.zeros(6))}
    axes, buttons = expert({**obs, "time": 0.0})
    assert axes.shape == (6,) and np.all(axes[2:] == 0) and np.abs(axes).max() > 0.1
    task.set_block_pose(task.goal_pose)
    world.step(_tip(0.3, 0.3, 0.2), 0.01)
    obs["world"] = world.record(0.01, _tip(0.45, 0), np.zeros(6))
    axes, _ = expert({**obs, "time": 0.01})
    assert not axes.any()


def test_expert_solves_pusht_in_closed_loop_on_most_seeds():
    """20 seeded episodes, 60 s each; the expert at 50 Hz, its axes sampled by a 10 Hz control loop
    (``rig collect``'s) and applied 120 ms later, as on the simulated rig."""
    cfg = load_task_config("pusht")
    results = []
    for s in range(20):
        task = cfg.make_task()
        r = run_closed_loop(
            task, cfg.make_expert(), seed=1000 + s, max_time_s=60.0, dt_s=0.02, control_every=5, delay_ticks=6
        )
        results.append((r.success, r.time_to_success_s, task.max_coverage))
    solved = sum(ok for ok, _, _ in results)
    print(f"pusht expert: {solved}/20 solved; times {[t for _, t, _ in results]}")
    assert solved >= 16, results


def test_renderer_footprints_are_counter_clockwise_so_side_faces_point_outwards():
    # prism_faces derives outward normals from the winding: a clockwise footprint renders inside out.
    for kind, size in ((ObjectKind.T_BLOCK, [L, W, 0.03]), (ObjectKind.BOX, [0.05, 0.03, 0.02])):
        p = object_footprint(kind, np.array(size))
        signed_area = 0.5 * np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
        assert signed_area > 0, kind
