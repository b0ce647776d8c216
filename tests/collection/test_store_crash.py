"""SIGKILL of a process writing an episode store leaves exactly the committed episodes, intact.

The writer runs in a real child process (this file run as a script) that is killed with SIGKILL, so
no Python cleanup, no atexit and no finally block runs: only what is on disk counts.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collection.episode_store import EpisodeStore, EpisodeStoreError

pytestmark = pytest.mark.timeout(90)

N_BEFORE_CRASH = 3


def make_episode(i: int) -> dict[str, np.ndarray]:
    """Episode i, reproducible from i alone, so the parent knows what the child wrote."""
    rng = np.random.default_rng(1000 + i)
    t = 9 + (i * 5) % 13
    return {
        "camera_0": rng.integers(0, 256, size=(t, 24, 32, 3), dtype=np.uint8),
        "robot_eef_pose": rng.normal(size=(t, 6)),
        "action": rng.normal(size=(t, 6)),
        "timestamp": 10.0 * i + 0.1 * np.arange(t),
    }


def steps(episode: dict[str, np.ndarray]):
    for t in range(len(episode["timestamp"])):
        yield {k: v[t] for k, v in episode.items()}


def child_mid_episode(path: str) -> None:
    """Commit N_BEFORE_CRASH episodes, then stream episode N+1 forever, its data reaching disk."""
    store = EpisodeStore.open(path, "a", image_codec="blosc", batch_steps=4)
    for i in range(store.n_episodes, N_BEFORE_CRASH):
        if i % 2:
            store.add_episode(make_episode(i))
        else:
            ep = store.begin_episode()
            for step in steps(make_episode(i)):
                ep.append(step)
            ep.commit()
    ep = store.begin_episode()
    junk = make_episode(99)
    for n, step in enumerate(steps(junk)):
        ep.append(step)
        if n == 5:
            ep.flush()
            print("MID", flush=True)
    k = 0
    while True:  # keep the writer busy until killed
        ep.append({key: v[k % len(v)] for key, v in junk.items()})
        k += 1
        if k % 4 == 0:
            time.sleep(0.002)


def child_loop(path: str) -> None:
    """Record episodes back to back (commit without waiting, begin the next at once) until killed."""
    store = EpisodeStore.open(path, "a", image_codec="blosc", batch_steps=4)
    i = store.n_episodes
    first = None
    while True:
        ep = store.begin_episode()
        for step in steps(make_episode(i)):
            ep.append(step)
        fut = ep.commit(wait=False)
        if first is None:
            first = fut
            first.result()
            print("READY", flush=True)
        i += 1


def child_exit_without_close(path: str) -> None:
    """Commit without waiting and leave the interpreter at once, never calling close()."""
    store = EpisodeStore.open(path, "a", image_codec="blosc", batch_steps=4)
    ep = store.begin_episode()
    for step in steps(make_episode(0)):
        ep.append(step)
    ep.commit(wait=False)


def child_hold(path: str) -> None:
    """Hold the store open for writing (one episode committed) until killed."""
    store = EpisodeStore.open(path, "a", image_codec="blosc")
    store.add_episode(make_episode(0))
    print("READY", flush=True)
    while True:
        time.sleep(1)


def _start(mode: str, path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, mode, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        raise AssertionError(f"child said {line!r}, expected {expected!r}; stderr:\n{proc.stderr.read()}")


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _assert_intact(store: EpisodeStore, n: int) -> None:
    assert store.n_episodes == n
    for i in range(n):
        got = store.get_episode(i)
        for k, want in make_episode(i).items():
            np.testing.assert_array_equal(got[k], want, err_msg=f"episode {i} key {k}")


def test_sigkill_mid_episode_leaves_exactly_n_intact_episodes(tmp_path: Path, caplog) -> None:
    path = tmp_path / "crash.zarr"
    proc = _start("mid", path)
    try:
        _wait_line(proc, "MID")
        time.sleep(0.2)
    finally:
        _kill(proc)
    ro = EpisodeStore.open(path, "r")
    assert ro.dropped_steps >= 6  # episode N+1 had reached the data arrays
    with caplog.at_level("WARNING", logger="collection.episode_store"):
        store = EpisodeStore.open(path, "a")
    assert f"dropped {ro.dropped_steps} trailing steps" in caplog.text
    _assert_intact(store, N_BEFORE_CRASH)
    # the store takes the next episode right after the intact ones
    info = store.add_episode(make_episode(N_BEFORE_CRASH))
    assert info.start == store.episodes()[N_BEFORE_CRASH - 1].end
    store.close()
    _assert_intact(EpisodeStore.open(path, "r"), N_BEFORE_CRASH + 1)


def test_sigkill_at_random_moments_never_loses_committed_episodes(tmp_path: Path) -> None:
    path = tmp_path / "loop.zarr"
    rng = random.Random(1234)
    n_prev = 0
    for _ in range(3):
        proc = _start("loop", path)
        try:
            _wait_line(proc, "READY")
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            _kill(proc)
        with EpisodeStore.open(path, "a") as store:
            assert store.n_episodes > n_prev  # at least the one the child saw committed
            _assert_intact(store, store.n_episodes)
            n_prev = store.n_episodes
        arrays = EpisodeStore.open(path, "r")
        assert arrays.dropped_steps == 0  # open in "a" mode repaired it


def test_commit_in_flight_at_normal_exit_is_finished(tmp_path: Path) -> None:
    path = tmp_path / "exit.zarr"
    proc = _start("exit", path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    _assert_intact(EpisodeStore.open(path, "r"), 1)


def test_second_writer_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    path = tmp_path / "held.zarr"
    proc = _start("hold", path)
    try:
        _wait_line(proc, "READY")
        with pytest.raises(EpisodeStoreError, match="already open for writing"):
            EpisodeStore.open(path, "a")
        with pytest.raises(EpisodeStoreError, match="already open for writing"):
            EpisodeStore.open(path, "w")
        _assert_intact(EpisodeStore.open(path, "r"), 1)  # readers are welcome
    finally:
        _kill(proc)
    with EpisodeStore.open(path, "a") as store:  # the kernel dropped the dead writer's lock
        store.add_episode(make_episode(1))
        with pytest.raises(EpisodeStoreError, match="already open for writing"):
            EpisodeStore.open(path, "a")  # also within one process
    _assert_intact(EpisodeStore.open(path, "r"), 2)


if __name__ == "__main__":
    children = {
        "mid": child_mid_episode,
        "loop": child_loop,
        "exit": child_exit_without_close,
        "hold": child_hold,
    }
    children[sys.argv[1]](sys.argv[2])
