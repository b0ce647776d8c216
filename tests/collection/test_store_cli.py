"""``rig episodes`` through the real ``rig`` dispatcher."""

from __future__ import annotations

import io
import re
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
    # No recorded step period (a store written without dt_s): late steps are unknown, "-".
    # No robot_eef_pose: no lag; no flags.
    assert rows == [
        ["0", "11", "1.00", "-", "-", "-"],
        ["1", "21", "2.00", "-", "-", "-"],
        ["2", "6", "0.50", "-", "-", "-"],
    ]


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
    keys = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "(" in line]
    assert keys == sorted(keys)  # stable order
    ts = next(line for line in out.splitlines() if line.split()[:1] == ["timestamp"])
    assert ts.split()[-4:] == ["0.000", "s", "2.000", "s"] and "e+" not in out  # readable span
    assert rig(["episodes", "show", str(store_path), "3"]) == 2  # a user error
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
    for command in ("list", "show", "delete-last", "check", "repair"):  # one rule: a user error is 2
        extra = ["0"] if command == "show" else []
        assert rig(["episodes", command, str(tmp_path / "nope.zarr"), *extra]) == 2
    assert "no episode store at" in capsys.readouterr().err


def _set_ends(path: Path, ends: list[int]) -> None:
    ee = zarr.open_group(str(path), mode="r+")["meta/episode_ends"]
    ee.resize((len(ends),))
    ee[:] = np.asarray(ends, dtype=np.int64)


