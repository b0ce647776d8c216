"""Runs in the LeRobot virtualenv: record a small dataset with LeRobot's own writer
(``LeRobotDataset.create`` / ``add_frame`` / ``save_episode``, its default AV1 video codec), the way a
LeRobot user's data arrives, and save what was recorded for the test to compare an import with.

    python create_dataset.py ROOT OUT.npz

Two episodes (5 and 7 frames at 10 fps) of a camera ``observation.images.top`` stored as video, a
camera ``observation.images.wrist`` stored as PNG images, a joint ``observation.state`` (float32,
6 named joints) and ``action``. OUT.npz: ``top``, ``wrist`` (N, H, W, 3) uint8, ``state``, ``action``
(N, 6) float32, ``episode_ends``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

# See load_dataset.py: torchvision's CUDA-only C ops.
for _op in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

H, W = 48, 64
JOINTS = [f"joint_{i}" for i in range(6)]


def frame_image(step: int, shade: int) -> np.ndarray:
    """A smooth picture with a square that moves: distinct per step, easy on a video codec."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 3 + shade, yy * 4, np.full((H, W), 90 + shade)], axis=-1).astype(np.uint8)
    x0 = 4 + 5 * step
    img[10:26, x0 : x0 + 12] = (250, 250, 30)
    return img


def main(root: str, out_path: str) -> None:
    features = {
        "observation.images.top": {
            "dtype": "video",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.images.wrist": {
            "dtype": "image",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
    }
    ds = LeRobotDataset.create("local/recorded", fps=10, features=features, root=root, robot_type="so100")
    rng = np.random.default_rng(7)
    rec: dict[str, list[np.ndarray]] = {"top": [], "wrist": [], "state": [], "action": []}
    ends = []
    for episode, length in enumerate((5, 7)):
        for step in range(length):
            frame = {
                "observation.images.top": frame_image(step, 20 * episode),
                "observation.images.wrist": frame_image(length - step, 40),
                "observation.state": rng.normal(size=6).astype(np.float32),
                "action": rng.normal(size=6).astype(np.float32),
                "task": "pick the cube",
            }
            ds.add_frame(frame)
            rec["top"].append(frame["observation.images.top"])
            rec["wrist"].append(frame["observation.images.wrist"])
            rec["state"].append(frame["observation.state"])
            rec["action"].append(frame["action"])
        ds.save_episode()
        ends.append(len(rec["top"]))
    ds.finalize()
    np.savez(out_path, **{k: np.stack(v) for k, v in rec.items()}, episode_ends=np.asarray(ends))
    print(f"recorded {ends[-1]} frames in {len(ends)} episodes with lerobot's writer")


if __name__ == "__main__":
    main(*sys.argv[1:3])
