"""``rig replay STORE EPISODE [--config replay/sim.yaml] [key=value ...]``: drive the arm through an
episode's recorded actions and print how closely it tracks the recorded poses.

A person checks data and calibration this way before training: if the arm, fed the actions of a
demonstration with the timing deploy uses, does not retrace the demonstration's poses, a policy that
predicts those actions will not either (wrong action latency, a different TCP offset, a store from
another rig).

Timeline (host monotonic s). The episode's steps ``i`` were observed at ``ts[i]`` (``timestamp``) and
``action[i]`` is the pose the arm was commanded to be at at ``ts[i]`` (the stores' rule,
:mod:`collection.action_time`), so it is replayed as target time
``T_i = t0 + (ts[i] - ts[0]) + action_time_offset_s`` with the offset deploy uses
(:data:`collection.action_time.DEFAULT_ACTION_TIME_OFFSET_S`, 0: one default, shared). A legacy store
(no ``action_time`` attribute: its actions were reached about one step plus the camera latency after
their observation) is replayed with offset ``rig.obs.dt_s``, as before, and one line says so; convert
it with ``rig episodes convert-time``. ``t0`` is ``lead_s`` after
the arm has reached the episode's first recorded pose (a slow, speed-limited move at ``home_speed_m_s``).
Every ``1 / loop_hz`` the actions whose send time ``T_i - action_latency_s`` falls within
``commit_window_s`` are scheduled like deploy's (deploy/scheduler.py :func:`schedule_chunk`: those
already out of reach are dropped and counted, never sent late; :meth:`robot.env.Env.exec_actions`
sends each ``action_latency_s`` early). The arm controller clips everything to the arm config's
workspace and speed limits, as always.

The arm's state history (its capture times) is collected while it moves; afterwards the arm's pose at
``t0 + (ts[i] - ts[0])`` is compared with the recorded ``robot_eef_pose[i]``: position error (mm),
rotation error (deg), the mean offset per axis, and the time shift of the replay that best matches
the recording (a large one means that actions are not reached when deploy's stamping assumes: the
action latency in use is off, or the recorded observation times lag the commands, e.g. by the camera
latency; the table names the ``action_time_offset_s`` that would replay in step).

**Gripper.** An episode recorded with a gripper has 7-column actions (pose + width, m). On a rig with
a gripper its widths are replayed on the same target times through :meth:`robot.env.Env.exec_widths`
(each sent the gripper latency early, as deploy does), the fingers first set to the episode's first
width; the table adds the replayed opening against the recorded ``gripper_width`` (it matches only
with the same object between the pads: on the simulated rig pass ``world_seed``, the seed ``rig
collect`` printed for the episode, so that the world is the recorded one). A rig without a gripper
refuses such an episode (exit 2); a pose-only episode on a gripper rig replays the poses only.

A real arm (``rig.arm.backend`` not ``sim``) moves only after the person types ``replay``.

Prints a table, then as its very last line one JSON object: ``episode``, ``steps``, ``compared_steps``,
``pos_err_mean_mm``, ``pos_err_p95_mm``, ``pos_err_max_mm``, ``rot_err_mean_deg``, ``rot_err_max_deg``,
``pos_err_p50_mm``, ``offset_mm`` ([x, y, z] mean of replayed minus recorded), ``best_shift_ms``,
``shifted_pos_err_mean_mm`` / ``shifted_pos_err_p50_mm`` (the error with the replay shifted by
``best_shift_ms``: the arm's tracking without the timing), ``final_pos_err_mm`` (last step),
``actions_dropped``; with widths also ``width_err_mean_mm``, ``width_err_p95_mm`` (opening, replayed
minus recorded), ``final_width_err_mm``.
Exit status: 0 done, 1 not confirmed / device error, 2 bad input, 130 Ctrl-C (the arm stops).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from collection import action_time
from robot.config import StrictModel, add_config_arguments, config_from_args
from robot.rig_config import RigConfig

log = logging.getLogger("deploy.replay")

CONFIRM_WORD = "replay"
REPLAY_KEYS = ("action", "robot_eef_pose", "timestamp")
GRIPPER_ACTION_COLUMNS = 7  # pose + gripper width (m)
# The replay's time shift against the recording is searched over +-SHIFT_RANGE_S in SHIFT_STEP_S steps.
SHIFT_RANGE_S = 0.3
SHIFT_STEP_S = 0.005


class ReplayConfig(StrictModel):
    rig: RigConfig = Field(default_factory=RigConfig)
    action_time_offset_s: float | None = None
    """Target time of ``action[i]`` after its observation (s); None: deploy's default (0) for stores
    that follow the action-time rule, ``rig.obs.dt_s`` for a legacy store (said in one line)."""
    action_margin_s: float = Field(0.01, ge=0)
    """As deploy's: an action is dropped unless its send time is at least this far in the future."""
    commit_window_s: float = Field(0.2, gt=0)
    """Actions are sent this long (s) before their send time."""
    lead_s: float = Field(0.5, gt=0)
    """Pause (s) between reaching the first recorded pose and the first replayed action."""
    loop_hz: float = Field(50.0, gt=0, le=500)
    approach_timeout_s: float = Field(60.0, gt=0)
    """Give up when the first recorded pose is not reached within this (s) of the expected move time."""
    world_seed: int | None = None
    """Simulated rig: reset the world with this seed before replaying (the seed ``rig collect`` printed
    for the episode: the same box and target); None: the world as it is."""


