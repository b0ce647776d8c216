"""pick_place without processes: the grasp model, the finger model and the scripted expert in a
kinematic loop (the teleop maths of ``rig collect``; buttons: 0 close, 1 open)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from robot.gripper.finger_model import FingerModel
from robot.sim.grasp import GraspModel, obstacle_width
from robot.sim.tasks import make_expert, make_task
from robot.sim.world import SimWorld
from robot.sim.world_state import TABLE_Z_M

MAX_W = 0.085
DOWN = np.array([np.pi, 0.0, 0.0])


def rollout(
    seed: int,
    max_time_s: float = 30.0,
    dt_s: float = 0.01,
    delay_ticks: int = 3,
    expert_params: dict | None = None,
    **task_params,
):
    task = make_task("pick_place", **task_params)
    expert = make_expert("pick_place", seed=7, **(expert_params or {}))
    world = SimWorld(task)
    world.reset(seed)
    pose = np.array([0.45, 0.0, 0.20, *DOWN])
    fingers = FingerModel(MAX_W, command_delay_s=0.04)
    pending = deque([np.zeros(3)] * delay_ticks)
    t = 0.0
    world.step(pose, 0.0, float("nan"))
    log = {"held": [], "box_z": [], "width": [], "z": [], "close": [], "phase": []}
    for _ in range(int(max_time_s / dt_s)):
        rec = world.record(t, pose, np.zeros(6))
        axes, buttons = expert({"arm": {"actual_tcp_pose": pose.copy()}, "world": rec, "time": t})
        log["z"].append(pose[2])
        log["close"].append(bool(buttons[0]))
        log["phase"].append(expert.phase)
        if buttons[0]:
            fingers.command(0.0, 0.15, t) if fingers.target_width_m != 0.0 else None
        elif buttons[1]:
            fingers.command(MAX_W, 0.15, t) if fingers.target_width_m != MAX_W else None
        pending.append(np.clip(axes[:3], -1, 1) * 0.15)
        pose[:3] = np.clip(pose[:3] + pending.popleft() * dt_s, [0.25, -0.35, 0.02], [0.65, 0.35, 0.4])
        t += dt_s
        fingers.step(t, obstacle_width(world.record(t, pose, np.zeros(6)), fingers.width_m))
        world.step(pose, dt_s, fingers.width_m)
        log["held"].append(task.grasp.held)
        log["box_z"].append(task.box_pose[2])
        log["width"].append(fingers.width_m)
        if world.success:
            return True, t, task, log
    return False, t, task, log


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_expert_picks_and_places_the_box(seed):
    ok, t, task, log = rollout(seed)
    assert ok, f"seed {seed}: no success in {t:.1f} s (expert phase {task}), held {any(log['held'])}"
    assert any(log["held"]) and max(log["box_z"]) > 0.04  # it really was lifted
    assert np.linalg.norm(task.box_pose[:2] - task.target_xy) <= task.success_radius_m
    assert not task.grasp.held and task.box_pose[2] == TABLE_Z_M  # released, resting on the table


def test_expert_dwells_open_at_the_grasp_height_then_holds_the_closed_grip_before_lifting():
    dt = 0.01
    ok, t, task, log = rollout(1, dt_s=dt, expert_params={"dwell_s": 0.4, "settle_s": 0.4})
    assert ok, f"no success in {t:.1f} s"
    phase, z, close, width = (np.asarray(log[k]) for k in ("phase", "z", "close", "width"))
    arrived = int(np.argmax(phase == "dwell"))  # the first tick at the grasp height
    pressed = int(np.argmax(close))
    assert arrived > 0 and (pressed - arrived) * dt >= 0.4 - dt
    # Fingers open meanwhile, and the tool settles (converging on the grasp height: under 2 mm).
    assert np.ptp(z[arrived:pressed]) < 2e-3 and width[pressed - 1] > 0.08
    # Closed on the box, then held there settle_s before going up.
    lifted = int(np.argmax(phase[pressed:] == "carry")) + pressed
    stopped = int(np.argmax(width[pressed:] <= task.box_size_m + 0.001)) + pressed
    assert (lifted - stopped) * dt >= 0.4 - 2 * dt and np.ptp(z[pressed:lifted]) < 2e-3


def test_a_fixed_target_stays_put_while_the_box_moves_and_the_expert_places_on_it():
    spot = (0.45, -0.1)
    starts = []
    for seed in (4, 5):
        task = make_task("pick_place", target_xy_m=spot)
        task.reset(seed)
        assert np.allclose(task.target_xy, spot)
        assert np.linalg.norm(task.box_pose[:2] - task.target_xy) >= task.min_distance_m
        starts.append(task.box_pose[:2].copy())
        ok, t, task, _ = rollout(seed, target_xy_m=spot)
        assert ok and np.linalg.norm(task.box_pose[:2] - np.array(spot)) <= task.success_radius_m, (seed, t)
    assert np.linalg.norm(starts[0] - starts[1]) > 0.01  # the box does move from seed to seed


def test_closing_fingers_stop_on_the_box_and_it_follows_the_tool():
    box = np.array([0.45, 0.0, TABLE_Z_M, 0.0, 0.0, 0.0])
    size = np.full(3, 0.04)
    tcp = np.array([0.455, 0.0, 0.025, *DOWN])  # 5 mm off-centre in x
    world = {
        "object_kind": np.array([3, 0]),
        "object_size": np.array([size, np.zeros(3)]),
        "object_pose": np.array([box, np.zeros(6)]),
        "tcp_pose": tcp,
    }
    assert obstacle_width(world, MAX_W) == pytest.approx(0.04)
    assert obstacle_width(world, 0.005) is None  # closed fingers: nothing between them
    far = dict(world, tcp_pose=np.array([0.45, 0.0, 0.12, *DOWN]))
    assert obstacle_width(far, MAX_W) is None  # the pads are above the box
    g = GraspModel()
    assert g.step(tcp, 0.06, box, size, 0.01)[2] == TABLE_Z_M and not g.held  # open: not held
    p = g.step(tcp, 0.0405, box, size, 0.01)
    assert g.held and p[0] == pytest.approx(0.455)  # centred between the pads
    lifted = tcp.copy()
    lifted[2] += 0.1
    assert g.step(lifted, 0.0405, p, size, 0.01)[2] == pytest.approx(0.1)
    # Opening releases it: it falls to the table and lands flat.
    p = g.step(lifted, 0.06, g.step(lifted, 0.0405, p, size, 0.01), size, 0.01)
    assert not g.held and 0 < p[2] < 0.1
    for _ in range(100):
        p = g.step(lifted, 0.06, p, size, 0.01)
    assert p[2] == TABLE_Z_M and g.resting


def test_finger_model_moves_at_finite_speed_after_its_delay():
    f = FingerModel(MAX_W, command_delay_s=0.05, t0=0.0)
    f.command(0.0, 0.1, 0.0)
    f.step(0.04)
    assert f.width_m == MAX_W  # not yet
    f.step(0.55)
    assert f.width_m == pytest.approx(MAX_W - 0.05) and f.moving
    f.step(0.60, obstacle_width_m=0.03)
    f.step(1.0, obstacle_width_m=0.03)
    assert f.width_m == pytest.approx(0.03) and f.object_detected and not f.moving
