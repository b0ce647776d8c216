"""Robot latency: action latency from a chirp through the waypoint path, observation latency from a
camera watching a board on the tool.

**Action latency.** The arm holds a centre pose, then follows a chirp along one axis (frequency
``chirp_f0_hz`` -> ``chirp_f1_hz``, amplitude shrinking so that the speed stays below
``max_speed_m_s``), sent as waypoints in batches through :meth:`robot.env.Env.exec_actions` (without
latency compensation), exactly like a policy's action chunks. The arm controller logs, per tick,
the target it sent (``target_tcp_pose`` at ``tick_time``) and the measured pose (``actual_tcp_pose``
at ``capture_time``). The response is fitted with two models (robot/arm/response.py)

    measured(t) = lag( sent target held per tick )(t - d),   lag = one first-order lag (d, tau)
                                                             or two in cascade (d, tau1, tau2)

each by least squares (a coarse grid over the time constants with every dead time on a 1 ms grid,
then Gauss-Newton), d searched up to the lag of the velocity cross-correlation peak. A first-order
fit to a higher-order arm (a UR under servoL smoothing) counts the slow start of the response as
dead time, so the model is chosen by BIC (residual with a penalty per parameter), and the result is
refused when another model fits about as well (BIC within ``AMBIGUOUS_BIC``) but puts the dead time
more than one control tick elsewhere: the data cannot tell the dead time then. Samples right
after a controller stall (a gap of several ticks: the target jumps, and the arm's acceleration limit
rather than the linear model shapes the response) are left out. Reported: the model, the dead time d
(a target sent at t starts moving the arm at t + d), the lags to 50 % and 90 % of a step, and the
ramp lag (d + sum of the time constants), which is the action latency written to the file
(``value_s``: what deployment shifts actions by; README, "Latency").

**Observation latency.** With a board on the tool in view of a world-mounted camera, the arm moves in
a slow, large sinusoid; the board's image position (mean of its ChArUco corners) at each frame's
capture time is matched against the robot's reported TCP position on the *receive* time axis shifted
by L; the L with the smallest residual of an affine map position -> pixels is the age of a robot
state when the host receives it. Camera capture times are the frames' ``capture_time`` (device
stamps) or ``receive_time`` minus the calibrated camera latency (``obs.camera_time_source: receive``),
so calibrate the camera latency first. A negative L (the state seen before it happened) within one
control tick is written as 0 with a warning; beyond that it is an error. (On the sim rig the cameras render the world as of the newest
arm tick before the exposure: expect a few ms of error there.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from calibration.procedures import AXES, RobotLatencyProcedure
from calibration.result import CalibrationError, progress
from robot.arm.response import MODEL_ORDERS, ArmResponse, fit_dead_time
from robot.calibration_data import ActionLatencyValue, LatencyValue
from robot.timing import now


# ---------------------------------------------------------------------------------------- signals
def chirp_offsets(proc: RobotLatencyProcedure, t_rel: np.ndarray) -> np.ndarray:
    """Displacement (m) along the axis at ``t_rel`` seconds into the chirp (0 outside), with smooth
    0.3 s ramps at both ends so the arm starts and stops without a jerk."""
    T = proc.duration_s
    t = np.clip(t_rel, 0.0, T)
    f = proc.chirp_f0_hz + (proc.chirp_f1_hz - proc.chirp_f0_hz) * t / T
    phase = 2 * np.pi * (proc.chirp_f0_hz * t + (proc.chirp_f1_hz - proc.chirp_f0_hz) * t**2 / (2 * T))
    amp = np.minimum(proc.amplitude_m, proc.max_speed_m_s / (2 * np.pi * f))
    ramp = np.clip(np.minimum(t, T - t) / 0.3, 0.0, 1.0)
    out = amp * np.sin(phase) * np.sin(0.5 * np.pi * ramp) ** 2
    return np.where((t_rel >= 0) & (t_rel <= T), out, 0.0)


def sine_offsets(amplitude_m: float, frequency_hz: float, duration_s: float, t_rel: np.ndarray) -> np.ndarray:
    t = np.clip(t_rel, 0.0, duration_s)
    ramp = np.clip(np.minimum(t, duration_s - t) / 0.5, 0.0, 1.0)
    out = amplitude_m * np.sin(2 * np.pi * frequency_hz * t) * np.sin(0.5 * np.pi * ramp) ** 2
    return np.where((t_rel >= 0) & (t_rel <= duration_s), out, 0.0)


def stream_schedule(
    env, ring, send: Callable[[np.ndarray, np.ndarray], None], duration_s: float, proc, on_poll=None
) -> dict:
    """The excitation loop both latency procedures share: from ``t_start`` (0.3 s from now) to
    ``duration_s`` later, every ``waypoint_dt_s``, hand ``send(times, times - t_start)`` the stamps
    that come within ``schedule_ahead_s`` (in batches, one call per 40 ms poll: exactly how a
    policy's chunks arrive), while copying the device's state records from ``ring``; ``on_poll()``
    runs between batches (e.g. to copy camera frames). Returns the records (stacked arrays) from
    before the start to ``max_delay_s`` after the end, with ``t_start`` and ``t_end``."""
    counter = ring.count
    chunks: list[dict] = []

    def drain() -> None:
        nonlocal counter
        recs = ring.get_since(counter, skip_overwritten=True)
        if len(recs["counter"]):
            chunks.append(recs)
            counter = int(recs["counter"][-1]) + 1

    t_start = now() + 0.3
    t_end = t_start + duration_s
    next_i = 0
    n_wp = int(math.ceil(duration_s / proc.waypoint_dt_s)) + 1
    while True:
        env.check()
        env.heartbeat()  # also while only waiting for the device to finish (nothing sent then)
        horizon = now() + proc.schedule_ahead_s
        times = []
        while next_i < n_wp and t_start + next_i * proc.waypoint_dt_s <= horizon:
            times.append(t_start + next_i * proc.waypoint_dt_s)
            next_i += 1
        if times:
            times_a = np.asarray(times)
            send(times_a, times_a - t_start)
        drain()
        if on_poll is not None:
            on_poll()
        if next_i >= n_wp and now() > t_end + proc.max_delay_s + 0.2:
            break
        time.sleep(0.04)
    drain()
    out = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    out["t_start"] = t_start
    out["t_end"] = t_end
    return out


def run_excitation(
    env, center: np.ndarray, axis: int, offsets, duration_s: float, proc, on_poll=None
) -> dict:
    """Send ``center + offsets(t - t_start)`` along ``axis`` as waypoints (every ``waypoint_dt_s``,
    scheduled ``schedule_ahead_s`` ahead in batches) through ``env.exec_actions``; returns the arm's
    state records from before the start to ``max_delay_s`` after the end (:func:`stream_schedule`)."""

    def send(times: np.ndarray, t_rel: np.ndarray) -> None:
        poses = np.repeat(center[None, :], len(times), axis=0)
        poses[:, axis] += offsets(t_rel)
        env.exec_actions(poses, times, compensate_latency=False)

    return stream_schedule(env, env.arm.state_ring, send, duration_s, proc, on_poll)


# ---------------------------------------------------------------------------------------- action
def xcorr_lag(t_a: np.ndarray, a: np.ndarray, t_b: np.ndarray, b: np.ndarray, max_lag_s: float) -> float:
    """Lag (s) of signal b behind signal a from the peak of the cross-correlation of their velocities
    (1 ms grid, parabolic peak refinement)."""
    h = 0.001
    grid = np.arange(max(t_a[0], t_b[0]), min(t_a[-1], t_b[-1]), h)
    va = np.gradient(np.interp(grid, t_a, a), h)
    vb = np.gradient(np.interp(grid, t_b, b), h)
    n = int(max_lag_s / h)
    lags = np.arange(0, n + 1)
    c = np.array([np.dot(va[: len(va) - k], vb[k:]) for k in lags])
    i = int(np.argmax(c))
    if 0 < i < len(c) - 1:
        den = c[i - 1] - 2 * c[i] + c[i + 1]
        frac = 0.5 * (c[i - 1] - c[i + 1]) / den if den != 0 else 0.0
    else:
        frac = 0.0
    return (i + frac) * h


def stall_mask(t_ticks: np.ndarray, t_samples: np.ndarray, max_gap_s: float, after_s: float) -> np.ndarray:
    """Mask of samples not within ``after_s`` after a gap between ticks longer than ``max_gap_s``."""
    gaps = np.flatnonzero(np.diff(t_ticks) > max_gap_s)
    keep = np.ones(len(t_samples), bool)
    for g in gaps:
        keep &= ~((t_samples > t_ticks[g]) & (t_samples <= t_ticks[g + 1] + after_s))
    return keep


AMBIGUOUS_BIC = 10.0
"""Two models whose BIC differ by less than this explain the data about equally well (a difference of
10 is "very strong" evidence on the usual scale of Kass & Raftery)."""
_RMS_FLOOR_M = 1e-7  # below the resolution of any arm's encoders: keeps the log in BIC finite


@dataclass
class ModelFit:
    """One response model fitted to the chirp (see robot/arm/response.py)."""

    response: ArmResponse
    rms_m: float
    bic: float
    """Bayesian information criterion: n ln(mse) + k ln(n); the smallest is chosen."""


@dataclass
class ActionFit:
    response: ArmResponse
    """The chosen model (dead time and lag)."""
    candidates: list[ModelFit]
    total_lag_s: float
    """Lag of the velocity cross-correlation peak (model-free, ~ the ramp lag)."""
    rms_m: float
    n_samples: int
    period_s: float
    """The arm controller's tick (s): the resolution the dead time is judged at."""
    t: np.ndarray
    commanded: np.ndarray
    measured: np.ndarray
    model: np.ndarray

    @property
    def dead_time_s(self) -> float:
        return self.response.dead_time_s

    @property
    def tau_s(self) -> float:
        """Sum of the lag's time constants (s): its mean delay."""
        return float(sum(self.response.time_constants_s))


def _fit_model(
    name: str, t_cmd: np.ndarray, u: np.ndarray, t_fit: np.ndarray, y_fit: np.ndarray, d_max: float
) -> ModelFit:
    """Least squares of dead time + lag ``name`` to the data: a coarse grid over the time constants
    (for each, every dead time on a 1 ms grid), then Gauss-Newton from the best point."""
    taus = np.geomspace(0.001, 0.25, 15)
    grid_taus = (
        [(a,) for a in taus]
        if name == "first_order"
        else [(a, b) for i, a in enumerate(taus) for b in taus[: i + 1]]
    )
    best = (np.inf, 0.0, grid_taus[0])
    for tc in grid_taus:
        d, rms = fit_dead_time(ArmResponse(name, 0.0, tc), t_cmd, u, t_fit, y_fit, d_max)
        if rms < best[0]:
            best = (rms, d, tc)

    def residuals(p: np.ndarray) -> np.ndarray:
        r = ArmResponse(name, float(p[0]), tuple(float(v) for v in np.exp(p[1:])))
        return (r.predict(t_cmd, u, t_fit, float(y_fit[0])) - y_fit) * 1e3

    k = len(best[2])
    res = least_squares(
        residuals,
        np.array([best[1], *np.log(best[2])]),
        bounds=([0.0] + [math.log(1e-4)] * k, [d_max + 0.01] + [0.0] * k),
        x_scale=np.array([0.001] + [0.1] * k),
        diff_step=np.full(k + 1, 1e-4),
    )
    response = ArmResponse(
        name, float(res.x[0]), tuple(sorted((float(v) for v in np.exp(res.x[1:])), reverse=True))
    )
    rms = float(np.sqrt(np.mean((response.predict(t_cmd, u, t_fit, float(y_fit[0])) - y_fit) ** 2)))
    n = len(t_fit)
    bic = n * math.log(max(rms, _RMS_FLOOR_M) ** 2) + (k + 1) * math.log(n)
    return ModelFit(response, rms, bic)


def fit_action_latency(recs: dict, axis: int, proc: RobotLatencyProcedure) -> ActionFit:
    """Fit dead time + first- and second-order lags to the sent targets vs measured poses, choose the
    model by BIC and refuse when another model fits about as well but puts the dead time more than
    one control tick elsewhere (module docstring)."""
    t0, t1 = recs["t_start"] - 0.2, recs["t_end"] + proc.max_delay_s
    keep = (recs["capture_time"] >= t0) & (recs["capture_time"] <= t1)
    t_cmd = recs["tick_time"][keep]
    u = recs["target_tcp_pose"][keep, axis]
    t_meas = recs["capture_time"][keep]
    y = recs["actual_tcp_pose"][keep, axis]
    if len(t_meas) < 50:
        raise CalibrationError(
            f"only {len(t_meas)} arm states recorded during the chirp: is the arm controller running?"
        )
    cmd_span = float(np.ptp(u))
    meas_span = float(np.ptp(y))
    if cmd_span < 0.2 * proc.amplitude_at(proc.chirp_f1_hz):
        raise CalibrationError(
            f"the arm controller sent almost no motion ({cmd_span * 1e3:.2f} mm): were the waypoints "
            "dropped (clipped by the workspace, or scheduled in the past on a stalled host)?"
        )
    if meas_span < 0.3 * cmd_span:
        raise CalibrationError(
            f"the arm barely moved ({meas_span * 1e3:.2f} mm of {cmd_span * 1e3:.2f} mm commanded): is it "
            "in a protective stop, or are its speed limits far below max_speed_m_s?"
        )
    period_s = float(np.median(np.diff(t_cmd)))
    total = xcorr_lag(t_cmd, u, t_meas, y, proc.max_delay_s)
    # A controller stall makes the sent target jump; the arm's response to a jump is limited by its
    # acceleration (not the linear model), so samples right after a long stall are left out.
    use = stall_mask(t_cmd, t_meas, 3.0 * period_s, total + 0.08)
    t_fit, y_fit = t_meas[use], y[use]
    d_max = min(total, proc.max_delay_s) + 0.01
    fits = [_fit_model(name, t_cmd, u, t_fit, y_fit, d_max) for name in MODEL_ORDERS]
    chosen = min(fits, key=lambda f: f.bic)
    if chosen.rms_m > proc.max_residual_m:
        raise CalibrationError(
            f"the arm's response fits no dead time + lag model (best: {chosen.response.model}, RMS "
            f"{chosen.rms_m * 1e3:.3f} mm > {proc.max_residual_m * 1e3:.3f} mm): lower -p max_speed_m_s, "
            "or check the arm's tracking"
        )
    for other in fits:
        if (
            other is not chosen
            and other.bic - chosen.bic < AMBIGUOUS_BIC
            and abs(other.response.dead_time_s - chosen.response.dead_time_s) > period_s
        ):
            raise CalibrationError(
                "the dead time is ambiguous: "
                + ", ".join(
                    f"{f.response.model} {f.response.dead_time_s * 1e3:.1f} ms (RMS {f.rms_m * 1e6:.1f} um)"
                    for f in fits
                )
                + f" fit about equally well but differ by more than one control tick ({period_s * 1e3:.0f} ms). "
                "The measurement is too noisy to tell them apart: raise -p duration_s or -p amplitude_m "
                "(within the workspace), and check that nothing else moves the arm"
            )
    model = chosen.response.predict(t_cmd, u, t_meas, float(y[0]))
    return ActionFit(
        chosen.response,
        fits,
        total,
        chosen.rms_m,
        int(use.sum()),
        period_s,
        t_meas,
        np.interp(t_meas, t_cmd, u),
        y,
        model,
    )


# ---------------------------------------------------------------------------------------- observation
@dataclass
class ObsFit:
    camera: str
    latency_s: float
    rms_px: float
    n_frames: int
    t: np.ndarray
    pixel: np.ndarray
    robot_aligned: np.ndarray


def board_track(frames_color: list[np.ndarray], board) -> tuple[np.ndarray, np.ndarray]:
    """Mean image position (px) of the ChArUco corners seen in (almost) every frame -> (N, 2), and
    the mask of frames where all of them were found."""
    import cv2

    det = cv2.aruco.CharucoDetector(board)
    per = []
    for c in frames_color:
        gray = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)
        corners, ids, _, _ = det.detectBoard(gray)
        per.append({} if ids is None else {int(i): corners[k, 0] for k, i in enumerate(ids.ravel())})
    counts: dict[int, int] = {}
    for p in per:
        for i in p:
            counts[i] = counts.get(i, 0) + 1
    common = [i for i, n in counts.items() if n >= 0.9 * len(per)]
    ok = np.array([bool(common) and all(i in p for i in common) for p in per])
    pix = np.array(
        [
            np.mean([p[i] for i in common], axis=0) if k else [np.nan, np.nan]
            for p, k in zip(per, ok, strict=True)
        ]
    )
    return pix, ok


