"""Deployment on the simulated rig through the real processes (arm, cameras, SpaceMouse, inference).

A stand-in policy (deploy/standin.py) emits a known smooth reference (a circle in x-y) as action
chunks after an injected inference latency; consecutive chunks disagree in z by +-4 mm unless the
policy is conditioned on the committed actions, like independent diffusion samples. The simulated
arm has a 40 ms action delay and the calibration says so.
"""

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from collection.episode_store import EpisodeStore
from deploy.config import DeployConfig
from deploy.deploy_cli import close_client, make_client
from deploy.evaluation import (
    IDLE_STEP_M,
    arrival_errors,
    executed_path,
    idle_ticks,
    in_windows,
    waiting_windows,
)
from deploy.policy_client import PolicySpec
from deploy.runner import DeployRunner
from robot.calibration_data import ActionLatencyValue, CalibrationFile, RobotCalibration
from robot.config import config_path, load_config
from robot.env import Env
from tests.deploy.helpers import DELAY_S, RIG, STANDIN, START, run_episode_once


def deploy_config(tmp_path, *overrides):
    return load_config(
        DeployConfig,
        config_path("deploy/sim_reach.yaml"),
        [*RIG, f"store={tmp_path / 'eval.zarr'}", *overrides],
    )


@pytest.fixture(scope="module")
def env():
    cfg = deploy_config(Path("/tmp"))
    cal = CalibrationFile(robot=RobotCalibration(action_latency=ActionLatencyValue(value_s=DELAY_S)))
    with Env(cfg.rig, spacemouse=True, calibration=cal) as e:
        yield e


class TimedKeys:
    """Presses keys at given times after the first poll (a scripted person at the keyboard)."""

    closed = False

    def __init__(self, presses):
        self.presses = sorted(presses)
        self.t0 = None

    def poll(self):
        t = time.monotonic()
        if self.t0 is None:
            self.t0 = t
        out = []
        while self.presses and t - self.t0 >= self.presses[0][0]:
            out.append(self.presses.pop(0)[1])
        return out


class ButtonPressAt:
    """The rig's SpaceMouse, plus one press of ``button`` ``after_s`` after ``keys``' first poll (one
    person's clock for the keyboard and the SpaceMouse: the SpaceMouse is read before the episode's
    first key poll, by 1.1 s beside three busy loops, which once left 0.4 s between key and button)."""

    def __init__(self, real, button, after_s, keys):
        self.real, self.button, self.after_s, self.keys = real, button, after_s, keys

    def __getattr__(self, name):
        return getattr(self.real, name)

    def latest(self, check=True):
        rec = dict(self.real.latest(check))
        t0 = self.keys.t0
        presses = np.array(rec["button_presses"]).copy()
        presses[self.button] += int(t0 is not None and time.monotonic() - t0 >= self.after_s)
        rec["button_presses"] = presses
        return rec


def run_one(env, tmp_path, mode, policy_kwargs, *overrides, keys=None):
    cfg = deploy_config(tmp_path, f"mode={mode}", *overrides)
    kwargs = {"start_pose": START, **policy_kwargs}
    runner, result, out = run_episode_once(
        cfg, env, PolicySpec(STANDIN, kwargs=tuple(sorted(kwargs.items()))), keys
    )
    return runner, result, out, cfg


def first_merge_time(runner):
    return min(c["t_done"] for c in runner.chunk_log)


# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def async_run(env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("async")
    return run_one(
        env,
        tmp,
        "async",
        {"latency_s": 0.15, "chunk_offset_m": 0.006, "ramp_steps": 12},
        "max_episode_s=5.0",
        "policy_seed=0",
    )


