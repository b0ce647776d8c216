"""Time-alignment benchmark: what an action's time means, checked on the arm (collection/action_time.py).

On the simulated reach rig, for each rule and camera latency, in one run:

- collect ``--episodes`` scripted demonstrations with the shipped ``collect/sim_reach.yaml`` while a
  thread reads every record the arm controller publishes (its commanded target at its tick time):
  ``collect_action_err_mm_p50`` is how far each stored action is from the pose commanded for its
  timestamp (the target at ``timestamp - action_latency``);
- ``rig replay`` every episode with default settings: ``replay_shift_ms`` is the replay's best time
  shift against the recording (median over episodes; 0 = in step), beside its unshifted p50 error;
- ``rig deploy`` a stand-in policy that returns the demonstration's own recorded actions
  (``deploy.standin.DemoOracle``) on episode 0's world seed: ``oracle_lag_ms`` is how far the deployed
  arm's path lags the demonstration's (negative: it runs early).

Rules: ``new`` (the stored action is the pose commanded for the observation's time, teleop targets
sent 1.5 steps ahead) and the baseline ``old`` (the target scheduled for the loop deadline plus one
step; ``legacy_action_rule=true``; replayed with its old default offset ``dt_s``, deployed with
deploy's 0). Cameras: the rig's (45 ms) and 120 ms (sim cameras and their calibration set to it).

Prints a table, then as its very last line one JSON object with ``replay_shift_ms``,
``collect_action_err_mm_p50``, ``oracle_lag_ms``, ``replay_shift_ms_cam120``, ``oracle_lag_ms_cam120``
(the new rule) and ``baseline`` (the same keys for the old rule).

Usage: python benchmarks/time_alignment_bench.py [--episodes N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from collection import action_time
from collection.collect import CollectConfig, Collector
from collection.episode_store import EpisodeStore
from robot.config import config_path, load_config
from robot.env import Env, interpolate_poses

RIG = [sys.executable, "-m", "robot.cli"]
CAM120 = [
    "rig.cameras.cameras.scene.sim.latency_s=0.12",
    "rig.cameras.cameras.wrist.sim.latency_s=0.12",
    "rig.obs.camera_time_source=receive",
    "rig.latency.camera_latency_s={scene: 0.12, wrist: 0.12}",
]


class _NoKeys:
    closed = False

    def poll(self) -> list[str]:
        return []


def _collect(store: Path, episodes: int, rule: str, cam: list[str]) -> tuple[list[float], int]:
    """Collect in-process, reading the arm's commanded history beside it; returns the per-step
    distances (mm) of the stored actions from the pose commanded for their timestamps, and the
    first episode's world seed."""
    overrides = [f"store={store}", f"auto.episodes={episodes}", "record_video=false", "preview=false"]
    overrides += ["legacy_action_rule=true"] if rule == "old" else []
    cfg = load_config(CollectConfig, config_path("collect/sim_reach.yaml"), overrides + cam)
    times, targets, stop = [], [], threading.Event()
    with Env(cfg.rig, spacemouse=True) as env:
        ring, latency_s = env.arm.state_ring, env.action_latency_s
        counter = [ring.count]

        def poll() -> None:
            recs = ring.get_since(counter[0], skip_overwritten=True)
            if len(recs["counter"]):
                counter[0] = int(recs["counter"][-1]) + 1
                times.append(recs["tick_time"].copy())
                targets.append(recs["target_tcp_pose"].copy())

        def run() -> None:
            while not stop.is_set():
                poll()
                time.sleep(0.02)

        reader = threading.Thread(target=run, daemon=True)
        reader.start()
        try:
            Collector(cfg, _NoKeys()).run(env)
        finally:
            stop.set()
            reader.join()
            poll()
    tt, tg = np.concatenate(times), np.concatenate(targets)
    errs: list[float] = []
    with EpisodeStore.open(store, "r") as s:
        for ep in s.iter_episodes(["action", "timestamp"]):
            cmd = interpolate_poses(tt, tg, ep["timestamp"] - latency_s)
            errs.extend((np.linalg.norm(ep["action"][:, :3] - cmd[:, :3], axis=1) * 1e3).tolist())
    return errs, int(cfg.rig.task.seed)