def load_episode(store_path: Path, index: int) -> dict[str, np.ndarray]:
    """``action``, ``robot_eef_pose`` and ``timestamp`` of one episode (ValueError/FileNotFoundError)."""
    from collection.episode_store import EpisodeStore

    if not store_path.exists():
        raise FileNotFoundError(f"no episode store at {store_path}")
    with EpisodeStore.open(store_path, "r") as store:
        if not -store.n_episodes <= index < store.n_episodes:
            raise ValueError(f"no episode {index}: {store_path} has {store.n_episodes}")
        missing = [k for k in REPLAY_KEYS if k not in store.keys]
        if missing:
            raise ValueError(
                f"{store_path} has no {', '.join(missing)}: it cannot be replayed (keys: {store.keys})"
            )
        keys = list(REPLAY_KEYS) + (["gripper_width"] if "gripper_width" in store.keys else [])
        ep = store.get_episode(index, keys)
        current = store.action_time == action_time.CONVENTION
    ep = {k: np.asarray(v, dtype=np.float64) for k, v in ep.items()}
    ep["legacy_action_time"] = np.array(not current)
    action_shape, pose_shape = ep["action"].shape[1:], ep["robot_eef_pose"].shape[1:]
    if action_shape not in ((6,), (GRIPPER_ACTION_COLUMNS,)) or pose_shape != (6,):
        raise ValueError(
            f"episode {index}: action must be TCP poses (6,) or poses + gripper width (7,) per step and "
            f"robot_eef_pose poses (6,); got {action_shape} and {pose_shape}"
        )
    if ep["action"].shape[1] == GRIPPER_ACTION_COLUMNS:
        ep["action"], ep["width"] = ep["action"][:, :6], ep["action"][:, 6].copy()
    if "gripper_width" in ep:
        ep["gripper_width"] = ep["gripper_width"].reshape(-1)
    ep["timestamp"] = ep["timestamp"].reshape(-1)
    return ep


def confirm_real_arm(config: ReplayConfig, steps: int, duration_s: float) -> bool:
    """Ask the person at the rig to type the confirmation word (True only for exactly that)."""
    limits = config.rig.arm.limits
    print(
        f"This moves the REAL arm ({config.rig.arm.backend}) through {steps} recorded actions ({duration_s:.1f} s), "
        f"first to the episode's start pose at {config.rig.arm.home_speed_m_s} m/s; limits "
        f"{limits.max_linear_speed_m_s} m/s, {limits.max_angular_speed_rad_s} rad/s, workspace "
        f"{list(limits.workspace_min_m)}..{list(limits.workspace_max_m)} m. Keep a hand on the e-stop.",
        flush=True,
    )
    try:
        answer = input(f"Type '{CONFIRM_WORD}' to move the arm: ")
    except EOFError:
        answer = ""
    return answer.strip() == CONFIRM_WORD


