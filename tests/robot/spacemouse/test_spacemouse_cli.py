"""``rig spacemouse test`` through its real entry point, against the fake spacenavd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(60)


def _rig(*args: str) -> list[str]:
    return [sys.executable, "-m", "robot.cli", "spacemouse", "test", *args]


def test_cli_without_daemon_says_which_socket_and_how_to_start_spacenavd(spnav_socket):
    out = subprocess.run(
        _rig(f"socket_path={spnav_socket}"), cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    assert spnav_socket in out.stderr and "sudo systemctl start spacenavd" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_prints_normalized_axes_and_buttons_live(fake_daemon):
    proc = subprocess.Popen(
        _rig(
            "--config", "spacemouse/spnav.yaml", f"socket_path={fake_daemon.socket_path}", "--duration", "3"
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "publishing" in proc.stdout.readline()  # the process is ready
        # The default mapping: puck pushed away from the user (device -z) is +x.
        fake_daemon.send_motion(0, 0, -350, 0, 0, 0)
        fake_daemon.send_button(0, True)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("x+1.000 y+0.000 z+0.000") and "b0:ON (1)" in line for line in lines), out
    assert "Fake SpaceNavigator" in err  # the device name spacenavd reports


def test_cli_reports_daemon_loss_and_exits_nonzero(fake_daemon):
    proc = subprocess.Popen(
        _rig(f"socket_path={fake_daemon.socket_path}", "--duration", "20"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Drop the daemon once the process is running (not during libspnav's startup requests).
        assert "publishing" in proc.stdout.readline()
        fake_daemon.drop_clients()
        wait_until(lambda: proc.poll() is not None, timeout_s=15, what="the CLI to exit")
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "closed the connection" in err and "systemctl status spacenavd" in err
