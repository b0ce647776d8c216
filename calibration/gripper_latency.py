"""Gripper latency: the same method as the robot's action latency, on the width instead of a pose axis.

The gripper holds ``center_width_m``, then follows a chirp of the width (``chirp_f0_hz`` ->
``chirp_f1_hz``, amplitude shrinking so that the finger speed stays below ``max_speed_m_s``, well
under the fingers' own speed so that they follow the target), sent as scheduled widths in batches
through :meth:`robot.env.Env.exec_widths` without latency compensation, exactly like a policy's
width column, by the arm's excitation loop (:func:`calibration.robot_latency.stream_schedule`). The gripper process logs, per tick, the width it sent (``target_width_m`` at
``tick_time``) and the measured opening (``width_m`` at ``capture_time``); the robot-latency fit
(:func:`calibration.robot_latency.fit_action_latency`: dead time + first- and second-order lags, the
model chosen by BIC, refused when the dead time is ambiguous) runs on them unchanged. As for the arm,
the ramp lag (dead time + the sum of the time constants: the delay with which the fingers follow a
smooth width trajectory) is the gripper latency written to the calibration file
(``gripper.action_latency``, with the model, dead time and step lags beside it); deployment sends
widths that much earlier.

Timing: ~1 s to open to the centre, ``duration_s`` of chirp, ``max_delay_s`` of tail.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from calibration.result import CalibrationError, progress
from calibration.robot_latency import (
    ActionFit,
    _plot_action,
    action_fit_summary,
    action_latency_value,
    chirp_offsets,
    fit_action_latency,
    stream_schedule,
)
from robot.calibration_data import ActionLatencyValue
from robot.config import StrictModel
from robot.timing import now


class GripperLatencyProcedure(StrictModel):
    """``rig calibrate gripper-latency`` (configs/calibration/procedures/gripper_latency.yaml)."""

    center_width_m: float = Field(0.05, gt=0)
    duration_s: float = Field(4.0, gt=0)
    chirp_f0_hz: float = Field(0.5, gt=0)
    chirp_f1_hz: float = Field(2.0, gt=0)
    amplitude_m: float = Field(0.01, gt=0)
    max_speed_m_s: float = Field(0.04, gt=0)
    """Peak width speed of the chirp: keep it well below the fingers' speed (their ramp then follows
    the target like a short lag; faster, the speed limit shapes the response, not the latency)."""
    waypoint_dt_s: float = Field(0.02, gt=0)
    schedule_ahead_s: float = Field(0.25, gt=0)
    max_delay_s: float = Field(0.4, gt=0)
    max_residual_m: float = Field(0.0005, gt=0)

    @model_validator(mode="after")
    def _check(self) -> GripperLatencyProcedure:
        if self.chirp_f1_hz <= self.chirp_f0_hz:
            raise ValueError("chirp_f1_hz must be above chirp_f0_hz")
        return self

    def amplitude_at(self, f_hz: float) -> float:
        return min(self.amplitude_m, self.max_speed_m_s / (2 * math.pi * f_hz))


@dataclass
class GripperLatencyResult:
    fit: ActionFit
    proc: GripperLatencyProcedure
    plot_path: Path | None

    def latency_value(self) -> ActionLatencyValue:
        p = self.proc
        return action_latency_value(
            self.fit, f"width chirp {p.chirp_f0_hz:g}-{p.chirp_f1_hz:g} Hz through the scheduled width path"
        )

    def summary(self) -> dict:
        return action_fit_summary(self.fit, "gripper_latency_ms", "rms_mm")


def run_width_excitation(env, proc: GripperLatencyProcedure) -> dict:
    """Send ``center + chirp(t - t_start)`` widths in batches through ``env.exec_widths``; returns the
    gripper's state records shaped like the arm's (``tick_time``, ``target_tcp_pose``, ``capture_time``,
    ``actual_tcp_pose`` with the width in column 0) for the robot-latency fit."""

    def send(times: np.ndarray, t_rel: np.ndarray) -> None:
        env.exec_widths(proc.center_width_m + chirp_offsets(proc, t_rel), times, compensate_latency=False)

    g = stream_schedule(env, env.gripper.state_ring, send, proc.duration_s, proc)
    sent = g["target_width_m"].copy()
    sent[~np.isfinite(sent)] = proc.center_width_m
    n = len(sent)
    target, actual = np.zeros((n, 6)), np.zeros((n, 6))
    target[:, 0], actual[:, 0] = sent, g["width_m"]
    return {
        "tick_time": g["tick_time"],
        "target_tcp_pose": target,
        "capture_time": g["capture_time"],
        "actual_tcp_pose": actual,
        "t_start": g["t_start"],
        "t_end": g["t_end"],
    }


def measure(rig, calibration, proc: GripperLatencyProcedure, plots: Path) -> GripperLatencyResult:
    from robot.env import Env

    if not rig.gripper.enabled:
        raise CalibrationError(f"rig {rig.name!r} has no gripper (gripper.backend: none)")
    lo = proc.center_width_m - proc.amplitude_m
    hi = proc.center_width_m + proc.amplitude_m
    if lo < 0.002 or hi > rig.gripper.max_width_m - 0.002:
        raise CalibrationError(
            f"the width chirp {lo * 1e3:.0f}..{hi * 1e3:.0f} mm leaves the stroke 0..{rig.gripper.max_width_m * 1e3:.0f} "
            "mm: change -p center_width_m / amplitude_m"
        )
    progress("gripper-latency: starting the rig (keep the fingers free)")
    with Env(rig, spacemouse=False, calibration=calibration) as env:
        env.gripper.set_width(proc.center_width_m)
        deadline = now() + 5.0
        while (
            abs(env.gripper.get_state()["width_m"] - proc.center_width_m) > 5e-4
            or env.gripper.get_state()["moving"]
        ):
            env.check()
            env.heartbeat()
            if now() > deadline:
                raise CalibrationError("the gripper did not reach the chirp's centre width within 5 s")
            time.sleep(0.02)
        progress(
            f"gripper-latency: width chirp {proc.chirp_f0_hz:g}->{proc.chirp_f1_hz:g} Hz around "
            f"{proc.center_width_m * 1e3:g} mm for {proc.duration_s:g} s"
        )
        recs = run_width_excitation(env, proc)
    fit = fit_action_latency(recs, 0, proc)
    r = fit.response
    progress(
        f"gripper-latency: {r.ramp_lag_s * 1e3:.2f} ms ({r.model}: dead time {r.dead_time_s * 1e3:.2f} ms + "
        f"lags {', '.join(f'{v * 1e3:.2f}' for v in r.time_constants_s)} ms), RMS {fit.rms_m * 1e6:.1f} um"
    )
    path = _plot_action(fit, plots / "gripper_latency.png")  # the robot-latency plot: sent vs measured (mm)
    progress(f"gripper-latency: plot {path}")
    return GripperLatencyResult(fit, proc, path)