def _move_to(env: Any, pose: np.ndarray, timeout_s: float) -> None:
    """Speed-limited move to ``pose`` (at the arm's home speeds); blocks until there and at rest."""
    from robot.arm.interpolator import pose_distance
    from robot.timing import now

    arm = env.arm
    cfg = env.config.arm
    lin, ang = pose_distance(arm.get_state()["actual_tcp_pose"], pose)
    move_s = max(lin / cfg.home_speed_m_s, ang / cfg.home_angular_speed_rad_s, 0.2)
    arm.servo_to(pose, move_s)
    deadline = now() + move_s + timeout_s
    while True:
        env.check()
        arm.heartbeat()
        state = arm.get_state()
        lin, ang = pose_distance(state["actual_tcp_pose"], pose)
        at_rest = float(np.linalg.norm(state["actual_tcp_speed"][:3])) < 1e-3
        if lin <= cfg.home_tolerance_m and ang <= 0.01 and at_rest:
            return
        if now() > deadline:
            raise TimeoutError(
                f"the arm did not reach the episode's first pose within {move_s + timeout_s:.0f} s "
                f"({lin * 1e3:.1f} mm away): is it inside the workspace of the arm config?"
            )
        time.sleep(0.01)


class _StateLog:
    """Every state record of a device (the arm's ``actual_tcp_pose``, or another ``field``) since it
    was made, read from the state ring without blocking it."""

    def __init__(self, device: Any, field: str = "actual_tcp_pose"):
        self.device = device
        self.field = field
        self.counter = device.state_ring.count
        self.times: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []

    def poll(self) -> None:
        recs = self.device.state_ring.get_since(self.counter, skip_overwritten=True)
        if len(recs["counter"]):
            self.counter = int(recs["counter"][-1]) + 1
            self.times.append(recs["capture_time"].copy())
            self.poses.append(recs[self.field].copy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.times), np.concatenate(self.poses)


def offset_for(config: ReplayConfig, episode: dict[str, np.ndarray]) -> float:
    """The action time offset (s) a replay uses (see ``ReplayConfig.action_time_offset_s``)."""
    if config.action_time_offset_s is not None:
        return config.action_time_offset_s
    if bool(episode.get("legacy_action_time", False)):
        return config.rig.obs.dt_s
    return action_time.DEFAULT_ACTION_TIME_OFFSET_S


def run_replay(config: ReplayConfig, episode: dict[str, np.ndarray], out: Any = sys.stdout) -> dict[str, Any]:
    """Start the rig, replay ``episode`` (see the module docstring), stop; returns the figures."""
    from deploy.scheduler import schedule_chunk
    from robot.env import Env
    from robot.timing import RateLoop, now

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    ts = episode["timestamp"] - episode["timestamp"][0]
    offset_s = offset_for(config, episode)
    if bool(episode.get("legacy_action_time", False)) and config.action_time_offset_s is None:
        say(
            f"legacy store (no action_time attribute): its actions are replayed {offset_s * 1e3:.0f} ms "
            "after their observation (the old collection rule); `rig episodes convert-time` converts it"
        )
    dropped = 0
    rig = config.rig.model_copy(deep=True)
    rig.cameras.cameras = {}  # the replay looks at the arm only: no camera processes to start
    widths = episode.get("width") if rig.gripper.enabled else None
    with Env(rig, spacemouse=False) as env:
        latency_s = float(env.action_latency_s)
        say(f"timing: {env.describe_timing()}; actions at observation + {offset_s * 1e3:.0f} ms")
        if config.world_seed is not None and rig.is_sim:
            env.reset_world(config.world_seed)
            say(f"world reset with seed {config.world_seed}")
        if widths is not None:
            env.gripper.set_width(float(widths[0]))
        say(f"moving to the episode's first pose {np.round(episode['robot_eef_pose'][0], 4).tolist()}")
        _move_to(env, episode["robot_eef_pose"][0], config.approach_timeout_s)
        states = _StateLog(env.arm)
        grip_log = _StateLog(env.gripper, "width_m") if widths is not None else None
        t0 = now() + config.lead_s + latency_s
        target_times = t0 + ts + offset_s
        say(f"replaying {len(ts)} steps ({ts[-1]:.1f} s)")
        next_i = 0
        loop = RateLoop(config.loop_hz)
        end_t = t0 + ts[-1] + offset_s + 0.3  # the last action reached and the arm settled
        last_t, max_gap_s = None, 0.0  # the loop's longest stall (an action drops only after one)
        while True:
            loop.wait()
            env.check()
            env.heartbeat()
            states.poll()
            t = now()
            if last_t is not None:
                max_gap_s = max(max_gap_s, t - last_t)
            last_t = t
            if t > end_t:
                break
            due = next_i
            while due < len(ts) and target_times[due] - latency_s <= t + config.commit_window_s:
                due += 1
            if due > next_i:
                sched = schedule_chunk(
                    episode["action"][next_i:due],
                    target_times[next_i:due],
                    t,
                    latency_s,
                    config.action_margin_s,
                )
                dropped += sched.dropped
                dropped += env.exec_actions(sched.poses, sched.target_times, margin_s=0.0)
                if widths is not None:
                    env.exec_widths(
                        widths[next_i:due], target_times[next_i:due], margin_s=config.action_margin_s
                    )
                next_i = due
            if grip_log is not None:
                grip_log.poll()
        states.poll()
        if grip_log is not None:
            grip_log.poll()
    times, poses = states.arrays()
    figures = tracking_figures(times, poses, t0 + ts, episode["robot_eef_pose"], dropped)
    figures["loop_max_gap_ms"] = round(max_gap_s * 1e3, 1)
    if grip_log is not None and "gripper_width" in episode:
        figures.update(width_figures(*grip_log.arrays(), t0 + ts, episode["gripper_width"]))
    return figures


