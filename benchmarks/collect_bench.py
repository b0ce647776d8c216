"""Collection benchmark: save and restart times between episodes, loop timing and drops while recording.

On the simulated rig with 2 cameras at 640x480@30 fps and episode video on, the collector records one
long episode (``--seconds``, default 60), then ``s`` and immediately ``c`` and a short second episode:

  save_s           's' pressed -> the episode is durable in the store (all data, then episode_ends)
  restart_s        's' pressed -> the next episode is recording
  loop_err_p99_ms  control-loop wake-up error while recording (|wake - deadline|)
  drops            camera frames dropped (frame_index gaps) + video frames the writer dropped

Baseline in the same run: a blocking save (``commit(wait=True)`` of the same long episode, as a
collector without a background writer would do) for the save -> restart time.

Checksums (a CRC32 per chunk, ``collection.store_codecs.array_codecs``), their cost measured in the same run on
the same episode: the blocking save into a store with and without them, then training's input from
each store: ``rig train``'s verification before it starts (every checksum against the bytes on
disk), the samples/s of the training dataset (windows with their frames decoded; image cache off)
and of ``train()`` itself (a small policy, ``--train-steps`` steps on one torch thread).

Usage: python benchmarks/collect_bench.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from collection.collect import CollectConfig, Collector
from collection.episode_store import EpisodeStore
from collection.keys import KeyReader
from robot.config import config_path, load_config
from robot.env import Env


class _ScriptedKeys(KeyReader):
    """Keys pushed on a schedule (seconds after start) instead of typed."""

    def __init__(self, schedule: list[tuple[float, str]]):
        super().__init__(stream=None)
        self._fd = None
        self.schedule = schedule

    def __enter__(self) -> _ScriptedKeys:
        return self  # no terminal: keys come only from the schedule

    def poll(self) -> list[str]:
        if not hasattr(self, "_thread"):  # the schedule starts when the collector loop starts

            def feed() -> None:
                t0 = time.monotonic()
                for at, key in self.schedule:
                    time.sleep(max(0.0, t0 + at - time.monotonic()))
                    self.push(key)

            self._thread = threading.Thread(target=feed, daemon=True)
            self._thread.start()
        return super().poll()


# CPU time of this process (all threads): stable on a shared machine, where wall time is not.
_TRAINING_ROWS = [
    ("rig train's verification, CPU s", "verify_cpu_s"),
    ("dataset samples per CPU s", "dataset_samples_per_cpu_s"),
    ("train() samples per CPU s", "train_samples_per_cpu_s"),
    ("train() samples/s, wall", "train_samples_per_s"),
]


def _training_rates(store: Path, train_steps: int) -> dict[str, float]:
    """rig train's verification time and samples/s of the dataset and of training on ``store``."""
    from collection.store_verify import verify_store
    from policy.config import TrainConfig
    from policy.dataset import EpisodeDataset
    from policy.train import train

    c0 = time.process_time()
    report = verify_store(store, decode="checksums")
    verify_cpu_s = time.process_time() - c0
    assert not report.problems, report.problems
    overrides = [
        f"dataset.path={store}", "dataset.image_cache_mb=0", "dataset.val_ratio=0", "training.torch_threads=1",
        "training.batch_size=16", f"training.max_steps={train_steps}", "training.use_ema=false",
        "training.val_every_steps=0", "training.checkpoint_every_steps=0", "training.sample_batches=0",
        "policy.obs.camera_1={type: rgb}",
    ]  # fmt: skip
    cfg = load_config(TrainConfig, config_path("policy/tiny.yaml"), overrides)
    ds = EpisodeDataset(store, cfg.policy, cfg.dataset, "train")
    n = min(len(ds), 200)
    c0 = time.process_time()
    for i in range(n):
        ds[i]
    dataset_rate = n / (time.process_time() - c0)
    with tempfile.TemporaryDirectory() as run:
        c0 = time.process_time()
        summary = train(cfg, Path(run) / "run")
        train_cpu_s = time.process_time() - c0
    samples = summary["steps"] * cfg.training.batch_size
    return {
        "verify_cpu_s": verify_cpu_s,
        "dataset_samples_per_cpu_s": dataset_rate,
        "train_samples_per_cpu_s": samples / train_cpu_s,
        "train_samples_per_s": samples / max(summary["train_seconds"], 1e-9),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the long episode")
    ap.add_argument("--train-steps", type=int, default=20, help="optimizer steps per store for samples/s")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="collect_bench_"))
    overrides = [
        f"store={tmp / 'bench.zarr'}",
        "record_video=true",
        f"max_episode_s={args.seconds + 30}",
    ]
    for cam in ("scene", "wrist"):
        overrides += [f"rig.cameras.cameras.{cam}.width=640", f"rig.cameras.cameras.{cam}.height=480"]
        overrides += [
            f"rig.cameras.cameras.{cam}.sim.intrinsics.cx=319.5",
            f"rig.cameras.cameras.{cam}.sim.intrinsics.cy=239.5",
        ]
    cfg = load_config(CollectConfig, config_path("collect/sim_reach.yaml"), overrides)
    # Empty table and a slow scripted drift: the bench measures recording, not the task.
    cfg.rig.task.name, cfg.rig.task.params = "none", {}
    cfg.rig.spacemouse.scripted.expert = None
    cfg.rig.spacemouse.scripted.trajectory = [
        {"time_s": 0.0, "axes": [0.3, 0.2, 0, 0, 0, 0], "buttons": [False, False]},
        {"time_s": 4.0, "axes": [-0.3, -0.2, 0, 0, 0, 0], "buttons": [False, False]},
        {"time_s": 8.0, "axes": [0.3, 0.2, 0, 0, 0, 0], "buttons": [False, False]},
    ]
    cfg.rig.spacemouse.scripted.loop = True
    cfg = CollectConfig.model_validate(cfg.model_dump())
    t_long = 2.0 + args.seconds
    keys = _ScriptedKeys([(2.0, "c"), (t_long, "s"), (t_long, "c"), (t_long + 3.0, "s"), (t_long + 5.0, "q")])
    with keys, Env(cfg.rig, spacemouse=True) as env:
        collector = Collector(cfg, keys)
        summary = collector.run(env)
        cam_stats = env.cameras.stats()
    ev = collector.events
    t_save = next(t for what, i, t in ev if what == "save_pressed" and i == 0)
    t_disk = next(t for what, i, t in ev if what == "on_disk" and i == 0)
    t_restart = next(t for what, i, t in ev if what == "recording" and i == 1)
    t_rec0 = next(t for what, i, t in ev if what == "recording" and i == 0)
    errs = np.abs(np.asarray(collector.loop_errors_ms[5:]))
    drops = sum(int(s.get("dropped", 0)) + int(s.get("video_dropped", 0)) for s in cam_stats.values())

    # Baseline: the same long episode saved with a blocking commit (the collector waits for zarr).
    store = EpisodeStore.open(tmp / "bench.zarr", "r")
    ep0 = store.get_episode(0)
    store.close()
    dt_s = store.dt_s
    blocking: dict[bool, float] = {}
    save_cpu: dict[bool, float] = {}
    for checksums in (True, False, True, False):  # interleaved: load on the machine hits both alike
        path = tmp / f"blocking_{'crc' if checksums else 'plain'}.zarr"
        with EpisodeStore.open(path, "w", dt_s=dt_s, checksums=checksums) as base:
            c0 = time.process_time()
            w = base.begin_episode()
            for i in range(len(ep0["action"])):
                w.append({k: v[i] for k, v in ep0.items()})
            t0 = time.monotonic()
            w.commit(wait=True)
            blocking[checksums] = min(blocking.get(checksums, 1e9), time.monotonic() - t0)
            save_cpu[checksums] = min(save_cpu.get(checksums, 1e9), time.process_time() - c0)
    blocking_s = blocking[True]
    training: dict[bool, dict[str, float]] = {}
    for checksums in (True, False, True, False):  # interleaved again; the best of two per store
        rates = _training_rates(tmp / f"blocking_{'crc' if checksums else 'plain'}.zarr", args.train_steps)
        best = training.setdefault(checksums, rates)
        for key, value in rates.items():
            best[key] = min(best[key], value) if key == "verify_cpu_s" else max(best[key], value)

    n_steps = len(ep0["action"])
    print(
        f"collect_bench: sim rig, 2 cameras 640x480@30 with video, {t_save - t_rec0:.0f} s episode ({n_steps} steps)"
    )
    print(f"  {'s -> episode durable on disk':<40}{t_disk - t_save:8.3f} s   (target < 1 s)")
    print(f"  {'s -> next episode recording':<40}{t_restart - t_save:8.3f} s   (target: immediate)")
    print(f"  {'baseline: blocking save before restart':<40}{blocking_s:8.3f} s")
    print("  checksums (CRC32 per chunk): cost, same episode, same run, best of 2 interleaved runs each")
    print(f"    {'':<38}{'with':>10}{'without':>10}{'ratio':>8}")
    rows = [
        ("blocking save, wall s", blocking[True], blocking[False]),
        ("whole save, CPU s (all threads)", save_cpu[True], save_cpu[False]),
    ]
    rows += [(name, training[True][key], training[False][key]) for name, key in _TRAINING_ROWS]
    for name, with_c, without in rows:
        print(f"    {name:<38}{with_c:10.3f}{without:10.3f}{with_c / max(without, 1e-9):8.2f}")
    print(f"  {'control loop error p50 / p99':<40}{np.median(errs):8.2f} / {np.percentile(errs, 99):.2f} ms")
    print(f"  {'dropped frames (camera + video writer)':<40}{drops:8d}")
    for name, s in cam_stats.items():
        print(
            f"    {name}: {s.get('frames', 0)} frames, {s.get('fps', 0):.1f} fps, dropped {s.get('dropped', 0)}, "
            f"video dropped {s.get('video_dropped', 0)}"
        )
    print(
        json.dumps(
            {
                "save_s": round(t_disk - t_save, 3),
                "restart_s": round(t_restart - t_save, 3),
                "blocking_save_s": round(blocking_s, 3),
                "blocking_save_no_checksums_s": round(blocking[False], 3),
                "save_cpu_s_checksums": round(save_cpu[True], 3),
                "save_cpu_s_no_checksums": round(save_cpu[False], 3),
                **{f"{key}_checksums": round(training[True][key], 3) for _, key in _TRAINING_ROWS},
                **{f"{key}_no_checksums": round(training[False][key], 3) for _, key in _TRAINING_ROWS},
                "drops": drops,
                "loop_err_p99_ms": round(float(np.percentile(errs, 99)), 3),
                "episodes_saved": summary["episodes_saved"],
            }
        )
    )


if __name__ == "__main__":
    main()
