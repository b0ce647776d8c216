"""Fixtures for the SpaceMouse tests: a short UNIX socket path and a fake spacenavd serving it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

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


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 5 ms until it returns something truthy; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)
