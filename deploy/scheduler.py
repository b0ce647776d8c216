"""Action-chunk scheduling: stamping, dropping, the no-burst fallback and the async commit plan.

Pure logic, no processes and no clock of its own: every function takes ``now`` (host monotonic s)
as an argument, so the timing rules are unit-tested exactly.

Time domains (all host monotonic seconds):

- *target time* ``T``: when the arm should **be** at a pose. A chunk predicted from an observation
  whose newest step was taken at ``t_obs`` is stamped ``T_i = t_obs + (first_index + i) * dt_s``.
- *send time* ``T - action_latency_s``: when the command must be executed by the controller so that
  the arm is there at ``T`` (``Env.exec_actions`` applies this shift).

An action is **feasible** when its send time is later than ``now + margin_s``. Infeasible actions
are dropped, never executed late. When *no* action of a chunk is feasible (inference took longer
than the whole chunk), only the newest action is kept and scheduled at the earliest feasible target
time ``now + action_latency_s + margin_s + min_lead_s``: one speed-limited move, no late burst of
stale actions (sync mode and async mode alike).

Sync mode (the reference behaviour) schedules every feasible action of a chunk at once
(:func:`schedule_chunk`). Async mode keeps an :class:`ActionPlan`: the runner *commits* (sends to the
arm) only the actions whose send time falls within ``commit_window_s`` of now, so a newer chunk can
replace the rest. A request for the next chunk carries the actions that will already be committed
when it is expected to arrive (:meth:`ActionPlan.committed_for`), the policy inpaints them, and
:meth:`ActionPlan.merge` joins the new chunk after the last committed action: no jump, no pause, and
an action superseded by a newer chunk is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.arm.interpolator import PoseTrajectoryInterpolator

FloatArray = NDArray[np.float64]

# Smallest lead given to the fallback action beyond the feasibility bound (s): the controller must
# still see the waypoint strictly in the future after the command queue hop.
MIN_LEAD_S = 0.005


def stamp_chunk(n_actions: int, first_index: int, t_obs: float, dt_s: float) -> FloatArray:
    """Target times (n,) of a chunk's actions: ``t_obs + (first_index + i) * dt_s``."""
    return float(t_obs) + (int(first_index) + np.arange(int(n_actions), dtype=np.float64)) * float(dt_s)


def earliest_feasible_time(now: float, action_latency_s: float, margin_s: float) -> float:
    """The earliest target time an action can still be executed on time (host monotonic s)."""
    return float(now) + float(action_latency_s) + float(margin_s) + MIN_LEAD_S


def feasible_mask(target_times: ArrayLike, now: float, action_latency_s: float, margin_s: float) -> NDArray:
    """True where the send time ``T - action_latency_s`` is later than ``now + margin_s`` (with the
    same ``MIN_LEAD_S`` the fallback uses, so that a kept action is never dropped by the arm)."""
    t = np.asarray(target_times, dtype=np.float64)
    return t >= earliest_feasible_time(now, action_latency_s, margin_s)


@dataclass(frozen=True)
class ScheduledActions:
    """What to send: ``poses`` (k, 6) at target times ``target_times`` (k,), plus accounting.

    ``dropped``: actions of the chunk not sent because they could no longer be reached on time
    (including those replaced by the fallback); ``fallback``: no action was feasible and the newest
    one was moved to the earliest feasible time; ``source_index``: row of the chunk each sent pose
    comes from.
    """

    poses: FloatArray
    target_times: FloatArray
    dropped: int
    fallback: bool
    source_index: NDArray[np.int64]


