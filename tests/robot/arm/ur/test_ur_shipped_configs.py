"""The shipped UR configs start the arm as a user runs them: ``rig arm status`` with only ``host`` set.

The fake controller delays its control script by 3 s (a slow controller), so the connect takes longer
than the configs' 1 s heartbeat: the deadline must start once the parent has seen the child ready.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from robot.fake_ur.handle import FakeURController
from tests.robot.arm.ur.helpers import ARM_PARAMS, CB3, ESERIES


def _rig_arm(*args: str) -> subprocess.CompletedProcess:
    """``rig ARGS`` to its end (90 s at most), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", *args], capture_output=True, text=True, timeout=90
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("version", "config"), [CB3, ESERIES], ids=["cb3", "eseries"])
def test_rig_arm_status_runs_the_shipped_config_against_a_slow_controller(version, config):
    fake = FakeURController(
        version, process=True, arm_kind="sim", arm_params=dict(ARM_PARAMS), script_start_delay_s=3.0
    )
    with fake:
        out = _rig_arm(
            "arm", "status", "--config", f"arm/{config}.yaml", f"host={fake.host}", "--seconds", "1.5"
        )
    assert out.returncode == 0, out.stderr
    assert "status:      OK" in out.stdout and "no heartbeat" not in out.stderr


def _message_and_log_hint(stderr: str) -> tuple[str, str]:
    """A device failure prints its one-line message, then one hint line naming the run's log."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 2, stderr
    assert lines[1].startswith("rig arm: the traceback is in "), stderr
    return lines[0], lines[1]


@pytest.mark.timeout(120)
def test_unreachable_host_is_one_line_naming_host_port_and_checklist_traceback_only_with_debug():
    host = (
        f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"  # nothing listens
    )
    out = _rig_arm("arm", "status", "--config", "arm/ur5_cb3.yaml", f"host={host}")
    assert out.returncode == 1
    message, hint = _message_and_log_hint(out.stderr)
    assert f"UR at {host}:29999: connection refused" in message and "Check:" in message
    log = Path(hint.split("the traceback is in ")[1].split(" (or run with --debug)")[0])
    assert "Traceback" in log.read_text() and f"UR at {host}:29999" in log.read_text()
    debug = _rig_arm("--debug", "arm", "status", "--config", "arm/ur5_cb3.yaml", f"host={host}")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.timeout(120)
def test_500_hz_of_a_cb3_is_one_line_saying_what_to_set():
    with FakeURController("3.15", process=True) as fake:
        out = _rig_arm("arm", "status", "--config", "arm/ur5e.yaml", f"host={fake.host}")
    assert out.returncode == 1
    message, _ = _message_and_log_hint(out.stderr)
    assert "rate_hz is 500" in message and "Set rate_hz: 125" in out.stderr
