"""Is a recorded episode fit to train on? Two checks, one definition wherever an episode is judged:
when ``rig collect`` saves it (its save line, and the episode's ``quality`` attribute), in ``rig
episodes list`` (from the stored arrays, so any store is judged, old ones too) and in the plots of
``rig episodes export --plots`` (the flagged steps marked).

**Late steps** (flag ``late``). A step is late when it follows the previous one by more than
:data:`LATE_FACTOR` (1.5) control periods ``dt_s`` (the loop, a camera or the disk fell behind: a
loaded machine). Late steps leave the observation history with gaps a policy never sees at
``dt_s``. The episode is flagged when more than :data:`MAX_LATE_FRACTION` (5 %) of its step gaps
are late.

**Stall** (flag ``stall``). Under the action-time rule (:mod:`collection.action_time`) ``action[k]``
is the pose the arm was *commanded to be at at* ``timestamp[k]`` and ``robot_eef_pose[k]`` the pose
measured then, so on a healthy rig they agree within a few mm (< 0.5 mm p50 in the sim beside two
busy processes; the arm's tracking lag at the teleop speed limit adds a few mm). A step whose TCP
*position* is more than :data:`STALL_DISTANCE_M` (10 mm) from its action's is *behind*; the episode
is flagged when at least :data:`STALL_MIN_STEPS` (3) steps are (a protective stop, an arm at its
own speed limit, a collision, a lost link): its actions are not what the arm did. Positions only:
a stall moves both, and metres and radians do not add. Stores recorded under the legacy rule
(actions ahead of the pose by about a period plus the camera age) are not judged for stalls
(``stall_steps`` None): there the distance is the motion of that lead, not a fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from collection.episode_store import LATE_FACTOR

MAX_LATE_FRACTION = 0.05
"""An episode with more than this fraction of late step gaps (> ``LATE_FACTOR`` * dt_s) is flagged."""

STALL_DISTANCE_M = 0.010
"""A step whose TCP position is farther than this (m) from its action's position is behind."""

STALL_MIN_STEPS = 3
"""An episode with at least this many steps behind is flagged ``stall``."""

THRESHOLDS = {
    "late_factor": LATE_FACTOR,
    "max_late_fraction": MAX_LATE_FRACTION,
    "stall_distance_m": STALL_DISTANCE_M,
    "stall_min_steps": STALL_MIN_STEPS,
}


@dataclass(frozen=True)
class EpisodeQuality:
    """The checks of one episode. Step indices count from the episode's first step."""

    n_steps: int
    late_at: np.ndarray  # steps that came late (their gap to the previous step > LATE_FACTOR * dt_s)
    lag_m: np.ndarray | None  # per step: |action[:3] - robot_eef_pose[:3]| (m); None: not judged
    dt_s: float | None

    @property
    def late_steps(self) -> int | None:
        return None if self.dt_s is None else len(self.late_at)

    @property
    def stall_distance_mm(self) -> float:
        return STALL_DISTANCE_M * 1e3

    @property
    def behind_at(self) -> np.ndarray:
        """Steps whose TCP was more than STALL_DISTANCE_M from the action's position."""
        if self.lag_m is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.lag_m > STALL_DISTANCE_M)

    @property
    def max_lag_m(self) -> float | None:
        return None if self.lag_m is None or not len(self.lag_m) else float(np.max(self.lag_m))

    @property
    def flags(self) -> list[str]:
        out = []
        if (
            self.dt_s is not None
            and self.n_steps > 1
            and len(self.late_at) > MAX_LATE_FRACTION * (self.n_steps - 1)
        ):
            out.append("late")
        if len(self.behind_at) >= STALL_MIN_STEPS:
            out.append("stall")
        return out

    def describe(self) -> str:
        """One clause for a person: what is wrong, with the numbers; "" when nothing is."""
        parts = []
        if "late" in self.flags:
            share = len(self.late_at) / max(self.n_steps - 1, 1)
            parts.append(
                f"{len(self.late_at)} late steps ({share:.0%} > {MAX_LATE_FRACTION:.0%}: gaps over "
                f"{LATE_FACTOR} x dt_s {self.dt_s} s; a loaded machine or a slow camera?)"
            )
        if "stall" in self.flags:
            parts.append(
                f"the arm was behind its action by > {STALL_DISTANCE_M * 1e3:.0f} mm on {len(self.behind_at)} "
                f"steps (max {self.max_lag_m * 1e3:.0f} mm; stalled, stopped or at its speed limit?)"
            )
        return "; ".join(parts)

    def to_attrs(self) -> dict[str, Any]:
        """The episode attribute ``quality`` (JSON): flags, counts, the largest lag, the thresholds."""
        return {
            "flags": self.flags,
            "late_steps": self.late_steps,
            "behind_steps": None if self.lag_m is None else len(self.behind_at),
            "max_lag_m": None if self.max_lag_m is None else round(self.max_lag_m, 5),
            "thresholds": dict(THRESHOLDS),
        }


def assess(arrays: Mapping[str, np.ndarray], dt_s: float | None, judge_stall: bool = True) -> EpisodeQuality:
    """Judge one episode from its arrays (``timestamp``, ``robot_eef_pose``, ``action``; any missing
    one leaves its check out). ``judge_stall``: False for legacy-rule stores (see the module)."""
    ts = arrays.get("timestamp")
    n = len(next(iter(arrays.values()))) if arrays else 0
    late_at = np.zeros(0, np.int64)
    if ts is not None and dt_s is not None and len(ts) > 1:
        ts = np.asarray(ts, np.float64).reshape(len(ts), -1)[:, 0]
        late_at = np.flatnonzero(np.diff(ts) > LATE_FACTOR * dt_s) + 1
    pose, action = arrays.get("robot_eef_pose"), arrays.get("action")
    lag = None
    if judge_stall and pose is not None and action is not None and pose.ndim == 2 and action.ndim == 2:
        if pose.shape[1] >= 3 and action.shape[1] >= 3:
            lag = np.linalg.norm(
                np.asarray(action[:, :3], np.float64) - np.asarray(pose[:, :3], np.float64), axis=1
            )
    return EpisodeQuality(n, late_at, lag, dt_s)


class QualityTracker:
    """The same checks fed step by step while an episode is recorded (collect's save line)."""

    def __init__(self, dt_s: float | None, judge_stall: bool = True) -> None:
        self.dt_s = dt_s
        self.judge_stall = judge_stall
        self.timestamps: list[float] = []
        self.lag_m: list[float] = []

    def add(self, timestamp: float, eef_pose: np.ndarray, action: np.ndarray) -> None:
        self.timestamps.append(float(timestamp))
        self.lag_m.append(
            float(np.linalg.norm(np.asarray(action[:3], np.float64) - np.asarray(eef_pose[:3])))
        )

    def result(self) -> EpisodeQuality:
        ts = np.asarray(self.timestamps)
        late_at = np.zeros(0, np.int64)
        if self.dt_s is not None and len(ts) > 1:
            late_at = np.flatnonzero(np.diff(ts) > LATE_FACTOR * self.dt_s) + 1
        lag = np.asarray(self.lag_m) if self.judge_stall else None
        return EpisodeQuality(len(ts), late_at, lag, self.dt_s)
