"""Timing metrics of a deployment run, from the arm's own state log (tests and chunking_bench).

All inputs are what :class:`deploy.runner.DeployRunner` keeps with ``keep_logs=True``: the arm state
records seen during the episode (``arm_history()``: ``tick_time``, ``capture_time``,
``target_tcp_pose`` (the pose commanded at that tick), ``actual_tcp_pose``), the waypoints sent
(``sent_log``) and the chunk records (``chunk_log``). Times are host monotonic seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robot.arm.backend import StatusFlag
from robot.arm.interpolator import PoseTrajectoryInterpolator

IDLE_STEP_M = 1e-6
"""A control tick whose commanded position moves less than this is an idle tick."""


def _dense(times: np.ndarray, xyz: np.ndarray, t0: float, t1: float, step_s: float = 0.0005):
    grid = np.arange(t0, t1, step_s)
    pts = np.stack([np.interp(grid, times, xyz[:, i]) for i in range(xyz.shape[1])], axis=1)
    return grid, pts


def closest_approach_time(
    times: np.ndarray, xy: np.ndarray, target_xy: np.ndarray, around: float, window_s: float = 0.12
) -> tuple[float, float]:
    """When (s) and how close (m) the sampled x-y path ``(times, xy)`` passes ``target_xy`` within
    ``around +- window_s`` (the path is linearly interpolated between samples)."""
    grid, pts = _dense(times, xy, around - window_s, around + window_s)
    d = np.linalg.norm(pts - target_xy[None], axis=1)
    i = int(np.argmin(d))
    return float(grid[i]), float(d[i])


def arrival_errors(
    sent: list[dict], arm: dict[str, np.ndarray], action_latency_s: float, t_from: float, t_to: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every waypoint sent with target time in ``[t_from, t_to]``: the time error (s) of the
    commanded path passing its x-y at ``T - action_latency_s`` and of the actual path passing it at
    ``T``, plus the closest actual distance (m). Returns ``(cmd_err_s, actual_err_s, actual_dist_m)``."""
    cmd_err, act_err, act_dist = [], [], []
    ticks = arm["tick_time"]
    period = float(np.median(np.diff(ticks)))
    for w in sent:
        T = float(w["target_time"])
        if not t_from <= T <= t_to or w.get("dropped", False):
            continue
        # Skip waypoints around which the controller missed ticks (a starved process on a loaded
        # machine): the sampled path is not dense enough there to time a passage.
        if not (
            _dense_around(ticks, T - action_latency_s, period) and _dense_around(ticks, T + 0.02, period)
        ):
            continue
        # ... or where the controller's per-tick step limiter was catching up after such a stall.
        recent = (ticks >= T - action_latency_s - 0.1) & (ticks <= T - action_latency_s + 0.01)
        if np.any(arm["status_flags"][recent] & int(StatusFlag.SPEED_LIMITED)):
            continue
        p = np.asarray(w["pose"])[:2]
        tc, _ = closest_approach_time(
            arm["tick_time"], arm["target_tcp_pose"][:, :2], p, T - action_latency_s
        )
        ta, da = closest_approach_time(arm["capture_time"], arm["actual_tcp_pose"][:, :2], p, T)
        cmd_err.append(tc - (T - action_latency_s))
        act_err.append(ta - T)
        act_dist.append(da)
    return np.asarray(cmd_err), np.asarray(act_err), np.asarray(act_dist)


def _dense_around(ticks: np.ndarray, t: float, period: float, half_width_s: float = 0.025) -> bool:
    near = ticks[(ticks >= t - half_width_s) & (ticks <= t + half_width_s)]
    return len(near) >= 2 and float(np.diff(near).max()) <= 2.5 * period


def idle_ticks(arm: dict[str, np.ndarray], t_from: float, t_to: float) -> tuple[int, float]:
    """Ticks in ``[t_from, t_to]`` whose commanded position did not move, and their total time (s)."""
    t = arm["tick_time"]
    step = np.linalg.norm(np.diff(arm["target_tcp_pose"][:, :3], axis=0), axis=1)
    sel = (t[1:] >= t_from) & (t[1:] <= t_to)
    idle = (step < IDLE_STEP_M) & sel
    dt = np.diff(t)
    return int(np.count_nonzero(idle)), float(dt[idle].sum())


def waiting_windows(
    chunks: list[dict], sent: list[dict], commit_window_s: float, slack_s: float
) -> list[tuple[float, float]]:
    """Spans (host s) in which the runner could not keep the arm supplied, whatever its scheduling:
    from the request to the arrival (+ ``slack_s``) of a chunk that came later than planned
    (``late``), was conditioned on less than was committed (``short``), had rows already infeasible
    on arrival (``dropped``: a stale observation or a slow inference) or none feasible
    (``fallback``); and the runner's own stalls: a gap between sends longer than
    ``commit_window_s``, the committed actions the arm is given (``slack_s`` after the next send).
    Outside them a loaded machine is no excuse for an idle arm: the plan requests each chunk its
    expected latency plus the commit window early."""
    out = [
        (float(c["t_request"]), float(c["t_done"]) + slack_s)
        for c in chunks
        if c["late"] or c["short"] or c["dropped"] or c["fallback"]
    ]
    sends = np.unique(np.asarray([w["send_time"] for w in sent], dtype=np.float64))
    for a, b in zip(sends[:-1], sends[1:], strict=True):
        if b - a > commit_window_s:
            out.append((float(a), float(b) + slack_s))
    return out


def in_windows(times: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    """Whether each time lies in one of ``windows`` (closed spans)."""
    t = np.asarray(times, dtype=np.float64)
    hit = np.zeros(t.shape, dtype=bool)
    for a, b in windows:
        hit |= (t >= a) & (t <= b)
    return hit


def tracking_error(
    arm: dict[str, np.ndarray], reference: Callable[[np.ndarray], np.ndarray], t_from: float, t_to: float
) -> tuple[float, float]:
    """RMS and max (m) of the actual TCP position minus ``reference(capture_time)`` over the window."""
    t = arm["capture_time"]
    sel = (t >= t_from) & (t <= t_to)
    err = np.linalg.norm(arm["actual_tcp_pose"][sel, :3] - reference(t[sel])[:, :3], axis=1)
    if len(err) == 0:
        return float("nan"), float("nan")
    return float(np.sqrt(np.mean(err**2))), float(err.max())


def executed_path(sent: list[dict]) -> PoseTrajectoryInterpolator:
    """The trajectory the sent waypoints describe (target time domain), later waypoints winning."""
    rows = sorted(sent, key=lambda w: (w["target_time"], w["send_time"]))
    times, poses = [], []
    for w in rows:
        if times and w["target_time"] <= times[-1] + 1e-9:
            times[-1], poses[-1] = w["target_time"], w["pose"]
            continue
        times.append(w["target_time"])
        poses.append(w["pose"])
    return PoseTrajectoryInterpolator(times, np.asarray(poses))