@pytest.mark.timeout(90, func_only=True)  # the module's rig and run are set up untimed
def test_executed_actions_reach_their_targets_at_the_stamped_time(env, async_run):
    runner, result, _, _ = async_run
    assert result.chunks >= 5 and result.end_reason == "max_episode_s"
    arm = runner.arm_history()
    tick = env.config.arm.period_s
    tau = env.config.arm.sim.tracking_time_constant_s
    t_from = first_merge_time(runner) + 0.5
    sent = [w for w in runner.sent_log if w["chunk"] >= 0]
    cmd_err, act_err, dist = arrival_errors(sent, arm, DELAY_S, t_from, arm["tick_time"][-1] - 0.15)
    assert len(cmd_err) >= 8  # (waypoints around which a loaded machine starved the controller are skipped)
    # The controller commands each pose one action latency early, to within a control tick (a few
    # outliers allowed: a process starved by a loaded 2-core machine)...
    assert np.median(np.abs(cmd_err)) <= 1.5e-3, cmd_err
    assert np.mean(np.abs(cmd_err) <= tick + 1e-3) >= 0.8, cmd_err
    # ...so the delayed arm (40 ms) is there at the stamped time: typically within a tick plus its
    # tracking lag (uncompensated it would be 40 ms later still), nearly always within a tick plus
    # the delay. "There" is when it first reaches the waypoint: where a late chunk (a loaded machine)
    # made the arm hold at a waypoint, its closest approach is anywhere in the hold (seen: 120 ms).
    assert np.median(np.abs(act_err)) <= tick + tau + 3e-3, act_err
    # A tick the starved controller ran late (by less than the 2.5 periods that skip a waypoint)
    # sends the pose late by as much: the bound is the controller's own tick gap there, not one period.
    arrived, gaps = first_arrival_errors(sent, arm, t_from, arm["tick_time"][-1] - 0.15)
    assert len(arrived) == len(act_err)
    assert np.mean(np.abs(arrived) <= np.maximum(gaps, tick) + DELAY_S) >= 0.9, (arrived, gaps)
    assert np.median(dist) < 1e-3


def first_arrival_errors(sent, arm, t_from, t_to, window_s=0.12, tol_m=2e-4):
    """For the waypoints arrival_errors times: when (s, after its target time) the actual path first
    comes within ``tol_m`` of its closest approach to the waypoint (a passage: the same time; a
    hold at the waypoint: its start), and the controller's longest tick gap (s) from when it sent the
    pose to then."""
    t, xy, ticks = arm["capture_time"], arm["actual_tcp_pose"][:, :2], arm["tick_time"]
    out, gaps = [], []
    for w in sent:
        if not len(arrival_errors([w], arm, DELAY_S, t_from, t_to)[0]):
            continue  # skipped there too (a starved controller)
        T = float(w["target_time"])
        sel = (t >= T - window_s) & (t <= T + window_s)
        d = np.linalg.norm(xy[sel] - np.asarray(w["pose"])[None, :2], axis=1)
        out.append(t[sel][np.flatnonzero(d <= d.min() + tol_m)[0]] - T)
        near = ticks[(ticks >= T - DELAY_S - 0.03) & (ticks <= T + 0.03)]
        gaps.append(float(np.diff(near).max()) if len(near) > 1 else 0.0)
    return np.asarray(out), np.asarray(gaps)


def waiting_spans(env, runner):
    """Where a loaded machine left the runner unable to keep the arm supplied (late, short or stale
    chunks in flight; the runner's own stalls): deploy.evaluation.waiting_windows."""
    slack_s = runner.period_s + 3 * env.config.arm.period_s + 0.02
    return waiting_windows(runner.chunk_log, runner.sent_log, runner.cfg.commit_window_s, slack_s)


