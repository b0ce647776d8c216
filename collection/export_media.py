"""Episodes of a store as files people can open without the rig: mp4 per camera, PNG frames, PNG plots.

``rig episodes export STORE --video DIR / --frames DIR / --plots DIR`` (see
:mod:`collection.export_cli`) calls these per episode. Everything is read from the store: the
``camera_<i>`` arrays (one frame per recorded step, so at the store's step rate, not the cameras'
full rate: collection and deploy keep full-rate videos in ``<store>.videos/``), the low-dim arrays and
``timestamp`` (host monotonic s of each step; every time axis and every video presentation time
derives from it, so an irregular step shows as it happened).

Files (``<i>`` = the episode's index in the store, 6 digits):

- ``--video DIR``: ``DIR/episode_<i>/camera_<k>.mp4`` (H.264) + ``camera_<k>.timestamps.npz``, as
  :class:`robot.cameras.video_recorder.EpisodeMp4` writes them for live recording;
- ``--frames DIR``: ``DIR/episode_<i>/camera_<k>/<step>.png`` (lossless RGB);
- ``--plots DIR``: ``DIR/episode_<i>.png``: the end-effector pose (x, y, z, rx, ry, rz) against the
  action over time (s from the episode start), a dot at every recorded step, plus the gripper width
  when the store has one; for evaluation stores, chunk starts as ticks and takeover spans shaded;
  the steps :mod:`collection.demo_quality` flags in magenta (late steps: vertical lines; steps whose
  TCP was behind its action: crosses) and the flags in the title.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.config import VideoConfig

POSE_LABELS = ("x (m)", "y (m)", "z (m)", "rx (rad)", "ry (rad)", "rz (rad)")
POSE_KEY = "robot_eef_pose"
ACTION_KEY = "action"


def camera_keys(arrays: dict[str, np.ndarray]) -> list[str]:
    """The image keys of an episode (``camera_<i>`` uint8 (T, H, W, C)), in camera order."""
    keys = [k for k, v in arrays.items() if k.startswith("camera_") and v.dtype == np.uint8 and v.ndim == 4]
    return sorted(keys, key=lambda k: (len(k), k))


def gripper_key(arrays: dict[str, np.ndarray]) -> str | None:
    """The gripper-width key, if the store has one (any low-dim key with ``gripper`` in its name)."""
    return next((k for k in sorted(arrays) if "gripper" in k and arrays[k].dtype != np.uint8), None)


def step_times_s(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Host monotonic time of each step (``timestamp``); steps of 0.1 s from 0 when the store has none."""
    n = len(next(iter(arrays.values())))
    ts = arrays.get("timestamp")
    return np.asarray(ts, np.float64) if ts is not None else np.arange(n) * 0.1


def episode_name(index: int) -> str:
    return f"episode_{index:06d}"


def _never() -> bool:
    return False


def export_video(
    arrays: dict[str, np.ndarray],
    index: int,
    out_dir: Path,
    config: VideoConfig,
    stop: Callable[[], bool] = _never,
) -> list[Path]:
    """One mp4 per camera of an episode (presentation times = the steps' timestamps). ``stop()`` is
    asked before each frame: True ends the export with KeyboardInterrupt (the open mp4 is closed
    first; the caller removes what the episode left)."""
    from robot.cameras.video_recorder import EpisodeMp4

    times = step_times_s(arrays)
    dt = np.diff(times)
    fps = 1.0 / float(np.median(dt)) if len(dt) and np.median(dt) > 0 else 10.0
    paths = []
    for key in camera_keys(arrays):
        frames = arrays[key]
        if frames.shape[-1] != 3:
            frames = np.repeat(frames[..., :1], 3, axis=-1)
        h, w = frames.shape[1:3]
        path = out_dir / episode_name(index) / f"{key}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        # yuv420p needs even sizes: crop the last row/column of odd-sized frames.
        frames = frames[:, : h - h % 2, : w - w % 2]
        mp4 = EpisodeMp4(path, frames.shape[2], frames.shape[1], fps, config)
        try:
            for step, (img, t) in enumerate(zip(frames, times, strict=True)):
                if stop():
                    raise KeyboardInterrupt
                mp4.add(np.ascontiguousarray(img), float(t), float(t), step, step)
        finally:
            mp4.close()
        paths.append(path)
    return paths


