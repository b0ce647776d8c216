"""Runs in the LeRobot virtualenv: load a dataset with LeRobot's own ``LeRobotDataset`` and save every
item it yields, so the test (in the project's environment) can compare them with the episode store.

    python load_dataset.py REPO_ID ROOT OUT.npz

OUT.npz holds, per feature, the items stacked over the dataset's index order (frames as LeRobot returns
them: float32 (N, C, H, W) in [0, 1]), plus ``task`` (N,) strings, ``meta_fps``, ``meta_total_episodes``,
``meta_total_frames``, ``meta_camera_keys`` and ``stats__<feature>__<stat>`` from ``dataset.meta.stats``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

# torchvision's PyPI wheels are CUDA builds whose C ops do not load on the CPU torch; its import then
# registers fake kernels for two ops that were never defined and fails. Declaring the two schemas
# (nothing else) lets it import; LeRobotDataset uses none of its ops.
for _op in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main(repo_id: str, root: str, out_path: str) -> None:
    ds = LeRobotDataset(repo_id, root=root)
    items = [ds[i] for i in range(len(ds))]
    out: dict[str, np.ndarray] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = np.asarray(values) if isinstance(values[0], str) else torch.stack(values).numpy()
    out["meta_fps"] = np.asarray(ds.meta.fps)
    out["meta_total_episodes"] = np.asarray(ds.meta.total_episodes)
    out["meta_total_frames"] = np.asarray(ds.meta.total_frames)
    out["meta_camera_keys"] = np.asarray(ds.meta.camera_keys)
    for feature, stats in (ds.meta.stats or {}).items():
        for stat, value in stats.items():
            out[f"stats__{feature}__{stat}"] = np.asarray(value)
    np.savez(out_path, **out)
    print(f"loaded {len(ds)} frames of {ds.meta.total_episodes} episodes")


if __name__ == "__main__":
    main(*sys.argv[1:4])
