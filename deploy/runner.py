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

The loop is here; its parts stand beside it, one concept each, as classes ``DeployRunner`` is made
of: :mod:`deploy.takeover` (step 2), :mod:`deploy.chunk_arrival` (steps 3 to 5: requests, a chunk's
arrival, its merge into the plan), :mod:`deploy.episode_recording` (step 6, the videos) and
:mod:`deploy.episode_sidecar` (the per-chunk JSON below).

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

import logging
import shutil
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from collection.gripper_teleop import GripperTeleop
from collection.teleop import TeleopMapper
from deploy.chunk_arrival import ChunkHandling
from deploy.config import DeployConfig
from deploy.episode_recording import Recording
from deploy.policy_client import PolicyMeta
from deploy.safety import ChunkSafety, PolicySafetyStop
from deploy.scheduler import ActionPlan, WidthPlan
from deploy.takeover import Takeover
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


class DeployRunner(ChunkHandling, Takeover, Recording):
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
