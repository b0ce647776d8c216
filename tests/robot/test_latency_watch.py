"""The online latency watch (robot/latency_watch.py) on the simulated UR5 model and synthetic camera
counters: estimates within a tick, a warning once the arm's delay or a camera's transport latency
drifts, none while they stay put."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot.arm.response import ArmResponse
from robot.latency_watch import LatencyWatch
from robot.sim.ur5_model import SimUR5, UR5ModelParams

START = np.array([0.45, 0.0, 0.1, math.pi, 0.0, 0.0])
PERIOD_S = 0.008


def _target(t: float) -> np.ndarray:
    """Teleop-like motion: a few cm in x-y at up to ~0.1 m/s, never a long pause."""
    p = START.copy()
    p[0] += 0.03 * math.sin(2 * math.pi * 0.31 * t) + 0.01 * math.sin(2 * math.pi * 0.9 * t)
    p[1] += 0.04 * math.sin(2 * math.pi * 0.23 * t + 1.0)
    return p


def _run(
    watch: LatencyWatch,
    seconds: float,
    delay_change: tuple[float, float] | None = None,
    camera_latency=lambda t: 0.03,
) -> list[float]:
    """Drive the sim arm like the arm controller does and feed the watch every 0.1 s."""
    arm = SimUR5(UR5ModelParams(action_delay_s=0.03, tracking_time_constant_s=0.02), _target(0.0))
    batch = {k: [] for k in ("tick_time", "target_tcp_pose", "capture_time", "actual_tcp_pose")}
    frames, lat_sum = 0, 0.0
    for i in range(1, int(seconds / PERIOD_S)):
        t = i * PERIOD_S
        if delay_change is not None and t >= delay_change[0]:
            arm.set_action_delay(delay_change[1])
            delay_change = None
        arm.step(t)
        target = _target(t)
        arm.command_pose(target, t)
        for k, v in zip(batch, (t, target, t, arm.tcp_pose), strict=True):
            batch[k].append(v)
        if i % 12 == 0:  # ~0.1 s: the main loop's poll
            watch.add_arm_records({k: np.asarray(v) for k, v in batch.items()})
            batch = {k: [] for k in batch}
            frames += 3
            lat_sum += 3 * camera_latency(t)
            watch.add_camera_stats(t, {"scene": {"frames": frames, "latency_mean_s": lat_sum / frames}})
        if i % 62 == 0:  # ~0.5 s
            watch.update(t)
    return [d for _, d in watch.action_estimates]


def test_dead_time_estimates_stay_within_a_tick_and_nothing_warns_without_drift():
    response = ArmResponse("first_order", 0.03, (0.02,))
    watch = LatencyWatch(None, PERIOD_S, response, camera_reference_s={"scene": 0.03})
    estimates = _run(watch, 12.0)
    assert len(estimates) >= 15
    assert np.all(np.abs(np.asarray(estimates) - 0.03) < PERIOD_S), estimates
    assert watch.warned == {}
    summary = watch.episode_summary()
    assert summary["action_dead_time"]["reference"] == "calibration"
    assert summary["action_dead_time"]["median_ms"] == pytest.approx(30.0, abs=PERIOD_S * 1e3)
    assert summary["camera_transport"]["scene"]["median_ms"] == pytest.approx(30.0, abs=0.5)
    assert summary["warnings"] == []


def test_a_delay_change_mid_run_warns_once_with_the_new_dead_time(caplog):
    response = ArmResponse("first_order", 0.03, (0.02,))
    watch = LatencyWatch(None, PERIOD_S, response)
    watch.begin_episode()
    with caplog.at_level("WARNING", logger="robot.latency_watch"):
        estimates = _run(watch, 16.0, delay_change=(8.0, 0.06))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "action dead time is now" in warnings[0], warnings
    after = [d for t, d in watch.action_estimates if t > 12.0]
    assert after and np.all(np.abs(np.asarray(after) - 0.06) < PERIOD_S), estimates
    assert watch.episode_summary()["action_dead_time"]["max_ms"] > 60.0 - 8.0


def test_without_calibration_the_first_window_is_the_reference():
    watch = LatencyWatch(None, PERIOD_S, None)
    _run(watch, 10.0)
    assert watch.action_reference_source == "first window"
    # A pure delay model reads the delay the arm follows with: dead time + its 20 ms lag.
    assert watch.action_reference_s == pytest.approx(0.05, abs=PERIOD_S)
    assert watch.warned == {}
    watch = LatencyWatch(None, PERIOD_S, None)
    _run(watch, 16.0, delay_change=(8.0, 0.07))
    assert "action" in watch.warned


def test_a_camera_transport_drift_of_more_than_5_ms_warns():
    watch = LatencyWatch(None, PERIOD_S, None)
    _run(watch, 10.0, camera_latency=lambda t: 0.03 + (0.004 if t > 5 else 0.0))
    assert watch.warned == {}  # 4 ms: within the threshold
    watch = LatencyWatch(None, PERIOD_S, None, camera_reference_s={"scene": 0.03})
    _run(watch, 10.0, camera_latency=lambda t: 0.03 + (0.008 if t > 5 else 0.0))
    assert list(watch.warned) == ["camera scene"]
    assert "camera scene frames now reach the host" in watch.warned["camera scene"]
    assert watch.current()["camera_transport_s"]["scene"] == pytest.approx(0.038, abs=1e-4)


def test_a_still_arm_gives_no_estimate():
    watch = LatencyWatch(None, PERIOD_S, None)
    watch.add_arm_records(
        {
            "tick_time": np.arange(0, 4, PERIOD_S),
            "capture_time": np.arange(0, 4, PERIOD_S),
            "target_tcp_pose": np.tile(START, (500, 1)),
            "actual_tcp_pose": np.tile(START, (500, 1)),
        }
    )
    watch.update(4.0)
    assert watch.action_estimates == [] and watch.current()["action_dead_time_s"] is None
