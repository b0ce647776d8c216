"""``rig episodes export`` (mp4, PNG frames, PNG plots) and ``rig episodes view --save`` (rerun) on an
evaluation store written by ``rig deploy`` on the simulated rig, and on a store with a gripper,
takeover spans and safety events; the saved .rrd is read back with rerun's own reader."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from collection.episode_store import EpisodeStore

pytestmark = pytest.mark.timeout(180)
RIG = [sys.executable, "-m", "robot.cli"]
START = [0.45, 0.0, 0.2, math.pi, 0.0, 0.0]


def rig(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
    )


@pytest.fixture(scope="module")
def eval_store(tmp_path_factory) -> Path:
    """Two evaluation episodes of `rig deploy` (stand-in policy with a known latency) on the sim rig."""
    store = tmp_path_factory.mktemp("deploy") / "eval.zarr"
    r = rig(
        "deploy",
        "--checkpoint",
        "py:deploy.standin:ReferencePolicy",
        "--episodes",
        "2",
        f"store={store}",
        "max_episode_s=2.0",
        "spacemouse=false",
        f"policy_kwargs={{latency_s: 0.12, start_pose: {START}}}",
        "rig.calibration_file=/nonexistent/cal.yaml",
        f"rig.arm.start_pose={START}",
        "teleop.lock_z_m=null",
        "rig.cameras.cameras.scene.width=64",
        "rig.cameras.cameras.scene.height=48",
        "rig.cameras.cameras.scene.sim.intrinsics={fx: 56.0, fy: 56.0, cx: 31.5, cy: 23.5}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return store


def _episode(store: Path, index: int) -> dict[str, np.ndarray]:
    with EpisodeStore.open(store, "r") as s:
        return s.get_episode(index)


def test_export_writes_each_cameras_video_frames_and_a_pose_vs_action_plot(eval_store, tmp_path):
    r = rig(
        "episodes",
        "export",
        str(eval_store),
        "--episodes",
        "-1",
        "--video",
        str(tmp_path / "video"),
        "--frames",
        str(tmp_path / "frames"),
        "--plots",
        str(tmp_path / "plots"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("episode 1: 2 videos in ")
    ep = _episode(eval_store, 1)
    n = len(ep["timestamp"])
    for cam in ("camera_0", "camera_1"):
        # mp4: one frame per step, presented at the step's timestamp (relative to the first step).
        with av.open(str(tmp_path / "video" / "episode_000001" / f"{cam}.mp4")) as f:
            frames = [(fr.time, fr.to_ndarray(format="rgb24")) for fr in f.decode(video=0)]
        assert len(frames) == n
        assert np.allclose([t for t, _ in frames], ep["timestamp"] - ep["timestamp"][0], atol=0.001)
        assert np.abs(frames[-1][1].astype(int) - ep[cam][-1]).mean() < 12  # H.264: close, not exact
        # PNG: lossless, every step.
        pngs = sorted((tmp_path / "frames" / "episode_000001" / cam).glob("*.png"))
        assert len(pngs) == n
        for k in (0, n - 1):
            assert np.array_equal(cv2.imread(str(pngs[k]))[..., ::-1], ep[cam][k])
    plot = cv2.imread(str(tmp_path / "plots" / "episode_000001.png"))[..., ::-1].astype(int)
    assert plot.shape[0] > 600 and plot.shape[1] > 600

    def pixels_near(rgb) -> int:
        return int((np.abs(plot - np.array(rgb)).sum(axis=-1) < 40).sum())

    assert pixels_near((31, 119, 180)) > 500 and pixels_near((255, 127, 14)) > 200  # pose and action lines


def test_export_says_what_is_wrong_in_one_line(eval_store, tmp_path):
    cases = [
        ([str(tmp_path / "none.zarr"), "--plots", str(tmp_path)], "no episode store at"),
        ([str(eval_store), "--episodes", "5", "--plots", str(tmp_path)], "no episode 5; "),
        ([str(eval_store)], "say what to write"),
        ([str(eval_store), "--format", "nosuch", str(tmp_path)], "unknown format 'nosuch'"),
    ]
    for args, message in cases:
        r = rig("episodes", "export", *args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _read_rrd(path: Path) -> dict[str, list]:
    """Entity path -> record batches of its chunks, read with rerun's own reader."""
    from rerun.chunk import RrdReader

    out: dict[str, list] = defaultdict(list)
    for chunk in RrdReader(path).stream().collect().stream():
        out[chunk.entity_path].append(chunk.to_record_batch())
    return out


def _times_s(batches: list) -> np.ndarray:
    """The ``time`` values (s) of an entity's rows (static rows have none)."""
    times = [b.column("time").to_numpy().astype(np.int64) for b in batches if "time" in b.schema.names]
    return np.sort(np.concatenate(times)) / 1e9


