"""The shipped UR configs start the arm as a user runs them: ``rig arm status`` with only ``host`` set.

The fake controller delays its control script by 3 s (a slow controller), so the connect takes longer
than the configs' 1 s heartbeat: the deadline must start once the parent has seen the child ready.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from robot.fake_ur.handle import FakeURController
from tests.robot.arm.ur.helpers import ARM_PARAMS, CB3, ESERIES


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("version", "config"), [CB3, ESERIES], ids=["cb3", "eseries"])
def test_rig_arm_status_runs_the_shipped_config_against_a_slow_controller(version, config):
    fake = FakeURController(
        version, process=True, arm_kind="sim", arm_params=dict(ARM_PARAMS), script_start_delay_s=3.0
    )
    with fake:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "robot.cli",
                "arm",
                "status",
                "--config",
                f"arm/{config}.yaml",
                f"host={fake.host}",
                "--seconds",
                "1.5",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert out.returncode == 0, out.stderr
    assert "status:      OK" in out.stdout and "no heartbeat" not in out.stderr