@pytest.mark.parametrize(
    ("ends", "words"),
    [
        ([21, 11, 38], "not increasing at entry 1 (21 then 11)"),
        ([11, 38, 32], "not increasing at entry 2 (38 then 32)"),
        ([11, 32, 80], "episodes end at step 80"),
    ],
)
def test_inconsistent_episode_ends_are_an_error_everywhere_and_nothing_changes(
    store_path: Path, ends: list[int], words: str, capsys, monkeypatch
) -> None:
    from collection.episode_store import EpisodeStoreError
    from policy.dataset import open_store

    _set_ends(store_path, ends)
    lengths = {k: a.shape[0] for k, a in zarr.open_group(str(store_path), mode="r")["data"].arrays()}
    with pytest.raises(EpisodeStoreError, match=re.escape(words)) as err:
        EpisodeStore.open(store_path, "r")
    assert "meta/episode_ends" in str(err.value) or "data/" in str(err.value)
    assert "rig episodes check" in str(err.value)
    with pytest.raises(ValueError, match=re.escape(words)):  # the dataset reads it the same way
        open_store(store_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert rig(["episodes", "delete-last", str(store_path)]) != 0
    assert rig(["episodes", "list", str(store_path)]) != 0
    # Nothing was changed by any of them: no "repair" of a store that is not a crash's leftovers.
    after = zarr.open_group(str(store_path), mode="r")
    assert [int(e) for e in after["meta/episode_ends"][:]] == ends
    assert {k: a.shape[0] for k, a in after["data"].arrays()} == lengths


def test_crash_leftovers_are_ignored_read_only_and_repaired_only_for_append(store_path: Path) -> None:
    _set_ends(store_path, [11, 32, 38, 0])  # a crash between resizing the ends and writing the entry
    with EpisodeStore.open(store_path, "r") as store:
        assert store.n_episodes == 3
    assert zarr.open_group(str(store_path), mode="r")["meta/episode_ends"].shape == (4,)  # untouched
    with EpisodeStore.open(store_path, "a") as store:
        assert store.n_episodes == 3
    assert zarr.open_group(str(store_path), mode="r")["meta/episode_ends"].shape == (3,)


def test_check_reports_each_problem_by_array_episode_and_step(store_path: Path, capsys) -> None:
    assert rig(["episodes", "check", str(store_path)]) == 0
    assert "no problem(s)" in capsys.readouterr().out
    root = zarr.open_group(str(store_path), mode="r+")
    act = root["data/action"]
    act[13] = np.nan  # episode 1, step 2
    ts = root["data/timestamp"]
    ts[14] = ts[13]  # episode 1, step 3 not after step 2
    assert rig(["episodes", "check", str(store_path)]) == 1
    out = capsys.readouterr().out
    assert "data/action: episode 1 step 2: not finite" in out
    assert "data/timestamp: episode 1 step 3: not after step 2" in out
    # A damaged chunk of an image array is named, not a raw codec error mid-training.
    chunk = next(
        p
        for p in sorted((store_path / "data" / "camera_0").rglob("*"))
        if p.is_file() and p.name != "zarr.json" and not p.name.startswith(".")
    )
    chunk.write_bytes(chunk.read_bytes()[:7])
    assert rig(["episodes", "check", str(store_path)]) == 1
    assert "data/camera_0: episode 0 step 0" in capsys.readouterr().out


def test_repair_drops_only_a_crash_s_leftovers(store_path: Path, capsys) -> None:
    root = zarr.open_group(str(store_path), mode="r+")
    for arr in root["data"].arrays():
        arr[1].resize((arr[1].shape[0] + 4, *arr[1].shape[1:]))  # an episode that was being recorded
    assert rig(["episodes", "repair", "--dry-run", str(store_path)]) == 0
    assert "would drop 4 rows" in capsys.readouterr().out
    assert zarr.open_group(str(store_path), mode="r")["data/action"].shape[0] == 42
    assert rig(["episodes", "repair", str(store_path)]) == 0
    assert zarr.open_group(str(store_path), mode="r")["data/action"].shape[0] == 38
    _set_ends(store_path, [21, 11, 38])  # not a crash: refused, unchanged
    assert rig(["episodes", "repair", str(store_path)]) == 1
    assert "not repaired" in capsys.readouterr().out


def test_delete_last_also_deletes_that_episode_s_videos(store_path: Path) -> None:
    videos = Path(str(store_path) + ".videos")
    for i in (1, 2):
        (videos / f"episode_{i:06d}").mkdir(parents=True)
        (videos / f"episode_{i:06d}" / "camera_0.mp4").write_bytes(b"x")
    assert rig(["episodes", "delete-last", "--yes", str(store_path)]) == 0
    assert not (videos / "episode_000002").exists()
    assert (videos / "episode_000001" / "camera_0.mp4").exists()


def test_a_zipped_store_opens_for_the_cli_and_for_training_alike(store_path: Path, capsys) -> None:
    import shutil

    from policy.dataset import open_store

    zipped = Path(shutil.make_archive(str(store_path), "zip", store_path))  # demo.zarr.zip
    assert rig(["episodes", "list", str(zipped)]) == 0
    assert "3 episodes, 38 steps" in capsys.readouterr().out
    assert rig(["episodes", "check", str(zipped)]) == 0  # every chunk found and verified inside the zip
    assert "3 episodes, 38 steps, 3 arrays: no problem(s)" in capsys.readouterr().out
    root = open_store(zipped)
    assert [int(e) for e in root["meta/episode_ends"][:]] == [11, 32, 38]


def test_delete_last_answered_no_leaves_a_crash_s_leftovers_untouched(store_path: Path, monkeypatch) -> None:
    # A crash mid-episode: 19 rows past the last end. Nothing may change before the prompt's answer.
    with EpisodeStore.open(store_path, "a") as store:
        writer = store.begin_episode()
        for step in range(19):
            writer.append({k: v[step] for k, v in _episode(3, 19).items()})
        writer.flush()
        store._thread = None  # drop the writer as a SIGKILL would: no discard, no truncation
        store._closed = True
        store._release_writer_lock()
    before = {k: a.shape[0] for k, a in zarr.open_group(str(store_path), mode="r")["data"].arrays()}
    assert set(before.values()) == {38 + 19}
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert rig(["episodes", "delete-last", str(store_path)]) == 1
    after = {k: a.shape[0] for k, a in zarr.open_group(str(store_path), mode="r")["data"].arrays()}
    assert after == before
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert rig(["episodes", "delete-last", str(store_path)]) == 0
    after = {k: a.shape[0] for k, a in zarr.open_group(str(store_path), mode="r")["data"].arrays()}
    assert set(after.values()) == {32}


def test_list_shows_late_steps_against_the_recorded_step_period(tmp_path: Path, capsys) -> None:
    from collection.episode_store import EpisodeStoreError

    path = tmp_path / "late.zarr"
    ts = 0.1 * np.arange(10.0)
    ts[4:] += 0.3  # step 4 came 0.4 s after step 3: late; the others on time
    with EpisodeStore.open(path, "w", image_codec="raw", dt_s=0.1) as store:
        store.add_episode({"action": np.zeros((10, 2)), "timestamp": ts})
        store.add_episode({"action": np.zeros((5, 2)), "timestamp": 0.1 * np.arange(5.0)})
    with pytest.raises(EpisodeStoreError, match="recorded at dt_s=0.1 s, this rig runs at 0.05 s"):
        EpisodeStore.open(path, "a", dt_s=0.05)
    assert rig(["episodes", "list", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dt_s 0.1 s" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["total"])]
    # 1 late gap of 9 (11 % > 5 %): flagged late.
    assert rows == [
        ["0", "10", "1.20", "1", "-", "late"],
        ["1", "5", "0.40", "0", "-", "-"],
        ["total", "15", "1.60", "1", "1", "flagged"],
    ]


def _stall_store(path: Path, action_time_rule: str | None = "commanded_at_timestamp") -> Path:
    """Episode 0: the arm stops at step 10 while its actions go on 5 mm a step (steps 12.. are more
    than 10 mm behind) and step 25 comes 0.5 s late; episode 1: it follows within 2 mm."""
    rng = np.random.default_rng(0)
    n = 30
    action = np.zeros((n, 6))
    action[:, 0] = 0.4 + 0.005 * np.arange(n)
    ts = 0.1 * np.arange(n)
    stalled = action.copy()
    stalled[10:, 0] = action[10, 0]
    late_ts = ts.copy()
    late_ts[25:] += 0.4
    healthy = action + rng.uniform(-0.001, 0.001, action.shape)
    with EpisodeStore.open(path, "w", image_codec="raw", dt_s=0.1, action_time=action_time_rule) as store:
        store.add_episode({"robot_eef_pose": stalled, "action": action, "timestamp": late_ts})
        store.add_episode({"robot_eef_pose": healthy, "action": action, "timestamp": ts})
    return path


def test_list_flags_a_stalled_arm_and_late_steps_from_the_stored_arrays(tmp_path: Path, capsys) -> None:
    path = _stall_store(tmp_path / "stall.zarr")
    assert rig(["episodes", "list", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {r[0]: r for r in (line.split() for line in out.splitlines()) if r[:1] in (["0"], ["1"])}
    # Stalled: 18 steps 10..95 mm behind (>= 3 over 10 mm); 1 late gap of 29 (3.4 %) is not flagged.
    assert rows["0"][3:] == ["1", "95.0", "stall"], out
    assert rows["1"][3:5] == ["0", f"{float(rows['1'][4]):.1f}"] and float(rows["1"][4]) < 2.0
    assert rows["1"][5] == "-", out
    assert "stall (TCP > 10 mm behind on >= 3 steps)" in out


def test_a_legacy_rule_store_is_not_judged_for_stalls(tmp_path: Path, capsys) -> None:
    path = _stall_store(tmp_path / "legacy.zarr", action_time_rule=None)
    assert rig(["episodes", "list", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [r[4:6] for r in rows] == [["-", "-"], ["-", "-"]], out
    assert "not judged: legacy action rule" in out


def _magenta_columns(png: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(png))  # BGR
    mask = (img[..., 0] > 200) & (img[..., 2] > 200) & (img[..., 1] < 80)
    return np.flatnonzero(mask.any(axis=0))


def test_exported_plots_mark_the_flagged_steps(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _stall_store(tmp_path / "stall.zarr")
    plots = tmp_path / "plots"
    cmd = [sys.executable, "-m", "robot.cli", "episodes", "export", str(path), "--plots", str(plots)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=50, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "episode_000000.png (FLAGGED stall)" in out and "episode_000001.png\n" in out + "\n"
    flagged = _magenta_columns(plots / "episode_000000.png")
    assert len(_magenta_columns(plots / "episode_000001.png")) == 0  # nothing flagged, no magenta
    # Crosses on the steps behind (12..29 of 0..29): in the right part of the time axis only.
    assert len(flagged) > 0
    width = 900  # figsize 9 in x dpi 100
    assert flagged.min() > 0.3 * width, flagged.min()
