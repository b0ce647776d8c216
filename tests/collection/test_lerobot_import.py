"""``rig episodes import --format lerobot``: atomic, says what it leaves out, keeps task strings, and
picks (or warns about) the image codec by the source. Datasets are this project's own exports, changed
on disk into what other LeRobot datasets hold (no LeRobot virtualenv needed; test_lerobot_dataset.py
checks the format against LeRobot itself).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collection.episode_store import EpisodeStore

pytestmark = pytest.mark.timeout(300)

RIG = [sys.executable, "-m", "robot.cli"]


def rig(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *map(str, args)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _frames(i: int, t: int) -> np.ndarray:
    yy, xx = np.mgrid[0:24, 0:32]
    base = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(i)
    return np.stack([(base + rng.integers(0, 40, size=base.shape)).astype(np.uint8) for _ in range(t)])


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A store of two episodes with task strings, exported as a LeRobot v3 dataset through the CLI."""
    store = tmp_path / "src.zarr"
    with EpisodeStore.open(store, "w", dt_s=0.1) as s:
        for i, (t, task) in enumerate([(6, "pick the red cube"), (8, "pick the blue cube")]):
            s.add_episode(
                {
                    "camera_0": _frames(i, t),
                    "robot_eef_pose": np.random.default_rng(i).normal(size=(t, 6)),
                    "action": np.random.default_rng(10 + i).normal(size=(t, 6)),
                    "timestamp": 10.0 * i + 0.1 * np.arange(t),
                },
                attrs={"task": task},
            )
    out_dir = tmp_path / "lerobot"
    out = rig("episodes", "export", store, "--format", "lerobot", out_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    return out_dir


def _edit_parquet(path: Path, edit) -> None:
    import pyarrow.parquet as pq

    pq.write_table(edit(pq.read_table(path)), path)


def _info(root: Path) -> dict:
    return json.loads((root / "meta" / "info.json").read_text())


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(name) or p.name.startswith(f".{name}")]


def test_task_strings_survive_import_and_export_again(exported: Path, tmp_path: Path) -> None:
    back = tmp_path / "back.zarr"
    out = rig("episodes", "import", exported, "--format", "lerobot", back)
    assert out.returncode == 0, out.stderr
    with EpisodeStore.open(back, "r") as s:
        assert [s.episode_attrs(i)["task"] for i in range(2)] == ["pick the red cube", "pick the blue cube"]
    again = tmp_path / "again"
    assert rig("episodes", "export", back, "--format", "lerobot", again).returncode == 0
    import pyarrow.parquet as pq

    episodes = pq.read_table(next((again / "meta" / "episodes").rglob("*.parquet"))).to_pylist()
    assert [e["tasks"] for e in episodes] == [["pick the red cube"], ["pick the blue cube"]]
    tasks = pq.read_table(again / "meta" / "tasks.parquet").to_pydict()
    assert tasks["__index_level_0__"] == ["pick the red cube", "pick the blue cube"]
    assert tasks["task_index"] == [0, 1]
    data = pq.read_table(next((again / "data").rglob("*.parquet"))).to_pydict()
    assert data["task_index"] == [0] * 6 + [1] * 8
    assert _info(again)["total_tasks"] == 2


def test_a_failed_import_leaves_nothing_and_a_retry_works(exported: Path, tmp_path: Path) -> None:
    episodes = next((exported / "meta" / "episodes").rglob("*.parquet"))
    good = episodes.read_bytes()

    def wrong_length(table):  # the second episode's metadata disagrees with its rows: fails mid-way
        import pyarrow as pa

        lengths = table.column("length").to_pylist()
        lengths[1] += 1
        return table.set_column(
            table.schema.get_field_index("length"), "length", pa.array(lengths, pa.int64())
        )

    _edit_parquet(episodes, wrong_length)
    store = tmp_path / "new" / "imported.zarr"
    out = rig("episodes", "import", exported, "--format", "lerobot", store)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "episode 1 has 8 data rows, its metadata says 9" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "episode 0: 6 steps" in out.stdout  # it failed after writing an episode ...
    assert not (tmp_path / "new").exists()  # ... and left nothing, not even the folder it made
    episodes.write_bytes(good)
    out = rig("episodes", "import", exported, "--format", "lerobot", store)
    assert out.returncode == 0, out.stderr
    assert _leftovers(tmp_path / "new", "imported.zarr") == ["imported.zarr"]
    assert rig("episodes", "check", store).returncode == 0


