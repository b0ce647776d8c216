"""User errors through the CLI as a user meets them: one line, no traceback (unless --debug), exit 2
for config/input errors and 1 for device failures. Cases of one command live next to its tests
(train: tests/policy, deploy checkpoints: tests/deploy/test_interrupts.py, config: tests/robot)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERIAL = "123456789012"  # digits only: YAML would read it as a number; it is the text typed


def _rig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["collect", "deploy"])
def test_a_realsense_serial_that_is_not_connected_is_one_device_line(tmp_path, command):
    store = tmp_path / "store.zarr"
    args = [command, f"store={store}", "rig.cameras.cameras.scene.backend=realsense",
            f"rig.cameras.cameras.scene.serial={SERIAL}"]  # fmt: skip
    if command == "deploy":
        args[1:1] = ["--checkpoint", "py:deploy.standin:ReferencePolicy", "--episodes", "1"]
    out = _rig(*args)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "not a valid string" not in out.stderr
    line, hint = [x for x in out.stderr.splitlines() if x.startswith(f"rig {command}:")]
    assert hint.startswith(f"rig {command}: the traceback is in ")  # the run's log keeps it
    # No camera on a test machine; with one connected the line lists the serials seen instead.
    assert f"RealSense {SERIAL}" in line and (
        "no RealSense camera is connected" in line or "connected:" in line
    )
    assert not store.exists()  # nothing recorded


@pytest.mark.timeout(120)
def test_debug_prints_the_traceback_behind_the_line():
    plain = _rig("arm", "status", "start_pose=[1,2]")
    debug = _rig("--debug", "arm", "status", "start_pose=[1,2]")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert "expected 6 values, got 2" in debug.stderr.splitlines()[-1]


@pytest.mark.timeout(120)
def test_calibrate_robot_latency_against_an_unreachable_ur_is_one_line_and_writes_nothing(tmp_path):
    import random

    host = (
        f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"  # nothing listens
    )
    cal = tmp_path / "cal.yaml"
    out = _rig("calibrate", "robot-latency", "arm.backend=ur", f"arm.host={host}", "--out", str(cal),
               "--plots", str(tmp_path / "plots"))  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    line, hint = out.stderr.strip().splitlines()  # the message, then where the traceback went
    assert line.startswith("rig calibrate: ") and f"UR at {host}:29999: connection refused" in line
    assert line.endswith("(no calibration file was written)")
    assert hint.startswith("rig calibrate: the traceback is in ")
    assert not cal.exists()
