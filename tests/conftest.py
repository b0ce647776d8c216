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
    # Module scope so that module-scoped rig fixtures can keep their segments between tests.
    yield
    mine = [s.name for s in list_segments() if s.owner_pid == os.getpid()]
    assert not mine, f"tests of this module leaked shared-memory segments: {mine}"
