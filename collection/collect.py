"""``rig collect``: SpaceMouse teleoperation of the arm, recorded into an episode store.

The teleop loop runs at ``loop_hz`` (50 Hz) on a fixed grid. Each tick it integrates the SpaceMouse
axes into a TCP target (:mod:`collection.teleop`) and schedules that target far enough ahead that the
arm never reaches it before the next one arrives (:func:`collection.teleop.teleop_target_time`:
``t + action_latency + margin + 2 / loop_hz``, sent the action latency early by ``Env.exec_actions``,
so the controller always has a loop period of waypoints left and never stops between them, as in
deploy's takeover); a gripper width (a level, not a path) is sent at once. Every ``rig.obs.dt_s`` it
reads the time-aligned observation and, while an episode is recording, appends it and, as the step's action,
**the pose (and width) the arm was commanded to be at at the observation's timestamp**, read back from
the controllers' commanded history (``Env.commanded_at``; :mod:`collection.action_time`), to the
store's streaming writer (which never blocks on disk). A target the loop scheduled but the controller
dropped is therefore never stored. New stores are marked with the rule (``action_time`` attribute);
collecting into a store recorded under the old rule is refused. Full-rate per-camera mp4 videos are
written alongside by the camera recorder, in separate processes.

With a gripper (``rig.gripper``), the SpaceMouse buttons drive it (``teleop.gripper``,
:mod:`collection.gripper_teleop`); the step records ``gripper_width`` and the action gains the width
target as its 7th column.

Keys (terminal, pipe, or the preview window): ``c`` start an episode, ``s`` stop and save it,
``Backspace`` discard the episode being recorded, or when idle the last saved episode (asks ``y`` to
confirm), ``q`` quit. ``s`` returns at once: the episode is committed in the background and ``c`` may
start the next one immediately. An episode discarded while recording (Backspace, ``q``, an auto
episode that timed out, Ctrl-C) leaves nothing: its steps are truncated away and its partial videos
(``<video_dir>/episode_<index>/``) are removed, as deleting a saved episode removes its videos.

Bad demonstrations are flagged when saved (:mod:`collection.demo_quality`, thresholds there): an
episode with many late steps (> 5 % of its gaps over 1.5 ``dt_s``) or an arm behind its action (the
TCP more than 10 mm from the commanded position on 3 or more steps: a stall) gets ``FLAGGED late`` /
``FLAGGED stall`` and the numbers on its save line; the same figures are stored in its ``quality``
attribute, and ``rig episodes list`` and ``rig episodes export --plots`` show them.

Latency watch (:mod:`robot.latency_watch`): every step the loop feeds it the arm's new states; it
estimates the action dead time and the cameras' transport latency over a sliding window, warns once
when either drifts from the calibration by more than a control tick / 5 ms, and each saved episode
stores its figures in the store's episode attributes (``store.episode_attrs(i)["latency_watch"]``).

Crash safety: an episode becomes visible in the store only after all its data is written, so Ctrl-C
or a crash loses at most the episode being recorded, never a saved one.

Auto mode (``auto.episodes > 0``, used by the demo on the simulated rig): the collector itself
"presses" ``c`` after resetting the world and homing, and ``s`` once the task reports success (held
for ``auto.success_hold_s``) or ``auto.episode_timeout_s`` passed; the motion still comes from the
(scripted) SpaceMouse through the same teleop path a person uses.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collection import action_time
from collection.demo_quality import QualityTracker
from collection.episode_store import EpisodeStore
from collection.gripper_teleop import GripperTeleop
from collection.keys import BACKSPACE, KeyReader
from collection.teleop import TeleopConfig, TeleopMapper, teleop_step_s, teleop_target_time
from robot.config import StrictModel
from robot.latency_watch import LatencyWatch
from robot.rig_config import RigConfig
from robot.timing import RateLoop, now

log = logging.getLogger("collection.collect")

TELEOP_MARGIN_S = 0.01
"""Beyond the action latency and two loop periods: a teleop target is never near its send time."""


class AutoConfig(StrictModel):
    episodes: int = Field(0, ge=0)
    """>0: record this many episodes without a person (scripted SpaceMouse); 0: keys decide."""
    episode_timeout_s: float = Field(20.0, gt=0)
    success_hold_s: float = Field(0.3, ge=0)
    """Keep recording until a recorded observation is this much newer than the tick at which the task
    first reported success (observation time: a lagging camera makes the episode longer, never cut
    before the success shows)."""
    save_failed: bool = False
    """Save episodes that timed out without success (default: discard them)."""
    spread_candidates: int = Field(1, ge=1)
    """Sim rigs: >1 takes each episode's world seed from the next this-many unused ones, the one whose
    objects (x, y) lie farthest from those of the episodes already in the store (max-min, greedy), so
    a few dozen demonstrations cover the task's layouts evenly, the edges of its range included;
    1: consecutive seeds. Each episode's seed is stored with it (episode attribute ``world_seed``)."""