def test_a_feature_it_cannot_take_is_named_with_its_shape(exported: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    info = _info(exported)
    info["features"]["observation.state"]["shape"] = [2, 3]
    info["features"]["observation.state"]["names"] = None
    (exported / "meta" / "info.json").write_text(json.dumps(info))
    data = next((exported / "data").rglob("*.parquet"))

    def two_d(table):
        rows = [[v[:3], v[3:]] for v in table.column("observation.state").to_pylist()]
        col = pa.array(rows, pa.list_(pa.list_(pa.float64(), 3), 2))
        return table.set_column(table.schema.get_field_index("observation.state"), "observation.state", col)

    _edit_parquet(data, two_d)
    store = tmp_path / "two_d.zarr"
    out = rig("episodes", "import", exported, "--format", "lerobot", store)
    assert out.returncode == 0, out.stderr
    assert (
        "left out observation.state (float64, shape (2, 3)): only scalars and vectors per step" in out.stdout
    )
    with EpisodeStore.open(store, "r") as s:
        assert "robot_eef_pose" not in s.keys and "state" not in s.keys and "action" in s.keys


def _as_png_images(root: Path) -> np.ndarray:
    """Turn the dataset's video feature into a LeRobot ``image`` feature (PNG bytes in the parquet);
    returns the frames the PNGs hold."""
    import cv2
    import pyarrow as pa

    info = _info(root)
    feature = "observation.images.camera_0"
    info["features"][feature] = {
        "dtype": "image",
        "shape": [24, 32, 3],
        "names": ["height", "width", "channels"],
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    frames = np.concatenate([_frames(0, 6), _frames(1, 8)])
    cells = [{"bytes": cv2.imencode(".png", f[..., ::-1])[1].tobytes(), "path": None} for f in frames]
    data = next((root / "data").rglob("*.parquet"))
    _edit_parquet(data, lambda t: t.append_column(feature, pa.array(cells)))
    return frames


def test_lossless_png_images_import_exactly_by_default(exported: Path, tmp_path: Path) -> None:
    frames = _as_png_images(exported)
    store = tmp_path / "png.zarr"
    out = rig("episodes", "import", exported, "--format", "lerobot", store)
    assert out.returncode == 0, out.stderr
    assert "images: jpegxl_lossless" in out.stdout and "warning" not in out.stderr
    with EpisodeStore.open(store, "r") as s:
        got = np.concatenate([s.get_episode(i)["camera_0"] for i in range(2)])
    assert np.array_equal(got, frames)


def test_lossless_images_into_a_lossy_codec_warn_once_with_the_measured_psnr(
    exported: Path, tmp_path: Path
) -> None:
    frames = _as_png_images(exported)
    store = tmp_path / "lossy.zarr"
    out = rig("episodes", "import", exported, "--format", "lerobot", store, "--image-codec", "jpegxl")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, out.stderr
    with EpisodeStore.open(store, "r") as s:
        got = s.get_episode(0)["camera_0"]
    mse = float(np.mean((got.astype(float) - frames[:6].astype(float)) ** 2))
    psnr = 10 * np.log10(255.0**2 / mse)
    assert f"lossy codec jpegxl: PSNR {psnr:.1f} dB on episode 0" in warnings[0]
    assert "jpegxl_lossless keeps them exact" in warnings[0]


def test_train_on_episodes_all_shorter_than_the_horizon_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = tmp_path / "short.zarr"
    with EpisodeStore.open(store, "w", dt_s=0.1) as s:
        for i in range(3):
            s.add_episode(
                {
                    "camera_0": _frames(i, 4),
                    "robot_eef_pose": np.zeros((4, 6)),
                    "action": np.zeros((4, 6)),
                    "timestamp": 10.0 * i + 0.1 * np.arange(4),
                }
            )
    run = tmp_path / "run"
    out = rig("train", "--dataset", store, "--out", run, "policy.horizon=16", "policy.n_obs_steps=2",
              "policy.n_action_steps=8")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "every episode is shorter than a training window (longest 4 steps" in out.stderr
    assert "needs 8 steps" in out.stderr
    assert not run.exists()
