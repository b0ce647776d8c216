"""``rig arm status|home`` through the real CLI entry point, on the simulated UR5."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from robot.arm.config import ArmConfig
from robot.config import config_path, load_config


def rig(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", "arm", *args], capture_output=True, text=True, timeout=timeout_s
    )


@pytest.mark.timeout(90)
def test_home_moves_the_arm_from_elsewhere_to_the_start_pose():
    start = np.array(load_config(ArmConfig, config_path("arm/sim_ur5.yaml")).start_pose)
    out = rig("home", "--json", "sim.initial_pose=[0.55,0.1,0.3,3.141592653589793,0,0]", "home_speed_m_s=0.2")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert np.linalg.norm(np.array(info["tcp_pose"][:3]) - start[:3]) < 0.002
    assert info["status"] == "OK"


@pytest.mark.timeout(90)
def test_status_prints_pose_rate_and_rejects_unknown_keys():
    out = rig("status", "--seconds", "0.5")
    assert out.returncode == 0, out.stderr
    assert "tcp pose:" in out.stdout and "status:      OK" in out.stdout and "state rate:" in out.stdout
    bad = rig("status", "limits.max_speed=3")
    assert bad.returncode == 2 and "unknown key 'limits.max_speed'" in bad.stderr
