"""Shared helpers of the camera tests (independent re-implementations of what the code under test
computes, so the tests check it rather than repeat it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from robot.shm.ring_buffer import RingBuffer
from robot.sim.world_state import MAX_OBJECTS, WORLD_STATE_LAYOUT

ROOT = Path(__file__).resolve().parents[3]
RIG = [sys.executable, "-m", "robot.cli"]


def preview_headless(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """``rig cameras preview ARGS`` from the repository root with no display (``DISPLAY``,
    ``WAYLAND_DISPLAY`` and ``QT_QPA_PLATFORM`` unset); its output captured as text."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return subprocess.run(
        [*RIG, "cameras", "preview", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


def T_from_pose(pose) -> np.ndarray:
    """4x4 transform of [x, y, z, rx, ry, rz] via scipy (not the renderer's own helper)."""
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(pose[3:6]).as_matrix()
    T[:3, 3] = pose[:3]
    return T


def project(K: np.ndarray, T_world_cam: np.ndarray, pts_world: np.ndarray) -> np.ndarray:
    T = np.linalg.inv(T_world_cam)
    p = pts_world @ T[:3, :3].T + T[:3, 3]
    return np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], axis=1)


def polygon_centroid(uv: np.ndarray) -> np.ndarray:
    x, y = uv[:, 0], uv[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    return np.array([((x + xn) * cross).sum() / (6 * a), ((y + yn) * cross).sum() / (6 * a)])


def mask_centroid(mask: np.ndarray) -> np.ndarray:
    m = cv2.moments(mask.astype(np.float32))
    return np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]])


def empty_world_record(t: float, tcp_pose) -> dict:
    """A world-state record (every field of the layout, zeros) at time ``t`` with the tool at ``tcp_pose``."""
    rec = {k: np.zeros(shape, dtype) for k, (shape, dtype) in WORLD_STATE_LAYOUT.items()}
    rec["time"] = t
    rec["tcp_pose"] = np.asarray(tcp_pose, float)
    assert rec["object_pose"].shape == (MAX_OBJECTS, 6)
    return rec


def make_world_ring(capacity: int = 256) -> RingBuffer:
    return RingBuffer.create(WORLD_STATE_LAYOUT, capacity, label="testworld")


def collect_frames(ring: RingBuffer, seconds: float, keys=("capture_time", "receive_time", "frame_index")):
    """Poll ``ring`` for ``seconds``; return every new record's ``keys`` plus ``seen_time`` (the host time
    the reader first saw it), concatenated."""
    out = {k: [] for k in keys}
    out["seen_time"] = []
    nxt = ring.count
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        recs = ring.get_since(nxt)
        seen = time.monotonic()
        n = len(recs["counter"])
        if n:
            for k in keys:
                out[k].append(recs[k])
            out["seen_time"].append(np.full(n, seen))
            nxt = int(recs["counter"][-1]) + 1
        time.sleep(0.004)
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
