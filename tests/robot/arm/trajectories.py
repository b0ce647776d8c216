"""Trajectories that the arm-controller tests schedule on the simulated arm and on the fake UR alike."""

from __future__ import annotations

import time

import numpy as np

from robot.arm.controller import ArmController
from robot.arm.interpolator import pose_distance

HOLD_S = 0.3  # each corner of the square is held this long


def schedule_square_then_too_fast(
    arm: ArmController, p0: np.ndarray, max_linear_speed_m_s: float
) -> tuple[list[tuple[float, np.ndarray]], np.ndarray, float]:
    """Schedule, from 0.2 s from now, a 5 cm square in x/y at 0.1 m/s from ``p0`` with a 0.3 s hold
    at each corner, then one 0.15 m segment asking for 0.5 m/s.

    Returns ``(waypoints, fast_goal, expected_fast_arrival)``: the square's waypoints as
    ``(target_time, pose)`` (host monotonic s; arrival, then end of hold, per corner), the fast
    segment's goal, and when the arm should reach it at ``max_linear_speed_m_s``.
    """
    t0 = time.monotonic() + 0.2
    # A square in x/y at 0.1 m/s with holds, then one segment that asks for 2x the speed limit.
    legs = [(0.05, 0.0), (0.05, 0.05), (0.0, 0.05), (0.0, 0.0)]
    waypoints = []
    t = t0
    for dx, dy in legs:
        t += 0.5
        waypoints.append((t, p0 + [dx, dy, 0, 0, 0, 0]))
        t += HOLD_S
        waypoints.append((t, p0 + [dx, dy, 0, 0, 0, 0]))
    fast_goal = p0 + [0.15, 0.0, 0, 0, 0, 0]
    fast_time = t + 0.3  # 0.5 m/s requested
    for wt, wp in waypoints:
        arm.schedule_waypoint(wp, wt)
    arm.schedule_waypoint(fast_goal, fast_time)
    return waypoints, fast_goal, t + 0.15 / max_linear_speed_m_s


def skipped_periods(tick_time: np.ndarray, period_s: float) -> int:
    """How many control periods the controller's loop skipped between these ticks.

    A loop that wakes a whole period late skips the missed grid points (robot.timing.RateLoop); one
    tick flagged ``tick_overrun`` may stand for many skipped periods, so late ticks are counted here
    from the ticks' times, not from the flag.
    """
    gaps = np.round(np.diff(np.asarray(tick_time, dtype=np.float64)) / period_s) - 1
    return int(np.maximum(gaps, 0).sum())


def _first_judged_tick(tick_time: np.ndarray, waypoint_time: float, period_s: float) -> int:
    """One tick after a corner's time: the earliest the commanded target can be judged at it."""
    return int(np.searchsorted(tick_time, waypoint_time + period_s))


def commanded_arrival_index(tick_time: np.ndarray, waypoint_time: float, period_s: float) -> int:
    """The tick by which the commanded target must be at a corner of the square, due at ``waypoint_time``.

    One tick after its time, plus one tick per period the loop skipped on the 0.5 s leg into it and
    until then: the per-tick step limit lets a late tick move the target by one step only, so each
    skipped period leaves it behind the 0.1 m/s path by 0.1 m/s x one period at most, and at the held
    corner it catches up 2.5 times that per tick (0.25 m/s limit).
    """
    tt = np.asarray(tick_time, dtype=np.float64)
    first = _first_judged_tick(tt, waypoint_time, period_s)
    leg_start = int(np.searchsorted(tt, waypoint_time - 0.5))
    i = first
    while True:
        j = min(first + skipped_periods(tt[leg_start : i + 1], period_s), len(tt) - 1)
        if j <= i:
            return i
        i = j


def corner_arrival(
    target_poses: np.ndarray, tick_time: np.ndarray, waypoint_time: float, pose: np.ndarray, period_s: float
) -> int | None:
    """The first tick at which the commanded target is at a corner of the square (to 1 um), looked
    for from one tick after the corner's time up to :func:`commanded_arrival_index`.

    None when the corner is not to be judged: skipped periods pushed that bound past the end of the
    corner's hold and the target never got there (a stall that eats the hold lets the path turn
    before the speed-limited target catches up: seen at load 13, still 8.5 mm off 0.39 s later).
    Raises AssertionError when the target missed a corner it had time to reach.
    """
    tt = np.asarray(tick_time, dtype=np.float64)
    first = _first_judged_tick(tt, waypoint_time, period_s)
    last = commanded_arrival_index(tt, waypoint_time, period_s)
    for i in range(first, last + 1):
        if pose_distance(target_poses[i], pose)[0] < 1e-6:
            return i
    if tt[last] > waypoint_time + HOLD_S:
        return None
    off = pose_distance(target_poses[last], pose)[0]
    raise AssertionError(f"commanded target {off * 1e3:.2f} mm from the corner due at {waypoint_time:.3f}")
