"""Suite-wide guards: no test may leave a shared-memory segment of its own process behind."""

from __future__ import annotations

import os

import pytest

from robot.shm import list_segments


@pytest.fixture(autouse=True)
def no_leaked_segments():
    yield
    mine = [s.name for s in list_segments() if s.owner_pid == os.getpid()]
    assert not mine, f"test leaked shared-memory segments: {mine}"