class CollectConfig(StrictModel):
    rig: RigConfig = Field(default_factory=RigConfig)
    teleop: TeleopConfig = Field(default_factory=TeleopConfig)
    store: str = "data/demos.zarr"
    image_codec: str = "jpegxl"
    compat: Literal["reference"] | None = None
    """``reference``: stores the Diffusion Policy reference's reader opens (JPEG 2000 images)."""
    record_video: bool = True
    video_dir: str | None = None
    """Per-episode mp4s; default: ``<store>.videos/``."""
    max_episode_s: float = Field(120.0, gt=0)
    """An episode is saved automatically after this long."""
    auto: AutoConfig = Field(default_factory=AutoConfig)
    status_every_s: float = Field(1.0, gt=0)
    preview: bool = True
    """Show the tiled camera preview (keys work in its window too); nothing without a display."""
    loop_hz: float = Field(50.0, gt=0, le=500)
    """Rate of the teleop loop (SpaceMouse -> arm target, keys); a step is recorded every
    ``rig.obs.dt_s``. Targets are sent two loop periods plus the action latency ahead, so the arm
    never reaches one before the next arrives (as deploy's takeover)."""
    legacy_action_rule: bool = False
    """Benchmarks only (time_alignment_bench): record the rule used before 2026-12 (the target
    scheduled for the loop deadline plus one step, sent ``dt_s - action latency`` ahead) into a store
    marked legacy. Never for data you train on."""


