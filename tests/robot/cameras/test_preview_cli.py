"""Preview process (with and without a display) and the `rig cameras` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from robot.cameras.camera import Camera
from robot.cameras.config import CameraConfig
from robot.cameras.preview import Preview, tile_frames
from tests.robot.cameras.helpers import RIG, ROOT, preview_headless

pytestmark = pytest.mark.timeout(60)


def test_tiles_are_laid_out_in_a_grid_with_labels():
    a = np.full((480, 640, 3), 200, np.uint8)
    b = np.full((240, 320, 3), 50, np.uint8)
    out = tile_frames([a, b, None], ["a", "b", "c"], tile_width=160)
    assert out.shape == (2 * 120, 2 * 160, 3)
    assert out[60, 80, 0] == 200 and out[60, 240, 0] == 50 and out[180, 80, 0] == 0
    assert out[5:20, 0:150].max() > 200  # white label text on the black label bar


@pytest.fixture
def xvfb_display():
    """A virtual X display (Xvfb), or skip when Xvfb is not installed (Debian package xvfb)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb) so the window path cannot run here")
    number = 90 + os.getpid() % 100
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{number}") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


def _run_preview(monkeypatch, display: str | None):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    if display:
        monkeypatch.setenv("DISPLAY", display)
    with Camera(CameraConfig(name="c", width=160, height=120)) as cam:
        with Preview({"c": cam.ring}, fps=20) as preview:
            time.sleep(1.5 if display else 0.4)
            preview.check()
            enabled, shown = preview.enabled, preview.frames_shown
        assert preview.exitcode == 0
    return enabled, shown


def test_preview_degrades_to_nothing_without_a_display(monkeypatch):
    assert _run_preview(monkeypatch, None) == (False, 0)
    assert _run_preview(monkeypatch, ":77") == (False, 0)  # a DISPLAY nobody serves: no Qt abort


def test_preview_shows_tiles_in_a_window(monkeypatch, xvfb_display):
    enabled, shown = _run_preview(monkeypatch, xvfb_display)
    assert enabled is True and shown >= 5


def test_cameras_list_says_clearly_when_no_camera_is_connected():
    r = subprocess.run([*RIG, "cameras", "list"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert "No RealSense camera found" in r.stdout and "USB3" in r.stdout


def test_cameras_preview_runs_a_config_headless_and_prints_stats():
    r = preview_headless(
        "--config",
        "cameras/sim_2cam.yaml",
        "--seconds",
        "2.5",
        "cameras.wrist.fps=15",
        "cameras.scene.width=320",
        "cameras.scene.height=240",
        "cameras.scene.sim.intrinsics.cx=159.5",
        "cameras.scene.sim.intrinsics.cy=119.5",
    )
    assert r.returncode == 0, r.stderr
    assert "no display" in r.stdout
    last = [line for line in r.stdout.splitlines() if line.startswith("scene:")][-1]
    assert "wrist:" in last and "15.0 fps" in last.split("|")[1]
    bad = subprocess.run(
        [*RIG, "cameras", "preview", "cameras.scene.fsp=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "unknown key 'cameras.scene.fsp'" in bad.stderr


def test_cameras_preview_of_realsense_without_cameras_explains_what_to_check():
    r = subprocess.run(
        [*RIG, "cameras", "preview", "--config", "cameras/realsense_2cam.yaml", "--seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "RealSense" in r.stderr and "connect them or set serial" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool (installed by the Makefile) is missing")
def test_keys_pressed_in_the_preview_window_reach_the_application(monkeypatch, xvfb_display):
    """What rig collect relies on for c / s / Backspace / q typed into the preview window."""
    from collection.collect import _PreviewKeys

    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DISPLAY", xvfb_display)
    with Camera(CameraConfig(name="c", width=160, height=120)) as cam:
        with Preview({"c": cam.ring}, fps=20) as preview:
            deadline = time.monotonic() + 10
            while preview.frames_shown < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            wid = subprocess.run(
                ["xdotool", "search", "--name", "rig cameras"], capture_output=True, text=True, timeout=10
            ).stdout.split()[0]
            subprocess.run(["xdotool", "windowfocus", "--sync", wid], timeout=10)
            with _PreviewKeys(preview) as keys:
                got: list[str] = []
                for key in ("c", "s"):
                    subprocess.run(["xdotool", "key", "--delay", "100", key], timeout=10)
                    time.sleep(0.3)
                deadline = time.monotonic() + 5
                while got != ["c", "s"] and time.monotonic() < deadline:
                    got += [k for k in keys.poll() if k in "cs"]
                    time.sleep(0.05)
    assert got == ["c", "s"]
