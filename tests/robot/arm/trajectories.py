"""Trajectories that the arm-controller tests schedule on the simulated arm and on the fake UR alike."""

from __future__ import annotations

import time

import numpy as np

from robot.arm.controller import ArmController


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
        t += 0.3
        waypoints.append((t, p0 + [dx, dy, 0, 0, 0, 0]))
    fast_goal = p0 + [0.15, 0.0, 0, 0, 0, 0]
    fast_time = t + 0.3  # 0.5 m/s requested
    for wt, wp in waypoints:
        arm.schedule_waypoint(wp, wt)
    arm.schedule_waypoint(fast_goal, fast_time)
    return waypoints, fast_goal, t + 0.15 / max_linear_speed_m_s
