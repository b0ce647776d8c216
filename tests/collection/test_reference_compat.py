"""Stores move both ways between this project and the Diffusion Policy reference's reader.

The reference runs zarr 2 and pins imagecodecs 2022.9.26; the oldest imagecodecs that installs on
this project's Python 3.11 is 2022.12.24. A virtualenv with those (``reference_compat/requirements.txt``)
is built once into ``.cache/reference-compat/`` (ignored by git; rebuilt when the file changes) and
reused by later runs (tests/compat_venv.py).
``benchmarks/reference_reader.py`` reads a store there the way the reference's ``ReplayBuffer``
does and decodes every frame.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from collection.episode_store import EpisodeStore
from tests.compat_venv import compat_python

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "reference-compat"
REQUIREMENTS = Path(__file__).resolve().parent / "reference_compat" / "requirements.txt"
READER = REPO / "benchmarks" / "reference_reader.py"


def reference_venv_python() -> Path:
    """The reference's virtualenv (built once, see tests/compat_venv.py; a failed build raises)."""
    return compat_python(CACHE, REQUIREMENTS, what="reference reader")


@pytest.fixture(scope="module")
def reference_python() -> Path:
    return reference_venv_python()


def _read_as_reference(python: Path, store: Path) -> dict[str, int]:
    done = subprocess.run([str(python), str(READER), str(store)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _episode(i: int, t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "camera_0": rng.integers(0, 256, size=(t, 24, 32, 3), dtype=np.uint8),
        "robot_eef_pose": rng.normal(size=(t, 6)),
        "action": rng.normal(size=(t, 6)),
        "timestamp": 5.0 * i + 0.1 * np.arange(t),
    }


@pytest.mark.parametrize("compat", ["reference", None])
def test_the_reference_reads_a_project_store(reference_python: Path, tmp_path: Path, compat) -> None:
    path = tmp_path / "project.zarr"
    with EpisodeStore.open(path, "w", compat=compat, action_time="commanded_at_timestamp") as store:
        for i, t in enumerate([7, 5, 9]):
            store.add_episode(_episode(i, t))
        store.delete_last()
    assert _read_as_reference(reference_python, path) == {"episodes": 2, "steps": 12, "frames_decoded": 12}
    # The store states its action-time rule in its metadata, and the reference reads it all the same.
    with EpisodeStore.open(path, "r") as store:
        assert store.action_time == "commanded_at_timestamp"


def test_the_reference_still_reads_its_store_after_delete_last_here(
    reference_python: Path, tmp_path: Path
) -> None:
    # Written by zarr 2 itself (its Jpeg2k of 2022 cannot encode (1, H, W, C) chunks: blosc frames).
    path = tmp_path / "reference.zarr"
    write = (
        "import sys, numpy as np, zarr, imagecodecs.numcodecs as c\n"
        "c.register_codecs()\n"
        "root = zarr.open(sys.argv[1], mode='w')\n"
        "rng = np.random.default_rng(0)\n"
        "root.require_group('data').array('camera_0', rng.integers(0, 256, (10, 24, 32, 3), dtype=np.uint8),"
        " chunks=(1, 24, 32, 3), compressor=zarr.Blosc('zstd', 5, 2))\n"
        "root['data'].array('action', rng.normal(size=(10, 6)).astype(np.float32), chunks=(10, 6))\n"
        "root.require_group('meta').array('episode_ends', np.array([4, 10]), chunks=(2,))\n"
    )
    subprocess.run([str(reference_python), "-c", write, str(path)], check=True, timeout=120)
    assert _read_as_reference(reference_python, path) == {"episodes": 2, "steps": 10, "frames_decoded": 10}
    with EpisodeStore.open(path, "a") as store:
        assert store.n_episodes == 2
        store.delete_last()
    assert _read_as_reference(reference_python, path) == {"episodes": 1, "steps": 4, "frames_decoded": 4}
