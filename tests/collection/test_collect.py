"""`rig collect` through its real entry point on the simulated rig (scripted SpaceMouse)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collection.collect import CollectConfig
from collection.episode_store import EpisodeStore
from robot.config import config_path, load_config
from robot.sim.tasks import make_task
from tests.shm_clean_lock import shm_clean_lock

RIG = [sys.executable, "-m", "robot.cli", "collect", "--config", "collect/sim_reach.yaml"]
FAST = ["auto.episode_timeout_s=10"]


def _run(*overrides: str, timeout: float) -> subprocess.CompletedProcess:
    """`rig collect` with ``overrides`` to its end, no keyboard; its output captured."""
    return subprocess.run(
        [*RIG, *overrides], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def _collector(*overrides: str, keys: bool = False):
    """`rig collect` with ``overrides`` running for the block, its output piped (and its stdin, for
    the keys, with ``keys``); killed after the block if it is still running."""
    stdin = subprocess.PIPE if keys else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*RIG, *overrides], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _end_keys(proc: subprocess.Popen) -> tuple[str, str]:
    """Close the collector's stdin (while idle: it finishes and exits) and wait: its stdout, stderr."""
    proc.stdin.close()
    proc.stdin = None
    return proc.communicate(timeout=60)


def _check_store(path, n):
    store = EpisodeStore.open(path, "r")
    assert store.n_episodes == n
    for i in range(n):
        ep = store.get_episode(i)
        lengths = {k: len(v) for k, v in ep.items()}
        assert len(set(lengths.values())) == 1, lengths
        assert lengths["action"] > 3
        assert np.all(np.diff(ep["timestamp"]) > 0)
        assert ep["camera_0"].shape[1:] == (240, 320, 3)
    return store