def width_figures(
    state_times: np.ndarray, openings: np.ndarray, step_times: np.ndarray, recorded: np.ndarray
) -> dict[str, Any]:
    """The gripper's replayed opening at ``step_times`` against the ``recorded`` one (mm)."""
    inside = (step_times >= state_times[0]) & (step_times <= state_times[-1]) & np.isfinite(recorded)
    ok = np.isfinite(openings)
    err_m = np.abs(np.interp(step_times[inside], state_times[ok], openings[ok]) - recorded[inside])
    return {
        "width_err_mean_mm": round(float(err_m.mean()) * 1e3, 2),
        "width_err_p95_mm": round(float(np.percentile(err_m, 95)) * 1e3, 2),
        "final_width_err_mm": round(float(err_m[-1]) * 1e3, 2),
    }


def tracking_figures(
    state_times: np.ndarray,
    state_poses: np.ndarray,
    step_times: np.ndarray,
    recorded: np.ndarray,
    dropped: int,
) -> dict[str, Any]:
    """Compare the arm's poses at ``step_times`` with the ``recorded`` poses (see the module docstring)."""
    from robot.env import interpolate_poses
    from robot.geometry.pose_math import rotation_angle

    inside = (step_times >= state_times[0]) & (step_times <= state_times[-1])
    replayed = interpolate_poses(state_times, state_poses, step_times[inside])
    rec = recorded[inside]
    pos_err_m = np.linalg.norm(replayed[:, :3] - rec[:, :3], axis=1)
    rot_err_rad = np.array([rotation_angle(a, b) for a, b in zip(replayed[:, 3:], rec[:, 3:], strict=True)])

    def pos_errs_m(shift_s: float) -> np.ndarray:
        shifted = interpolate_poses(state_times, state_poses, step_times[inside] + shift_s)
        return np.linalg.norm(shifted[:, :3] - rec[:, :3], axis=1)

    shifts = np.arange(-SHIFT_RANGE_S, SHIFT_RANGE_S + 1e-9, SHIFT_STEP_S)
    best_shift_s = float(shifts[int(np.argmin([pos_errs_m(s).mean() for s in shifts]))])
    shifted_err_m = pos_errs_m(best_shift_s)
    r = lambda x, nd=2: round(float(x), nd)  # noqa: E731
    return {
        "steps": int(len(step_times)),
        "compared_steps": int(inside.sum()),
        "pos_err_mean_mm": r(pos_err_m.mean() * 1e3),
        "pos_err_p50_mm": r(np.percentile(pos_err_m, 50) * 1e3),
        "pos_err_p95_mm": r(np.percentile(pos_err_m, 95) * 1e3),
        "pos_err_max_mm": r(pos_err_m.max() * 1e3),
        "rot_err_mean_deg": r(np.degrees(rot_err_rad.mean()), 3),
        "rot_err_max_deg": r(np.degrees(rot_err_rad.max()), 3),
        "offset_mm": [r(v * 1e3) for v in (replayed[:, :3] - rec[:, :3]).mean(axis=0)],
        "best_shift_ms": r(best_shift_s * 1e3, 0),
        "shifted_pos_err_mean_mm": r(shifted_err_m.mean() * 1e3),
        "shifted_pos_err_p50_mm": r(np.percentile(shifted_err_m, 50) * 1e3),
        "final_pos_err_mm": r(pos_err_m[-1] * 1e3),
        "actions_dropped": int(dropped),
    }


