"""Fixtures of the deploy tests: ``rig deploy`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.helpers import RIG, STANDIN, START


@pytest.fixture
def rig_deploy(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``rig_deploy(*overrides, episodes=, max_episode_s=, latency_s=0.12, timeout_s=)`` runs ``rig
    deploy`` of the stand-in policy in a subprocess (async, no SpaceMouse, the tests' RIG, its stdin
    closed), recording into ``<tmp_path>/eval.zarr``; returns the finished process, exit code unchecked."""

    def run(
        *overrides: str, episodes: int, max_episode_s: float, timeout_s: float, latency_s: float = 0.12
    ) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "robot.cli", "deploy", "--checkpoint", STANDIN, "--mode", "async",
            "--episodes", str(episodes), f"store={tmp_path / 'eval.zarr'}", f"max_episode_s={max_episode_s}",
            "spacemouse=false", f"policy_kwargs={{latency_s: {latency_s}, start_pose: {START}}}", *RIG, *overrides,
        ]  # fmt: skip
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )

    return run