@pytest.mark.timeout(90, func_only=True)
def test_superseded_actions_are_never_executed(env, async_run):
    runner, result, _, _ = async_run
    assert result.actions_superseded > 0
    # Nothing of a chunk is sent once a newer chunk has been merged (in the runner's own order: a
    # loaded machine may merge a chunk well after its inference finished, and sends before that).
    for c in runner.chunk_log:
        older = [w for w in runner.sent_log[c["sent_before"] :] if w["chunk"] < c["chunk"]]
        assert not older, (c["chunk"], older[:3])
    # The arm follows the newest chunk where it disagrees with the superseded rows (z offsets), where
    # the runner kept it supplied on time: in a waiting span (a late chunk, a stalled loop) the arm
    # holds or lags wherever it was, which says nothing of which chunk it follows.
    arm = runner.arm_history()
    path = executed_path(runner.sent_log)
    waits = waiting_spans(env, runner)
    checked = 0
    for c in runner.chunk_log[:-1]:
        sent_rows = {w["row"] for w in runner.sent_log if w["chunk"] == c["chunk"]}
        for i, (T, pose) in enumerate(zip(c["times"], c["poses"], strict=True)):
            if i in sent_rows or i < c["committed_rows"] or T > arm["capture_time"][-1] - 0.1:
                continue
            executed_z = path(T)[2]
            if abs(pose[2] - executed_z) < 0.0012 or T < first_merge_time(runner) + 0.3:
                continue
            if any(a <= T + 0.02 and T - DELAY_S - runner.cfg.commit_window_s <= b for a, b in waits):
                continue
            actual_z = np.interp(T + 0.02, arm["capture_time"], arm["actual_tcp_pose"][:, 2])
            assert abs(actual_z - executed_z) < 0.0005, (T, actual_z, executed_z, pose[2])
            assert abs(actual_z - pose[2]) > 0.0007
            checked += 1
    # A run the machine did not hold up checks several rows (a loaded one may leave none to check).
    assert checked >= 3 or any(b >= first_merge_time(runner) + 0.3 for _, b in waits), checked


@pytest.mark.timeout(90, func_only=True)
def test_async_chunks_join_without_jump_or_idle(env, async_run, tmp_path):
    runner, result, _, _ = async_run
    limits = env.config.arm.limits
    jump_limit = min(limits.max_linear_speed_m_s * env.config.arm.period_s, limits.max_step_m)
    later = runner.chunk_log[1:]
    # A chunk merged after the plan had run out (or with no plan left when it was asked) joins from a
    # hold: the arm waited at the plan's end while the stand-in's time-indexed reference moved on (a
    # late chunk, or a loop stalled by a loaded machine). Its jump is how far the reference moved
    # meanwhile (seen 9.8-89 mm beside three busy processes), nothing it could be conditioned on
    # was committed, and a very late one has no feasible row (fallback): not a join to judge.
    lead_s = runner.action_latency_s + runner.margin_s + runner.period_s
    held = np.array([not c["plan_end_at_request"] >= c["t_done"] + lead_s for c in later])
    live = [c for c, h in zip(later, held, strict=True) if not h]
    assert all(c["committed_rows"] >= 1 and (c["late"] or not c["fallback"]) for c in live)
    jumps = np.array([c["jump_m"] for c in later])
    on_time = np.array([not c["late"] and not c["short"] for c in later]) & ~held
    # Conditioned on what is committed, chunks join within what the arm may move in one tick. A
    # chunk later than the planned latency (a loaded machine), or whose inpainted rows stop short of
    # what was committed (``short``: a stale observation and a long latency estimate, capped at the
    # horizon), was conditioned on less than was committed by then: its join is bounded by the
    # policy's own smoothness (unconditioned samples of this stand-in disagree by ~12 mm).
    # How many chunks came within the planned latency depends on the machine's load (the planner's
    # latency estimate trails the measured ones); that some did keeps the first bound meaningful.
    assert on_time.sum() >= 1, [(c["late"], c["short"]) for c in later]
    assert jumps[on_time].max() <= jump_limit, jumps
    assert jumps[~held].max() <= 2.5 * jump_limit, (jumps, held)
    # The arm never waits for a chunk the runner could have had in time: (almost) no control tick
    # without motion outside the spans where a loaded machine held it up (a chunk later than planned,
    # or stamped from a stale observation; the runner's loop stalled longer than the commit window).
    # Beside three busy processes the arm idled 3.5-50 % of such runs, 0-1.1 % outside those spans;
    # on a quiet machine there are few or none; the sync reference idles ~30 % of the time.
    arm = runner.arm_history()
    t0 = first_merge_time(runner) + 0.3
    t1 = min(arm["tick_time"][-1], max(w["send_time"] for w in runner.sent_log)) - 0.05  # loop's end
    t, step = arm["tick_time"], np.linalg.norm(np.diff(arm["target_tcp_pose"][:, :3], axis=0), axis=1)
    idle = (
        (step < IDLE_STEP_M) & (t[1:] >= t0) & (t[1:] <= t1) & ~in_windows(t[1:], waiting_spans(env, runner))
    )
    assert np.diff(t)[idle].sum() <= 0.03 * (t1 - t0)
    # The evaluation episode is in the store with its chunk boundaries and latencies.
    store = EpisodeStore.open(runner.cfg.store, "r")
    ep = store.get_episode(store.n_episodes - 1)
    # One step per dt_s that saw a newer frame (50 in 5 s on a quiet machine; 10-18 at load 20-22,
    # the cameras starved): each one a new observation time.
    assert len(ep["action"]) == result.steps >= 5
    assert np.all(np.diff(ep["timestamp"]) > 0)
    assert ep["chunk_start"].sum() >= result.chunks - 1
    assert np.nanmax(ep["inference_latency_s"]) >= 0.15
    assert np.all(np.diff(ep["dropped_actions"]) >= 0) and ep["dropped_actions"][-1] <= result.actions_dropped
    assert ep["dropped_actions"][-1] >= 1  # the first chunk's rows before the first feasible one
    side_path = Path(runner.cfg.store + ".deploy") / f"episode_{store.n_episodes - 1:06d}.json"
    side = json.loads(side_path.read_text())
    assert len(side["chunks"]) == result.chunks and side["chunks"][1]["committed_rows"] >= 1


