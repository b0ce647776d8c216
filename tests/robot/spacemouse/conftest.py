"""Fixtures for the SpaceMouse tests: a short UNIX socket path and a fake spacenavd serving it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.robot.spacemouse.fake_spacenavd import FakeSpacenavd


@pytest.fixture
def spnav_socket() -> Iterator[str]:
    # UNIX socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="spnav", dir="/tmp")
    try:
        yield os.path.join(d, "spnav.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_daemon(spnav_socket: str) -> Iterator[FakeSpacenavd]:
    with FakeSpacenavd(spnav_socket) as daemon:
        yield daemon
