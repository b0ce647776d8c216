"""A store damaged on disk the way disks, copies and crashes damage it: `rig episodes check` names
every problem and `rig train` refuses the store (or, with --skip-damaged, leaves out the damaged
episodes and says which), through the real CLI, on a copy of a store `rig collect` recorded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.policy.conftest import TINY_TEST_OVERRIDES
from tests.shared_store import copy_to

pytestmark = pytest.mark.timeout(300)

RIG = [sys.executable, "-m", "robot.cli"]


def rig(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *map(str, args)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def collected(reach_demos: dict, tmp_path_factory) -> Path:
    """Three episodes recorded by `rig collect` on the simulated rig (two cameras, scripted expert):
    this module's copy of the run's shared recording (tests/shared_store.py)."""
    return copy_to(reach_demos, tmp_path_factory.mktemp("collect") / "demos.zarr")


@pytest.fixture
def copy(collected: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(collected, dst)
    return dst


def _ends(store: Path) -> list[int]:
    return [int(e) for e in zarr.open_group(str(store), mode="r")["meta/episode_ends"][:]]


def _flip(path: Path, offset: int = 40, n: int = 16) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _check(store: Path) -> tuple[int, list[str]]:
    out = rig("episodes", "check", store)
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    return out.returncode, out.stdout.strip().splitlines()


def _train_refuses(store: Path, tmp_path: Path, *words: str) -> None:
    run = tmp_path / "run"
    out = rig("train", "--dataset", store, "--out", run, "--max-steps", 2, *TINY_TEST_OVERRIDES)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr
    assert "rig episodes check" in out.stderr
    assert not run.exists()  # nothing written


def test_the_fresh_store_checks_clean_and_says_it_carries_checksums(collected: Path) -> None:
    rc, lines = _check(collected)
    assert rc == 0 and lines[-1].endswith("no problem(s)") and len(_ends(collected)) == 3
    assert not any("no checksums" in line for line in lines)
    meta = json.loads((collected / "data" / "action" / ".zarray").read_text())
    assert meta["compressor"] == {"id": "crc32"}


def test_a_deleted_camera_chunk_is_named_by_array_episode_and_step(copy: Path, tmp_path: Path) -> None:
    ends = _ends(copy)
    row = ends[0] + 3  # episode 1, step 3
    (copy / "data" / "camera_0" / f"{row}.0.0.0").unlink()
    rc, lines = _check(copy)
    assert rc == 1
    assert lines[:-1] == [
        "data/camera_0: episode 1 step 3: chunk file missing (reads as the fill value: a black frame)"
    ]
    assert lines[-1].endswith("1 problem(s)")
    _train_refuses(copy, tmp_path, "data/camera_0: episode 1 step 3", "--skip-damaged")


def test_16_flipped_bytes_in_a_low_dim_chunk_are_named_once_by_the_episodes_they_span(
    copy: Path, tmp_path: Path
) -> None:
    n = _ends(copy)[-1]
    _flip(copy / "data" / "robot_eef_pose" / "0.0")
    rc, lines = _check(copy)
    assert rc == 1 and len(lines) == 2, lines
    assert lines[0].startswith(
        f"data/robot_eef_pose: episodes 0..2 (episode 0 step 0 .. episode 2 step {n - _ends(copy)[1] - 1}): "
        "cannot be decoded (RuntimeError: Stored and computed crc32 checksum do not match"
    )
    _train_refuses(copy, tmp_path, "data/robot_eef_pose: episodes 0..2", "checksum")
    out = rig("episodes", "show", copy, 1)  # so does every reader: one line, not a codec's traceback
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "data/robot_eef_pose of episode 1 (steps" in out.stderr and "checksum do not match" in out.stderr
    # The store's own reader names it too.
    from collection.episode_store import EpisodeStore, EpisodeStoreError

    with (
        EpisodeStore.open(copy, "r") as store,
        pytest.raises(EpisodeStoreError, match="data/robot_eef_pose of episode 1"),
    ):
        store.get_episode(1)


def test_missing_group_metadata_is_named(copy: Path, tmp_path: Path) -> None:
    (copy / "meta" / ".zgroup").unlink()
    (copy / "meta" / ".zattrs").unlink()
    rc, lines = _check(copy)
    assert rc == 1 and lines[0].startswith("meta/.zgroup missing") and len(lines) == 2, lines
    _train_refuses(copy, tmp_path, "meta/.zgroup missing")


def test_missing_root_attributes_are_named_and_training_does_not_guess_the_period(
    copy: Path, tmp_path: Path
) -> None:
    (copy / ".zattrs").unlink()
    rc, lines = _check(copy)
    assert rc == 1 and lines[0].startswith(".zattrs missing: the root attributes (dt_s") and len(lines) == 2
    _train_refuses(copy, tmp_path, ".zattrs missing")


def test_episode_ends_out_of_order_are_one_line_not_a_traceback(copy: Path, tmp_path: Path) -> None:
    ee = zarr.open_group(str(copy), mode="r+")["meta/episode_ends"]
    v = ee[:]
    ee[:] = v[[1, 0, 2]]
    rc, lines = _check(copy)
    assert rc == 1 and len(lines) == 2, lines
    assert lines[0].startswith(f"meta/episode_ends is not increasing at entry 1 ({v[1]} then {v[0]})")
    out = rig("train", "--dataset", copy, "--out", tmp_path / "run", *TINY_TEST_OVERRIDES)
    assert out.returncode == 2 and "not increasing at entry 1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_truncated_chunk_spanning_every_episode_is_one_problem(copy: Path, tmp_path: Path) -> None:
    chunk = copy / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:40])
    rc, lines = _check(copy)
    assert rc == 1 and len(lines) == 2, lines  # one problem, no NaN line per step
    assert lines[0].startswith("data/action: episodes 0..2 (episode 0 step 0 .. episode 2 step")
    assert lines[-1].endswith("1 problem(s)")
    _train_refuses(copy, tmp_path, "data/action: episodes 0..2")


def test_skip_damaged_trains_without_the_damaged_episode_and_names_it(copy: Path, tmp_path: Path) -> None:
    ends = _ends(copy)
    _flip(copy / "data" / "camera_1" / f"{ends[1] + 2}.0.0.0", offset=30)  # episode 2, step 2
    rc, lines = _check(copy)
    assert rc == 1 and lines[0].startswith("data/camera_1: episode 2 step 2: cannot be decoded")
    run = tmp_path / "run"
    out = rig(
        "train", "--dataset", copy, "--out", run, "--max-steps", 2, "--skip-damaged", *TINY_TEST_OVERRIDES
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipping 1 damaged episode(s) of 3: 2 (data/camera_1: episode 2 step 2" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["steps"] == 2
    saved = (run / "config.yaml").read_text()
    assert "skip_episodes:\n  - 2" in saved


def test_a_store_without_checksums_still_reads_and_check_says_it_has_none(tmp_path: Path) -> None:
    from collection.episode_store import EpisodeStore

    path = tmp_path / "old.zarr"
    with EpisodeStore.open(path, "w", image_codec="raw", checksums=False, dt_s=0.1) as store:
        for i in range(2):
            store.add_episode(
                {"action": np.full((5, 2), float(i)), "timestamp": 10.0 * i + 0.1 * np.arange(5)}
            )
    rc, lines = _check(path)
    assert rc == 0 and any(line.startswith("note: no checksums") for line in lines), lines
    shutil.rmtree(path / "meta" / "episode_ends")  # ... and metadata damage is still named
    (path / ".zattrs").unlink()  # (a store without checksums need not have root attributes)
    rc, lines = _check(path)
    assert rc == 1 and lines[0].startswith("meta/episode_ends missing"), lines


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: (p / "data" / "timestamp" / ".zarray").write_text("{not json"),
        lambda p: (p / "meta" / "episode_ends" / "0").write_bytes(b"xx"),
        lambda p: shutil.rmtree(p / "data"),
        lambda p: (p / ".zgroup").unlink(),
    ],
)
def test_no_damage_makes_check_print_a_traceback(copy: Path, damage: Callable[[Path], None]) -> None:
    damage(copy)
    rc, lines = _check(copy)
    assert rc == 1 and lines[-1].endswith("problem(s)") and "no problem" not in lines[-1], lines
