"""The deployment loop: observations -> policy -> stamped, feasible, safe actions -> arm; recorded.

:class:`DeployRunner` runs episodes on an open :class:`robot.env.Env` with a policy client
(:mod:`deploy.policy_client`). Before the first episode the policy is warmed up (one predict, not
counted). Per episode: open the gripper (if any); sim: ``reset_world(seed)``; ``home()``; a wait
until every camera has frames captured after both (``Env.wait_for_frames_since``: the first
observation shows the new world even with a slow camera), then a fixed-rate loop at ``loop_hz`` until the task's success has been held ``success_hold_s``, ``max_episode_s``
passed, ``q`` was pressed, or the safety layer stopped the arm.

Each loop tick (host monotonic time ``t``):

1. ``env.check()`` / heartbeat; keys and SpaceMouse buttons (takeover toggle, ``q``);
2. takeover active: the arm follows the SpaceMouse (:class:`collection.teleop.TeleopMapper`); the
   policy is paused (an in-flight result is discarded) and resumes, from where the arm is, on release;
3. a finished chunk: safety check (NaN/inf -> ``stop_motion``, hold, save, exit with the message),
   stamp ``t_obs + (first_index + i) * dt_s + action_time_offset_s`` (``t_obs = obs["timestamp"][-1]``;
   the offset is 0 by default: a stored action is the pose commanded for its observation's time,
   :mod:`collection.action_time`; the committed rows a request inpaints and the gripper's widths are
   sampled on the same shifted grid), then
   - ``sync``: drop the infeasible actions and send the rest at once (:func:`schedule_chunk`),
   - ``async``: replace the uncommitted tail of the plan (:meth:`ActionPlan.merge`);
4. ``async``: commit (send) the planned actions whose send time is within ``commit_window_s``;
5. request the next chunk: ``sync`` every ``n_action_steps * dt_s`` (blocking: the reference);
   ``async`` when the plan will run out within the expected latency (quantile of the measured ones)
   plus the action latency, the commit window and one step, conditioned on the actions that will be
   committed by the time the chunk is expected (``committed_actions``, inpainted by the policy);
6. every ``rig.obs.dt_s``: record one step (obs, executed action, chunk index, latency, drops); a
   tick that sees no newer frame than the last recorded step records nothing (no repeated times).

Every number in use (action latency, margins, dt, latency estimate) is printed at start.

Evaluation recording (``config.store``, episode store layout, one step every ``dt_s``):
``camera_<i>`` (H, W, 3) uint8, ``robot_eef_pose`` (6,), ``robot_joint`` (6,), ``timestamp`` (the
observation's aligned time, host monotonic s), ``action`` (6,): the pose (and width) the arm was
commanded to be at at ``timestamp``, read back from the controllers' commanded history
(``Env.commanded_at``: policy or takeover, never a dropped row), the rule of collected stores
(:mod:`collection.action_time`; the store is marked with it), ``chunk_index`` (int64:
the chunk that action came from, -1 takeover/none), ``chunk_start`` (bool: a chunk was merged since
the previous step), ``inference_latency_s`` (latency of the newest chunk, NaN before the first),
``dropped_actions`` (int64, cumulative), ``takeover`` (bool). Per-chunk details (observation time,
request/arrival times, latency, committed rows, dropped/superseded counts, fallback, join jump, safety
events) go to ``<store>.deploy/episode_<index>.json``, with ``ready_time`` (when the reset and homing
finished) and the latency watch's newest estimates at each chunk (``latency_watch``: action dead time,
camera transport latencies) and its episode figures; the episode's store attributes hold the same
figures (:mod:`robot.latency_watch`: it warns once when the arm's dead time drifts from the
calibration by more than a control tick, a camera's by 5 ms), and how the episode ended: ``success``
(bool; null on a real rig), ``end_reason`` (``success``, ``max_episode_s``, ``quit``,
``safety_stop``, ``interrupted`` for Ctrl-C, ``error: <type>``) and ``interrupted`` (true when Ctrl-C
or an error cut the episode short: it is kept, marked, and `rig episodes list` shows it as
``interrupted``, never as a failure). With ``record_video``, every camera's
full-rate mp4 goes to ``<video_dir>/episode_<index>/<camera>.mp4`` (default ``<store>.videos/``, as
in collection; written by the cameras' writer processes, off the loop) and the episode's summary
names the files.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from collection.gripper_teleop import GripperTeleop
from collection.teleop import TeleopMapper, teleop_step_s, teleop_target_time
from deploy.config import DeployConfig
from deploy.policy_client import ChunkResult, PolicyMeta
from deploy.safety import ChunkSafety, PolicySafetyStop
from deploy.scheduler import ActionPlan, PlannedAction, WidthPlan, schedule_chunk, stamp_chunk
from robot.latency_watch import LatencyWatch
from robot.process import DeviceProcessError
from robot.timing import RateLoop, now

log = logging.getLogger("deploy.runner")


@dataclass
class EpisodeResult:
    index: int
    seed: int | None
    success: bool
    duration_s: float
    steps: int
    chunks: int
    actions_dropped: int
    actions_superseded: int
    safety_events: int
    takeover_s: float
    end_reason: str
    inference_latency_s: list[float] = field(default_factory=list)
    store_index: int | None = None
    videos: dict[str, str] = field(default_factory=dict)
    # Sim pick-and-place: what became of the box (robot/sim/tasks/pick_place_outcome.py), else None.
    outcome: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.inference_latency_s or [np.nan]) * 1e3
        return {
            "index": self.index,
            "seed": self.seed,
            "success": self.success,
            "duration_s": round(self.duration_s, 3),
            "steps": self.steps,
            "chunks": self.chunks,
            "actions_dropped": self.actions_dropped,
            "actions_superseded": self.actions_superseded,
            "safety_events": self.safety_events,
            "takeover_s": round(self.takeover_s, 3),
            "end_reason": self.end_reason,
            "inference_p50_ms": _r(np.nanpercentile(lat, 50)) if self.inference_latency_s else None,
            "store_index": self.store_index,
            "videos": self.videos,
            "outcome": self.outcome,
        }


def _r(x: float, nd: int = 1) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _ms_median(latencies_s: Any) -> str:
    """``"133 ms"``, or ``"-"`` before the first chunk (never ``nan ms``)."""
    lat = [x for x in latencies_s if x is not None and np.isfinite(x)]
    return f"{np.median(lat) * 1e3:.0f} ms" if lat else "-"


class NullKeys:
    """Key source that never has keys (headless runs)."""

    closed = False

    def poll(self) -> list[str]:
        return []


class DeployRunner:
    """Runs deployment episodes (see module docstring).

    Args:
        config: the deployment config.
        env: a started Env (its rig must be ``config.rig``).
        client: a policy client (LocalPolicyClient, InferenceProcess, RemotePolicyClient).
        keys: key source with ``poll() -> list[str]`` (collection.keys.KeyReader); None: no keys.
        out: where the human-readable lines go.
        keep_logs: keep per-waypoint and arm-state logs in memory (tests, benchmarks).
    """

    def __init__(
        self,
        config: DeployConfig,
        env: Any,
        client: Any,
        keys: Any = None,
        out: TextIO = sys.stdout,
        keep_logs: bool = False,
    ) -> None:
        self.cfg = config
        self.env = env
        self.client = client
        self.keys = keys if keys is not None else NullKeys()
        self.out = out
        self.keep_logs = keep_logs
        meta: PolicyMeta = client.meta
        self.meta = meta
        self.dt_s = meta.dt_s
        if abs(meta.dt_s - config.rig.obs.dt_s) > 1e-6:
            log.warning(
                "policy dt_s %.3f s differs from the rig's obs.dt_s %.3f s: observations are taken at the "
                "policy's dt",
                meta.dt_s,
                config.rig.obs.dt_s,
            )
        self.n_out_used = config.n_action_steps or meta.n_action_steps
        self.action_latency_s = float(env.action_latency_s)
        self.margin_s = config.action_margin_s
        self.period_s = 1.0 / config.loop_hz
        limits = config.rig.arm.limits
        self.safety = ChunkSafety(
            limits,
            self.dt_s,
            config.safety.workspace_min_m,
            config.safety.workspace_max_m,
            config.safety.speed_factor,
        )
        self.jump_limit_m = min(limits.max_linear_speed_m_s * config.rig.arm.period_s, limits.max_step_m)
        self.mapper = TeleopMapper(config.teleop, limits.workspace_min_m, limits.workspace_max_m)
        # During a takeover the SpaceMouse buttons drive the gripper (teleop.gripper, as in collection).
        self.grip = (
            GripperTeleop(config.teleop.gripper, config.rig.gripper.max_width_m)
            if env.gripper is not None
            else None
        )
        self.latencies: deque[float] = deque(maxlen=20)
        self.all_latencies_s: list[float] = []
        self.compute_s: list[float] = []
        self.safety_events = 0
        self.safety_messages: list[str] = []
        self.stopped: str | None = None
        self.quit = False
        self.episodes: list[EpisodeResult] = []
        self.plan = ActionPlan()
        self.width_plan = WidthPlan()
        # logs (per episode; tests and benchmarks)
        self.sent_log: list[dict[str, Any]] = []
        self.chunk_log: list[dict[str, Any]] = []
        self.arm_log: dict[str, list[np.ndarray]] = {}
        self._arm_counter = 0
        self._request_seq = 0
        self.latency_watch = LatencyWatch.for_env(env)

    # ------------------------------------------------------------------ output
    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def describe_timing(self) -> str:
        m = self.meta
        parts = [
            f"mode {self.cfg.mode} ({getattr(self.client, 'transport', 'in-process')})",
            self.env.describe_timing(),
            f"policy {m.description}: dt {m.dt_s * 1e3:.0f} ms, n_obs_steps {m.n_obs_steps}, horizon {m.horizon}, "
            f"n_action_steps {m.n_action_steps} (using {self.n_out_used})",
            f"action margin {self.margin_s * 1e3:.0f} ms",
            f"loop {self.cfg.loop_hz:.0f} Hz",
        ]
        if self.cfg.mode == "async":
            qv = self.cfg.latency_quantile
            q = "maximum" if qv >= 1.0 else f"p{qv * 100:.0f}"
            parts.append(
                f"commit window {self.cfg.commit_window_s * 1e3:.0f} ms, replan overlap "
                f"{self.cfg.replan_overlap_s * 1e3:.0f} ms, initial latency estimate "
                f"{self.cfg.expected_latency_s * 1e3:.0f} ms (then the {q} of the last 20 measured)"
            )
        return "; ".join(parts)

    # ------------------------------------------------------------------ helpers
    def latency_estimate_s(self) -> float:
        if not self.latencies:
            return self.cfg.expected_latency_s
        return float(np.quantile(np.asarray(self.latencies), self.cfg.latency_quantile))

    def _policy_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for key in self.meta.obs_keys:
            if key not in obs:
                raise KeyError(
                    f"the policy needs observation {key!r}, the rig provides {sorted(obs)}: check that the "
                    "checkpoint was trained on this rig's cameras (camera_<i> in rig config order)"
                )
            out[key] = obs[key]
        return out

    def warm_up(self, timeout_s: float = 120.0) -> None:
        """One predict before the first episode, so that chunk 0 does not pay the one-off costs (weight
        packing, allocator, CUDA graphs); its latency is said and kept out of the figures."""
        warm_up = getattr(self.client, "warm_up", None)
        if warm_up is None:
            return
        res = warm_up(self._policy_obs(self.env.get_obs(self.meta.n_obs_steps)), timeout_s)
        if res is None:
            raise DeviceProcessError(
                f"{self.client.transport}: the policy's warm-up predict did not finish within {timeout_s:.0f} s"
            )
        if res.error is not None:
            raise ValueError(f"the policy failed its warm-up predict: {res.error}")
        self.say(
            f"policy warm-up: one predict took {res.latency_s * 1e3:.0f} ms (not counted in the figures)"
        )

    def check_observations(self) -> None:
        """Before the first episode: the rig's observations have the keys and per-step shapes the
        policy was trained on. Raises ValueError naming each mismatch and what to change."""
        shapes = self.meta.obs_shapes
        obs = self.env.get_obs(self.meta.n_obs_steps)
        errors = []
        for key in self.meta.obs_keys:
            if key not in obs:
                errors.append(f"the policy needs {key!r}, the rig provides {sorted(obs)}")
                continue
            if shapes is None or key not in shapes:
                continue
            got = list(np.asarray(obs[key]).shape[1:])
            want = list(shapes[key])
            if want and got != want and not (want == [1] and got == []):
                hint = ""
                if key.startswith("camera_") and len(want) == 3:
                    i = int(key.split("_")[1])
                    name = self.env.camera_names[i] if i < len(self.env.camera_names) else key
                    hint = f" (set rig.cameras.cameras.{name}.width={want[1]} height={want[0]}, as when collecting)"
                errors.append(
                    f"{key!r}: the rig gives {tuple(got)} per step, the checkpoint expects {tuple(want)}{hint}"
                )
        if errors:
            raise ValueError("the rig does not match the checkpoint: " + "; ".join(errors))

    def _width_now(self, obs: dict[str, Any]) -> float:
        """The width the gripper was last sent, or (none yet) the observed opening (m)."""
        w = float(self.env.gripper.get_state()["target_width_m"])
        return w if np.isfinite(w) else float(obs["gripper_width"][-1, 0])

    def _commanded_pose(self) -> np.ndarray:
        return np.asarray(self.env.arm.get_state()["target_tcp_pose"], dtype=np.float64).copy()

    def _collect_arm_log(self) -> None:
        if not self.keep_logs:
            return
        ring = self.env.arm.state_ring
        recs = ring.get_since(self._arm_counter, skip_overwritten=True)
        if len(recs["counter"]):
            self._arm_counter = int(recs["counter"][-1]) + 1
            for k in ("capture_time", "tick_time", "actual_tcp_pose", "target_tcp_pose", "status_flags"):
                self.arm_log.setdefault(k, []).append(recs[k])

    def arm_history(self) -> dict[str, np.ndarray]:
        """The arm states seen during the last episode (keep_logs): stacked arrays."""
        return {k: np.concatenate(v) for k, v in self.arm_log.items()}

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

    # ------------------------------------------------------------------ chunks
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

    # ------------------------------------------------------------------ takeover
    def _takeover_toggled(self, keys: list[str]) -> bool:
        toggled = self.cfg.takeover.key is not None and self.cfg.takeover.key in keys
        btn = self.cfg.takeover.button
        sm = getattr(self.env, "spacemouse", None)
        if btn is not None and sm is not None:
            presses = np.asarray(sm.latest()["button_presses"])
            if btn < len(presses):
                count = int(presses[btn])
                if self._button_count is None:
                    self._button_count = count
                elif count != self._button_count:
                    toggled = toggled or (count - self._button_count) % 2 == 1
                    self._button_count = count
        return toggled

    def _start_takeover(self, t: float, ep: dict[str, Any]) -> None:
        ep["takeover"] = True
        ep["takeover_since"] = t
        self.client.cancel()
        ep.pop("pending_request", None)
        pose = self._commanded_pose()
        self.mapper.reset(pose)
        self.plan.reset(pose, t)
        self.width_plan.reset()
        if self.grip is not None:  # the buttons drive the gripper from the width it was sent last
            self.grip.width_m = self._width_now(self.env.get_obs(1))
            self.env.gripper.set_width(self.grip.width_m)  # (this also drops the policy's pending widths)
        self.say(
            "TAKEOVER: policy paused, the arm follows the SpaceMouse"
            + (" (its buttons drive the gripper)" if self.grip is not None else "")
            + "; press again to give it back"
        )

    def _end_takeover(self, t: float, ep: dict[str, Any]) -> None:
        ep["takeover"] = False
        ep["takeover_s"] += t - ep["takeover_since"]
        self.width_plan.reset()  # the policy starts from the width the person left
        last = self.plan.committed[-1] if self.plan.committed else None
        if last is not None:
            self.plan.reset(last.pose, last.target_time)
        else:
            self.plan.reset(self._commanded_pose(), t)
        ep["next_cycle"] = t
        self.say("takeover released: the policy continues from here")

    def _teleop_tick(self, t: float, skipped: int) -> None:
        sm = self.env.spacemouse
        if sm is None:
            return
        state = sm.latest()
        target = self.mapper.update(state["axes"], state["buttons"], teleop_step_s(self.period_s, skipped))
        t_target = teleop_target_time(t, self.period_s, self.action_latency_s, self.margin_s)
        row = PlannedAction(target.copy(), t_target, -1, 0)
        self._send([row], t)
        self.plan.committed.append(row)
        if self.grip is not None:  # as in collection: the buttons' width, at once (a level)
            w = self.grip.update(state["buttons"])
            if w != self.env.gripper.get_state()["target_width_m"]:
                self.env.gripper.set_width(w)

    # ------------------------------------------------------------------ recording
    def _record(self, writer: Any, ep: dict[str, Any]) -> None:
        obs = self.env.get_obs(1)
        ts = float(obs["timestamp"][-1])
        if ts <= ep["last_recorded_t"]:  # a late tick saw no new frame: never record an obs twice
            return
        ep["last_recorded_t"] = ts
        step = {k: v[-1] for k, v in obs.items() if k.startswith("camera_") and v.ndim == 4}
        cur = None
        for r in reversed(self.plan.committed):
            if r.target_time <= ts + 1e-9:
                cur = r
                break
        # What the controllers were commanded for ts (collection's rule): never a row that was dropped.
        action = self.env.commanded_at([ts])[0]
        if self.env.gripper is not None:
            step["gripper_width"] = obs["gripper_width"][-1]
        step.update(
            robot_eef_pose=obs["robot_eef_pose"][-1],
            robot_joint=obs["robot_joint"][-1],
            action=np.asarray(action, dtype=np.float64),
            timestamp=ts,
            chunk_index=np.int64(cur.chunk if cur is not None else -1),
            chunk_start=np.bool_(ep.pop("chunk_start", False)),
            inference_latency_s=np.float64(ep.get("last_latency_s", np.nan)),
            dropped_actions=np.int64(ep["dropped"]),
            takeover=np.bool_(ep["takeover"]),
        )
        if writer is not None:
            writer.append(step)
        ep["steps"] += 1

    # ------------------------------------------------------------------ episodes
    def run_episode(self, index: int, seed: int | None, store: Any = None) -> EpisodeResult:
        env = self.env
        cfg = self.cfg
        if env.gripper is not None:  # every episode starts with the fingers open (they open while homing)
            env.gripper.set_width(env.config.gripper.max_width_m)
        if env.config.is_sim and seed is not None:
            env.reset_world(seed)
        env.home()
        t_ready = now()
        # Before the episode's clock starts: the first call starts the video writer processes.
        videos = self._start_video(store.n_episodes if store is not None else index)
        video_dir = next(iter(videos.values())).parent if videos else None
        # A slow camera still delivers the world before the reset: the first observation waits.
        env.wait_for_frames_since(t_ready, self.meta.n_obs_steps)
        self.latency_watch.begin_episode()
        self.sent_log, self.chunk_log, self.arm_log = [], [], {}
        self._arm_counter = env.arm.state_ring.count
        self._button_count = None
        t_start = now()
        self.plan.reset(self._commanded_pose(), t_start)
        self.width_plan.reset()
        ep: dict[str, Any] = {
            "chunks": 0,
            "dropped": 0,
            "superseded": 0,
            "safety_events": 0,
            "steps": 0,
            "latencies": [],
            "chunk_infos": [],
            "takeover": False,
            "takeover_s": 0.0,
            "next_cycle": t_start,
            "ready_time": t_ready,
            "last_recorded_t": -np.inf,
        }
        writer = store.begin_episode() if store is not None else None
        loop = RateLoop(cfg.loop_hz)
        next_record = t_start
        last_status = t_start
        success_since: float | None = None
        end_reason = "max_episode_s"
        error: BaseException | None = None
        outcome = self._outcome_tracker()
        try:
            while True:
                tick = loop.wait()
                t = tick.time
                env.check()
                if outcome is not None:
                    outcome.update(env.arm.world_ring.latest())
                env.heartbeat()
                self.client.check()
                self._collect_arm_log()
                self.latency_watch.poll(t)
                keys = self.keys.poll()
                if "q" in keys:
                    self.quit = True
                    end_reason = "quit"
                    break
                if self._takeover_toggled(keys):
                    if ep["takeover"]:
                        self._end_takeover(t, ep)
                    else:
                        self._start_takeover(t, ep)
                res = self.client.poll()
                if ep["takeover"]:
                    self._teleop_tick(t, tick.skipped)
                else:
                    if res is not None:
                        self._on_chunk(res, ep)
                    if cfg.mode == "async":
                        t_due = now()  # not the tick time: chunk handling may have taken a while
                        due = self.plan.take_due(
                            t_due, self.action_latency_s, cfg.commit_window_s, self.margin_s
                        )
                        ep["dropped"] += self._send(due, t_due)
                    if self._should_request(t, ep):
                        if cfg.mode == "sync":
                            ep["next_cycle"] = t + self.n_out_used * self.dt_s
                        self._request(t, ep)
                        if cfg.mode == "sync":
                            res = self.client.poll()
                            if res is not None:
                                self._on_chunk(res, ep)
                t = now()
                if t >= next_record:
                    self._record(writer, ep)
                    next_record += self.dt_s
                    if next_record < t:
                        next_record = t + self.dt_s
                if env.config.is_sim and env.task_success():
                    success_since = success_since if success_since is not None else t
                    if t - success_since >= cfg.success_hold_s:
                        end_reason = "success"
                        break
                if t - t_start >= cfg.max_episode_s:
                    end_reason = "max_episode_s"
                    break
                if t - last_status >= cfg.status_every_s:
                    last_status = t
                    self._status(index, t - t_start, ep)
        except PolicySafetyStop as exc:
            env.arm.stop_motion()
            self.client.cancel()
            self.stopped = str(exc)
            self.safety_events += 1
            ep["safety_events"] += 1
            end_reason = "safety_stop"
            self.say(str(exc))
        except BaseException as exc:  # Ctrl-C, a device failure: hold the arm, save what we have
            try:
                env.arm.stop_motion()
            except Exception:
                pass
            error = exc
            end_reason = (
                "interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {type(exc).__name__}"
            )
        finally:
            self._collect_arm_log()
            self.plan.pending = []
            if videos:
                try:
                    env.cameras.stop_recording()
                except BaseException as exc:  # a writer ended by the same Ctrl-C: keep what it closed
                    if error is None:
                        raise
                    log.debug("videos of the episode cut short: %s", exc)
                videos = {name: path for name, path in videos.items() if path.is_file()}
        duration = now() - t_start
        success = bool(env.config.is_sim and env.task_success()) if error is None else False
        store_index = None
        if writer is not None:
            if ep["steps"] > 0:
                # An episode cut short (Ctrl-C, a device error) is kept, marked: an evaluation counts
                # it as neither a success nor a failure (`rig episodes list` shows "interrupted").
                attrs = {
                    "success": success if env.config.is_sim else None,  # a real rig: not judged
                    "end_reason": end_reason,
                    "interrupted": error is not None,
                    "seed": seed,
                    "latency_watch": self.latency_watch.episode_summary(),
                }
                info = writer.commit(wait=True, attrs=attrs)
                store_index = info.index
                self._write_sidecar(store, store_index, ep, seed, end_reason)
            else:
                writer.discard()
        if video_dir is not None and writer is not None and store_index is None:  # not saved: no video
            shutil.rmtree(video_dir, ignore_errors=True)
            videos = {}
        result = EpisodeResult(
            index=index,
            seed=seed,
            success=success,
            duration_s=duration,
            steps=ep["steps"],
            chunks=ep["chunks"],
            actions_dropped=ep["dropped"] + self.plan.dropped_due,
            actions_superseded=ep["superseded"],
            safety_events=ep["safety_events"],
            takeover_s=ep["takeover_s"],
            end_reason=end_reason,
            inference_latency_s=list(ep["latencies"]),
            store_index=store_index,
            videos={name: str(path) for name, path in videos.items()},
            outcome=outcome.result(success) if outcome is not None else None,
        )
        self.plan.dropped_due = 0
        self.episodes.append(result)
        if error is not None:
            raise error
        return result

    def _start_video(self, episode: int) -> dict[str, Path]:
        """Start the episode's per-camera mp4s (``record_video``); ``{camera: path}``, {} when off."""
        cfg = self.cfg
        directory = cfg.video_dir or (f"{cfg.store}.videos" if cfg.store else None)
        if not cfg.record_video or directory is None or self.env.cameras is None:
            return {}
        return self.env.cameras.start_recording(directory, episode)

    def _write_sidecar(
        self, store: Any, store_index: int, ep: dict[str, Any], seed: int | None, reason: str
    ) -> None:
        """Per-chunk details next to the store: ``<store>.deploy/episode_<index>.json``."""
        path = Path(str(store.path) + ".deploy")
        path.mkdir(parents=True, exist_ok=True)
        doc = {
            "episode": store_index,
            "seed": seed,
            "mode": self.cfg.mode,
            "end_reason": reason,
            "action_latency_s": self.action_latency_s,
            "dt_s": self.dt_s,
            "ready_time": ep["ready_time"],
            "latency_watch": self.latency_watch.episode_summary(),
            "chunks": [
                {
                    k: (float(v) if isinstance(v, float | np.floating) else v)
                    for k, v in c.items()
                    if k not in ("poses", "times")
                }
                for c in ep["chunk_infos"]
            ],
        }
        (path / f"episode_{store_index:06d}.json").write_text(
            json.dumps(doc, indent=1, default=_json_default)
        )

    def _status(self, index: int, elapsed: float, ep: dict[str, Any]) -> None:
        state = "TAKEOVER" if ep["takeover"] else "policy"
        self.say(
            f"[episode {index} {elapsed:5.1f} s] {state} | chunks {ep['chunks']} | inference p50 "
            f"{_ms_median(ep['latencies'][-20:])} | dropped {ep['dropped']} | safety {ep['safety_events']}"
        )

    def _outcome_tracker(self) -> Any:
        """A PickPlaceOutcome on the simulated rig when its world holds a gripper and a box, else None."""
        ring = getattr(self.env.arm, "world_ring", None)
        if not self.env.config.is_sim or ring is None or not ring.count:
            return None
        from robot.sim.tasks.pick_place_outcome import PickPlaceOutcome

        return PickPlaceOutcome() if PickPlaceOutcome.applies(ring.latest()) else None

    def seeds(self) -> list[int]:
        if self.cfg.seeds is not None:
            if len(self.cfg.seeds) < self.cfg.episodes:
                raise ValueError(f"seeds has {len(self.cfg.seeds)} entries but episodes={self.cfg.episodes}")
            return list(self.cfg.seeds[: self.cfg.episodes])
        return [self.cfg.seed + i for i in range(self.cfg.episodes)]

    def run(self, store: Any = None) -> dict[str, Any]:
        """Run ``config.episodes`` episodes (stops early on a safety stop or ``q``); the summary."""
        self.say(f"timing: {self.describe_timing()}")
        for note in self.meta.notes:
            self.say(f"note: {note}")
        self.check_observations()
        self.warm_up()
        for i, seed in enumerate(self.seeds()):
            r = self.run_episode(i, seed if self.env.config.is_sim else None, store)
            self.say(
                f"episode {i}: {'SUCCESS' if r.success else 'no success'} ({r.end_reason}) in {r.duration_s:.1f} s, "
                f"seed {seed}, {r.chunks} chunks, inference p50 {_ms_median(r.inference_latency_s)}, "
                f"dropped {r.actions_dropped}, safety events {r.safety_events}"
                + (f", saved as episode {r.store_index}" if r.store_index is not None else "")
                + (_describe_outcome(r.outcome) if r.outcome else "")
                + (f", video {', '.join(r.videos.values())}" if r.videos else "")
            )
            if self.stopped or self.quit:
                break
        return self.summary()

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.all_latencies_s or [np.nan]) * 1e3
        if not self.all_latencies_s:  # no chunk yet: null figures, and no all-NaN warnings
            lat = np.asarray([np.inf])
        eps = self.episodes
        return {
            "mode": self.cfg.mode,
            "episodes": len(eps),
            "success_rate": (sum(e.success for e in eps) / len(eps))
            if eps and self.env.config.is_sim
            else None,
            "inference_p50_ms": _r(np.nanpercentile(lat, 50)),
            "inference_p99_ms": _r(np.nanpercentile(lat, 99)),
            "inference_mean_ms": _r(np.nanmean(lat)),
            "actions_dropped": int(sum(e.actions_dropped for e in eps)),
            "actions_superseded": int(sum(e.actions_superseded for e in eps)),
            "safety_events": int(self.safety_events),
            "episode_durations_s": [round(e.duration_s, 3) for e in eps],
            "per_episode": [e.to_dict() for e in eps],
            "failure_causes": _failure_causes(eps),
            "safety_stop": self.stopped,
            "latency_warnings": list(self.latency_watch.warned.values()),
        }


def _describe_outcome(o: dict[str, Any]) -> str:
    off = o.get("first_grasp_offset_m")
    text = f", box at {o['box_start_xy_m']}, {o['grasp_attempts']} grasp(s)"
    if off is not None:
        text += f", first grasp {1e3 * float(np.hypot(*off)):.0f} mm off (tool - box {off})"
        if o.get("first_grasp_height_m") is not None:
            text += f" {1e3 * o['first_grasp_height_m']:.0f} mm above the box's base"
    return text + (f", failure: {o['cause']}" if o.get("cause") else "")


def _failure_causes(eps: list[EpisodeResult]) -> dict[str, list[int | None]] | None:
    """Sim pick-and-place: the world seeds of the failed episodes, by cause; None without outcomes."""
    if not any(e.outcome for e in eps):
        return None
    causes: dict[str, list[int | None]] = {}
    for e in eps:
        if e.outcome and e.outcome.get("cause"):
            causes.setdefault(e.outcome["cause"], []).append(e.seed)
    return causes


def _traj_at(times: np.ndarray, poses: np.ndarray, t: float) -> np.ndarray:
    from robot.arm.interpolator import PoseTrajectoryInterpolator

    return PoseTrajectoryInterpolator(times, poses)(t)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