def _rig(*args: object) -> subprocess.CompletedProcess:
    out = subprocess.run([*RIG, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"rig {args[0]} failed: {out.stderr[-2000:]}")
    return out


def _replay(store: Path, episodes: int, cam: list[str]) -> tuple[float, float]:
    shifts, errs = [], []
    for i in range(episodes):
        fig = json.loads(_rig("replay", store, i, *cam).stdout.strip().splitlines()[-1])
        shifts.append(fig["best_shift_ms"])
        errs.append(fig["pos_err_p50_mm"])
    return float(np.median(shifts)), float(np.median(errs))


def _oracle_lag_ms(work: Path, store: Path, seed: int, cam: list[str]) -> float:
    eval_store, t0_file = work / "eval.zarr", work / "t0.txt"
    kwargs = {"store": str(store), "episode": 0, "n_obs_steps": 2, "t0_file": str(t0_file)}
    _rig(
        "deploy", "--config", "deploy/sim_reach.yaml", "--checkpoint", "py:deploy.standin:DemoOracle",
        "--episodes", "1", f"seeds=[{seed}]", f"store={eval_store}", "record_video=false",
        "spacemouse=false", "max_episode_s=8", f"policy_kwargs={json.dumps(kwargs)}", "success_hold_s=1.0",
        *cam,
    )  # fmt: skip
    t0 = float(t0_file.read_text())
    with EpisodeStore.open(store, "r") as s:
        demo = s.get_episode(0, ["robot_eef_pose", "timestamp"])
    with EpisodeStore.open(eval_store, "r") as s:
        ran = s.get_episode(0, ["robot_eef_pose", "timestamp"])
    shift, _ = action_time.best_shift(
        demo["timestamp"] - demo["timestamp"][0], demo["robot_eef_pose"][:, :3],
        ran["timestamp"] - t0, ran["robot_eef_pose"][:, :3], np.arange(-0.4, 0.4001, 0.005),
    )  # fmt: skip
    return -shift * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=3)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rule in ("old", "new"):
            for cam_name, cam in (("45 ms", []), ("120 ms", CAM120)):
                work = Path(tmp) / f"{rule}_{len(cam)}"
                work.mkdir()
                store = work / "demo.zarr"
                errs, seed = _collect(store, args.episodes, rule, cam)
                shift, err = _replay(store, args.episodes, cam)
                lag = _oracle_lag_ms(work, store, seed, cam)
                rows.append((rule, cam_name, float(np.median(errs)), float(np.max(errs)), shift, err, lag))
                print(f"  {rule} rule, camera {cam_name}: done", file=sys.stderr, flush=True)
    print(f"{'rule':<5} {'camera':<7} {'action err p50/max mm':>22} {'replay shift ms':>16} "
          f"{'replay p50 mm':>14} {'oracle lag ms':>14}")  # fmt: skip
    for rule, cam, e50, emax, shift, err, lag in rows:
        print(f"{rule:<5} {cam:<7} {e50:>12.2f} / {emax:<7.2f} {shift:>16.0f} {err:>14.2f} {lag:>14.0f}")
    print("(old: actions scheduled for deadline + dt, replayed at offset dt, deployed at 0; new: the pose")
    print(" commanded for the observation's timestamp, offset 0 everywhere; lag < 0: the arm runs early)")

    def figures(rule: str) -> dict[str, float]:
        by = {cam: r for r in rows if r[0] == rule for cam in [r[1]]}
        return {
            "replay_shift_ms": round(by["45 ms"][4], 1),
            "collect_action_err_mm_p50": round(by["45 ms"][2], 3),
            "oracle_lag_ms": round(by["45 ms"][6], 1),
            "replay_shift_ms_cam120": round(by["120 ms"][4], 1),
            "oracle_lag_ms_cam120": round(by["120 ms"][6], 1),
        }

    print(json.dumps({**figures("new"), "baseline": figures("old"), "episodes": args.episodes}))


if __name__ == "__main__":
    main()