def test_view_saves_every_stream_of_an_evaluation_store_at_its_recorded_times(eval_store, tmp_path):
    rrd = tmp_path / "eval.rrd"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = rig("episodes", "view", str(eval_store), "--save", str(rrd), env=env)
    assert r.returncode == 0, r.stderr
    entities = _read_rrd(rrd)
    assert {"/world", "/world/table"} <= set(entities)
    from rerun.chunk import RrdReader

    assert len(RrdReader(rrd).blueprints()) == 1  # the layout: one tab per episode
    for i in (0, 1):
        ep = _episode(eval_store, i)
        name = f"episode_{i:06d}"
        sidecar = json.loads((Path(str(eval_store) + ".deploy") / f"{name}.json").read_text())
        for cam in ("camera_0", "camera_1"):
            assert np.allclose(_times_s(entities[f"/{name}/{cam}"]), ep["timestamp"], atol=1e-6)
        assert np.allclose(_times_s(entities[f"/world/{name}/ee"]), ep["timestamp"], atol=1e-6)
        for path in (f"/world/{name}/ee_path", f"/world/{name}/action_path"):
            assert path in entities
        for axis in ("x", "y", "z", "rx", "ry", "rz"):
            for what in ("ee", "action"):
                assert np.allclose(_times_s(entities[f"/{name}/pose/{axis}/{what}"]), ep["timestamp"])
        # Inference latency at each chunk's arrival, as it happened.
        lat = entities[f"/{name}/eval/inference_latency_ms"]
        assert np.allclose(_times_s(lat), sorted(c["t_done"] for c in sidecar["chunks"]), atol=1e-6)
        assert f"/{name}/eval/dropped_actions" in entities and f"/{name}/eval/takeover" in entities
        # The full-rate episode videos `rig deploy` wrote, every frame at its capture time.
        for cam in ("scene", "wrist"):
            stamps = np.load(Path(f"{eval_store}.videos") / name / f"{cam}.timestamps.npz")["capture_time"]
            assert len(stamps) > 0
            assert np.allclose(_times_s(entities[f"/{name}/video/{cam}"]), stamps, atol=1e-6)
        texts = [t.as_py()[0] for b in entities[f"/{name}/eval/events"] for t in b.column("TextLog:text")]
        assert sum(t.startswith("chunk ") for t in texts) == len(sidecar["chunks"]) > 0
        assert any(t == f"episode ends: {sidecar['end_reason']}" for t in texts)
    # Without a display and without --save: says what to do.
    r = rig("episodes", "view", str(eval_store), env=env)
    assert r.returncode == 1 and "--save FILE.rrd" in r.stderr


def test_view_shows_gripper_width_takeover_spans_and_safety_events(tmp_path):
    store = tmp_path / "eval.zarr"
    t = 100.0 + 0.1 * np.arange(30)
    takeover = np.zeros(30, bool)
    takeover[10:15] = True
    pose = np.tile(START, (30, 1))
    pose[:, 0] += 0.01 * np.arange(30)
    with EpisodeStore.open(store, "w", image_codec="raw") as s:
        s.add_episode(
            {
                "camera_0": np.zeros((30, 24, 32, 3), np.uint8),
                "robot_eef_pose": pose,
                "action": pose,
                "gripper_width_m": np.linspace(0.08, 0.02, 30)[:, None],
                "timestamp": t,
                "chunk_index": np.repeat(np.arange(3), 10),
                "chunk_start": np.arange(30) % 10 == 0,
                "inference_latency_s": np.full(30, 0.1),
                "dropped_actions": np.zeros(30, np.int64),
                "takeover": takeover,
            }
        )
    sidecar = Path(str(store) + ".deploy")
    sidecar.mkdir()
    chunk = {"chunk": 0, "t_obs": 100.0, "t_request": 100.01, "t_done": 100.2, "latency_s": 0.19}
    doc = {
        "end_reason": "safety_stop",
        "chunks": [{**chunk, "safety_events": ["chunk 0: NaN in the actions"]}],
    }
    (sidecar / "episode_000000.json").write_text(json.dumps(doc))
    rrd = tmp_path / "v.rrd"
    r = rig("episodes", "view", str(store), "0", "--save", str(rrd))
    assert r.returncode == 0, r.stderr
    entities = _read_rrd(rrd)
    width = np.concatenate(
        [b.column("Scalars:scalars").to_pylist() for b in entities["/episode_000000/gripper/gripper_width_m"]]
    )
    assert np.allclose(np.ravel(width), np.linspace(0.08, 0.02, 30))
    events = {
        (round(float(tm) / 1e9, 3), lvl.as_py()[0], txt.as_py()[0])
        for b in entities["/episode_000000/eval/events"]
        for tm, lvl, txt in zip(
            b.column("time").to_numpy().astype(np.int64),
            b.column("TextLog:level"),
            b.column("TextLog:text"),
            strict=True,
        )
    }
    assert (101.0, "WARN", "takeover starts") in events and (101.5, "WARN", "takeover ends") in events
    assert (100.2, "WARN", "safety: chunk 0: NaN in the actions") in events
    assert (102.9, "ERROR", "episode ends: safety_stop") in events