@pytest.mark.timeout(120)
def test_a_nonzero_action_time_offset_shifts_the_inpainted_rows_and_the_chunks_still_join(env, tmp_path):
    # Every stamp moves by the offset, so the committed rows a request inpaints must be sampled on the
    # shifted grid too; sampled unshifted they lie a step (here 10 mm of the path) off and every join
    # jumps by that.
    runner, result, _, _ = run_one(
        env,
        tmp_path,
        "async",
        {"latency_s": 0.15, "chunk_offset_m": 0.006, "ramp_steps": 12},
        "max_episode_s=4.0",
        "policy_seed=0",
        "action_time_offset_s=0.1",
    )
    limits = env.config.arm.limits
    jump_limit = min(limits.max_linear_speed_m_s * env.config.arm.period_s, limits.max_step_m)
    later = runner.chunk_log[1:]
    assert len(later) >= 3 and all(c["committed_rows"] >= 1 for c in later)
    jumps = np.array([c["jump_m"] for c in later])
    on_time = np.array([not c["late"] and not c["short"] for c in later])
    assert on_time.sum() >= 1, [c["late"] for c in later]
    assert jumps[on_time].max() <= jump_limit, jumps


@pytest.mark.timeout(90)
def test_sync_reference_idles_and_jumps_at_chunk_boundaries(env, tmp_path):
    # The reference loop with the same policy: the metrics above do see the problem it has.
    runner, result, _, _ = run_one(
        env, tmp_path, "sync", {"latency_s": 0.15, "chunk_offset_m": 0.004}, "max_episode_s=3.5"
    )
    arm = runner.arm_history()
    t0, t1 = first_merge_time(runner) + 0.3, arm["tick_time"][-1] - 0.05
    _, idle_s = idle_ticks(arm, t0, t1)
    assert result.chunks >= 3
    assert idle_s / result.chunks > 0.1 and idle_s > 0.15 * (t1 - t0)
    limits = env.config.arm.limits
    jump_limit = min(limits.max_linear_speed_m_s * env.config.arm.period_s, limits.max_step_m)
    assert max(c["jump_m"] for c in runner.chunk_log[1:]) > 3 * jump_limit


