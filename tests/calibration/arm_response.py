"""The robot-latency chirp run against simulated arms without processes: the records the arm
controller would log (sent target at each tick, measured pose), from robot/sim's UR5 directly or from
the fake UR controller's sim arm fed through its control script's servoL registers."""

from __future__ import annotations

import math

import numpy as np

from calibration.procedures import AXES, RobotLatencyProcedure, load_procedure
from calibration.robot_latency import chirp_offsets
from robot.sim.ur5_model import SimUR5, UR5ModelParams

START = np.array([0.45, 0.0, 0.1, math.pi, 0.0, 0.0])  # the shipped rig's home + centre offset
Q_FAKE = np.array([2.8966, -1.6587, 1.9171, -1.8292, -1.5708, -1.8158])  # configs/fake_ur.yaml


def shipped_procedure(*overrides: str) -> RobotLatencyProcedure:
    return load_procedure(RobotLatencyProcedure, "robot_latency", None, list(overrides))


def _targets(
    proc: RobotLatencyProcedure, center: np.ndarray, ticks: np.ndarray, t_start: float
) -> np.ndarray:
    """What the arm controller sends at each tick: the chirp's waypoints (every waypoint_dt_s)
    interpolated linearly, as its trajectory interpolator does."""
    wp_t = np.arange(0.0, proc.duration_s + proc.waypoint_dt_s, proc.waypoint_dt_s)
    wp = chirp_offsets(proc, wp_t)
    out = np.repeat(center[None], len(ticks), axis=0)
    out[:, AXES[proc.axis]] += np.interp(ticks - t_start, wp_t, wp, left=0.0, right=0.0)
    return out


def chirp_records(
    proc: RobotLatencyProcedure,
    rate_hz: float,
    params: UR5ModelParams,
    *,
    fake_ur_servo: tuple[float, float] | None = None,
    noise_m: float = 0.0,
    seed: int = 0,
) -> dict:
    """The records ``fit_action_latency`` reads, for the chirp of ``proc`` sent at ``rate_hz`` to the
    sim UR5 with ``params``. ``fake_ur_servo=(lookahead_time_s, gain)``: through the fake UR's
    control script as servoL. ``noise_m``: Gaussian measurement noise (m)."""
    period = 1.0 / rate_hz
    t_start = 0.3
    ticks = np.arange(period, t_start + proc.duration_s + proc.max_delay_s + 0.3, period)
    if fake_ur_servo is None:
        arm = SimUR5(params, START, t0=0.0)
        targets = _targets(proc, START, ticks, t_start)
        measured = []
        for t, target in zip(ticks, targets, strict=True):
            arm.step(t)  # the controller reads the state, then sends the tick's target
            measured.append(arm.tcp_pose)
            arm.command_pose(target, t)
        measured = np.asarray(measured)
    else:
        from robot.fake_ur.sim_adapter import SimArmAdapter
        from tests.robot.fake_ur.helpers import servo_through_script

        arm = SimArmAdapter(Q_FAKE, params)
        targets = _targets(proc, arm.actual_tcp_pose, ticks, t_start)
        ticks, measured = servo_through_script(arm, targets, period, *fake_ur_servo)
    measured = measured + np.random.default_rng(seed).normal(0.0, noise_m, measured.shape) * (noise_m > 0)
    return {
        "tick_time": ticks,
        "capture_time": ticks.copy(),
        "target_tcp_pose": targets,
        "actual_tcp_pose": measured,
        "t_start": t_start,
        "t_end": t_start + proc.duration_s,
    }
