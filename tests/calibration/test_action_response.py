"""The robot-latency fit (calibration/robot_latency.py) on simulated arms of known response: the dead
time comes back within one control tick whatever the response order, the model and the lags to 50 %
and 90 % of a step come back, ambiguous data is refused, negative observation latencies are not
written."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.result import CalibrationError
from calibration.robot_latency import clamp_obs_latency, fit_action_latency
from robot.arm.response import ArmResponse
from robot.sim.ur5_model import UR5ModelParams, servo_smoothing_time_constant_s
from tests.calibration.arm_response import chirp_records, shipped_procedure

AXIS_Y = 1


def _draw_cases(rng: np.random.Generator, n_sim: int, n_fake: int) -> list[dict]:
    """(delay, response) pairs: sim arms of first and second order, and the fake UR's sim arm under
    servoL smoothing with a lookahead/gain pair from the UR's ranges."""
    cases = []
    for i in range(n_sim):
        cases.append(
            {
                "params": {
                    "action_delay_s": float(rng.uniform(0.005, 0.12)),
                    "tracking_time_constant_s": float(rng.uniform(0.005, 0.05)),
                    "tracking_order": 1 + i % 2,
                },
                "servo": None,
            }
        )
    for _ in range(n_fake):
        cases.append(
            {
                "params": {
                    "action_delay_s": float(rng.uniform(0.005, 0.06)),
                    "tracking_time_constant_s": float(rng.uniform(0.005, 0.03)),
                    "tracking_order": 1,
                },
                "servo": (float(rng.uniform(0.03, 0.1)), float(rng.choice([300.0, 600.0, 1000.0, 2000.0]))),
            }
        )
    return cases


def _true_response(case: dict) -> ArmResponse:
    p = case["params"]
    tau = p["tracking_time_constant_s"]
    if case["servo"] is not None:
        return ArmResponse(
            "second_order", p["action_delay_s"], (servo_smoothing_time_constant_s(*case["servo"]), tau)
        )
    if p["tracking_order"] == 2:  # critically damped: two equal lags
        return ArmResponse("second_order", p["action_delay_s"], (tau, tau))
    return ArmResponse("first_order", p["action_delay_s"], (tau,))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rate_hz", [125.0, 500.0])
def test_dead_time_within_one_tick_for_any_response_order(rate_hz):
    proc = shipped_procedure()
    period_s = 1.0 / rate_hz
    rng = np.random.default_rng(20 + int(rate_hz))
    biased = 0
    for case in _draw_cases(rng, n_sim=4, n_fake=2):
        truth = _true_response(case)
        recs = chirp_records(proc, rate_hz, UR5ModelParams(**case["params"]), fake_ur_servo=case["servo"])
        fit = fit_action_latency(recs, AXIS_Y, proc)
        got = fit.response
        label = f"{case} -> {got}"
        assert abs(got.dead_time_s - truth.dead_time_s) < period_s, label
        if truth.model == "second_order" and min(truth.time_constants_s) >= 0.005:
            assert got.model == "second_order", label
        elif truth.model == "first_order":
            # The sim arm's acceleration limit rounds off its first-order response to each tick's
            # step a little: a second-order fit may win with a short second lag.
            assert got.model == "first_order" or min(got.time_constants_s) < 0.3 * max(
                got.time_constants_s
            ), label
        assert abs(got.lag_50_s - truth.lag_50_s) < period_s, label
        assert abs(got.lag_90_s - truth.lag_90_s) < 2 * period_s, label
        assert abs(got.ramp_lag_s - truth.ramp_lag_s) < period_s, label
        first = next(f for f in fit.candidates if f.response.model == "first_order")
        biased += abs(first.response.dead_time_s - truth.dead_time_s) > period_s
    # What the model choice is for: a first-order fit alone puts the dead time of a second-order arm
    # more than a tick off (the issue's +8.9 ms at 125 Hz).
    assert biased >= 2


@pytest.mark.timeout(60)
def test_second_order_arm_of_the_issue_is_not_read_as_a_longer_dead_time():
    # 38 ms delay, 20 ms second-order tracking: a dead time + first-order fit reported 46.9 ms.
    proc = shipped_procedure()
    params = UR5ModelParams(action_delay_s=0.038, tracking_time_constant_s=0.02, tracking_order=2)
    fit = fit_action_latency(chirp_records(proc, 125.0, params), AXIS_Y, proc)
    assert fit.response.model == "second_order"
    assert fit.dead_time_s == pytest.approx(0.038, abs=0.002)
    first = next(f for f in fit.candidates if f.response.model == "first_order")
    assert first.response.dead_time_s > 0.038 + 0.008


@pytest.mark.timeout(60)
def test_noisy_data_where_the_models_disagree_is_refused():
    proc = shipped_procedure()
    params = UR5ModelParams(action_delay_s=0.03, tracking_time_constant_s=0.03, tracking_order=2)
    recs = chirp_records(proc, 500.0, params, noise_m=2e-4, seed=3)
    with pytest.raises(CalibrationError, match="ambiguous") as err:
        fit_action_latency(recs, AXIS_Y, proc)
    assert "first_order" in str(err.value) and "second_order" in str(err.value)


def test_negative_observation_latency_is_clamped_within_a_tick_and_refused_beyond():
    assert clamp_obs_latency(0.012, 0.008, "scene") == (0.012, None)
    value, warning = clamp_obs_latency(-0.0049, 0.008, "scene")
    assert value == 0.0 and "-4.90 ms" in warning
    with pytest.raises(CalibrationError, match="negative observation latency"):
        clamp_obs_latency(-0.02, 0.008, "scene")
    assert math.isfinite(clamp_obs_latency(0.0, 0.002, "scene")[0])
