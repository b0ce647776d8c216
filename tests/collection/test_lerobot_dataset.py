"""``rig episodes export --format lerobot`` / ``import --format lerobot``, checked with LeRobot itself.

LeRobot's own ``LeRobotDataset`` (lerobot 0.4.4) loads our export, and LeRobot's own writer records the
dataset we import, in a separate virtualenv built once into ``.cache/lerobot-compat/venv``
(tests/collection/lerobot_compat/venv.py). A failed build fails these tests; they never skip.
The store is a real one: ``rig collect`` on the simulated rig.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collection.episode_store import EpisodeStore
from tests.collection.lerobot_compat.venv import HERE as COMPAT
from tests.collection.lerobot_compat.venv import lerobot_python

RIG = [sys.executable, "-m", "robot.cli"]


def rig(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *map(str, args)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def in_lerobot_venv(script: str, *args: object, timeout: float = 300) -> None:
    out = subprocess.run(
        [str(lerobot_python()), "-W", "ignore", str(COMPAT / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Two episodes recorded by `rig collect` on the simulated rig (scripted SpaceMouse)."""
    store = tmp_path_factory.mktemp("collect") / "demos.zarr"
    out = rig(
        "collect", "--config", "collect/sim_reach.yaml", f"store={store}", "auto.episodes=2",
        "record_video=false", "auto.episode_timeout_s=10", timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return store


def _all_steps(store_path: Path) -> dict[str, np.ndarray]:
    with EpisodeStore.open(store_path, "r") as store:
        return {k: np.concatenate([ep[k] for ep in store.iter_episodes()]) for k in store.keys}


def _psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.mark.timeout(1800)  # the first run builds the LeRobot virtualenv (~3 min, more on a busy machine)
def test_lerobot_loads_the_export_with_the_same_frames_and_values(demos: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "lerobot"
    out = rig("episodes", "export", demos, "--format", "lerobot", out_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "exported 2 episodes" in out.stdout
    in_lerobot_venv("load_dataset.py", "local/demos", out_dir, tmp_path / "items.npz")
    got = np.load(tmp_path / "items.npz")
    want = _all_steps(demos)
    with EpisodeStore.open(demos, "r") as store:
        ends = store.episode_ends
    n = int(ends[-1])

    assert int(got["meta_fps"]) == 10  # 1 / rig.obs.dt_s of the rig the store was recorded on
    assert int(got["meta_total_episodes"]) == 2 and int(got["meta_total_frames"]) == n
    assert sorted(got["meta_camera_keys"]) == ["observation.images.camera_0", "observation.images.camera_1"]
    episode = np.repeat([0, 1], np.diff(np.concatenate([[0], ends])))
    frame = np.concatenate(
        [np.arange(e - s) for s, e in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
    )
    assert np.array_equal(got["episode_index"], episode) and np.array_equal(got["frame_index"], frame)
    assert np.array_equal(got["index"], np.arange(n))
    assert np.array_equal(got["timestamp"], (frame / 10).astype(np.float32))
    assert set(got["task"]) == {"demos"}
    # Values, in LeRobot's names: the parquet holds the stored float64 (the import test gets them back
    # bit-exact); LeRobotDataset hands out float32 tensors (torch.tensor of Python floats), so those.
    for feature, key in [
        ("observation.state", "robot_eef_pose"),
        ("observation.robot_joint", "robot_joint"),
        ("action", "action"),
        ("host_timestamp", "timestamp"),
    ]:
        assert np.array_equal(got[feature], want[key].astype(np.float32)), feature
    # Frames: LeRobot decodes (N, 3, H, W) in [0, 1]; each is the stored frame of that step up to the codec.
    for cam in ("camera_0", "camera_1"):
        frames = np.round(got[f"observation.images.{cam}"].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        assert frames.shape == want[cam].shape
        psnr = [_psnr_db(frames[i], want[cam][i]) for i in range(n)]
        assert min(psnr) > 35, (cam, min(psnr))
        # No frame shifted: a frame is nearer its own step's frame than any nearby step's that differs.
        for i in range(n):
            own = np.abs(frames[i].astype(int) - want[cam][i]).mean()
            for j in range(max(0, i - 2), min(n, i + 3)):
                if np.abs(want[cam][j].astype(int) - want[cam][i]).mean() > 3:
                    assert own < np.abs(frames[i].astype(int) - want[cam][j]).mean(), (cam, i, j)
    # Stats as LeRobot reads them from meta/stats.json.
    pose = want["robot_eef_pose"]
    assert np.array_equal(got["stats__observation.state__min"], pose.min(axis=0))
    assert np.array_equal(got["stats__observation.state__max"], pose.max(axis=0))
    assert np.allclose(got["stats__observation.state__mean"], pose.mean(axis=0), atol=1e-12)
    assert np.allclose(got["stats__observation.state__std"], pose.std(axis=0), atol=1e-9)
    assert int(got["stats__observation.state__count"][0]) == n
    for q in ("q01", "q10", "q50", "q90", "q99"):
        assert got[f"stats__action__{q}"].shape == (6,)
    img_mean = got["stats__observation.images.camera_0__mean"]
    assert img_mean.shape == (3, 1, 1)
    assert np.allclose(img_mean.ravel(), (want["camera_0"] / 255.0).mean(axis=(0, 1, 2)), atol=0.02)


@pytest.mark.timeout(1800)
def test_a_dataset_recorded_by_lerobot_imports_with_its_values_and_frames(tmp_path: Path) -> None:
    root = tmp_path / "recorded"
    in_lerobot_venv("create_dataset.py", root, tmp_path / "recorded.npz")
    recorded = np.load(tmp_path / "recorded.npz")
    store = tmp_path / "imported.zarr"
    out = rig("episodes", "import", root, "--format", "lerobot", store, "--image-codec", "jpegxl_lossless")
    assert out.returncode == 0, out.stderr[-3000:]
    with EpisodeStore.open(store, "r") as s:
        assert np.array_equal(s.episode_ends, recorded["episode_ends"])
    got = _all_steps(store)
    assert sorted(got) == ["action", "camera_0", "camera_1", "state", "timestamp"]
    assert np.array_equal(got["state"], recorded["state"]) and got["state"].dtype == np.float32
    assert np.array_equal(got["action"], recorded["action"])
    assert np.array_equal(got["camera_1"], recorded["wrist"])  # PNG images: exact
    assert np.allclose(got["timestamp"], [0, 0.1, 0.2, 0.3, 0.4, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # The AV1 video decodes to what LeRobot itself decodes from it (another FFmpeg: within 2 levels).
    in_lerobot_venv("load_dataset.py", "local/recorded", root, tmp_path / "items.npz")
    theirs = np.load(tmp_path / "items.npz")["observation.images.top"].transpose(0, 2, 3, 1) * 255
    assert np.abs(got["camera_0"] - np.round(theirs)).max() <= 2
    assert min(_psnr_db(a, b) for a, b in zip(got["camera_0"], recorded["top"], strict=True)) > 25


@pytest.mark.timeout(600)
def test_export_then_import_gives_the_store_back_and_rig_train_runs_on_it(
    demos: Path, tmp_path: Path
) -> None:
    out_dir, back = tmp_path / "lerobot", tmp_path / "back.zarr"
    assert rig("episodes", "export", demos, "--format", "lerobot", out_dir).returncode == 0
    out = rig("episodes", "import", out_dir, "--format", "lerobot", back)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported 2 episodes" in out.stdout
    again = rig("episodes", "import", out_dir, "--format", "lerobot", back)  # never into an existing store
    assert again.returncode == 2 and "exists; import into a new store" in again.stderr
    want, got = _all_steps(demos), _all_steps(back)
    assert sorted(got) == sorted(want)
    with EpisodeStore.open(demos, "r") as a, EpisodeStore.open(back, "r") as b:
        assert np.array_equal(a.episode_ends, b.episode_ends)
        # The action-time rule travels: LeRobot's info.json states it, the import records it.
        assert a.action_time == b.action_time == "commanded_at_timestamp"
    info = json.loads((out_dir / "meta/info.json").read_text())
    assert info["action_time"]["convention"] == "commanded_at_timestamp"
    assert "action at frame t" in info["action_time"]["meaning"]
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        if key.startswith("camera_"):  # through H.264 and the store's JPEG-XL
            assert min(_psnr_db(x, y) for x, y in zip(got[key], want[key], strict=True)) > 33, key
        else:
            assert np.array_equal(got[key], want[key]), key
    # --episodes: one episode of the store becomes LeRobot's episode 0.
    assert (
        rig(
            "episodes", "export", demos, "--episodes", -1, "--format", "lerobot", tmp_path / "last"
        ).returncode
        == 0
    )
    assert (
        rig("episodes", "import", tmp_path / "last", "--format", "lerobot", tmp_path / "last.zarr").returncode
        == 0
    )
    with EpisodeStore.open(demos, "r") as a, EpisodeStore.open(tmp_path / "last.zarr", "r") as b:
        assert b.n_episodes == 1 and b.dt_s == a.dt_s
        assert np.array_equal(b.get_episode(0)["action"], a.get_episode(-1)["action"])
    out = rig(
        "train", "--config", "policy/tiny_reach.yaml", "--dataset", back, "--out", tmp_path / "run",
        "--max-steps", 3, "training.torch_threads=1", "training.batch_size=4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert Path(summary["checkpoint"]).is_file()


def test_an_evaluation_store_s_keys_survive_export_and_import(tmp_path: Path) -> None:
    from collection.export_lerobot import export_lerobot
    from collection.import_lerobot import import_lerobot

    rng = np.random.default_rng(3)
    store = tmp_path / "eval.zarr"
    with EpisodeStore.open(store, "w", image_codec="jpegxl_lossless", dt_s=0.1) as s:
        for length in (6, 9):
            s.add_episode(
                {
                    "camera_0": rng.integers(0, 255, (length, 16, 24, 3), dtype=np.uint8),
                    "robot_eef_pose": rng.normal(size=(length, 6)),
                    "action": rng.normal(size=(length, 6)),
                    "timestamp": 50.0 + 0.1 * np.arange(length),
                    "chunk_index": np.arange(length, dtype=np.int64) // 3 - 1,
                    "chunk_start": np.arange(length) % 3 == 0,
                    "inference_latency_s": np.r_[np.nan, rng.uniform(0.1, 0.2, length - 1)],
                    "takeover": np.zeros(length, bool),
                }
            )
    with EpisodeStore.open(store, "r") as s:
        summary = export_lerobot(s, tmp_path / "lerobot", 10)
    assert summary.episodes == 2 and summary.frames == 15
    import_lerobot(tmp_path / "lerobot", tmp_path / "back.zarr")
    want, got = _all_steps(store), _all_steps(tmp_path / "back.zarr")
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        if key != "camera_0":
            assert np.array_equal(got[key], want[key], equal_nan=key == "inference_latency_s"), key


@pytest.mark.timeout(120)
def test_a_failed_build_of_the_lerobot_virtualenv_raises_and_leaves_no_venv(tmp_path: Path) -> None:
    bad = tmp_path / "requirements.txt"
    bad.write_text(f"{tmp_path / 'no-such-package-0.0.0-py3-none-any.whl'}\n")
    with pytest.raises(RuntimeError, match="building the LeRobot virtualenv failed"):
        lerobot_python(tmp_path / "cache", bad, bad)
    assert not (tmp_path / "cache" / "venv").exists()


def test_export_and_import_errors_are_one_line_and_exit_2(demos: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "v2" / "meta").mkdir(parents=True)
    (tmp_path / "v2" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    cases = [
        (("export", demos, "--format", "lerobot", tmp_path / "full"), "is not an empty folder"),
        (("export", tmp_path / "nothing.zarr", "--format", "lerobot", tmp_path / "x"), "no episode store at"),
        (("import", tmp_path / "full", "--format", "lerobot", tmp_path / "a.zarr"), "no meta/info.json"),
        (("import", tmp_path / "v2", "--format", "lerobot", tmp_path / "b.zarr"), "only v3 is read"),
        (("import", tmp_path / "v2", "--format", "lerobot", demos), "only v3 is read"),
    ]
    nodt = tmp_path / "nodt.zarr"  # a store written without its step period
    with EpisodeStore.open(nodt, "w") as s:
        s.add_episode({"action": np.zeros((3, 6)), "timestamp": np.arange(3.0)})
    cases.append(
        (("export", nodt, "--format", "lerobot", tmp_path / "y"), "records no step period (dt_s): pass --fps")
    )
    for args, words in cases:
        out = rig("episodes", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "y").exists()
    out = rig("episodes", "export", nodt, "--format", "lerobot", tmp_path / "y", "--fps", 10)
    assert out.returncode == 0 and json.loads((tmp_path / "y/meta/info.json").read_text())["fps"] == 10
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()