def fit_obs_latency(
    t_cam: np.ndarray, pix: np.ndarray, t_recv: np.ndarray, pos: np.ndarray, max_latency_s: float
) -> tuple[float, float, np.ndarray]:
    """L minimising the residual of ``pix ~ A pos(t_cam + L) + b`` (robot positions on their receive
    time axis). Returns (L, rms px, aligned robot positions)."""
    X1 = np.ones((len(t_cam), 2))

    def resid(L: float) -> float:
        X1[:, 0] = np.interp(t_cam + L, t_recv, pos)
        coef, *_ = np.linalg.lstsq(X1, pix, rcond=None)
        return float(np.mean((X1 @ coef - pix) ** 2))

    lags = np.arange(-0.05, max_latency_s, 0.001)
    c = np.array([resid(L) for L in lags])
    i = int(np.argmin(c))
    from scipy.optimize import minimize_scalar

    lo, hi = lags[max(i - 2, 0)], lags[min(i + 2, len(lags) - 1)]
    r = minimize_scalar(resid, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    L = float(r.x)
    return L, math.sqrt(resid(L)), np.interp(t_cam + L, t_recv, pos)


def clamp_obs_latency(latency_s: float, period_s: float, camera: str) -> tuple[float, str | None]:
    """A robot state cannot be seen before it happened: a negative observation latency within one
    control tick (``period_s``) is the fit's resolution and becomes 0 (with the warning to print);
    beyond that the inputs are wrong (CalibrationError)."""
    if latency_s >= 0:
        return latency_s, None
    if latency_s < -period_s:
        raise CalibrationError(
            f"camera {camera}: the robot state would arrive {-latency_s * 1e3:.1f} ms before it happened "
            "(negative observation latency): calibrate the camera latency first (rig calibrate "
            "camera-latency), and check obs.camera_time_source"
        )
    return 0.0, (
        f"observation latency {latency_s * 1e3:.2f} ms < 0 (within one control tick, "
        f"{period_s * 1e3:.0f} ms): written as 0"
    )


# ---------------------------------------------------------------------------------------- result
def action_latency_value(fit: ActionFit, excitation: str) -> ActionLatencyValue:
    """The calibration-file record of a fitted response (the arm's, or the gripper's width): value = the
    ramp lag; ``excitation`` says what was sent, e.g. ``chirp 0.5-2 Hz along x through the waypoint
    path``."""
    r = fit.response
    others = ", ".join(
        f"{f.response.model} {f.response.dead_time_s * 1e3:.1f} ms"
        for f in fit.candidates
        if f.response is not r
    )
    return ActionLatencyValue(
        value_s=r.ramp_lag_s,
        dead_time_s=r.dead_time_s,
        model=r.model,
        time_constants_s=list(r.time_constants_s),
        lag_50_s=r.lag_50_s,
        lag_90_s=r.lag_90_s,
        method=f"{excitation}; dead time + first/second-order lag fits, {r.model} chosen by BIC (dead time of "
        f"the others: {others}); value = ramp lag (dead time + sum of time constants); cross-correlation "
        f"lag {fit.total_lag_s * 1e3:.1f} ms",
        residual=fit.rms_m * 1e3,
        residual_unit="mm RMS",
        n_samples=fit.n_samples,
    )


def action_fit_summary(fit: ActionFit, value_key: str, rms_key: str) -> dict:
    """The JSON summary of a fitted response: ``value_key`` holds the ramp lag (ms), ``rms_key`` the
    residual (mm), then the model, dead time, lags and every candidate model's dead time."""
    r = fit.response
    return {
        value_key: round(r.ramp_lag_s * 1e3, 3),
        "dead_time_ms": round(r.dead_time_s * 1e3, 3),
        "model": r.model,
        "time_constants_ms": [round(v * 1e3, 3) for v in r.time_constants_s],
        "tracking_tau_ms": round(fit.tau_s * 1e3, 3),
        "lag_50_ms": round(r.lag_50_s * 1e3, 3),
        "lag_90_ms": round(r.lag_90_s * 1e3, 3),
        "total_lag_ms": round(fit.total_lag_s * 1e3, 3),
        rms_key: round(fit.rms_m * 1e3, 4),
        "models": {
            f.response.model: {
                "dead_time_ms": round(f.response.dead_time_s * 1e3, 3),
                "rms_um": round(f.rms_m * 1e6, 3),
            }
            for f in fit.candidates
        },
    }


@dataclass
class RobotLatencyResult:
    action: ActionFit
    obs: ObsFit | None
    proc: RobotLatencyProcedure
    plot_paths: list[Path]

    def action_latency_value(self) -> ActionLatencyValue:
        p = self.proc
        return action_latency_value(
            self.action,
            f"chirp {p.chirp_f0_hz:g}-{p.chirp_f1_hz:g} Hz along {p.axis} through the waypoint path",
        )

    def obs_latency_value(self) -> LatencyValue:
        o = self.obs
        return LatencyValue(
            value_s=o.latency_s,
            method=f"tool board seen by camera {o.camera} vs robot state receive times",
            residual=o.rms_px,
            residual_unit="px RMS",
            n_samples=o.n_frames,
        )

    def summary(self) -> dict:
        out = action_fit_summary(self.action, "action_latency_ms", "action_rms_mm")
        if self.obs is not None:
            out["obs_latency_ms"] = round(self.obs.latency_s * 1e3, 3)
            out["obs_rms_px"] = round(self.obs.rms_px, 4)
            out["obs_camera"] = self.obs.camera
        return out


def _plot_action(fit: ActionFit, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = fit.t - fit.t[0]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    axes[0].plot(t, fit.commanded * 1e3, lw=0.8, label="sent target")
    axes[0].plot(t, fit.measured * 1e3, lw=0.8, label="measured TCP")
    axes[0].plot(
        t,
        fit.model * 1e3,
        "--",
        lw=0.8,
        label=f"{fit.response.model}: dead time {fit.dead_time_s * 1e3:.1f} ms, taus "
        + "/".join(f"{v * 1e3:.1f}" for v in fit.response.time_constants_s)
        + " ms",
    )
    axes[0].set_ylabel("position (mm)")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, (fit.measured - fit.model) * 1e3, lw=0.8, color="k")
    axes[1].set_ylabel("measured - model (mm)")
    axes[1].set_xlabel("time (s)")
    fig.suptitle(
        f"dead time {fit.dead_time_s * 1e3:.1f} ms, lag to 50 % {fit.response.lag_50_s * 1e3:.1f} ms, "
        f"ramp lag {fit.response.ramp_lag_s * 1e3:.1f} ms (RMS {fit.rms_m * 1e3:.3f} mm)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_obs(fit: ObsFit, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = fit.t - fit.t[0]
    # Show both signals in pixels: the robot positions through the fitted affine map.
    X = np.column_stack([fit.robot_aligned, np.ones(len(t))])
    coef, *_ = np.linalg.lstsq(X, fit.pixel, rcond=None)
    pred = X @ coef
    k = int(np.argmax(np.ptp(fit.pixel, axis=0)))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, fit.pixel[:, k], ".", ms=3, label="board seen by the camera")
    ax.plot(t, pred[:, k], lw=0.8, label=f"robot state shifted by {fit.latency_s * 1e3:.1f} ms")
    ax.set_xlabel("camera capture time (s)")
    ax.set_ylabel("image " + "uv"[k] + " (px)")
    ax.legend(fontsize=8)
    ax.set_title(f"observation latency {fit.latency_s * 1e3:.1f} ms (RMS {fit.rms_px:.2f} px)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- procedure
def _obs_camera(rig, proc: RobotLatencyProcedure) -> str | None:
    if not proc.obs.enabled or not rig.cameras.cameras:
        return None
    if proc.obs.camera:
        if proc.obs.camera not in rig.cameras.cameras:
            raise CalibrationError(
                f"obs.camera {proc.obs.camera!r} is not a camera of the rig ({list(rig.cameras.cameras)})"
            )
        return proc.obs.camera
    for name, cam in rig.cameras.cameras.items():
        mount = cam.sim.mount if cam.backend == "sim" else "world"
        if mount == "world":
            return name
    return None


def measure(rig, calibration, proc: RobotLatencyProcedure, plots: Path) -> RobotLatencyResult:
    from calibration.rig_session import home_pose, move_and_settle, open_env, with_sim_plane
    from robot.geometry.camera_geometry import PlaneConfig, charuco_board

    axis = AXES[proc.axis]
    cam_name = _obs_camera(rig, proc)
    if cam_name is not None and rig.is_sim and rig.cameras.cameras[cam_name].backend == "sim":
        plane = PlaneConfig(kind="charuco", mount="tool", pose=list(proc.sim_board_pose), charuco=proc.board)
        rig = with_sim_plane(rig, cam_name, "calibration_tool_board", plane)
    center = home_pose(rig)
    center[:3] += np.asarray(proc.center_offset_m)
    lo, hi = np.asarray(rig.arm.limits.workspace_min_m), np.asarray(rig.arm.limits.workspace_max_m)
    reach = max(proc.amplitude_m, proc.obs.amplitude_m if cam_name else 0.0)
    if (
        not (lo[axis] + reach <= center[axis] <= hi[axis] - reach)
        or np.any(center[:3] < lo)
        or np.any(center[:3] > hi)
    ):
        raise CalibrationError(
            f"the excitation around {np.round(center[:3], 3).tolist()} +- {reach} m along {proc.axis} leaves the "
            f"workspace {lo.tolist()}..{hi.tolist()}: change -p center_offset_m"
        )
    progress(f"robot-latency: starting the rig (observation latency camera: {cam_name or 'none'})")
    paths: list[Path] = []
    obs_fit = None
    with open_env(rig, calibration) as env:
        progress("robot-latency: moving to the excitation centre")
        move_and_settle(env, center)
        progress(
            f"robot-latency: chirp {proc.chirp_f0_hz:g}->{proc.chirp_f1_hz:g} Hz along {proc.axis} for {proc.duration_s:g} s"
        )
        recs = run_excitation(env, center, axis, lambda t: chirp_offsets(proc, t), proc.duration_s, proc)
        dropped = int(recs["dropped_waypoints"][-1] - recs["dropped_waypoints"][0])
        if dropped:
            progress(f"robot-latency: {dropped} waypoints arrived after their time (busy host)")
        if cam_name is not None:
            o = proc.obs
            cam = env.cameras.cameras[cam_name]
            frames: dict[str, list] = {"color": [], "capture_time": [], "receive_time": []}
            next_counter = [cam.ring.count]

            def poll() -> None:
                r = cam.ring.get_since(next_counter[0], skip_overwritten=True)
                if len(r["counter"]):
                    for k in frames:
                        frames[k].extend(list(r[k]))
                    next_counter[0] = int(r["counter"][-1]) + 1

            progress(
                f"robot-latency: sinusoid {o.amplitude_m * 1e3:g} mm at {o.frequency_hz:g} Hz, camera {cam_name} watching"
            )
            orecs = run_excitation(
                env,
                center,
                axis,
                lambda t: sine_offsets(o.amplitude_m, o.frequency_hz, o.duration_s, t),
                o.duration_s,
                proc,
                poll,
            )
            poll()
            use_receive = env.config.obs.camera_time_source == "receive"
            cam_latency = env.camera_latency_s.get(cam_name, 0.0)
    fit = fit_action_latency(recs, axis, proc)
    r = fit.response
    progress(
        f"robot-latency: {r.model} response: dead time {r.dead_time_s * 1e3:.2f} ms, lag to 50 % "
        f"{r.lag_50_s * 1e3:.2f} ms, to 90 % {r.lag_90_s * 1e3:.2f} ms, ramp lag (the action latency "
        f"deployment uses) {r.ramp_lag_s * 1e3:.2f} ms, RMS {fit.rms_m * 1e6:.1f} um"
    )
    paths.append(_plot_action(fit, plots / "robot_action_latency.png"))
    if cam_name is not None:
        o = proc.obs
        t_cap = (
            np.asarray(frames["receive_time"]) - cam_latency
            if use_receive
            else np.asarray(frames["capture_time"])
        )
        inside = (t_cap >= orecs["t_start"]) & (t_cap <= orecs["t_end"])
        colors = [c for c, k in zip(frames["color"], inside, strict=True) if k]
        if len(colors) < o.min_frames:
            raise CalibrationError(
                f"camera {cam_name}: only {len(colors)} frames during the motion (need {o.min_frames})"
            )
        pix, ok = board_track(colors, charuco_board(proc.board))
        if ok.sum() < o.min_frames:
            raise CalibrationError(
                f"camera {cam_name}: the tool board was seen in only {int(ok.sum())} of {len(colors)} frames "
                f"(need {o.min_frames}). Mount the board on the tool facing the camera, or set -p obs.enabled=false"
            )
        tc = t_cap[inside][ok]
        L, rms, aligned = fit_obs_latency(
            tc, pix[ok], orecs["receive_time"], orecs["actual_tcp_pose"][:, axis], o.max_latency_s
        )
        L_fit = L
        L, warning = clamp_obs_latency(L, fit.period_s, cam_name)
        if warning:
            progress(f"robot-latency: WARNING {warning}")
        if L != L_fit:
            aligned = np.interp(tc + L, orecs["receive_time"], orecs["actual_tcp_pose"][:, axis])
        obs_fit = ObsFit(cam_name, L, rms, int(ok.sum()), tc, pix[ok], aligned)
        progress(
            f"robot-latency: observation latency {L * 1e3:.2f} ms (RMS {rms:.3f} px over {int(ok.sum())} frames)"
        )
        paths.append(_plot_obs(obs_fit, plots / "robot_obs_latency.png"))
    for p in paths:
        progress(f"robot-latency: plot {p}")
    return RobotLatencyResult(fit, obs_fit, proc, paths)
