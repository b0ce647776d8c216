"""Chunk arrival and merge: asking the policy for a chunk, and turning an arrived chunk into actions
the arm is sent (the part of :class:`deploy.runner.DeployRunner` between the policy and the arm).

Timing contract (steps 3 to 5 of the runner's tick, :mod:`deploy.runner`). ``_request`` reads the
newest observations and hands them to the client without waiting for the result (a ``sync`` run
polls once right after it). ``_on_chunk`` runs on the loop thread when a result arrives: it checks
the chunk (``deploy.safety``; a non-finite action raises PolicySafetyStop), stamps row ``i``
``t_obs + (first_index + i) * dt_s + action_time_offset_s``, and either schedules the feasible rows
at once (``sync``: :func:`deploy.scheduler.schedule_chunk`) or merges them into the plan's
uncommitted tail (``async``: :meth:`deploy.scheduler.ActionPlan.merge`). Rows whose send time (target
time minus the action latency and margin) has passed are dropped, never sent late. Nothing here
sleeps or waits for the policy.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from deploy.config import DeployConfig
from deploy.policy_client import ChunkResult, PolicyMeta
from deploy.safety import ChunkSafety, PolicySafetyStop
from deploy.scheduler import ActionPlan, PlannedAction, WidthPlan, schedule_chunk, stamp_chunk
from robot.latency_watch import LatencyWatch
from robot.timing import now

log = logging.getLogger("deploy.runner")


class ChunkHandling:
    """The runner's chunk requests and arrivals (``DeployRunner`` sets this state in its ``__init__``)."""

    cfg: DeployConfig
    env: Any
    client: Any
    meta: PolicyMeta
    dt_s: float
    n_out_used: int
    action_latency_s: float
    margin_s: float
    period_s: float
    safety: ChunkSafety
    latencies: deque[float]
    all_latencies_s: list[float]
    compute_s: list[float]
    safety_events: int
    safety_messages: list[str]
    plan: ActionPlan
    width_plan: WidthPlan
    keep_logs: bool
    sent_log: list[dict[str, Any]]
    chunk_log: list[dict[str, Any]]
    latency_watch: LatencyWatch
    _request_seq: int

    # DeployRunner's:
    say: Callable[[str], None]
    _policy_obs: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    _width_now: Callable[[dict[str, Any]], float]

    def latency_estimate_s(self) -> float:
        if not self.latencies:
            return self.cfg.expected_latency_s
        return float(np.quantile(np.asarray(self.latencies), self.cfg.latency_quantile))

    def _send(self, rows: list[PlannedAction], t: float) -> int:
        if not rows:
            return 0
        poses = np.stack([r.pose for r in rows])
        times = np.array([r.target_time for r in rows])
        dropped = self.env.exec_actions(poses, times, compensate_latency=True, margin_s=self.margin_s)
        if self.keep_logs:
            # exec_actions drops the earliest ones (rows are in time order) when the loop was late.
            for i, r in enumerate(rows):
                self.sent_log.append(
                    {
                        "pose": r.pose,
                        "target_time": r.target_time,
                        "send_time": t,
                        "chunk": r.chunk,
                        "row": r.row,
                        "dropped": i < dropped,
                    }
                )
        return dropped

    def _request(self, t: float, ep: dict[str, Any]) -> None:
        obs = self.env.get_obs(self.meta.n_obs_steps)
        t_obs = float(obs["timestamp"][-1])
        age_s = t - t_obs
        if age_s > 3 * self.dt_s and not ep.get("stale_warned"):
            ep["stale_warned"] = True
            self.say(
                f"warning: the newest observation is {age_s * 1e3:.0f} ms old when the policy is asked "
                "(cameras lagging: machine overloaded, USB bandwidth, or a stalled camera). Its actions are "
                "stamped from the observation time, so more of each chunk is dropped."
            )
        committed = None
        t_arrive = float("nan")
        if self.cfg.mode == "async":
            # Expected arrival: the latency estimate, plus one loop period until the result is merged.
            t_arrive = t + self.latency_estimate_s() + self.period_s
            commit_until = t_arrive + self.action_latency_s + self.cfg.commit_window_s + self.margin_s
            n_out = self.meta.horizon - self.meta.n_obs_steps + 1
            # Row i of the chunk will be stamped t_obs + offset + i * dt: the committed rows the policy
            # inpaints are sampled on that same grid.
            t_row0 = t_obs + self.cfg.action_time_offset_s
            committed = self.plan.committed_for(t_row0, self.dt_s, commit_until, max_rows=n_out - 1)
            if committed is not None and self.meta.action_dim == 7:
                # The committed widths: those the earlier chunks planned for these rows' times (before
                # any plan: the target the gripper was last sent, or the observed opening).
                t_rows = t_row0 + np.arange(len(committed)) * self.dt_s
                committed = np.column_stack([committed, self.width_plan.at(t_rows, self._width_now(obs))])
        seed = None if self.cfg.policy_seed is None else self.cfg.policy_seed + self._request_seq
        self._request_seq += 1
        ep["pending_request"] = {
            "t_obs": t_obs,
            "t_request": t,
            "committed_rows": 0 if committed is None else len(committed),
            # Where the plan ended when asked: before t_obs nothing of it can be committed any more.
            "plan_end": float("nan") if self.plan.is_empty else float(self.plan.end_time),
            "t_arrive_expected": t_arrive if self.cfg.mode == "async" else float("nan"),
        }
        self.client.request(self._policy_obs(obs), committed, seed)

    def _conditioned_short(self, req: dict[str, Any], m: int) -> bool:
        """Whether actions were committed past the last row the chunk's request inpainted (the
        chunk then joins where the policy was not conditioned: a jump is possible, not a defect)."""
        last = self.plan.last_committed_time
        if self.cfg.mode != "async" or last is None:
            return False
        covered = req["t_obs"] + self.cfg.action_time_offset_s + (m - 1) * self.dt_s if m else -np.inf
        return bool(last > covered + 1e-6)

    def _on_chunk(self, res: ChunkResult, ep: dict[str, Any]) -> None:
        req = ep.pop("pending_request", None)
        if req is None:  # a result from before a takeover/reset: ignore
            return
        k = ep["chunks"]
        ep["chunks"] += 1
        t = now()
        self.latencies.append(res.latency_s)
        self.all_latencies_s.append(res.latency_s)
        ep["latencies"].append(res.latency_s)
        if np.isfinite(res.compute_s):
            self.compute_s.append(res.compute_s)
        if res.error is not None:
            raise PolicySafetyStop(
                f"SAFETY STOP: policy inference failed on chunk {k}: {res.error}. The arm was stopped and holds "
                "its pose. Check the checkpoint and that the observations match what it was trained on."
            )
        m = req["committed_rows"]
        n_total = len(res.actions)
        n_use = min(n_total, (m + self.n_out_used) if self.cfg.mode == "async" else self.n_out_used)
        actions = np.asarray(res.actions, dtype=np.float64)[:n_use]
        widths = None
        if actions.ndim == 2 and actions.shape[1] == 7:  # pose + gripper width (m)
            actions, widths = actions[:, :6], actions[:, 6].copy()
        # Rows before m are the committed actions (inpainted): the per-step limit starts from them.
        check = self.safety.check(actions, k, start_row=max(m - 1, 0) if m else None)
        if check.events:
            self.safety_events += len(check.events)
            ep["safety_events"] += len(check.events)
            for e in check.events:
                self.safety_messages.append(e)
                n = len(self.safety_messages)
                if n <= 5 or n % 20 == 0:  # tell the person, without flooding the terminal
                    self.say(f"safety: {e}" + (f" ({n} safety events so far)" if n > 5 else ""))
        times = stamp_chunk(n_use, res.first_index, req["t_obs"], self.dt_s) + self.cfg.action_time_offset_s
        info: dict[str, Any] = {
            "chunk": k,
            "t_obs": req["t_obs"],
            "t_request": req["t_request"],
            "t_done": res.t_done,
            "t_merged": t,  # when this loop took the chunk (after t_done by as much as it was busy)
            "latency_s": res.latency_s,
            "compute_s": res.compute_s,
            "committed_rows": m,
            "plan_end_at_request": req["plan_end"],
            "rows": n_use,
            # Later than planned for: more was committed than the policy was conditioned on.
            "late": bool(t > req["t_arrive_expected"]),
            # More was committed than the inpainted rows reach, however early the chunk came (the
            # rows are capped at the horizon: a stale observation plus a long latency estimate).
            "short": self._conditioned_short(req, m),
            "safety_events": list(check.events),
        }
        if self.keep_logs:
            info["sent_before"] = len(self.sent_log)  # sends logged before this chunk was merged
            info["poses"] = check.poses.copy()
            info["times"] = times.copy()
        if widths is not None:
            # Same stamps as the poses, the gripper's own latency; it replaces the gripper's pending tail.
            widths = np.clip(widths, 0.0, None)
            self.width_plan.merge(widths, times)
            self.env.exec_widths(widths, times, margin_s=self.margin_s)
        if self.cfg.mode == "sync":
            old_pose = self.plan.pose_at(max(t + self.action_latency_s, times[0]), include_pending=False)
            sched = schedule_chunk(check.poses, times, t, self.action_latency_s, self.margin_s)
            rows = [
                PlannedAction(p, float(tt), k, int(i))
                for p, tt, i in zip(sched.poses, sched.target_times, sched.source_index, strict=True)
            ]
            late = self._send(rows, t)
            if rows:  # the arm replaces its trajectory after the first new waypoint the same way
                first = rows[0].target_time
                self.plan.committed = [r for r in self.plan.committed if r.target_time < first]
            self.plan.committed.extend(rows)
            want = _traj_at(times, check.poses, rows[0].target_time if rows else t)
            info.update(
                dropped=sched.dropped + late,
                superseded=0,
                fallback=sched.fallback,
                planned=len(rows),
                join_time=rows[0].target_time if rows else float("nan"),
                jump_m=float(np.linalg.norm(want[:3] - old_pose[:3])),
            )
            ep["dropped"] += sched.dropped + late
        else:
            mr = self.plan.merge(check.poses, times, t, self.action_latency_s, self.margin_s, chunk=k)
            info.update(
                dropped=mr.dropped,
                superseded=mr.superseded,
                already_committed=mr.already_committed,
                fallback=mr.fallback,
                planned=mr.planned,
                join_time=mr.join_time,
                jump_m=mr.jump_m,
            )
            ep["dropped"] += mr.dropped
            ep["superseded"] += mr.superseded
        if info["fallback"]:
            log.info(
                "chunk %d: inference (%.0f ms) outlasted the whole chunk; the newest action is scheduled at the "
                "earliest feasible time",
                k,
                res.latency_s * 1e3,
            )
        ep["chunk_start"] = True
        ep["last_latency_s"] = res.latency_s
        info["latency_watch"] = self.latency_watch.current()
        self.chunk_log.append(info)
        ep["chunk_infos"].append(info)

    def _should_request(self, t: float, ep: dict[str, Any]) -> bool:
        if "pending_request" in ep or getattr(self.client, "busy", False):
            return False
        if self.cfg.mode == "sync":
            return t >= ep["next_cycle"]
        lead = (
            self.latency_estimate_s()
            + self.period_s
            + self.action_latency_s
            + self.cfg.commit_window_s
            + self.cfg.replan_overlap_s
        )
        return self.plan.remaining_s(t) <= lead


def _traj_at(times: np.ndarray, poses: np.ndarray, t: float) -> np.ndarray:
    from robot.arm.interpolator import PoseTrajectoryInterpolator

    return PoseTrajectoryInterpolator(times, poses)(t)