@pytest.mark.timeout(90)
def test_inference_slower_than_the_chunk_holds_then_continues_without_burst(env, tmp_path):
    # 0.9 s of inference for a chunk that covers 0.6 s from the observation: nothing is feasible.
    policy = {"latency_s": 0.9, "horizon": 8, "n_action_steps": 6}
    runner, result, _, _ = run_one(env, tmp_path, "async", policy, "max_episode_s=4.5")
    assert result.chunks >= 3
    margin = runner.cfg.action_margin_s
    for c in runner.chunk_log[:-1]:
        assert c["fallback"] and c["planned"] == 1
        rows = [w for w in runner.sent_log if w["chunk"] == c["chunk"]]
        assert len(rows) == 1  # only the newest action, never the stale ones in a burst
        assert rows[0]["row"] == c["rows"] - 1
        # At the earliest feasible time: the action latency and margin after the loop took the chunk
        # (never before the inference finished; how long after is the loaded machine's: seen 67 ms).
        assert rows[0]["target_time"] - c["t_done"] >= DELAY_S + margin
        lead = rows[0]["target_time"] - c["t_merged"]
        assert DELAY_S + margin <= lead <= DELAY_S + margin + 0.05, (lead, c["t_merged"] - c["t_done"])
    arm = runner.arm_history()
    _, idle_s = idle_ticks(arm, first_merge_time(runner), arm["tick_time"][-1])
    assert idle_s > 0.5  # it holds while waiting...
    # ...and continues: it reached each chunk's newest action before the next chunk came (of those
    # the arm got: on a stalled host exec_actions drops a row whose time passed before it went out).
    sent = [w for w in runner.sent_log if w["chunk"] >= 0 and not w["dropped"]]
    assert len(sent) >= 2
    for w, w_next in zip(sent[:-1], sent[1:], strict=True):
        i = np.searchsorted(arm["capture_time"], w_next["send_time"])
        assert np.linalg.norm(arm["actual_tcp_pose"][i, :3] - w["pose"][:3]) < 2e-3


@pytest.mark.timeout(90)
def test_nan_policy_holds_the_arm_says_why_and_saves_the_episode(env, tmp_path):
    runner, result, out, cfg = run_one(
        env, tmp_path, "async", {"latency_s": 0.1, "nan_after_chunks": 3}, "max_episode_s=10"
    )
    assert result.end_reason == "safety_stop" and result.chunks == 4
    assert "SAFETY STOP: the policy produced non-finite actions (NaN/inf) in chunk 3" in out
    assert "holds its pose" in out
    assert not [w for w in runner.sent_log if w["chunk"] >= 3]
    assert all(np.all(np.isfinite(w["pose"])) for w in runner.sent_log)
    time.sleep(0.4)  # the decelerating stop is over
    hist = env.arm.get_state_history(40)
    assert np.ptp(hist["target_tcp_pose"][:, :3], axis=0).max() < 1e-6
    assert np.linalg.norm(hist["actual_tcp_speed"][-1, :3]) < 1e-3
    store = EpisodeStore.open(cfg.store, "r")
    assert store.n_episodes == 1
    ep = store.get_episode(0)
    assert len(ep["timestamp"]) == result.steps > 5
    assert np.all(np.isfinite(ep["action"]))
    assert runner.summary()["safety_stop"].startswith("SAFETY STOP")


@pytest.mark.timeout(90)
def test_takeover_key_pauses_the_policy_and_the_arm_follows_the_spacemouse(env, tmp_path, monkeypatch):
    # Taken over with the key, given back with the SpaceMouse button (takeover.button = 1).
    keys = TimedKeys([(1.5, "t")])
    monkeypatch.setattr(env, "spacemouse", ButtonPressAt(env.spacemouse, button=1, after_s=3.0, keys=keys))
    runner, result, out, cfg = run_one(
        env, tmp_path, "async", {"latency_s": 0.1}, "max_episode_s=4.5", keys=keys
    )
    assert "TAKEOVER" in out and "takeover released" in out
    assert result.takeover_s == pytest.approx(1.55, abs=0.35)  # the 1.2-1.9 s the test held it
    t_on = keys.t0 + 1.5
    t_off = keys.t0 + 3.0
    during = [w for w in runner.sent_log if t_on + 0.05 < w["send_time"] < t_off - 0.05]
    assert during and all(w["chunk"] == -1 for w in during)  # only SpaceMouse targets
    after = [w for w in runner.sent_log if w["send_time"] > t_off + 0.05]
    assert any(w["chunk"] >= 0 for w in after)  # the policy took over again
    arm = runner.arm_history()
    y = np.interp([t_on + 0.2, t_off], arm["capture_time"], arm["actual_tcp_pose"][:, 1])
    moved = y[1] - y[0]
    expected = 0.6 * cfg.teleop.max_linear_speed_m_s * (t_off - t_on - 0.2)
    assert 0.6 * expected < moved < 1.3 * expected
    ep = EpisodeStore.open(cfg.store, "r").get_episode(0)
    assert 10 <= ep["takeover"].sum() <= 18


