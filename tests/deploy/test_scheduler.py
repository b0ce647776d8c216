"""Chunk stamping, dropping, the no-burst fallback and the async commit plan (pure logic, no rig)."""

import numpy as np
import pytest

from deploy.safety import ChunkSafety, PolicySafetyStop
from deploy.scheduler import (
    MIN_LEAD_S,
    ActionPlan,
    earliest_feasible_time,
    schedule_chunk,
    stamp_chunk,
)
from robot.arm.config import ArmLimits

LAT = 0.04
MARGIN = 0.01
DT = 0.1


def line(n, x0=0.4, step=0.01):
    p = np.tile([x0, 0.0, 0.2, np.pi, 0.0, 0.0], (n, 1))
    p[:, 0] += step * np.arange(n)
    return p


def test_stamp_chunk_uses_obs_time_first_index_and_dt():
    t = stamp_chunk(4, 1, t_obs=100.0, dt_s=0.1)
    assert np.allclose(t, [100.1, 100.2, 100.3, 100.4])


def test_schedule_chunk_drops_exactly_the_actions_that_cannot_be_reached():
    t_obs = 100.0
    times = stamp_chunk(8, 0, t_obs, DT)
    now = t_obs + 0.2  # inference + camera age: rows at 100.0..100.2 are past, 100.24 is the bound
    s = schedule_chunk(line(8), times, now, LAT, MARGIN)
    bound = earliest_feasible_time(now, LAT, MARGIN)
    assert not s.fallback
    assert s.dropped == int(np.sum(times < bound)) == 3
    assert np.all(s.target_times >= bound)
    assert np.allclose(s.target_times, times[3:]) and np.allclose(s.poses, line(8)[3:])
    assert s.source_index.tolist() == [3, 4, 5, 6, 7]


def test_slower_than_chunk_schedules_only_the_newest_action_at_the_earliest_feasible_time():
    times = stamp_chunk(8, 0, 100.0, DT)
    now = 101.5  # inference took longer than the whole chunk
    s = schedule_chunk(line(8), times, now, LAT, MARGIN)
    assert s.fallback and len(s.poses) == 1 and s.dropped == 7
    assert np.allclose(s.poses[0], line(8)[-1])
    assert s.target_times[0] == pytest.approx(now + LAT + MARGIN + MIN_LEAD_S)


def test_plan_commits_only_within_the_window_and_a_new_chunk_replaces_the_rest():
    plan = ActionPlan()
    plan.reset(line(1)[0], 99.0)
    times = stamp_chunk(8, 0, 100.0, DT)
    r = plan.merge(line(8), times, now=100.0, action_latency_s=LAT, margin_s=MARGIN, chunk=0)
    assert r.planned == 7 and r.dropped == 1 and r.superseded == 0  # row 0 (t=100.0) is past
    due = plan.take_due(100.0, LAT, commit_window_s=0.12, margin_s=MARGIN)
    # send times (T - 0.04) within 0.12 s of now: T <= 100.16 -> only row 1
    assert [d.row for d in due] == [1]
    due = plan.take_due(100.1, LAT, 0.12, MARGIN)
    assert [d.row for d in due] == [2]
    assert plan.last_committed_time == pytest.approx(100.2)
    # The next chunk (from an obs at 100.05) arrives at 100.12: inpainted rows up to 100.2 are kept out.
    t_obs = 100.05
    committed = plan.committed_for(t_obs, DT, commit_until=100.2, max_rows=14)
    # 100.05, 100.15, and 100.25: the last committed action (100.2) lies between two grid rows, so
    # the row after it is inpainted too (the plan's pose there).
    assert committed.shape == (3, 6)
    # What the arm is commanded at those times: from the hold pose to row 1 (row 0 was past), then row 2.
    assert np.allclose(committed, plan.pose_at(t_obs + np.array([0.0, 0.1, 0.2])))
    assert committed[1, 0] == pytest.approx(0.415)
    new = line(8, x0=0.405, step=0.01)
    new[:3] = committed
    new_times = stamp_chunk(8, 0, t_obs, DT)
    r = plan.merge(new, new_times, now=100.12, action_latency_s=LAT, margin_s=MARGIN, chunk=1)
    assert r.superseded == 5  # rows 3..7 of chunk 0 were never sent
    assert r.already_committed == 2 and r.dropped == 0 and r.planned == 6
    assert all(p.chunk == 1 for p in plan.pending)
    assert plan.pending[0].target_time > plan.last_committed_time
    # Superseded actions are gone: nothing of chunk 0 is ever committed again.
    sent = []
    for t in np.arange(100.12, 101.0, 0.02):
        sent += plan.take_due(t, LAT, 0.12, MARGIN)
    assert sent and all(p.chunk == 1 for p in sent)
    assert np.all(np.diff([p.target_time for p in plan.committed]) > 0)


