"""Suite-wide guards: no test module may leave a shared-memory segment of its own process behind."""

from __future__ import annotations

import os

import pytest

from robot.shm.segments import list_segments


@pytest.fixture(autouse=True, scope="session")
def rig_logs_in_tmp(tmp_path_factory):
    """A failed ``rig`` run writes its log (the traceback) under RIG_LOG_DIR: the tests' runs, and
    the ``rig`` subprocesses they start, write theirs under pytest's tmp folder, not the user's home."""
    os.environ["RIG_LOG_DIR"] = str(tmp_path_factory.mktemp("rig-logs"))
    yield


@pytest.fixture(autouse=True, scope="module")
def no_leaked_segments():
    # Module scope so that module-scoped rig fixtures can keep their segments between tests. A leak
    # is reported by the module that leaked it, not again by every later module of its worker.
    before = {s.name for s in list_segments() if s.owner_pid == os.getpid()}
    yield
    mine = [s.name for s in list_segments() if s.owner_pid == os.getpid() and s.name not in before]
    assert not mine, f"tests of this module leaked shared-memory segments: {mine}"


@pytest.fixture
def shm_clean_exclusive():
    """Held by a test that leaves a dead run's semaphores or segments in /dev/shm to be found by
    `rig shm list|clean` (tests/shm_clean_lock.py says why)."""
    from tests.shm_clean_lock import shm_clean_lock

    with shm_clean_lock():
        yield


@pytest.fixture(scope="session")
def reach_demos(tmp_path_factory) -> dict:
    """Three episodes of ``rig collect --config collect/sim_reach.yaml`` recorded once per run, shared
    by the tests that only read them (tests/shared_store.py; a test copies the store with
    ``shared_store.copy_to``)."""
    from tests import shared_store

    return shared_store.recording(tmp_path_factory, "reach_demos")


@pytest.fixture(scope="session")
def pick_place_demo(tmp_path_factory) -> dict:
    """One episode of ``rig collect --config collect/sim_pick_place.yaml``, recorded once per run."""
    from tests import shared_store

    return shared_store.recording(tmp_path_factory, "pick_place_demo")


# The longest test files (worker seconds in a clean-clone `make test`), started first: xdist hands out
# whole files (--dist loadfile, --no-loadscope-reorder in the Makefile) in this order, so that no
# long file is left to start when the others are done. The files that wait for a compatibility
# virtualenv (tests/compat_venv.py, built beside the suite: ~4 and ~9 min on a loaded clean clone)
# come after a few long ones, so that their worker is not idle while it builds. The other files
# follow in collection order.
LONG_FILES_FIRST = [
    "tests/policy/test_policy_train.py",  # 448 s (shared training runs built in its setup)
    "tests/deploy/test_deploy_sim.py",  # 373 s
    "tests/deploy/test_replay.py",  # 343 s
    "tests/collection/test_collect.py",  # 308 s
    "tests/deploy/test_interrupts.py",  # 281 s
    "tests/collection/test_store_damage.py",  # 354 s (the shared reach recording in its setup)
    "tests/policy/test_reference_checkpoint.py",  # 967 s, 430 of them waiting for its virtualenv
    "tests/deploy/test_action_time_oracle.py",  # 193 s
    "tests/robot/arm/ur/test_ur_faults.py",  # 183 s
    "tests/test_one_line_errors.py",  # 175 s
    "tests/collection/test_lerobot_dataset.py",  # 401 s, waiting for its virtualenv first
    "tests/calibration/test_geometry.py",  # 163 s
    "tests/test_ctrl_c.py",  # 132 s
    "tests/calibration/test_latency.py",  # 124 s
    "tests/test_demo.py",  # 117 s
    "tests/collection/test_export_view.py",  # 114 s
    "tests/robot/cameras/test_sim_camera.py",  # 111 s
    "tests/collection/test_lerobot_import.py",  # 102 s
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long files first (LONG_FILES_FIRST; each file's tests keep their order). A test that uses
    the shared recording is timed from its function's call on: recording it (or waiting for another
    worker to) is bounded by shared_store.BUILD_TIMEOUT_S, not by its timeout."""
    from tests.shared_store import FIXTURES, time_function_only

    rank = {path: i for i, path in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
    for item in items:
        if not set(getattr(item, "fixturenames", ())) & FIXTURES:
            continue
        time_function_only(config, item)
