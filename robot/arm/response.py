"""How an arm follows the targets it is sent: a dead time followed by a linear lag.

Model: ``measured(t) = lag(held_targets)(t - dead_time_s)``, where ``held_targets`` holds each
sent target from its tick to the next (zero-order hold, as the controller sends them) and ``lag``
is a cascade of first-order lags with ``time_constants_s`` (one: ``first_order``; two:
``second_order``, a critically or over-damped second-order response such as a UR's servo
smoothing followed by its joint tracking). The dead time is when a target starts to move the arm;
the lag sets how long the arm then takes to get there.

Derived delays (all s, from sending a step to the arm):

- ``step_lag_s(f)``: the arm has covered the fraction ``f`` of a step (``lag_50_s``, ``lag_90_s``);
- ``ramp_lag_s``: ``dead_time_s + sum(time_constants_s)``: the delay with which the arm follows a
  constant-velocity trajectory once settled (the first moment of the impulse response). This is
  what deployment shifts actions by (README, "Latency"): for the smooth trajectories a policy emits
  it is the delay that makes the arm be at a pose at the time the policy stamped on it.

Used by the robot-latency calibration (``calibration/robot_latency.py``, which fits the models) and
by the online latency watch (``robot/latency_watch.py``, which refits only the dead time). Pure
numpy/scipy; evaluated on a fine time grid (``GRID_S``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

FloatArray = NDArray[np.float64]

GRID_S = 0.0005
"""Time step (s) on which responses are simulated."""

MODEL_ORDERS = {"first_order": 1, "second_order": 2}


def held_targets(grid: FloatArray, t_cmd: FloatArray, u_cmd: FloatArray, y0: float) -> FloatArray:
    """The sent targets ``u_cmd`` (sent at ``t_cmd``, s; ``y0`` before the first) held until the next
    one, averaged over each step ``[grid[k], grid[k] + GRID_S)`` of the regular ``grid``: exact
    integrals of the held signal, so a target switching between grid points is not moved onto one
    (that would misplace it by up to a grid step, a visible error at 125 Hz)."""
    t_knots = np.concatenate([[min(grid[0], t_cmd[0]) - 1.0], t_cmd, [max(grid[-1], t_cmd[-1]) + 1.0]])
    vals = np.concatenate([[0.0], np.asarray(u_cmd, dtype=np.float64) - y0])  # on [knot i, knot i+1)
    area = np.concatenate([[0.0], np.cumsum(vals * np.diff(t_knots))])
    edges = np.append(grid, grid[-1] + GRID_S)
    return y0 + np.diff(np.interp(edges, t_knots, area)) / GRID_S


def lag_response(u: FloatArray, y0: float, time_constants_s: tuple[float, ...]) -> FloatArray:
    """Response on the ``GRID_S`` grid of the cascade of first-order lags to ``u`` (sampled on that
    grid, held over each step), starting at rest at ``y0``. The first stage is exact for the held
    input; later stages see a smooth input, taken as the mean of two samples over a step (a plain
    hold would delay each stage by half a step)."""
    y = np.asarray(u, dtype=np.float64)
    for k, tau in enumerate(time_constants_s):
        alpha = math.exp(-GRID_S / max(tau, 1e-6))
        b = [0.0, 1.0 - alpha] if k == 0 else [0.5 * (1.0 - alpha), 0.5 * (1.0 - alpha)]
        y, _ = lfilter(b, [1.0, -alpha], y, zi=[(b[1] + alpha) * y0])  # at rest at y0
    return y


@dataclass(frozen=True)
class ArmResponse:
    """Dead time + lag (module docstring). Times in s."""

    model: str
    dead_time_s: float
    time_constants_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in MODEL_ORDERS or len(self.time_constants_s) != MODEL_ORDERS[self.model]:
            raise ValueError(f"{self.model} takes {MODEL_ORDERS.get(self.model)} time constants")

    def predict(
        self, t_cmd: FloatArray, u_cmd: FloatArray, t: FloatArray, y0: float, dead_time_s: float | None = None
    ) -> FloatArray:
        """Where the arm is at times ``t`` (s) given the targets ``u_cmd`` sent at ``t_cmd``, starting
        at rest at ``y0`` before them; ``dead_time_s`` overrides the model's."""
        d = self.dead_time_s if dead_time_s is None else dead_time_s
        grid = np.arange(t_cmd[0] - GRID_S, t[-1] - d + GRID_S, GRID_S)
        z = lag_response(held_targets(grid, t_cmd, u_cmd, y0), y0, self.time_constants_s)
        return np.interp(t - d, grid, z)

    @property
    def ramp_lag_s(self) -> float:
        """Delay of the settled response to a constant-velocity target (s): dead time + sum of taus."""
        return self.dead_time_s + float(sum(self.time_constants_s))

    def step_lag_s(self, fraction: float) -> float:
        """Time (s) from a step being sent until the arm covered ``fraction`` of it."""
        horizon = 10.0 * sum(self.time_constants_s) + 10 * GRID_S
        y = lag_response(np.ones(int(horizon / GRID_S) + 2), 0.0, self.time_constants_s)
        i = int(np.argmax(y >= fraction))
        # Linear interpolation between the grid samples around the crossing.
        frac = 0.0 if i == 0 else (fraction - y[i - 1]) / (y[i] - y[i - 1])
        return self.dead_time_s + (i - 1 + frac) * GRID_S if i else self.dead_time_s

    @property
    def lag_50_s(self) -> float:
        return self.step_lag_s(0.5)

    @property
    def lag_90_s(self) -> float:
        return self.step_lag_s(0.9)


def fit_dead_time(
    response: ArmResponse,
    t_cmd: FloatArray,
    u_cmd: FloatArray,
    t: FloatArray,
    y: FloatArray,
    max_dead_time_s: float,
    y0: float | None = None,
) -> tuple[float, float]:
    """The dead time (s) that best explains the measured ``y`` at ``t`` from the targets ``u_cmd``
    sent at ``t_cmd`` under ``response``'s lag (its time constants kept), searched over
    ``[0, max_dead_time_s]`` (1 ms grid, parabolic refinement); returns (dead time, RMS residual in
    the unit of y). The arm is assumed at rest at ``y0`` (default ``y[0]``) before the first target."""
    y0 = float(y[0]) if y0 is None else float(y0)
    grid = np.arange(t_cmd[0] - GRID_S, t[-1] + GRID_S, GRID_S)
    z = lag_response(held_targets(grid, t_cmd, u_cmd, y0), y0, response.time_constants_s)
    ds = np.arange(0.0, max_dead_time_s + 1e-9, 0.001)
    pred = np.interp((t[None, :] - ds[:, None]).ravel(), grid, z).reshape(len(ds), len(t))
    cost = np.mean((pred - y[None, :]) ** 2, axis=1)
    i = int(np.argmin(cost))
    d = float(ds[i])
    if 0 < i < len(ds) - 1:
        den = cost[i - 1] - 2 * cost[i] + cost[i + 1]
        if den > 0:
            d += 0.001 * 0.5 * (cost[i - 1] - cost[i + 1]) / den
    return d, math.sqrt(float(cost[i]))
