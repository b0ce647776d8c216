"""``rig policy ...`` run as the user runs it, for the tests of the reference-checkpoint import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rig_policy(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """``rig policy ARGS`` from the repository root; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", "policy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
