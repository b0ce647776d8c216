"""The action-time rule end to end (collection/action_time.py): collect, then deploy an oracle.

``rig collect`` records a scripted reach demonstration; ``rig deploy`` then runs, on the same world
seed, a stand-in policy that returns the demonstration's own recorded actions for each observation
(``deploy.standin.DemoOracle``: what a perfect policy trained on that store predicts). If collection
and deployment agree on what an action's time means, the arm retraces the demonstration's path in
step: the lag of the deployed path behind the demonstrated one (both measured poses, from each
episode's first observation) is within 20 ms. Before the rule, demonstrations ran ~195 ms early.
The same holds with a 120 ms camera latency (the sim cameras and their calibration set to it), and
the collected episode also replays in step there (``rig replay``, default settings).
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from benchmarks.time_alignment_bench import CAM120, RIG  # the rig and 120 ms cameras the benchmark runs
from collection import action_time
from collection.episode_store import EpisodeStore


def rig(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *map(str, args)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def collect_one(tmp_path, *overrides) -> tuple[EpisodeStore, int]:
    store = tmp_path / "demo.zarr"
    out = rig(
        "collect", "--config", "collect/sim_reach.yaml", f"store={store}", "auto.episodes=1",
        "record_video=false", "preview=false", *overrides,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seed = int(re.search(r"episode 0: recording \(seed (\d+)\)", out.stdout).group(1))
    return store, seed


def oracle_lag_ms(tmp_path, store, seed, *overrides) -> float:
    """Deploy the oracle of ``store``'s episode 0 on its world seed; the deployed path's lag (ms)."""
    eval_store, t0_file = tmp_path / "eval.zarr", tmp_path / "t0.txt"
    kwargs = {"store": str(store), "episode": 0, "n_obs_steps": 2, "t0_file": str(t0_file)}
    out = rig(
        "deploy", "--config", "deploy/sim_reach.yaml", "--checkpoint", "py:deploy.standin:DemoOracle",
        "--episodes", "1", f"seeds=[{seed}]", f"store={eval_store}", "record_video=false",
        "spacemouse=false", "max_episode_s=8", f"policy_kwargs={json.dumps(kwargs)}",
        # Keep running after the reach succeeds, so that the deployed path covers the demonstration's
        # (which goes on for collection's success hold).
        "success_hold_s=1.0", *overrides,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    t0 = float(t0_file.read_text())
    with EpisodeStore.open(store, "r") as s:
        demo = s.get_episode(0, ["robot_eef_pose", "timestamp"])
    with EpisodeStore.open(eval_store, "r") as s:
        assert s.action_time == action_time.CONVENTION and s.dt_s == 0.1
        ran = s.get_episode(0, ["robot_eef_pose", "action", "timestamp"])
    tau_demo = demo["timestamp"] - demo["timestamp"][0]
    tau_ran = ran["timestamp"] - t0
    # The deployed path must cover most of the demonstration (the reach succeeded in about its time).
    assert tau_ran[-1] > 0.9 * tau_demo[-1], (tau_ran[-1], tau_demo[-1])
    moving = np.ptp(demo["robot_eef_pose"][:, :2], axis=0).max()
    assert moving > 0.03, f"the demonstration barely moved ({moving * 1e3:.0f} mm)"
    # demo(tau + s) ~ ran(tau): the deployed arm lags the demonstration by -s.
    s, err = action_time.best_shift(
        tau_demo, demo["robot_eef_pose"][:, :3], tau_ran, ran["robot_eef_pose"][:, :3],
        np.arange(-0.4, 0.4001, 0.005),
    )  # fmt: skip
    assert err < 3e-3, f"the deployed path is {err * 1e3:.1f} mm from the demonstration's"
    return -s * 1e3


@pytest.mark.timeout(600)
def test_a_deployed_oracle_runs_the_demonstration_in_step(tmp_path):
    store, seed = collect_one(tmp_path)
    lag_ms = oracle_lag_ms(tmp_path, store, seed)
    assert abs(lag_ms) <= 20, f"the deployed arm lags the demonstration by {lag_ms:.0f} ms"


@pytest.mark.timeout(600)
def test_with_a_120ms_camera_the_oracle_and_the_replay_stay_in_step(tmp_path):
    store, seed = collect_one(tmp_path, *CAM120)
    out = rig("replay", store, 0, *CAM120)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(figures["best_shift_ms"]) <= 20 and figures["pos_err_p50_mm"] < 2, figures
    lag_ms = oracle_lag_ms(tmp_path, store, seed, *CAM120)
    assert abs(lag_ms) <= 20, f"the deployed arm lags the demonstration by {lag_ms:.0f} ms"