def schedule_chunk(
    poses: ArrayLike, target_times: ArrayLike, now: float, action_latency_s: float, margin_s: float
) -> ScheduledActions:
    """Sync-mode scheduling of one stamped chunk (see the module docstring): keep the feasible
    actions; if none is, keep only the newest at the earliest feasible time (no burst)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 6)
    times = np.asarray(target_times, dtype=np.float64).reshape(-1)
    if len(poses) != len(times):
        raise ValueError(f"schedule_chunk: {len(poses)} poses but {len(times)} target times")
    if len(poses) == 0:
        return ScheduledActions(np.zeros((0, 6)), np.zeros(0), 0, False, np.zeros(0, np.int64))
    ok = feasible_mask(times, now, action_latency_s, margin_s)
    if ok.any():
        idx = np.flatnonzero(ok)
        return ScheduledActions(poses[idx], times[idx], int(len(times) - len(idx)), False, idx)
    t = earliest_feasible_time(now, action_latency_s, margin_s)
    last = len(poses) - 1
    return ScheduledActions(poses[[last]], np.array([t]), int(len(times) - 1), True, np.array([last]))


@dataclass
class MergeResult:
    """Accounting of one :meth:`ActionPlan.merge`.

    ``superseded``: planned-but-uncommitted actions of older chunks that the new chunk replaced (never
    sent); ``already_committed``: rows of the new chunk at or before the last committed action (the
    inpainted ones, or rows that arrived too late to change what was committed); ``dropped``: rows
    after the last committed action that could no longer be reached on time; ``fallback``: none was
    feasible, the newest row was planned at the earliest feasible time; ``planned``: rows added;
    ``join_time``/``jump_m``: where the new chunk takes over (target time) and the distance between
    the pose the arm was going to have there and the pose the new chunk wants there (m).
    """

    superseded: int = 0
    already_committed: int = 0
    dropped: int = 0
    fallback: bool = False
    planned: int = 0
    join_time: float = float("nan")
    jump_m: float = float("nan")


@dataclass
class PlannedAction:
    """One action of the plan: reach ``pose`` at ``target_time``; from row ``row`` of chunk ``chunk``."""

    pose: FloatArray
    target_time: float
    chunk: int
    row: int
    asap: bool = False
    """The no-burst fallback: meant for the earliest feasible time, re-timed if sent later."""


@dataclass
class ActionPlan:
    """The async plan: committed (sent) actions and the uncommitted tail of the newest chunk.

    ``committed`` keeps the actions sent to the arm (target time order), ``pending`` those planned
    but not sent yet. :meth:`pose_at` evaluates the plan like the arm's own interpolator does
    (linear position, slerp rotation, from the hold pose at the reset time, holding at the end).
    """

    hold_pose: FloatArray | None = None
    hold_time: float = 0.0
    committed: list[PlannedAction] = field(default_factory=list)
    pending: list[PlannedAction] = field(default_factory=list)
    dropped_due: int = 0

    # ------------------------------------------------------------------ inspection
    @property
    def last_committed_time(self) -> float | None:
        return self.committed[-1].target_time if self.committed else None

    @property
    def end_time(self) -> float | None:
        """Target time of the last planned action (committed or not); None when nothing is planned."""
        if self.pending:
            return self.pending[-1].target_time
        return self.last_committed_time

    @property
    def is_empty(self) -> bool:
        return not self.committed and not self.pending

    def remaining_s(self, now: float) -> float:
        """How long the plan still covers after ``now`` (s of target time; -inf when nothing planned)."""
        end = self.end_time
        return -np.inf if end is None else end - now

    def pose_at(self, t: ArrayLike, include_pending: bool = True) -> FloatArray:
        """Planned pose(s) at target time(s) ``t`` (``(6,)`` for a scalar, ``(n, 6)`` for an array)."""
        rows = self.committed + (self.pending if include_pending else [])
        times = [r.target_time for r in rows]
        poses = [r.pose for r in rows]
        if self.hold_pose is not None and (not times or self.hold_time < times[0]):
            times.insert(0, self.hold_time)
            poses.insert(0, self.hold_pose)
        if not times:
            raise ValueError("ActionPlan.pose_at: nothing planned and no hold pose")
        return PoseTrajectoryInterpolator(times, np.asarray(poses))(t)

    # ------------------------------------------------------------------ editing
    def reset(self, hold_pose: ArrayLike, hold_time: float) -> None:
        """Forget everything (new episode, after a takeover or a stop): the arm holds ``hold_pose``
        from ``hold_time`` (host monotonic s)."""
        self.hold_pose = np.asarray(hold_pose, dtype=np.float64).reshape(6).copy()
        self.hold_time = float(hold_time)
        self.committed = []
        self.pending = []

    def committed_for(
        self, t_obs: float, dt_s: float, commit_until: float, max_rows: int
    ) -> FloatArray | None:
        """The actions that will already be committed at target time ``commit_until``, on the grid
        of a chunk predicted from ``t_obs``: rows ``pose_at(t_obs + k * dt_s)`` for every ``k`` with
        ``t_obs + k * dt_s <= min(commit_until, end_time)``, plus the next grid row when it is still
        planned (``<= end_time``), at most ``max_rows``. The last committed action usually lies between
        two grid rows (the chunks' grids differ in phase); with only the rows before it, the new chunk
        would join it interpolating toward a free row, i.e. with a jump. None when nothing was planned
        yet (first chunk of an episode) or no grid point is committed."""
        if self.is_empty:
            return None
        # Nothing beyond the last planned action is committed: the plan would only "hold" there.
        end = float(self.end_time)
        commit_until = min(commit_until, end)
        k = int(np.floor((commit_until - t_obs) / dt_s + 1e-9)) + 1
        if k >= 1 and t_obs + k * dt_s <= end + 1e-9:
            k += 1  # the row after commit_until: the join interval is inpainted at both ends
        k = min(max(k, 0), int(max_rows))
        if k == 0:
            return None
        times = t_obs + np.arange(k) * dt_s
        return np.atleast_2d(self.pose_at(times))

    def merge(
        self,
        poses: ArrayLike,
        target_times: ArrayLike,
        now: float,
        action_latency_s: float,
        margin_s: float,
        chunk: int,
    ) -> MergeResult:
        """Replace the uncommitted tail by a new stamped chunk (see the module docstring).

        Rows at or before the last committed target time are left out (they are, or should equal,
        the committed ones); later rows that are not feasible at ``now`` are dropped; if no row after
        the last committed one is feasible, the newest row is planned at the earliest feasible time
        (if the whole chunk lies before the last committed action, nothing is planned).
        """
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 6)
        times = np.asarray(target_times, dtype=np.float64).reshape(-1)
        if len(poses) != len(times) or len(poses) == 0:
            raise ValueError(f"ActionPlan.merge: {len(poses)} poses and {len(times)} target times")
        res = MergeResult(superseded=len(self.pending))
        if not self.committed:
            # The arm holds until it receives the first waypoint: its first segment starts now.
            self.hold_time = max(self.hold_time, float(now))
        last = self.last_committed_time
        after = np.ones(len(times), bool) if last is None else times > last + 1e-9
        res.already_committed = int(np.count_nonzero(~after))
        ok = after & feasible_mask(times, now, action_latency_s, margin_s)
        res.dropped = int(np.count_nonzero(after & ~ok))
        t_early = earliest_feasible_time(now, action_latency_s, margin_s)
        t_join = t_early if last is None else max(t_early, last)
        old_pose = None if self.hold_pose is None and not self.committed else self.pose_at(t_join, False)
        if ok.any():
            new_rows = [
                PlannedAction(poses[i].copy(), float(times[i]), chunk, int(i)) for i in np.flatnonzero(ok)
            ]
        elif after.any():
            res.fallback = True
            i = len(poses) - 1
            res.dropped -= 1  # the newest row is moved, not dropped
            t = t_early if last is None else max(t_early, last + MIN_LEAD_S)
            new_rows = [PlannedAction(poses[i].copy(), t, chunk, i, asap=True)]
        else:
            new_rows = []
        self.pending = new_rows
        res.planned = len(new_rows)
        res.join_time = float(t_join)
        if old_pose is not None:
            # The pose the new chunk itself wants at the join time (its stamped rows, holding at ends).
            order = np.argsort(times, kind="stable")
            t_sorted = times[order]
            keep = np.concatenate([[True], np.diff(t_sorted) > 1e-9])
            want = PoseTrajectoryInterpolator(t_sorted[keep], poses[order][keep])(t_join)
            res.jump_m = float(np.linalg.norm(want[:3] - old_pose[:3]))
        return res

    def take_due(
        self, now: float, action_latency_s: float, commit_window_s: float, margin_s: float
    ) -> list[PlannedAction]:
        """Commit (return, and move to ``committed``) the pending actions whose send time is within
        ``commit_window_s`` of ``now``. Pending actions already infeasible (the loop stalled past
        them) are dropped and counted in ``dropped_due``."""
        out: list[PlannedAction] = []
        horizon = now + action_latency_s + commit_window_s
        t_min = earliest_feasible_time(now, action_latency_s, margin_s)
        while self.pending and self.pending[0].target_time <= horizon:
            row = self.pending.pop(0)
            if row.asap and row.target_time < t_min:
                row.target_time = max(t_min, (self.last_committed_time or -np.inf) + MIN_LEAD_S)
            if row.target_time < t_min:
                self.dropped_due += 1
                continue
            out.append(row)
            self.committed.append(row)
        if len(self.committed) > 4096:  # bound memory on long episodes
            self.committed = self.committed[-2048:]
        return out


# Two computations of the same grid time (t_obs + k * dt_s) differ by rounding: within this they are one.
STAMP_TOLERANCE_S = 1e-6


@dataclass
class WidthPlan:
    """The gripper widths planned by the policy's chunks (the 7th action column): stamped levels, each
    holding until the next. A chunk's widths replace the plan from their first stamp on (as
    ``Env.exec_widths`` replaces the gripper's pending ones), so :meth:`at` answers what the gripper is
    planned to hold at any target time: the committed widths a request is conditioned on, step by step,
    not one level for the whole committed prefix."""

    times: FloatArray = field(default_factory=lambda: np.empty(0))
    widths: FloatArray = field(default_factory=lambda: np.empty(0))

    def reset(self) -> None:
        self.times, self.widths = np.empty(0), np.empty(0)

    def merge(self, widths: ArrayLike, target_times: ArrayLike) -> None:
        w = np.asarray(widths, dtype=np.float64).reshape(-1)
        t = np.asarray(target_times, dtype=np.float64).reshape(-1)
        if len(w) != len(t) or len(w) == 0:
            raise ValueError(f"WidthPlan.merge: {len(w)} widths and {len(t)} target times")
        keep = self.times < t[0]
        self.times = np.concatenate([self.times[keep], t])
        self.widths = np.concatenate([self.widths[keep], w])

    def at(self, target_times: ArrayLike, fallback: float) -> FloatArray:
        """The planned width at each target time; ``fallback`` before the first planned one."""
        t = np.asarray(target_times, dtype=np.float64).reshape(-1)
        if not len(self.widths):
            return np.full(len(t), float(fallback))
        # A time on a stamp (the grid of another chunk, computed another way) takes that stamp's width.
        i = np.searchsorted(self.times, t + STAMP_TOLERANCE_S, side="right") - 1
        return np.where(i >= 0, self.widths[np.maximum(i, 0)], float(fallback))