class Collector:
    """Runs the collection loop (see module docstring). ``run()`` returns a summary dict."""

    def __init__(self, config: CollectConfig, keys: KeyReader, out=sys.stdout):
        self.cfg = config
        self.keys = keys
        self.out = out
        self.store_path = Path(config.store)
        self.video_dir = (
            Path(config.video_dir) if config.video_dir else Path(str(self.store_path) + ".videos")
        )
        self.episode = None  # the EpisodeWriter being recorded
        self.episode_start = 0.0
        self.confirm_delete = False
        self.quit = False
        self.saved = 0
        self.discarded = 0
        self.seed = config.rig.task.seed
        self.layouts: list[np.ndarray] = []  # object x-y of the seeds recorded (auto.spread_candidates)
        self._layout_task: Any = None
        self.loop_errors_ms: list[float] = []
        self._success_since: float | None = None
        self.pending_commits: list[Any] = []
        self.next_index = 0  # index the next saved episode will get in the store
        self._last_recorded_t = -1.0
        self._dropped_at_start = 0
        self.skipped_steps = 0
        self.events: list[tuple[str, int, float]] = []  # (what, episode index, host time) for benchmarks
        self._world_ready = False  # the sim world was already reset for the next episode
        self.latency_watch: Any = None  # robot.latency_watch.LatencyWatch, once the rig runs
        self.quality = QualityTracker(config.rig.obs.dt_s)  # the episode being recorded's checks

    # ------------------------------------------------------------------ output
    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    # ------------------------------------------------------------------ episode control
    def start_episode(self, env: Any, store: EpisodeStore) -> None:
        if self.episode is not None:
            return
        reset = env.config.is_sim and not self._world_ready
        if reset:
            env.reset_world(self.seed)
        if reset or self._world_ready:
            # Frames still in flight show the world before the reset: the first recorded step waits
            # for frames captured after it (by capture time).
            env.wait_for_frames_since(now(), n_obs_steps=1)  # a step records one frame per camera
        self._world_ready = False
        if env.config.is_sim:
            store.next_seed = self.seed + 1  # this seed is used even if the episode is discarded
        self.episode_index = self.next_index
        if self.cfg.record_video and env.cameras is not None:
            env.cameras.start_recording(self.video_dir, self.episode_index)
        self.episode = store.begin_episode()
        self.quality = QualityTracker(self.cfg.rig.obs.dt_s, judge_stall=not self.cfg.legacy_action_rule)
        if self.latency_watch is not None:
            self.latency_watch.begin_episode()
        self.episode_start = now()
        self._dropped_at_start = env.dropped_actions
        self.events.append(("recording", self.episode_index, self.episode_start))
        self._success_since = None
        how = "saved when the task succeeds" if self.cfg.auto.episodes > 0 else "press s to save"
        self.say(f"episode {self.episode_index}: recording (seed {self.seed}); {how}")

    def stop_episode(self, env: Any, save: bool) -> None:
        if self.episode is None:
            return
        ep, self.episode = self.episode, None
        keep = save and ep.n_steps > 0
        try:
            if env.cameras is not None and env.cameras.is_recording:
                env.cameras.stop_recording()
        finally:
            if not keep:  # a discarded episode leaves no data and no video (the next one reuses its index)
                ep.discard(wait=False)
                self._remove_videos(self.episode_index)
        if keep:
            index = self.episode_index
            self.events.append(("save_pressed", index, now()))
            quality = self.quality.result()
            attrs = {"quality": quality.to_attrs()}
            if env.config.is_sim:
                attrs["world_seed"] = self.seed
                if self.cfg.auto.spread_candidates > 1:
                    self.layouts.append(self._layout(self.seed))
            if self.latency_watch is not None:
                attrs["latency_watch"] = self.latency_watch.episode_summary()
            fut = ep.commit(wait=False, attrs=attrs)
            fut.add_done_callback(lambda _f, i=index: self.events.append(("on_disk", i, now())))
            self.pending_commits.append(fut)
            self.saved += 1
            self.next_index += 1
            duration_s, late = ep.timing  # as `rig episodes list` will print it
            dropped = env.dropped_actions - self._dropped_at_start
            self.say(
                f"episode {self.episode_index}: saved {ep.n_steps} steps, {duration_s:.2f} s, {late} late, "
                f"{dropped} teleop targets dropped (their time had passed)"
                + (f"; FLAGGED {','.join(quality.flags)}: {quality.describe()}" if quality.flags else "")
            )
        else:
            self.discarded += 1
            self.say(
                f"episode {self.episode_index}: discarded"
                + (" with its videos" if self._videos_on(env) else "")
            )
        self.seed = self._spread_seed(self.seed + 1)

    # ------------------------------------------------------------------ world seeds
    def _layout(self, seed: int) -> np.ndarray:
        """x, y of every object of the sim task's world for ``seed`` (the task's own reset)."""
        if self._layout_task is None:
            from robot.sim.tasks import make_task

            self._layout_task = make_task(self.cfg.rig.task.name, **self.cfg.rig.task.params)  # as the env
        return np.concatenate([np.asarray(o.pose[:2], float) for o in self._layout_task.reset(seed)])

    def _spread_seed(self, start: int) -> int:
        """``start``, or with ``auto.spread_candidates`` K > 1 the seed in [start, start + K) whose layout
        lies farthest from the recorded ones (the lowest seed on a tie)."""
        k = self.cfg.auto.spread_candidates
        if k <= 1 or not self.layouts:
            return start
        seen = np.stack(self.layouts)

        def gap(seed: int) -> tuple[float, int]:
            return float(np.min(np.linalg.norm(seen - self._layout(seed), axis=1))), -seed

        return max(range(start, start + k), key=gap)

    def _videos_on(self, env: Any) -> bool:
        return bool(self.cfg.record_video and env.cameras is not None)

    def _remove_videos(self, index: int) -> None:
        """Episode ``index``'s videos (``<video_dir>/episode_<index>/``), finished or partial."""
        for path in self.video_dir.glob(f"episode_{index:06d}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def delete_last(self, store: EpisodeStore) -> None:
        for fut in self.pending_commits:
            fut.result()
        self.pending_commits = []
        if store.n_episodes == 0:
            self.say("no saved episode to delete")
            return
        info = store.delete_last()
        self.next_index -= 1
        self._remove_videos(info.index)
        self.saved -= 1
        self.say(f"deleted episode {info.index} ({info.length} steps); {store.n_episodes} left")

    def handle_key(self, key: str, env: Any, store: EpisodeStore) -> None:
        if self.confirm_delete:
            self.confirm_delete = False
            if key in ("y", "Y"):
                self.delete_last(store)
            else:
                self.say("delete cancelled")
            return
        if key == "c":
            self.start_episode(env, store)
        elif key == "s":
            self.stop_episode(env, save=True)
        elif key == BACKSPACE:
            if self.episode is not None:
                self.stop_episode(env, save=False)
            else:
                self.confirm_delete = True
                self.say("delete the last saved episode? press y to confirm, any other key to cancel")
        elif key == "q":
            if self.episode is not None:
                self.say("quitting: the episode being recorded is discarded (press s first to keep it)")
                self.stop_episode(env, save=False)
            self.quit = True

    def _auto_keys(self, env: Any, t: float) -> list[str]:
        auto = self.cfg.auto
        if self.episode is None:
            if self.saved + self.discarded >= auto.episodes:
                return ["q"]
            return ["c"]
        elapsed = t - self.episode_start
        if env.task_success():
            self._success_since = self._success_since or t
            # Held in the *recorded* observations' time: with a lagging camera (a loaded machine) the
            # newest frame is older than the tick, and an episode cut by the tick's clock would end
            # before it shows the success (e.g. a gripper that never reopens in the recording).
            if self._last_recorded_t - self._success_since >= auto.success_hold_s:
                return ["s"]
        if elapsed > auto.episode_timeout_s:
            self.say(f"episode {self.episode_index}: no success within {auto.episode_timeout_s:.0f} s")
            return ["s"] if auto.save_failed else [BACKSPACE]
        return []

    # ------------------------------------------------------------------ main loop
    def run(self, env: Any) -> dict[str, Any]:
        cfg = self.cfg
        dt_s = cfg.rig.obs.dt_s
        limits = cfg.rig.arm.limits
        mapper = TeleopMapper(cfg.teleop, limits.workspace_min_m, limits.workspace_max_m)
        grip = (
            GripperTeleop(cfg.teleop.gripper, cfg.rig.gripper.max_width_m)
            if env.gripper is not None
            else None
        )
        self.say(f"timing: {env.describe_timing()}")
        if grip is not None:
            g = cfg.teleop.gripper
            self.say(
                f"gripper: close with button {g.close_button}, open with button {g.open_button}"
                + (f", toggle with button {g.toggle_button}" if g.toggle_button is not None else "")
            )
        store = EpisodeStore.open(
            self.store_path,
            "a",
            image_codec=cfg.image_codec,
            compat=cfg.compat,
            dt_s=dt_s,
            action_time=None if cfg.legacy_action_rule else action_time.CONVENTION,
        )
        self.next_index = store.n_episodes
        self.say(f"store {self.store_path}: {store.n_episodes} episodes already")
        if env.config.is_sim and store.next_seed is not None and store.next_seed > self.seed:
            self.say(
                f"world seeds continue from {store.next_seed} (the store's next seed; task.seed={self.seed})"
            )
            self.seed = store.next_seed
        if env.config.is_sim and cfg.auto.spread_candidates > 1:
            for i in range(store.n_episodes):
                seed = store.episode_attrs(i).get("world_seed")
                if seed is not None:
                    self.layouts.append(self._layout(int(seed)))
            self.seed = self._spread_seed(self.seed)
        try:
            env.home()
            self.latency_watch = LatencyWatch.for_env(env)
            mapper.reset(env.arm.get_state()["target_tcp_pose"])
            # Teleop runs at loop_hz (the legacy rule: once per step); a step is recorded every dt_s.
            period_s = dt_s if cfg.legacy_action_rule else min(1.0 / cfg.loop_hz, dt_s)
            loop = RateLoop(1.0 / period_s)
            next_record = -np.inf
            last_status = now()
            auto = cfg.auto.episodes > 0
            while not self.quit:
                tick = loop.wait()
                self.loop_errors_ms.append(tick.error_s * 1e3)
                env.check()
                env.heartbeat()
                self.latency_watch.poll(tick.time)
                keys = self.keys.poll()
                if auto:
                    keys += self._auto_keys(env, tick.time)
                reanchor = False
                for key in keys:
                    if auto and key == "c" and self.episode is None:
                        # Auto episodes start from a fresh world and the home pose.
                        env.reset_world(self.seed)
                        self._world_ready = True
                        env.home()
                        reanchor = True
                    self.handle_key(key, env, store)
                    if self.quit:
                        break
                if self.quit:
                    break
                if reanchor:  # homing blocked the loop: re-anchor the teleop target and the grid
                    mapper.reset(env.arm.get_state()["target_tcp_pose"])
                    if grip is not None:
                        env.gripper.set_width(grip.reset())
                    loop = RateLoop(1.0 / period_s)
                    next_record = -np.inf
                    continue
                if self.keys.closed and not auto and self.episode is None:
                    break  # stdin closed (scripted run) and nothing recording: done
                sm = env.spacemouse.latest()
                target = mapper.update(sm["axes"], sm["buttons"], teleop_step_s(period_s, tick.skipped))
                if grip is not None:  # the action's 7th column: the gripper width (m)
                    target = np.append(target, grip.update(sm["buttons"]))
                if cfg.legacy_action_rule:
                    env.exec_actions(target[None], np.array([tick.deadline + dt_s]))
                else:
                    t_target = teleop_target_time(tick.time, period_s, env.action_latency_s, TELEOP_MARGIN_S)
                    env.exec_actions(target[None, :6], np.array([t_target]))
                    if grip is not None and target[6] != env.gripper.get_state()["target_width_m"]:
                        # A width is a level, not a path: sent at once, as deploy's takeover does.
                        env.gripper.set_width(float(target[6]))
                if tick.time - last_status > cfg.status_every_s:
                    last_status = tick.time
                    self._status(env, store, tick.time)
                if tick.deadline < next_record - period_s / 2:
                    continue  # not yet time for the next step
                next_record = max(next_record + dt_s, tick.deadline + dt_s)
                obs = env.get_obs(1)
                t_obs = float(obs["timestamp"][-1])
                if self.episode is not None and t_obs <= self._last_recorded_t:
                    self.skipped_steps += 1  # a late tick saw no new frame: never record an obs twice
                elif self.episode is not None:
                    self._last_recorded_t = t_obs
                    step = {k: v[-1] for k, v in obs.items() if k.startswith("camera_") and v.ndim == 4}
                    step.update(
                        robot_eef_pose=obs["robot_eef_pose"][-1],
                        robot_joint=obs["robot_joint"][-1],
                        action=target if cfg.legacy_action_rule else env.commanded_at([t_obs])[0],
                        **({"gripper_width": obs["gripper_width"][-1]} if grip is not None else {}),
                        timestamp=obs["timestamp"][-1],
                    )
                    self.episode.append(step)
                    self.quality.add(t_obs, step["robot_eef_pose"], step["action"])
                    if tick.time - self.episode_start > cfg.max_episode_s:
                        self.say(f"episode reached max_episode_s={cfg.max_episode_s:.0f} s")
                        self.stop_episode(env, save=True)

        finally:
            try:
                if self.episode is not None:  # Ctrl-C / error mid-episode: never save half an episode
                    self.say("interrupted: the episode being recorded is discarded")
                    self.stop_episode(env, save=False)  # a video writer ended by the same Ctrl-C may raise
            finally:
                store.close()  # waits for pending commits: nothing already saved is lost
        errs = np.abs(np.asarray(self.loop_errors_ms[1:] or [0.0]))
        return {
            "episodes_saved": self.saved,
            "episodes_discarded": self.discarded,
            "store": str(self.store_path),
            "store_episodes": EpisodeStore.open(self.store_path, "r").n_episodes,
            "loop_err_p99_ms": float(np.percentile(errs, 99)),
            "skipped_duplicate_steps": self.skipped_steps,
            "latency_warnings": []
            if self.latency_watch is None
            else list(self.latency_watch.warned.values()),
            "video_dir": str(self.video_dir) if cfg.record_video else None,
        }

    def _status(self, env: Any, store: EpisodeStore, t: float) -> None:
        rec = f"REC {t - self.episode_start:5.1f} s" if self.episode is not None else "idle"
        cams = ""
        if env.cameras is not None:
            stats = env.cameras.stats()
            cams = " ".join(
                f"{name} {s.get('fps', 0):.0f}fps drop {s.get('dropped', 0)}"
                for name, s in (stats.items() if isinstance(stats, dict) else [])
            )
        self.say(f"[{rec}] saved {self.saved} | {cams}")


class _PreviewKeys(KeyReader):
    """Terminal keys plus the keys pressed in the preview window."""

    def __init__(self, preview: Any):
        super().__init__()
        self.preview = preview

    def poll(self) -> list[str]:
        for key in self.preview.keys():
            self.push(key)
        return super().poll()


def run_collect(config: CollectConfig, keys: KeyReader | None = None) -> dict[str, Any]:
    """Start the rig (and the preview window when there is a display), run the collector, stop."""
    from robot.cameras.preview import Preview, display_available
    from robot.env import Env

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with Env(config.rig, spacemouse=True) as env:
        preview = None
        if keys is None and config.preview and env.cameras is not None:
            if display_available():
                preview = Preview({name: cam.ring for name, cam in env.cameras.cameras.items()})
                preview.start()
                keys = _PreviewKeys(preview)
            else:
                print("preview: no display, so no camera window (keys come from this terminal; preview=false "
                      "silences this)", flush=True)  # fmt: skip
        try:
            with keys if keys is not None else KeyReader() as kr:
                summary = Collector(config, kr).run(env)
        finally:
            if preview is not None:
                preview.close()
    return summary
