"""A stand-in policy with the :class:`policy.inference.Policy` predict API, for tests and benchmarks.

It emits a *known smooth reference trajectory* as action chunks, after an injected inference
latency, so that deployment timing (stamping, dropping, async joining) is measured against ground
truth without training a network. The reference is a circle in the x-y plane traversed at constant
speed, as a function of absolute host time::

    ref(t) = start + radius_m * [cos(w s(t)) - 1, sin(w s(t)), 0]   (start before t0)

where ``s(t) = t - t0 - ramp_in_s / 2`` once the speed has ramped up linearly over ``ramp_in_s``
(a smooth start, no corner).

``t0_s`` defaults to the first observation's time. Each chunk may carry a per-chunk offset along z
(``chunk_offset_m * (-1)^k``) so that consecutive chunks disagree like independent diffusion samples
do; like the real policy it honours ``committed_actions`` by inpainting: the first rows equal them
and the deviation of the rest from the reference ramps from the committed rows' deviation to the
chunk's own offset over ``ramp_steps`` steps (continuity comes only from conditioning). ``nan_after_chunks=k`` makes every
chunk from the k-th on (0-based) all NaN.

The observation must carry ``timestamp`` (declared in :attr:`shape_meta`, so the runner passes it);
``t_obs = obs["timestamp"][-1]``. Picklable: it runs in the inference process too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from deploy.policy_client import ActionChunk


class _StandIn:
    """What both stand-ins share: chunks from the newest observation step to the horizon's end, time
    counted from the first observation asked about, and an injected inference latency."""

    horizon: int
    n_obs_steps: int
    t0_s: float | None

    @property
    def n_out(self) -> int:
        """Rows of a chunk: the newest observation step and the steps after it in the horizon."""
        return self.horizon - self.n_obs_steps + 1

    def _observe(self, obs: dict[str, Any]) -> float:
        """``t_obs``, the newest observation's time; the first one asked about becomes ``t0_s``
        (unless it was given)."""
        t_obs = float(np.asarray(obs["timestamp"]).reshape(-1)[-1])
        if self.t0_s is None:
            self.t0_s = t_obs
            self._on_t0(t_obs)
        return t_obs

    def _on_t0(self, t0_s: float) -> None:
        """Called once, when ``t0_s`` is set from the first observation."""

    @staticmethod
    def _deliver(actions: np.ndarray, t_start: float, latency_s: float) -> ActionChunk:
        """``actions`` as a chunk, once ``latency_s`` has passed since ``t_start`` (time.monotonic s)."""
        remaining = t_start + latency_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return ActionChunk(actions=actions, first_index=0)


class ReferencePolicy(_StandIn):
    """See the module docstring. Latencies in seconds, lengths in metres, ``omega_rad_s`` in rad/s."""

    def __init__(
        self,
        latency_s: float = 0.15,
        latency_jitter_s: float = 0.0,
        dt_s: float = 0.1,
        n_obs_steps: int = 2,
        n_action_steps: int = 8,
        horizon: int = 16,
        start_pose: list[float] | None = None,
        radius_m: float = 0.05,
        omega_rad_s: float = 2.0,
        t0_s: float | None = None,
        ramp_in_s: float = 0.5,
        chunk_offset_m: float = 0.0,
        ramp_steps: int = 4,
        nan_after_chunks: int | None = None,
        seed: int = 0,
    ) -> None:
        self.latency_s = float(latency_s)
        self.latency_jitter_s = float(latency_jitter_s)
        self.dt_s = float(dt_s)
        self.n_obs_steps = int(n_obs_steps)
        self.n_action_steps = int(n_action_steps)
        self.horizon = int(horizon)
        self.start_pose = np.asarray(
            start_pose if start_pose is not None else [0.45, 0.0, 0.2, np.pi, 0.0, 0.0], dtype=np.float64
        )
        self.radius_m = float(radius_m)
        self.omega_rad_s = float(omega_rad_s)
        self.t0_s = t0_s
        self.ramp_in_s = float(ramp_in_s)
        self.chunk_offset_m = float(chunk_offset_m)
        self.ramp_steps = max(1, int(ramp_steps))
        self.nan_after_chunks = nan_after_chunks
        self.calls = 0
        self._rng = np.random.default_rng(seed)
        self.shape_meta = {
            "obs": {"timestamp": {"type": "low_dim", "shape": []}},
            "action": {"shape": [6]},
        }

    @property
    def action_dim(self) -> int:
        return 6

    @property
    def speed_m_s(self) -> float:
        return self.radius_m * self.omega_rad_s

    def reference(self, t: np.ndarray | float) -> np.ndarray:
        """Reference pose(s) at host time(s) ``t``: (6,) or (n, 6)."""
        scalar = np.ndim(t) == 0
        tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
        t0 = self.t0_s if self.t0_s is not None else float(tt[0])
        tau = np.maximum(tt - t0, 0.0)
        ramp = self.ramp_in_s
        # Speed ramps up linearly over ramp_in_s (a smooth start: no corner in the reference).
        s = np.where(tau < ramp, tau**2 / (2 * ramp), tau - ramp / 2) if ramp > 0 else tau
        phase = self.omega_rad_s * s
        out = np.tile(self.start_pose, (len(tt), 1))
        out[:, 0] += self.radius_m * (np.cos(phase) - 1.0)
        out[:, 1] += self.radius_m * np.sin(phase)
        return out[0] if scalar else out

    def chunk_offset(self, k: int) -> float:
        return self.chunk_offset_m * (1.0 if k % 2 == 0 else -1.0)

    def warm_up(
        self, obs: dict[str, Any], committed_actions: np.ndarray | None = None, seed: int | None = None
    ) -> ActionChunk:
        """Deploy's warm-up call: the injected latency, and neither the clock nor the chunk count moves
        (the reference starts at the first observation the episode asks about)."""
        time.sleep(self.latency_s)
        return ActionChunk(actions=np.tile(self.start_pose, (self.n_out, 1)), first_index=0)

    def predict(
        self, obs: dict[str, Any], committed_actions: np.ndarray | None = None, seed: int | None = None
    ) -> ActionChunk:
        """Sleep the injected latency, then return the reference at ``t_obs + i * dt_s``."""
        t_start = time.monotonic()
        t_obs = self._observe(obs)
        k = self.calls
        self.calls += 1
        n_out = self.n_out
        times = t_obs + np.arange(n_out) * self.dt_s
        actions = self.reference(times)
        own = np.array([0.0, 0.0, self.chunk_offset(k)])
        m = 0 if committed_actions is None else len(committed_actions)
        if m:
            # Continue from where the committed actions leave the reference, back to this chunk's own
            # offset over ramp_steps steps (what inpainting gives a trained policy: no jump).
            committed = np.asarray(committed_actions, dtype=np.float64)
            d0 = committed[-1, :3] - actions[m - 1, :3]
            ramp = np.clip((np.arange(n_out) - m + 1) / self.ramp_steps, 0.0, 1.0)[:, None]
            actions[:, :3] += d0 + (own - d0) * ramp
            actions[:m] = committed
        else:
            actions[:, :3] += own
        if self.nan_after_chunks is not None and k >= self.nan_after_chunks:
            actions[:] = np.nan
        delay = self.latency_s + (
            self._rng.uniform(0, self.latency_jitter_s) if self.latency_jitter_s else 0.0
        )
        return self._deliver(actions, t_start, delay)


class DemoOracle(_StandIn):
    """A stand-in policy that returns a demonstration's own recorded actions (for tests and
    benchmarks of the action-time rule, :mod:`collection.action_time`).

    For an observation at ``t_obs`` it returns the recorded ``action`` path of episode ``episode`` of
    ``store`` at ``ts0 + (t_obs - t0) + i * dt_s`` (``ts0`` the episode's first timestamp, ``t0`` the
    first observation this oracle was asked about; linear interpolation, held at the ends): what a
    perfect policy trained on that store predicts. Deployed on the episode's world seed, the arm must
    then retrace the demonstration's path in step. ``t0_file``: where to write ``t0`` (so a test can
    line the paths up). ``latency_s``: injected inference latency. Inpainting is honoured (the first
    rows equal ``committed_actions``). Picklable: it runs in the inference process too.
    """

    def __init__(
        self,
        store: str,
        episode: int = 0,
        n_obs_steps: int = 1,
        n_action_steps: int = 8,
        horizon: int = 16,
        latency_s: float = 0.0,
        t0_file: str | None = None,
    ) -> None:
        from collection.episode_store import EpisodeStore

        with EpisodeStore.open(store, "r") as s:
            ep = s.get_episode(int(episode), ["action", "timestamp"])
            self.dt_s = float(s.dt_s) if s.dt_s else float(np.median(np.diff(ep["timestamp"])))
        self.ts = np.asarray(ep["timestamp"], dtype=np.float64).reshape(-1)
        self.actions = np.asarray(ep["action"], dtype=np.float64)
        self.n_obs_steps = int(n_obs_steps)
        self.n_action_steps = int(n_action_steps)
        self.horizon = int(horizon)
        self.latency_s = float(latency_s)
        self.t0_file = t0_file
        self.t0_s: float | None = None
        dim = self.actions.shape[1]
        self.shape_meta = {
            "obs": {"timestamp": {"type": "low_dim", "shape": []}},
            "action": {"shape": [dim], "stored_dim": dim},
        }

    def _on_t0(self, t0_s: float) -> None:
        if self.t0_file:
            with open(self.t0_file, "w") as f:
                f.write(repr(t0_s))

    def path_at(self, t: np.ndarray) -> np.ndarray:
        """The recorded actions at episode times ``t`` (s since the episode's first step)."""
        from robot.env import interpolate_poses

        q = self.ts[0] + np.asarray(t, dtype=np.float64)
        out = np.empty((len(q), self.actions.shape[1]))
        out[:, :6] = interpolate_poses(self.ts, self.actions[:, :6], q)
        for col in range(6, self.actions.shape[1]):
            out[:, col] = np.interp(q, self.ts, self.actions[:, col])
        return out

    def warm_up(
        self, obs: dict[str, Any], committed_actions: np.ndarray | None = None, seed: int | None = None
    ) -> ActionChunk:
        return ActionChunk(actions=self.path_at(np.zeros(self.n_out)), first_index=0)

    def predict(
        self, obs: dict[str, Any], committed_actions: np.ndarray | None = None, seed: int | None = None
    ) -> ActionChunk:
        t_start = time.monotonic()
        t_obs = self._observe(obs)
        actions = self.path_at(t_obs - self.t0_s + np.arange(self.n_out) * self.dt_s)
        if committed_actions is not None and len(committed_actions):
            m = len(committed_actions)
            actions[:m] = np.asarray(committed_actions, dtype=np.float64)[:, : actions.shape[1]]
        return self._deliver(actions, t_start, self.latency_s)