def test_the_committed_prefix_covers_the_last_committed_action_when_it_falls_between_grid_rows():
    plan = ActionPlan()
    plan.reset(line(1)[0], 99.0)
    plan.merge(line(8), stamp_chunk(8, 0, 100.0, DT), 100.0, LAT, MARGIN, chunk=0)
    plan.take_due(100.0, LAT, 0.12, MARGIN)
    plan.take_due(100.1, LAT, 0.12, MARGIN)  # committed up to 100.2
    t_obs = 100.05  # this chunk's grid: 100.05, 100.15, 100.25, ...
    committed = plan.committed_for(t_obs, DT, plan.last_committed_time, 14)
    # A policy that follows the inpainted rows and then bends away (a 5 mm step from the next row on):
    bent = line(8, x0=0.405) + np.array([0.005, 0, 0, 0, 0, 0])
    bent[: len(committed)] = committed
    r = plan.merge(bent, stamp_chunk(8, 0, t_obs, DT), 100.12, LAT, MARGIN, chunk=1)
    # The join (100.2) lies between inpainted rows 100.15 and 100.25: no jump at all.
    assert r.join_time == pytest.approx(100.2) and r.jump_m < 1e-9


def test_merge_measures_the_jump_at_the_join_and_inpainting_removes_it():
    plan = ActionPlan()
    plan.reset(line(1)[0], 99.0)
    plan.merge(line(8), stamp_chunk(8, 0, 100.0, DT), 100.0, LAT, MARGIN, chunk=0)
    plan.take_due(100.0, LAT, 0.12, MARGIN)
    plan.take_due(100.1, LAT, 0.12, MARGIN)
    t_obs = 100.05
    shifted = line(8, x0=0.405 + 0.006)  # an independent sample 6 mm off
    r = plan.merge(shifted.copy(), stamp_chunk(8, 0, t_obs, DT), 100.12, LAT, MARGIN, chunk=1)
    assert r.jump_m == pytest.approx(0.006, abs=1e-6)
    # Same sample, but conditioned on the committed rows (what the policy's inpainting does):
    plan2 = ActionPlan()
    plan2.reset(line(1)[0], 99.0)
    plan2.merge(line(8), stamp_chunk(8, 0, 100.0, DT), 100.0, LAT, MARGIN, chunk=0)
    plan2.take_due(100.0, LAT, 0.12, MARGIN)
    plan2.take_due(100.1, LAT, 0.12, MARGIN)
    committed = plan2.committed_for(t_obs, DT, plan2.last_committed_time, 14)
    inpainted = line(8, x0=0.405)
    inpainted[: len(committed)] = committed
    r2 = plan2.merge(inpainted, stamp_chunk(8, 0, t_obs, DT), 100.12, LAT, MARGIN, chunk=1)
    assert r2.jump_m < 1e-6


def test_plan_fallback_when_the_whole_chunk_is_late():
    plan = ActionPlan()
    plan.reset(line(1)[0], 99.0)
    r = plan.merge(line(8), stamp_chunk(8, 0, 100.0, DT), 101.5, LAT, MARGIN, chunk=0)
    assert r.fallback and r.planned == 1 and r.dropped == 7
    assert plan.pending[0].target_time == pytest.approx(101.5 + LAT + MARGIN + MIN_LEAD_S)
    assert np.allclose(plan.pending[0].pose, line(8)[-1])


def test_take_due_drops_actions_the_loop_stalled_past():
    plan = ActionPlan()
    plan.reset(line(1)[0], 99.0)
    plan.merge(line(8), stamp_chunk(8, 0, 100.0, DT), 100.0, LAT, MARGIN, chunk=0)
    due = plan.take_due(100.34, LAT, 0.12, MARGIN)  # stalled: rows 1..3 can no longer be reached
    assert plan.dropped_due == 3
    assert all(p.target_time >= earliest_feasible_time(100.34, LAT, MARGIN) for p in due)
    assert due[0].row == 4


def test_chunk_safety_stops_on_nan_and_limits_box_and_steps():
    limits = ArmLimits()
    safety = ChunkSafety(limits, DT)
    a = line(4)
    a[2, 1] = np.nan
    with pytest.raises(PolicySafetyStop, match="non-finite actions"):
        safety.check(a, 3)
    far = line(4, step=0.1)  # 100 mm per 100 ms step: 4x the 0.25 m/s limit
    far[0, 2] = 0.9  # above the box
    out = safety.check(far, 0)
    assert len(out.events) == 2
    assert out.poses[:, 2].max() <= limits.workspace_max_m[2]
    steps = np.linalg.norm(np.diff(out.poses[:, :3], axis=0), axis=1)
    assert steps.max() <= limits.max_linear_speed_m_s * DT + 1e-9
    assert not safety.check(line(4), 1).events


def test_width_plan_holds_each_planned_width_until_the_next_and_replaces_from_a_new_first_stamp():
    from deploy.scheduler import WidthPlan

    plan = WidthPlan()
    assert plan.at([1.0, 2.0], fallback=0.085).tolist() == [0.085, 0.085]  # nothing planned yet
    plan.merge([0.085, 0.085, 0.0, 0.0], [10.0, 10.1, 10.2, 10.3])
    assert plan.at([9.9, 10.15, 10.25, 99.0], fallback=0.05).tolist() == [0.05, 0.085, 0.0, 0.0]
    plan.merge([0.04, 0.085], [10.1 + 1e-12, 10.4])  # a newer chunk from its first stamp on
    assert plan.at([10.0, 10.1, 10.2, 10.35, 10.45], fallback=0.05).tolist() == [
        0.085,
        0.04,
        0.04,
        0.04,
        0.085,
    ]
    # The same grid time computed another way (rounding) is that stamp, not the one before it.
    assert plan.at([10.4 - 1e-11], fallback=0.05).tolist() == [0.085]
    plan.reset()
    assert plan.at([10.2], fallback=0.07).tolist() == [0.07]