def format_table(f: dict[str, Any], offset_s: float) -> str:
    x, y, z = f["offset_mm"]
    shift = f["best_shift_ms"]
    if shift > 0:
        when = f"the arm reaches the recorded poses {shift:.0f} ms later than recorded"
    elif shift < 0:
        when = f"the arm reaches the recorded poses {-shift:.0f} ms earlier than recorded"
    else:
        when = "in step with the recording"
    return "\n".join(
        [
            f"tracking error over {f['compared_steps']} of {f['steps']} steps (replayed minus recorded pose)",
            f"  position   mean {f['pos_err_mean_mm']:.2f} mm   p50 {f['pos_err_p50_mm']:.2f} mm   "
            f"p95 {f['pos_err_p95_mm']:.2f} mm   max {f['pos_err_max_mm']:.2f} mm   last step {f['final_pos_err_mm']:.2f} mm",
            f"  rotation   mean {f['rot_err_mean_deg']:.3f} deg  max {f['rot_err_max_deg']:.3f} deg",
            f"  offset     x {x:+.2f} mm  y {y:+.2f} mm  z {z:+.2f} mm",
            f"  timing     best shift {shift:+.0f} ms: {when}; shifted by it the error is mean "
            f"{f['shifted_pos_err_mean_mm']:.2f} mm, p50 {f['shifted_pos_err_p50_mm']:.2f} mm",
            f"             (action_time_offset_s={offset_s - shift / 1e3:.3f} would replay in step; deploy "
            f"stamps actions as this replay does, {offset_s:.3f} s after the observation)",
            f"  actions dropped (out of reach on time) {f['actions_dropped']}"
            + (
                f" (the replay loop stalled up to {f['loop_max_gap_ms']:.0f} ms: a busy host)"
                if f["actions_dropped"] and "loop_max_gap_ms" in f
                else ""
            ),
        ]
        + (
            [
                f"  gripper    opening error mean {f['width_err_mean_mm']:.2f} mm   p95 {f['width_err_p95_mm']:.2f} mm"
                f"   last step {f['final_width_err_mm']:.2f} mm"
            ]
            if "width_err_mean_mm" in f
            else []
        )
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rig replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("store", type=Path, help="episode store (.zarr)")
    parser.add_argument("episode", type=int, help="episode index (negative counts from the end)")
    add_config_arguments(parser, default="replay/sim.yaml")
    # Intermixed: `STORE EPISODE --config X key=value` (plain parse_args stops taking overrides
    # after an option that follows the positionals).
    args = parser.parse_intermixed_args(argv)
    config = config_from_args(ReplayConfig, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        episode = load_episode(args.store, args.episode)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rig replay: {exc}", file=sys.stderr)
        return 2
    if "width" in episode and not config.rig.gripper.enabled:
        print(
            f"rig replay: episode {args.episode} has gripper widths (7 action columns) but rig "
            f"{config.rig.name!r} has no gripper: replay it on the rig it was recorded on "
            "(e.g. --config replay/sim_pick_place.yaml)",
            file=sys.stderr,
        )
        return 2
    steps = len(episode["timestamp"])
    duration_s = float(episode["timestamp"][-1] - episode["timestamp"][0])
    if not config.rig.is_sim and not confirm_real_arm(config, steps, duration_s):
        print(f"rig replay: not confirmed (type '{CONFIRM_WORD}'); the arm was not moved", file=sys.stderr)
        return 1
    from robot.interrupt import Interrupted

    try:
        figures = run_replay(config, episode)
    except TimeoutError as exc:
        print(f"rig replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # the rig was stopped on the way out (Env.__exit__)
        raise Interrupted("the arm stopped where it was; nothing was written") from exc
    figures = {"episode": args.episode, **figures}
    offset_s = offset_for(config, episode)
    print(format_table(figures, offset_s), flush=True)
    print(json.dumps(figures), flush=True)
    return 0
