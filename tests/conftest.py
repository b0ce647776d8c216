"""Suite-wide guards: no test module may leave a shared-memory segment of its own process behind."""

from __future__ import annotations

import os

import pytest

from robot.shm.segments import list_segments


@pytest.fixture(autouse=True, scope="module")
def no_leaked_segments():
    # Module scope so that module-scoped rig fixtures can keep their segments between tests.
    yield
    mine = [s.name for s in list_segments() if s.owner_pid == os.getpid()]
    assert not mine, f"tests of this module leaked shared-memory segments: {mine}"
