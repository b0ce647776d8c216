"""First-epoch frame reads of ``rig train``'s dataset: one read per episode against one per frame.

    python benchmarks/dataset_bench.py [--dataset STORE] [--episodes N] [--steps N] [--config CONFIG]

``rig train`` decodes every frame once, in its first epoch, and keeps it resized in its image cache
(``dataset.image_cache_mb``): on the pick_place store of 48 demonstrations (two cameras, ~10,700
frames) that first pass took ~55 s of its ~15 minutes (cProfile), mostly zarr's cost per call. Measured
here, each on a fresh dataset over the same store (the train split of ``--config``): every frame of every
training window read once, in window order, as the first epoch reads them (shuffled there):

  baseline  one zarr read per frame, the group looked up each time (the dataset before this change)
  episode   a miss decodes the frame's whole episode in one read (policy/dataset.py, shipped)

Both yield the same frames (checked). Without ``--dataset`` a synthetic store is written first
(``--episodes`` x ``--steps``, two 240x320 cameras, the store's default codec, frames that look
rendered). The table goes to stdout; the last line is one JSON object with
``baseline_first_epoch_s``, ``episode_first_epoch_s``, ``speedup``, ``frames``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.config import TrainConfig  # noqa: E402
from policy.dataset import EpisodeDataset  # noqa: E402
from robot.config import config_path, load_config  # noqa: E402


class RowByRow(EpisodeDataset):
    """The dataset as it read frames before: a zarr call (and a group lookup) per frame."""

    def _array(self, key: str) -> Any:
        return self._root["data"][key]

    def _read_episode(self, key: str, kept_idx: int) -> None:
        return None


def synthetic_store(path: Path, episodes: int, steps: int) -> Path:
    from collection.episode_store import EpisodeStore

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    base = np.stack([xx * 255 // 320, yy * 255 // 240, (xx + yy) * 255 // 560], axis=-1).astype(np.int16)
    with EpisodeStore.open(path, "w") as store:
        for _ in range(episodes):
            frames = {}
            for cam in ("camera_0", "camera_1"):
                f = np.repeat(base[None], steps, axis=0)
                for t in range(steps):  # a box moving across the gradient, sensor noise
                    x0 = 40 + (t * 2) % 200
                    f[t, 100:140, x0 : x0 + 40] = (30, 200, 40)
                f = f + rng.normal(0, 2, f.shape).astype(np.int16)
                frames[cam] = np.clip(f, 0, 255).astype(np.uint8)
            pose = np.tile([0.45, 0.0, 0.1, np.pi, 0.0, 0.0], (steps, 1))
            store.add_episode(
                {
                    **frames,
                    "robot_eef_pose": pose,
                    "gripper_width": np.full((steps, 1), 0.085),
                    "action": np.concatenate([pose, np.full((steps, 1), 0.085)], axis=1),
                    "timestamp": 0.1 * np.arange(steps),
                }
            )
    return path


def first_epoch(cls: type[EpisodeDataset], store: Path, cfg: TrainConfig) -> tuple[float, int, list]:
    ds = cls(store, cfg.policy, cfg.dataset, "train")
    n_obs = cfg.policy.n_obs_steps
    t0 = time.perf_counter()
    frames, sample = 0, []
    for i in range(len(ds)):
        for j in np.unique(ds.window_indices(i)[:n_obs]):
            for key in ds.rgb_keys:
                f = ds._frame(key, int(j))
                frames += 1
                if i % 97 == 0:
                    sample.append(f)
    return time.perf_counter() - t0, frames, sample


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None, help="an episode store (default: a synthetic one)")
    p.add_argument("--episodes", type=int, default=12, help="synthetic store: episodes")
    p.add_argument("--steps", type=int, default=110, help="synthetic store: steps per episode")
    p.add_argument("--config", default="policy/tiny_pick_place.yaml")
    args = p.parse_args(argv)
    cfg = load_config(TrainConfig, config_path(args.config), [])
    with tempfile.TemporaryDirectory() as tmp:
        store = (
            Path(args.dataset)
            if args.dataset
            else synthetic_store(Path(tmp) / "s.zarr", args.episodes, args.steps)
        )
        base_s, n, base_frames = first_epoch(RowByRow, store, cfg)
        ep_s, n2, ep_frames = first_epoch(EpisodeDataset, store, cfg)
    if n != n2 or not all(np.array_equal(a, b) for a, b in zip(base_frames, ep_frames, strict=True)):
        raise SystemExit("the two reads gave different frames")
    print(
        f"store {args.dataset or 'synthetic'}, config {args.config}: {n} frame reads (first epoch, train split)"
    )
    print(f"{'read':<10} {'first epoch s':>14} {'ms / frame':>11}")
    for name, s in (("baseline", base_s), ("episode", ep_s)):
        print(f"{name:<10} {s:>14.2f} {1e3 * s / n:>11.2f}")
    print(f"speedup {base_s / ep_s:.2f}x")
    print(
        json.dumps(
            {
                "baseline_first_epoch_s": round(base_s, 2),
                "episode_first_epoch_s": round(ep_s, 2),
                "speedup": round(base_s / ep_s, 2),
                "frames": n,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