def export_frames(
    arrays: dict[str, np.ndarray], index: int, out_dir: Path, stop: Callable[[], bool] = _never
) -> list[Path]:
    """Every step's image of every camera as a PNG; returns the per-camera folders. ``stop()``: as
    for :func:`export_video`."""
    import cv2

    folders = []
    for key in camera_keys(arrays):
        folder = out_dir / episode_name(index) / key
        folder.mkdir(parents=True, exist_ok=True)
        for step, img in enumerate(arrays[key]):
            if stop():
                raise KeyboardInterrupt
            bgr = img[..., ::-1] if img.shape[-1] == 3 else img
            if not cv2.imwrite(str(folder / f"{step:06d}.png"), bgr):
                raise OSError(f"cannot write {folder / f'{step:06d}.png'}")
        folders.append(folder)
    return folders


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` step ranges where ``mask`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


FLAG_COLOR = (1.0, 0.0, 1.0)  # magenta: the flagged steps (late, behind), used for nothing else


def export_plot(
    arrays: dict[str, np.ndarray], index: int, out_dir: Path, title: str = "", quality: Any = None
) -> Path:
    """One PNG of the pose vs action channels (and gripper width) of an episode over time, a marker
    at every recorded step. ``quality`` (:class:`collection.demo_quality.EpisodeQuality`) marks its
    flagged steps in magenta: a vertical line at each late step, a cross on every pose channel at each
    step whose TCP was behind its action, and the title says what was flagged."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    times = step_times_s(arrays)
    t = times - times[0]
    pose, action = arrays.get(POSE_KEY), arrays.get(ACTION_KEY)
    gripper = gripper_key(arrays)
    n_pose = max((a.shape[1] for a in (pose, action) if a is not None and a.ndim == 2), default=0)
    rows = n_pose + (1 if gripper else 0)
    if rows == 0:
        raise ValueError(f"episode {index} has neither {POSE_KEY!r} nor {ACTION_KEY!r} to plot")
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.5 * rows + 0.8), sharex=True, squeeze=False)
    axes = axes[:, 0]
    takeover = _spans(np.asarray(arrays["takeover"], bool)) if "takeover" in arrays else []
    chunk_starts = t[np.asarray(arrays["chunk_start"], bool)] if "chunk_start" in arrays else []
    late = quality.late_at if quality is not None else np.zeros(0, np.int64)
    behind = quality.behind_at if quality is not None else np.zeros(0, np.int64)
    behind_label = (
        "TCP behind its action" if quality is None else f"> {quality.stall_distance_mm:.0f} mm behind"
    )
    for i in range(n_pose):
        ax = axes[i]
        if pose is not None and i < pose.shape[1]:
            ax.plot(t, pose[:, i], color="tab:blue", lw=1.2, marker=".", ms=3, label="pose (robot_eef_pose)")
            if len(behind):
                ax.plot(
                    t[behind],
                    pose[behind, i],
                    ls="none",
                    marker="x",
                    ms=5,
                    color=FLAG_COLOR,
                    label=behind_label,
                )
        if action is not None and action.ndim == 2 and i < action.shape[1]:
            ax.plot(t, action[:, i], color="tab:orange", lw=1.0, ls="--", label="action")
        ax.set_ylabel(POSE_LABELS[i] if i < len(POSE_LABELS) else f"[{i}]")
    if gripper:
        ax = axes[-1]
        g = np.asarray(arrays[gripper], np.float64).reshape(len(t), -1)
        ax.plot(t, g, color="tab:green", lw=1.2)
        ax.set_ylabel(f"{gripper}")
    for ax in axes:
        for a, b in takeover:
            ax.axvspan(t[a], t[min(b, len(t) - 1)], color="tab:red", alpha=0.12, lw=0)
        for ts in chunk_starts:
            ax.axvline(ts, color="grey", lw=0.5, alpha=0.5)
        for k in late:
            ax.axvline(t[k], color=FLAG_COLOR, lw=1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time since the episode start (s, from the store's timestamps)")
    notes = []
    if len(chunk_starts):
        notes.append("grey lines: chunk starts")
    if takeover:
        notes.append("red: takeover")
    if len(late):
        notes.append("magenta lines: late steps")
    if len(behind):
        notes.append("magenta crosses: TCP behind its action")
    heading = f"{title}episode {index}: pose vs action, a dot per step" + (
        f" ({', '.join(notes)})" if notes else ""
    )
    if quality is not None and quality.flags:
        heading += f"\nFLAGGED {','.join(quality.flags)}: {quality.describe()}"
    fig.suptitle(heading, fontsize=9 if quality is not None and quality.flags else None)
    fig.tight_layout()
    path = out_dir / f"{episode_name(index)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
