"""``rig episodes`` through the real ``rig`` dispatcher."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import zarr

from collection.episode_store import EpisodeStore
from robot.cli import main as rig

pytestmark = pytest.mark.timeout(60)


def _episode(i: int, t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "camera_0": rng.integers(0, 256, size=(t, 16, 20, 3), dtype=np.uint8),
        "action": np.full((t, 6), float(i)),
        "timestamp": 5.0 * i + 0.1 * np.arange(t),
    }


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "demo.zarr"
    with EpisodeStore.open(path, "w", image_codec="raw") as store:
        for i, t in enumerate([11, 21, 6]):
            store.add_episode(_episode(i, t))
    return path


def test_list_prints_index_length_and_duration(store_path: Path, capsys) -> None:
    assert rig(["episodes", "list", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "3 episodes, 38 steps" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [["0", "11", "1.00"], ["1", "21", "2.00"], ["2", "6", "0.50"]]


def test_list_mentions_crash_leftovers_without_touching_them(store_path: Path, capsys) -> None:
    arr = zarr.open_group(store_path, mode="r+")["data/action"]
    arr.resize((45, 6))
    assert rig(["episodes", "list", str(store_path)]) == 0
    assert "7 trailing steps of an unfinished episode" in capsys.readouterr().out
    assert zarr.open_group(store_path, mode="r")["data/action"].shape[0] == 45


def test_show_prints_keys_shapes_and_ranges(store_path: Path, capsys) -> None:
    assert rig(["episodes", "show", str(store_path), "-2"]) == 0
    out = capsys.readouterr().out
    assert "episode 1 (21 steps, 2.00 s): steps [11, 32)" in out
    action = next(line.split() for line in out.splitlines() if line.split()[:1] == ["action"])
    assert action[-2:] == ["1", "1"]  # min, max of episode 1's action
    assert "(21, 16, 20, 3)" in out
    assert rig(["episodes", "show", str(store_path), "3"]) == 1
    assert "no episode 3" in capsys.readouterr().err


def test_delete_last_asks_and_keeps_the_episode_on_no(store_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert rig(["episodes", "delete-last", str(store_path)]) == 1
    out = capsys.readouterr().out
    assert "Delete episode 2 (6 steps, 0.50 s)" in out and "not deleted" in out
    assert EpisodeStore.open(store_path, "r").n_episodes == 3


def test_delete_last_deletes_on_yes_and_with_flag(store_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert rig(["episodes", "delete-last", str(store_path)]) == 0
    assert "deleted episode 2" in capsys.readouterr().out
    assert rig(["episodes", "delete-last", "--yes", str(store_path)]) == 0
    store = EpisodeStore.open(store_path, "r")
    assert store.n_episodes == 1 and store.n_steps == 11
    np.testing.assert_array_equal(store.get_episode(0)["action"], _episode(0, 11)["action"])


def test_missing_store_is_reported(tmp_path: Path, capsys) -> None:
    assert rig(["episodes", "list", str(tmp_path / "nope.zarr")]) == 1
    assert "no episode store at" in capsys.readouterr().err
