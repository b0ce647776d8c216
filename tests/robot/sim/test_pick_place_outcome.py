"""The failure causes of a pick-and-place episode, from the world records of the real task and grasp
model driven kinematically (the tool moves along straight segments; the fingers jump to each width)."""

from __future__ import annotations

import numpy as np
import pytest

from robot.sim.tasks import make_task
from robot.sim.tasks.pick_place_outcome import PickPlaceOutcome
from robot.sim.world import SimWorld

DOWN = np.array([np.pi, 0.0, 0.0])
OPEN, ON_BOX, SHUT = 0.085, 0.0405, 0.0  # ON_BOX: the 40 mm box between the pads
SPOT = (0.45, -0.12)


def drive(seed: int, moves: list[tuple[str, tuple[float, float], float, float]], dt_s: float = 0.01):
    """Run ``moves`` = [(frame, (dx, dy), z, width)]: straight to the point (frame "box": relative to the
    box's start, "spot": to the drop spot) at 0.2 m/s, then set the width. Returns (outcome result, task)."""
    task = make_task("pick_place", target_xy_m=SPOT)
    world = SimWorld(task)
    world.reset(seed)
    box0 = task.box_pose[:2].copy()
    pose = np.array([0.45, 0.0, 0.15, *DOWN])
    width = OPEN
    outcome = PickPlaceOutcome()
    t = 0.0

    def tick() -> None:
        nonlocal t
        world.step(pose, dt_s, width)
        t += dt_s
        outcome.update(world.record(t, pose, np.zeros(6)))

    tick()
    assert PickPlaceOutcome.applies(world.record(t, pose, np.zeros(6)))
    for frame, (dx, dy), z, w in moves:
        origin = box0 if frame == "box" else np.asarray(SPOT)
        goal = np.array([origin[0] + dx, origin[1] + dy, z])
        n = max(1, int(np.linalg.norm(goal - pose[:3]) / 0.2 / dt_s))
        start = pose[:3].copy()
        for i in range(1, n + 1):
            pose[:3] = start + (goal - start) * i / n
            tick()
        width = w
        for _ in range(100):  # 1 s: the box falls and rests, the task's hold time passes
            tick()
    return outcome.result(world.success), task


def test_a_placed_box_is_a_success_with_one_grasp_near_its_centre():
    res, _ = drive(
        1,
        [
            ("box", (0, 0), 0.02, ON_BOX),
            ("box", (0, 0), 0.1, ON_BOX),
            ("spot", (0, 0), 0.1, ON_BOX),
            ("spot", (0, 0), 0.025, OPEN),
        ],
    )
    assert res["cause"] is None and res["lifted"] and res["grasp_attempts"] == 1
    assert np.hypot(*res["first_grasp_offset_m"]) < 1e-6
    assert res["end_distance_to_target_m"] < 0.03


def test_fingers_closing_beside_the_box_are_a_missed_grasp_with_the_offset():
    res, task = drive(2, [("box", (-0.05, 0.0), 0.02, SHUT), ("box", (-0.05, 0.0), 0.1, SHUT)])
    assert res["cause"] == "missed grasp" and not res["lifted"] and res["grasp_attempts"] == 1
    assert res["first_grasp_offset_m"] == pytest.approx([-0.05, 0.0], abs=1e-3)
    assert res["first_grasp_height_m"] == pytest.approx(0.02, abs=1e-3)
    assert res["box_start_xy_m"] == pytest.approx(task.box_pose[:2].tolist(), abs=1e-4)  # never moved


@pytest.mark.parametrize(
    "release_at, cause", [((0.04, 0.0), "placed outside"), ((0.0, 0.15), "dropped")], ids=["near", "far"]
)
def test_a_released_box_off_the_spot_is_placed_outside_near_it_and_dropped_away_from_it(release_at, cause):
    res, _ = drive(
        3,
        [
            ("box", (0, 0), 0.02, ON_BOX),
            ("box", (0, 0), 0.1, ON_BOX),
            ("spot", release_at, 0.1, ON_BOX),
            ("spot", release_at, 0.025, OPEN),
        ],
    )
    assert res["lifted"] and res["cause"] == cause
    assert res["end_distance_to_target_m"] == pytest.approx(np.hypot(*release_at), abs=2e-3)


def test_running_out_of_time_holding_the_box_or_never_closing_is_a_timeout():
    holding, _ = drive(4, [("box", (0, 0), 0.02, ON_BOX), ("box", (0, 0), 0.1, ON_BOX)])
    assert holding["cause"] == "timeout" and holding["lifted"]
    in_the_air, _ = drive(
        4, [("box", (0, 0), 0.08, SHUT)]
    )  # right above the box, fingertips 4 cm over its top
    assert in_the_air["cause"] == "missed grasp" and in_the_air["first_grasp_height_m"] == pytest.approx(
        0.08, abs=1e-3
    )
    idle, _ = drive(4, [("box", (0.1, 0.0), 0.1, OPEN)])
    assert idle["cause"] == "timeout" and idle["grasp_attempts"] == 0 and idle["first_grasp_offset_m"] is None