@pytest.mark.timeout(120)
def test_rig_deploy_cli_prints_timing_episodes_and_a_json_summary(tmp_path, rig_deploy):
    store = tmp_path / "eval.zarr"
    out = rig_deploy(
        "rig.calibration_file=/nonexistent/cal.yaml", episodes=2, max_episode_s=1.0, timeout_s=110
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nan ms" not in out.stdout and "All-NaN" not in out.stderr  # no figures before the first chunk
    assert "latency watch" not in out.stderr  # the arm's latency did not change
    lines = out.stdout.strip().splitlines()
    assert any(line.startswith("timing:") and "action latency 40.0 ms" in line for line in lines)
    assert sum(line.startswith("episode ") for line in lines) >= 2
    summary = json.loads(lines[-1])
    for key in (
        "episodes",
        "success_rate",
        "inference_p50_ms",
        "inference_p99_ms",
        "actions_dropped",
        "safety_events",
        "episode_durations_s",
        "latency_warnings",
    ):
        assert key in summary, key
    assert summary["episodes"] == 2 and len(summary["episode_durations_s"]) == 2
    assert 120 <= summary["inference_p50_ms"] < 1000
    assert summary["per_episode"][1]["seed"] == 100_001
    s = EpisodeStore.open(store, "r")
    assert s.n_episodes == 2
    assert s.dt_s == 0.1  # the rig's step period, recorded as collection records it
    assert {"action", "chunk_index", "inference_latency_s", "dropped_actions", "camera_0"} <= set(s.keys)
    # Each episode's outcome is in its attributes and in `rig episodes list`'s success column.
    listed = subprocess.run(
        [sys.executable, "-m", "robot.cli", "episodes", "list", str(store)], capture_output=True, text=True
    )
    rows = {r[0]: r for r in (line.split() for line in listed.stdout.splitlines()) if r[:1] in (["0"], ["1"])}
    for e in summary["per_episode"]:
        attrs = s.episode_attrs(e["store_index"])
        assert attrs["success"] == e["success"] and attrs["interrupted"] is False
        assert attrs["end_reason"] == e["end_reason"]
        assert rows[str(e["store_index"])][-1] == ("yes" if e["success"] else "no"), listed.stdout
    n_ok = sum(e["success"] for e in summary["per_episode"])
    assert listed.stdout.splitlines()[-1].split()[-1] == f"{n_ok}/2", listed.stdout
    # Evaluation video per camera, like collection's, named in the summary and in the episode lines.
    for e in summary["per_episode"]:
        videos = e["videos"]
        assert set(videos) == {"scene", "wrist"}
        for name, path in videos.items():
            assert path == str(
                tmp_path / "eval.zarr.videos" / f"episode_{e['store_index']:06d}" / f"{name}.mp4"
            )
            with av.open(path) as f:
                n_frames = sum(1 for _ in f.decode(video=0))
            stamps = np.load(Path(path).with_name(f"{name}.timestamps.npz"))["capture_time"]
            assert n_frames == len(stamps) > 0  # few on a starved machine, but every one listed is there
        assert any(line.startswith(f"episode {e['index']}:") and videos["scene"] in line for line in lines)


@pytest.mark.timeout(90)
def test_async_deploy_through_a_policy_server(env, tmp_path):
    from tests.deploy.test_serving import start_server, stop_server

    kwargs = json.dumps({"latency_s": 0.1, "start_pose": START})
    proc, address = start_server("--checkpoint", STANDIN, "--policy-kwargs", kwargs)
    try:
        runner, result, out, _ = run_one(env, tmp_path, "async", {}, "max_episode_s=3.0", f"server={address}")
    finally:
        stop_server(proc)
    assert result.chunks >= 4 and result.end_reason == "max_episode_s"
    lat = np.array(result.inference_latency_s)
    assert np.all(lat >= 0.1)
    computed = np.array([c["compute_s"] for c in runner.chunk_log])
    # What the network adds is measured (and small on localhost; a loaded machine may starve the server).
    assert np.all(lat > computed) and np.median(lat - computed) < 0.05
    assert all(c["committed_rows"] >= 1 for c in runner.chunk_log[1:])  # joined by inpainting
    assert runner.sent_log and all(w["chunk"] >= 0 for w in runner.sent_log)


# A real checkpoint, trained in-test for 20 steps: the real Policy through the inference process.
TINY_POLICY = [
    "policy.obs={camera_0: {type: rgb}, robot_eef_pose: {type: low_dim}}",
    "policy.vision.width=8",
    "policy.vision.image_size=null",
    "policy.vision.stem_stride=1",
    "policy.vision.stem_pool=false",
    "policy.vision.crop_shape=[22,30]",
    "policy.vision.num_keypoints=8",
    "policy.model.unet.down_dims=[32,64]",
    "policy.model.unet.diffusion_step_embed_dim=32",
    "training.batch_size=8",
    "training.val_every_steps=1000",
    "training.checkpoint_every_steps=1000",
    "training.torch_threads=1",
    "dataset.val_ratio=0.25",
]


# The same with the transformer backbone (2 layers of 32-wide tokens).
TINY_TRANSFORMER = [
    "policy.model.backbone=transformer",
    "policy.model.transformer.n_layer=2",
    "policy.model.transformer.n_emb=32",
]


@pytest.fixture(scope="module", params=["unet", "transformer"])
def tiny_checkpoint(request, tmp_path_factory):
    import contextlib
    import io as _io

    from policy.train_cli import main as train_main

    base = tmp_path_factory.mktemp("tiny_ckpt")
    store = EpisodeStore.open(base / "demos.zarr", "w")
    rng = np.random.default_rng(0)
    for e in range(4):
        n = 20
        pose = np.tile(START, (n, 1))
        pose[:, 0] += 0.002 * np.arange(n) * (1 if e % 2 else -1)
        pose[:, 1] += rng.uniform(-0.02, 0.02)
        action = np.roll(pose, -1, axis=0)
        action[-1] = pose[-1]
        frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
        store.add_episode(
            {
                "camera_0": frames,
                "robot_eef_pose": pose,
                "action": action,
                "timestamp": 100.0 + 0.1 * np.arange(n),
            }
        )
    store.close()
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        rc = train_main(
            [
                "--config",
                "policy/tiny.yaml",
                "--dataset",
                str(base / "demos.zarr"),
                "--out",
                str(base / "run"),
                "--max-steps",
                "20",
                *TINY_POLICY,
                *(TINY_TRANSFORMER if request.param == "transformer" else []),
            ]
        )
    assert rc == 0
    return str(base / "run")


@pytest.mark.timeout(120)
def test_a_trained_checkpoint_runs_async_with_inpainting(env, tmp_path, tiny_checkpoint):
    # Inline inference: the real Policy.predict with committed actions, without paying a second torch
    # import in an inference process (the process path is covered with the stand-in above).
    cfg = deploy_config(tmp_path, "mode=async", "inference=inline", "max_episode_s=3.0", "policy_seed=0")
    client = make_client(cfg, PolicySpec(tiny_checkpoint))
    store = EpisodeStore.open(cfg.store, "a")
    try:
        runner = DeployRunner(cfg, env, client, out=io.StringIO(), keep_logs=True)
        runner.check_observations()
        result = runner.run_episode(0, None, store)
    finally:
        store.close()
        close_client(client)
    assert runner.meta.obs_keys == ("camera_0", "robot_eef_pose")
    assert result.end_reason == "max_episode_s" and result.chunks >= 3, runner.chunk_log
    # Joined by inpainting: every chunk asked for while the plan still reached past its observation
    # carried committed rows. (Inline inference on a loaded machine can outlast the whole plan: then
    # nothing is committed any more and the chunk rightly starts free; seen in CI.)
    later = runner.chunk_log[1:]
    assert any(c["committed_rows"] >= 1 for c in later), later
    for c in later:
        assert c["committed_rows"] >= 1 or c["plan_end_at_request"] < c["t_obs"], c
    assert runner.sent_log and all(np.all(np.isfinite(w["pose"])) for w in runner.sent_log)
    ep = EpisodeStore.open(cfg.store, "r").get_episode(0)
    assert len(ep["action"]) == result.steps and np.all(np.isfinite(ep["action"]))


@pytest.mark.timeout(240)  # the server process imports torch and loads the policy before it answers
def test_a_trained_checkpoint_is_served_as_it_predicts_in_process(tiny_checkpoint):
    """`python -m deploy.serving --checkpoint RUN` (a process of its own): the meta names the
    backbone, and a chunk over the wire, committed actions inpainted, equals the in-process one."""
    import torch

    from policy.inference import Policy
    from tests.deploy.test_serving import predict_served

    local = Policy.load(tiny_checkpoint)
    rng = np.random.default_rng(1)
    obs = {
        "camera_0": rng.integers(0, 255, (2, 24, 32, 3), dtype=np.uint8),
        "robot_eef_pose": np.tile(START, (2, 1)),
    }
    # One torch thread here as in the server: another thread count sums in another order (1e-7 apart).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        committed = local.predict(obs, seed=1).actions[:2] + 0.001
        want = local.predict(obs, committed_actions=committed, seed=1).actions
    finally:
        torch.set_num_threads(threads)
    meta, res = predict_served(tiny_checkpoint, obs, committed, seed=1, timeout_s=60)
    assert meta.description.endswith(f"({local.backbone})")
    assert res is not None and res.error is None, res
    np.testing.assert_array_equal(res.actions[:2], committed)
    np.testing.assert_allclose(res.actions, want, rtol=0, atol=1e-9)


@pytest.mark.timeout(150)
def test_the_first_observation_after_reset_and_homing_is_captured_after_them(tmp_path, rig_deploy):
    """A slow camera (150 ms from exposure to the host) still delivers the world before the reset for
    a while: deploy waits for frames captured after the reset and the homing, by capture time, warms
    the policy up first, and never records a step twice."""
    store = tmp_path / "eval.zarr"
    out = rig_deploy(
        "rig.calibration_file=/nonexistent/cal.yaml",
        "rig.cameras.cameras.scene.sim.latency_s=0.15",
        episodes=2,
        max_episode_s=1.5,
        timeout_s=140,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    warm = [line for line in out.stdout.splitlines() if line.startswith("policy warm-up: one predict took")]
    assert len(warm) == 1 and out.stdout.index(warm[0]) < out.stdout.index("episode 0:")
    s = EpisodeStore.open(store, "r")
    n_obs, dt_s = 2, 0.1
    for i in range(2):
        side = json.loads((tmp_path / "eval.zarr.deploy" / f"episode_{i:06d}.json").read_text())
        ts = s.get_episode(i, ["timestamp"])["timestamp"]
        assert np.all(np.diff(ts) > 0), np.diff(ts)  # no repeated timestamps
        assert ts[0] >= side["ready_time"], (ts[0], side["ready_time"])
        chunk0 = side["chunks"][0]
        # Every frame of chunk 0's observation window was captured after the reset and homing.
        assert chunk0["t_obs"] - (n_obs - 1) * dt_s >= side["ready_time"]
