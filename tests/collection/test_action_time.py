"""The action-time rule at collection (collection/action_time.py), checked against what the arm got.

While ``Collector`` records scripted reach episodes on the shipped collect config, a thread beside it
reads *every* record the arm controller publishes (its commanded target after the safety filter, at
its tick time). Afterwards each stored step's action must be the pose commanded for its timestamp
(the target at ``timestamp - action_latency``) within 0.5 mm, beside two busy processes (where frame
age and skipped ticks grow); before the rule the stored action was the target scheduled for the loop
deadline plus one step: 4.5-14 mm off (p50).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from collection import action_time
from collection.collect import CollectConfig, Collector
from collection.episode_store import EpisodeStore, EpisodeStoreError
from robot.config import config_path, load_config
from robot.env import Env, interpolate_poses


class NoKeys:
    """Auto mode presses the keys itself; nobody at the keyboard."""

    closed = False

    def poll(self) -> list[str]:
        return []


class CommandLog:
    """Every arm state record (tick time, commanded target), read beside the collector."""

    def __init__(self, ring) -> None:
        self.ring = ring
        self.counter = ring.count
        self.times: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.02)

    def poll(self) -> None:
        recs = self.ring.get_since(self.counter, skip_overwritten=True)
        if len(recs["counter"]):
            self.lost += int(recs["counter"][0]) - self.counter
            self.counter = int(recs["counter"][-1]) + 1
            self.times.append(recs["tick_time"].copy())
            self.targets.append(recs["target_tcp_pose"].copy())

    def __enter__(self) -> CommandLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.times), np.concatenate(self.targets)


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.timeout(300)
def test_every_stored_action_is_the_pose_commanded_for_its_timestamp_beside_two_busy_processes(tmp_path):
    store = tmp_path / "reach.zarr"
    cfg = load_config(
        CollectConfig,
        config_path("collect/sim_reach.yaml"),
        [f"store={store}", "auto.episodes=2", "record_video=false", "preview=false"],
    )
    busy = busy_processes(2)
    try:
        with Env(cfg.rig, spacemouse=True) as env, CommandLog(env.arm.state_ring) as log:
            latency_s = env.action_latency_s
            summary = Collector(cfg, NoKeys()).run(env)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert summary["episodes_saved"] == 2, summary
    assert log.lost == 0, f"the test's reader lost {log.lost} arm records"
    tick_times, targets = log.arrays()
    with EpisodeStore.open(store, "r") as s:
        assert s.action_time == action_time.CONVENTION
        errors_mm = []
        for ep in s.iter_episodes(["action", "timestamp"]):
            commanded = interpolate_poses(tick_times, targets, ep["timestamp"] - latency_s)
            errors_mm.append(np.linalg.norm(ep["action"][:, :3] - commanded[:, :3], axis=1) * 1e3)
            # The arm moved: a path that stands still would match any rule.
            assert np.ptp(ep["action"][:, :2], axis=0).max() > 0.02
    errors_mm = np.concatenate(errors_mm)
    assert errors_mm.max() <= 0.5, f"p50 {np.median(errors_mm):.2f} mm, max {errors_mm.max():.2f} mm"


def test_a_store_holds_one_action_time_rule(tmp_path):
    legacy = tmp_path / "legacy.zarr"
    with EpisodeStore.open(legacy, "w") as s:  # no convention: what older collection wrote
        s.add_episode({"action": np.zeros((3, 6)), "timestamp": np.arange(3.0)})
    with pytest.raises(EpisodeStoreError, match="legacy rule.*convert-time"):
        EpisodeStore.open(legacy, "a", action_time=action_time.CONVENTION)
    with EpisodeStore.open(legacy, "r") as s:
        note = action_time.describe(s.attrs, 0.1)
    assert note is not None and "legacy store" in note and "offset 0" in note
    fresh = tmp_path / "new.zarr"
    with EpisodeStore.open(fresh, "a", action_time=action_time.CONVENTION) as s:
        s.add_episode({"action": np.zeros((3, 6)), "timestamp": np.arange(3.0)})
    with EpisodeStore.open(fresh, "a", action_time=action_time.CONVENTION) as s:
        assert s.action_time == action_time.CONVENTION
    with pytest.raises(EpisodeStoreError, match="commanded_at_timestamp"):
        EpisodeStore.open(fresh, "a", action_time="something_else")
