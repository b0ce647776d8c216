"""Online latency watch: is the rig still as slow as it was calibrated?

Runs in the main process of ``rig collect`` and ``rig deploy`` (:class:`LatencyWatch`, polled from
their loops). Two estimates, each over a sliding window of ``window_s``:

- **Action dead time**, from the arm controller's state ring: the targets it sent
  (``target_tcp_pose`` at ``tick_time``) against the measured poses (``actual_tcp_pose`` at
  ``capture_time``), along the axis that moved most. The lag dynamics are the calibrated ones
  (``ActionLatencyValue.response()``, robot/arm/response.py) and only the dead time is refitted
  (:func:`robot.arm.response.fit_dead_time`). A window counts only when the sent targets span at
  least ``min_motion_m`` and the fit explains the motion (RMS residual under ``max_residual_fraction``
  of its standard deviation): a still arm, one pushed by contact, or one held back by its
  acceleration limit (a hard start or reversal; the sim arm's 5 m/s^2 biased the dead time by ~5 ms
  there) says nothing reliable about its latency. Without a
  calibrated response the model is a pure delay; its estimate is then the delay with which the arm
  follows, compared with its own first value.
- **Camera transport latency**, ``receive_time - capture_time`` averaged over the frames of the
  window (from the camera processes' running sums, no frame copied), only where the capture time is
  the device's (``obs.camera_time_source: device``); a receive-time backend has no device stamp to
  compare with.

Each estimate is compared with its reference: the calibration (dead time from
``robot.action_latency``, camera latency from ``cameras.<name>.latency``), or, without one, the first
estimate of the run. A drift of more than one control tick (action; median of the last three
windows) or ``camera_drift_s`` (camera) is logged as a warning, once per quantity and run.

Timing contract: :meth:`LatencyWatch.poll` never blocks; it copies the arm records that arrived
since the last call (call it at least once per ``arm.state_history_s``: 10 s by default, else
records are skipped, not fatal) and fits at most every ``every_s`` (about 5-20 ms of CPU per fit at
125 Hz; more at 500 Hz). Times are host monotonic seconds.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.arm.response import ArmResponse, fit_dead_time

log = logging.getLogger("robot.latency_watch")

_PURE_DELAY = ArmResponse("first_order", 0.0, (1e-4,))


@dataclass
class WatchSettings:
    window_s: float = 2.0
    every_s: float = 0.25
    min_motion_m: float = 0.005
    max_residual_fraction: float = 0.005
    camera_drift_s: float = 0.005
    max_dead_time_s: float = 0.5


class LatencyWatch:
    """Sliding-window action dead time and camera transport latency (module docstring).

    Args:
        arm_ring: the arm controller's state ring (``robot.arm.controller.STATE_LAYOUT``).
        period_s: the arm's control period (s): the action drift threshold.
        response: the calibrated arm response (None: a pure delay, referenced to the first estimate).
        camera_stats: callable returning ``{name: {"frames", "latency_mean_s"}}`` (``MultiCamera.stats``),
            or None to skip the cameras.
        camera_reference_s: calibrated camera latencies (s) by name (others: the first estimate).
    """

    def __init__(
        self,
        arm_ring: Any,
        period_s: float,
        response: ArmResponse | None = None,
        camera_stats: Any = None,
        camera_reference_s: dict[str, float] | None = None,
        settings: WatchSettings | None = None,
    ):
        self.ring = arm_ring
        self.period_s = float(period_s)
        self.s = settings or WatchSettings()
        self.response = response if response is not None else _PURE_DELAY
        self.action_reference_s: float | None = response.dead_time_s if response is not None else None
        self.action_reference_source = "calibration" if response is not None else "first window"
        self.camera_stats = camera_stats
        self.camera_reference_s = dict(camera_reference_s or {})
        self.camera_reference_source = {name: "calibration" for name in self.camera_reference_s}
        self._counter = arm_ring.count if arm_ring is not None else 0
        self._arm: deque[dict[str, np.ndarray]] = deque()
        self._cam_snapshots: deque[tuple[float, dict[str, tuple[int, float]]]] = deque()
        self._next_fit = 0.0
        self.action_estimates: list[tuple[float, float]] = []  # (host time, dead time s)
        self.camera_estimates: dict[str, list[tuple[float, float]]] = {}
        self.warned: dict[str, str] = {}
        self._episode_from = (0, {})

    @classmethod
    def for_env(cls, env: Any, settings: WatchSettings | None = None) -> LatencyWatch:
        """The watch for an open :class:`robot.env.Env`: its arm ring and period, the calibrated arm
        response and camera latencies, and its cameras when their capture times are device stamps."""
        cal = env.calibration
        response = None
        if cal is not None and cal.robot.action_latency is not None:
            response = cal.robot.action_latency.response()
        cam_ref: dict[str, float] = {}
        if cal is not None:
            cam_ref = {n: c.latency.value_s for n, c in cal.cameras.items() if c.latency is not None}
        device_stamps = env.config.obs.camera_time_source == "device"
        stats = env.cameras.stats if env.cameras is not None and device_stamps else None
        return cls(env.arm.state_ring, env.config.arm.period_s, response, stats, cam_ref, settings)

    # ------------------------------------------------------------------ input
    def add_arm_records(self, recs: dict[str, np.ndarray]) -> None:
        """Arm state records (``tick_time``, ``target_tcp_pose``, ``capture_time``,
        ``actual_tcp_pose``), oldest first."""
        if len(recs["tick_time"]):
            self._arm.append(
                {k: recs[k] for k in ("tick_time", "target_tcp_pose", "capture_time", "actual_tcp_pose")}
            )
        while (
            len(self._arm) > 1
            and self._arm[1]["tick_time"][0] < self._arm[-1]["tick_time"][-1] - self.s.window_s
        ):
            self._arm.popleft()

    def add_camera_stats(self, t: float, stats: dict[str, dict[str, float]]) -> None:
        """Running camera counters at host time ``t``: ``frames`` and ``latency_mean_s``."""
        snap = {
            name: (int(st["frames"]), float(st["latency_mean_s"]) * int(st["frames"]))
            for name, st in stats.items()
            if st.get("frames", 0) > 0
        }
        self._cam_snapshots.append((t, snap))
        while len(self._cam_snapshots) > 1 and self._cam_snapshots[1][0] <= t - self.s.window_s:
            self._cam_snapshots.popleft()

    def poll(self, t: float) -> None:
        """Copy what arrived since the last call; every ``every_s``, estimate and check. Never blocks."""
        if self.ring is not None:
            recs = self.ring.get_since(self._counter, skip_overwritten=True)
            if len(recs["counter"]):
                self._counter = int(recs["counter"][-1]) + 1
                self.add_arm_records(recs)
        if t < self._next_fit:
            return
        self._next_fit = t + self.s.every_s
        if self.camera_stats is not None:
            self.add_camera_stats(t, self.camera_stats())
        self.update(t)

    # ------------------------------------------------------------------ estimates
    def update(self, t: float) -> None:
        """Estimate over the current window and warn on drift."""
        d = self._estimate_dead_time()
        if d is not None:
            self.action_estimates.append((t, d))
            if self.action_reference_s is None:
                self.action_reference_s = d
            recent = float(np.median([v for _, v in self.action_estimates[-3:]]))
            drift = recent - self.action_reference_s
            if abs(drift) > self.period_s and "action" not in self.warned:
                self._warn(
                    "action",
                    f"latency watch: the arm's action dead time is now {recent * 1e3:.1f} ms, "
                    f"{drift * 1e3:+.1f} ms from the {self.action_reference_source} "
                    f"({self.action_reference_s * 1e3:.1f} ms; more than one {self.period_s * 1e3:.0f} ms "
                    "control tick): actions are shifted by a stale latency. Re-run `rig calibrate "
                    "robot-latency`, and check the arm controller's load and the network to the arm",
                )
        for name, lat in self._estimate_camera_latencies().items():
            self.camera_estimates.setdefault(name, []).append((t, lat))
            if name not in self.camera_reference_s:
                self.camera_reference_s[name] = lat
                self.camera_reference_source[name] = "first window"
            drift = lat - self.camera_reference_s[name]
            if abs(drift) > self.s.camera_drift_s and f"camera {name}" not in self.warned:
                self._warn(
                    f"camera {name}",
                    f"latency watch: camera {name} frames now reach the host {lat * 1e3:.1f} ms after "
                    f"capture, {drift * 1e3:+.1f} ms from the {self.camera_reference_source[name]} "
                    f"({self.camera_reference_s[name] * 1e3:.1f} ms; more than "
                    f"{self.s.camera_drift_s * 1e3:.0f} ms): check its USB link and the host load, "
                    "then re-run `rig calibrate camera-latency`",
                )

    def _warn(self, key: str, msg: str) -> None:
        self.warned[key] = msg
        log.warning("%s", msg)

    def _estimate_dead_time(self) -> float | None:
        if not self._arm:
            return None
        recs = {k: np.concatenate([r[k] for r in self._arm]) for k in self._arm[0]}
        t_cmd = recs["tick_time"]
        if t_cmd[-1] - t_cmd[0] < 0.8 * self.s.window_s:
            return None
        t_cut = t_cmd[-1] - self.s.window_s
        sel = t_cmd >= t_cut
        t_cmd, u_all = t_cmd[sel], recs["target_tcp_pose"][sel, :3]
        t_meas, y_all = recs["capture_time"][sel], recs["actual_tcp_pose"][sel, :3]
        axis = int(np.argmax(np.ptp(u_all, axis=0)))
        u, y = u_all[:, axis], y_all[:, axis]
        if float(np.ptp(u)) < self.s.min_motion_m:
            return None
        # The model starts at rest at the window's first pose; leave out the samples that still
        # depend on the motion before the window.
        settle = self.s.max_dead_time_s + 5.0 * float(sum(self.response.time_constants_s))
        late = t_meas >= t_cmd[0] + settle
        if late.sum() < 20 or float(np.ptp(y[late])) < 0.5 * self.s.min_motion_m:
            return None
        d, rms = fit_dead_time(
            self.response, t_cmd, u, t_meas[late], y[late], self.s.max_dead_time_s, y0=float(u[0])
        )
        if rms > self.s.max_residual_fraction * float(np.std(y[late])):
            return None
        return d

    def _estimate_camera_latencies(self) -> dict[str, float]:
        if len(self._cam_snapshots) < 2:
            return {}
        first, last = self._cam_snapshots[0][1], self._cam_snapshots[-1][1]
        out = {}
        for name, (n1, sum1) in last.items():
            n0, sum0 = first.get(name, (0, 0.0))
            if n1 - n0 >= 5:
                out[name] = (sum1 - sum0) / (n1 - n0)
        return out

    # ------------------------------------------------------------------ reports
    def begin_episode(self) -> None:
        """Per-episode figures count from here."""
        self._episode_from = (
            len(self.action_estimates),
            {n: len(v) for n, v in self.camera_estimates.items()},
        )

    def current(self) -> dict[str, Any]:
        """The newest estimates (s; None before the first): for per-chunk logs."""
        return {
            "action_dead_time_s": self.action_estimates[-1][1] if self.action_estimates else None,
            "camera_transport_s": {n: v[-1][1] for n, v in self.camera_estimates.items() if v},
        }

    def episode_summary(self) -> dict[str, Any]:
        """JSON-able figures since :meth:`begin_episode`: per quantity the median, min, max (ms) and
        number of windows, the reference (ms) and where it came from, and the warnings so far."""
        a0, c0 = self._episode_from

        def stats(values: list[float], reference: float | None, source: str) -> dict[str, Any]:
            v = np.asarray(values) * 1e3
            return {
                "median_ms": round(float(np.median(v)), 3) if len(v) else None,
                "min_ms": round(float(v.min()), 3) if len(v) else None,
                "max_ms": round(float(v.max()), 3) if len(v) else None,
                "windows": len(v),
                "reference_ms": None if reference is None else round(reference * 1e3, 3),
                "reference": source,
            }

        return {
            "action_dead_time": stats(
                [d for _, d in self.action_estimates[a0:]],
                self.action_reference_s,
                self.action_reference_source,
            ),
            "camera_transport": {
                name: stats(
                    [x for _, x in est[c0.get(name, 0) :]],
                    self.camera_reference_s.get(name),
                    self.camera_reference_source.get(name, "first window"),
                )
                for name, est in self.camera_estimates.items()
            },
            "control_period_ms": round(self.period_s * 1e3, 3),
            "warnings": list(self.warned.values()),
        }