@pytest.mark.timeout(300)
def test_collect_records_n_scripted_episodes(tmp_path):
    store = tmp_path / "demos.zarr"
    out = _run(f"store={store}", "auto.episodes=2", "record_video=false", *FAST, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "press s" not in out.stdout and "saved when the task succeeds" in out.stdout  # auto mode
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["episodes_saved"] == 2 and summary["store_episodes"] == 2
    s = _check_store(store, 2)
    # The scripted expert really drove the arm to the marker: the last action is near the target.
    ep = s.get_episode(1)
    assert np.linalg.norm(ep["action"][-1, :2] - ep["action"][0, :2]) > 0.005
    # The time base: the rig's step period is recorded, and collect and `rig episodes list` print the
    # same duration and late steps for each episode.
    assert s.dt_s == pytest.approx(0.1)
    said = re.findall(r"episode (\d+): saved (\d+) steps, ([\d.]+) s, (\d+) late", out.stdout)
    listed = subprocess.run(
        [sys.executable, "-m", "robot.cli", "episodes", "list", str(store)], capture_output=True, text=True
    )
    rows = [line.split() for line in listed.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert said and [tuple(r[:4]) for r in rows] == said, (said, listed.stdout)
    # A healthy arm follows its actions (commanded for each step's time) within a few mm: no stall.
    assert "stall" not in out.stdout and all("stall" not in r[5] for r in rows), listed.stdout
    assert all(float(r[4]) < 10 for r in rows), listed.stdout  # lag mm
    assert out.stdout.count("preview: no display") == 1  # said once, not per tick
    assert len(re.findall(r"late, \d+ teleop targets dropped", out.stdout)) == 2  # one count per episode
    assert "exec_actions: dropped" not in out.stdout + out.stderr
    # Appending continues the world seeds instead of repeating the first episodes' worlds; with
    # auto.spread_candidates it takes, of the next 8, the world farthest from those in the store.
    first_seeds = [int(x) for x in re.findall(r"recording \(seed (\d+)\)", out.stdout)]
    assert [s.episode_attrs(i)["world_seed"] for i in (0, 1)] == first_seeds
    more = _run(
        f"store={store}",
        "auto.episodes=1",
        "auto.spread_candidates=8",
        "record_video=false",
        *FAST,
        timeout=170,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    (seed,) = [int(x) for x in re.findall(r"recording \(seed (\d+)\)", more.stdout)]
    start = max(first_seeds) + 1
    assert f"world seeds continue from {start}" in more.stdout
    rig_task = load_config(CollectConfig, config_path("collect/sim_reach.yaml")).rig.task
    task = make_task(rig_task.name, **rig_task.params)

    def layout(world_seed: int) -> np.ndarray:
        return np.concatenate([o.pose[:2] for o in task.reset(world_seed)])

    def gap(world_seed: int) -> float:
        return min(float(np.linalg.norm(layout(world_seed) - layout(f))) for f in first_seeds)

    gaps = {c: gap(c) for c in range(start, start + 8)}
    assert seed == max(gaps, key=gaps.get) and gaps[seed] > gaps[start], gaps
    assert EpisodeStore.open(store, "r").episode_attrs(2)["world_seed"] == seed


@pytest.mark.timeout(180)
def test_new_episode_starts_right_after_save_from_keys(tmp_path):
    store = tmp_path / "keys.zarr"
    with _collector(f"store={store}", "record_video=false", keys=True) as proc:
        _wait_line(proc, "episodes already", 60)
        # 3 s per episode: every episode must hold more than 3 steps, and beside a full clean-clone
        # suite (3 workers and the compat virtualenvs' builds) 1.5 s once recorded only 3.
        for key, pause in (("c", 3.0), ("s", 0.0), ("c", 3.0), ("s", 0.3)):
            proc.stdin.write(key)
            proc.stdin.flush()
            if key == "c":  # as a person does: moves once the terminal says it records (typed
                _wait_line(proc, "recording", 60)  # blind, an episode at load 12 held 2 steps)
            time.sleep(pause)
        _, err = _end_keys(proc)
    assert proc.returncode == 0, err[-3000:]
    s = _check_store(store, 2)
    first, second = s.get_episode(0), s.get_episode(1)
    gap_s = second["timestamp"][0] - first["timestamp"][-1]
    # `c` right after `s` starts the next episode without waiting for the first one's write (that
    # commit(wait=False) overlaps the next episode is asserted, without timing, in test_episode_store);
    # here only a sanity bound: the reset world's first fresh frames, a few steps, not seconds.
    assert 0 < gap_s < 2.0, gap_s


def _wait_line(proc, text, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"collector exited: {proc.stderr.read()[-3000:]}")
    raise AssertionError(f"no line containing {text!r}")


@pytest.mark.timeout(240)
def test_sigkill_mid_episode_keeps_saved_episodes_and_their_videos(tmp_path):
    import av

    store = tmp_path / "kill.zarr"
    with _collector(f"store={store}", "auto.episodes=5", *FAST) as proc:
        _wait_line(proc, "episode 1: saved", 150)
        _wait_line(proc, "episode 2: recording", 60)
        time.sleep(1.0)  # in the middle of episode 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    time.sleep(1.0)  # the orphaned device processes notice their parent is gone and exit
    with shm_clean_lock():  # not while another test's dead run waits to be found
        subprocess.run([sys.executable, "-m", "robot.cli", "shm", "clean", "--quiet"], timeout=30, check=True)
    s = _check_store(store, 2)
    with EpisodeStore.open(store, "a") as again:  # truncates the trailing data of episode 2
        assert again.n_episodes == 2
    videos = sorted((tmp_path / "kill.zarr.videos").glob("episode_00000[01]/*.mp4"))
    assert len(videos) == 4, videos  # 2 episodes x 2 cameras
    for v in videos:
        with av.open(str(v)) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n > 10
    assert s.n_episodes == 2


@pytest.mark.timeout(240)
def test_sigint_to_the_group_mid_episode_is_an_interrupt_that_keeps_saved_episodes(tmp_path):
    from tests.sigint import interrupt_command

    store = tmp_path / "int.zarr"
    cmd = [*RIG, f"store={store}", "auto.episodes=5", "record_video=false", *FAST]
    # In the middle of episode 2 (0 and 1 are saved).
    result = interrupt_command(cmd, tmp_path, ready="episode 2: recording", ready_timeout_s=210, settle_s=1.0)
    result.assert_clean_interrupt(kept=f"{store} holds 2 saved episodes")
    assert "failed" not in result.err
    _check_store(store, 2)


def _episode_videos(store, index: int) -> list:
    folder = Path(f"{store}.videos") / f"episode_{index:06d}"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.timeout(240)
def test_sigint_mid_episode_removes_the_discarded_episodes_partial_videos(tmp_path):
    from tests.sigint import interrupt_command

    store = tmp_path / "int.zarr"
    cmd = [*RIG, f"store={store}", "auto.episodes=3", *FAST]  # videos on (the default)
    result = interrupt_command(cmd, tmp_path, ready="episode 0: recording", ready_timeout_s=150, settle_s=0.5)
    saved = len(re.findall(r"episode \d+: saved", result.out))  # a fast success may have saved episode 0
    result.assert_clean_interrupt(kept=f"{store} holds {saved} saved episode")
    assert f"episode {saved}: discarded with its videos" in result.out, result.out[-2000:]
    assert _episode_videos(store, saved) == []  # no mp4, .part or sidecar of the discarded episode
    for i in range(saved):  # the saved episodes keep theirs
        assert {p.name for p in _episode_videos(store, i)} >= {"scene.mp4", "wrist.mp4"}


@pytest.mark.timeout(180)
def test_backspace_while_recording_discards_the_episode_and_its_videos(tmp_path):
    store = tmp_path / "keys.zarr"
    with _collector(f"store={store}", keys=True) as proc:
        _wait_line(proc, "episodes already", 60)
        proc.stdin.write("c")
        proc.stdin.flush()
        _wait_line(proc, "episode 0: recording", 60)
        time.sleep(1.5)  # frames are being encoded into episode_000000/
        assert [p.name for p in _episode_videos(store, 0)], "no video was being written"
        proc.stdin.write("\x7f")  # Backspace
        proc.stdin.flush()
        _wait_line(proc, "episode 0: discarded", 60)
        _, err = _end_keys(proc)
    assert proc.returncode == 0, err[-3000:]
    assert _episode_videos(store, 0) == []
    assert EpisodeStore.open(store, "r").n_episodes == 0


@pytest.mark.timeout(180)
def test_an_arm_that_cannot_follow_is_flagged_stall_when_saved_stored_and_listed(tmp_path):
    store = tmp_path / "stall.zarr"
    # The simulated arm's own speed limit (5 mm/s) far below what teleop commands: it falls behind.
    out = _run(f"store={store}", "auto.episodes=1", "record_video=false", "auto.episode_timeout_s=3",
               "auto.save_failed=true", "rig.arm.sim.max_linear_speed_m_s=0.005", timeout=150)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if "episode 0: saved" in x]
    assert "FLAGGED" in line and "stall" in line and "behind its action by > 10 mm" in line, line
    quality = EpisodeStore.open(store, "r").episode_attrs(0)["quality"]
    assert "stall" in quality["flags"] and quality["behind_steps"] >= 3 and quality["max_lag_m"] > 0.01
    assert quality["thresholds"]["stall_distance_m"] == 0.01
    listed = subprocess.run([sys.executable, "-m", "robot.cli", "episodes", "list", str(store)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    (row,) = [r.split() for r in listed.stdout.splitlines() if r.split()[:1] == ["0"]]
    assert "stall" in row[5] and float(row[4]) == pytest.approx(quality["max_lag_m"] * 1e3, abs=0.1)
