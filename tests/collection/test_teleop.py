"""The SpaceMouse-to-target integration: the TCP speed follows the deflection, whatever ticks a loaded
loop skipped (robot.timing.RateLoop skips missed periods)."""

from __future__ import annotations

import time

import pytest

from collection.teleop import MAX_TELEOP_STEP_S, TeleopConfig, TeleopMapper, teleop_step_s
from robot.timing import RateLoop


def test_a_skipped_tick_counts_its_periods_up_to_a_bound():
    assert teleop_step_s(0.1, 0) == pytest.approx(0.1)
    assert teleop_step_s(0.02, 3) == pytest.approx(0.08)
    assert teleop_step_s(0.02, 1000) == pytest.approx(MAX_TELEOP_STEP_S)  # a long stall: no jump
    assert teleop_step_s(0.5, 2) == pytest.approx(0.5)  # never less than one period


def test_the_target_moves_with_the_loops_grid_time_when_ticks_are_skipped():
    mapper = TeleopMapper(TeleopConfig(max_linear_speed_m_s=0.1), [-1, -1, -1], [1, 1, 1])
    mapper.reset([0, 0, 0, 0, 0, 0])
    loop = RateLoop(50.0)
    first = loop.wait()
    skipped, capped = 0, False
    for i in range(30):
        if i % 6 == 5:
            time.sleep(3.5 * loop.period_s)  # a stalled iteration (the machine was busy)
        tick = loop.wait()
        skipped += tick.skipped
        step = teleop_step_s(loop.period_s, tick.skipped)
        capped |= step < loop.period_s * (1 + tick.skipped)
        target = mapper.update([0.5, 0, 0, 0, 0, 0], [False, False], step)
    assert skipped >= 5 * 2  # every stall skipped at least two periods
    grid_s = (tick.index - first.index) * loop.period_s
    if not capped:  # (a stall over MAX_TELEOP_STEP_S on a very busy machine moves it less)
        assert target[0] == pytest.approx(0.5 * 0.1 * grid_s, rel=1e-9)
    assert target[0] > 0.5 * 0.1 * 30 * loop.period_s  # more than one period per tick
