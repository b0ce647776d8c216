"""Playback of a RealSense recording through the RealSense backend (the same pipeline code as live
cameras): the test writes its own recording with pyrealsense2's software device + recorder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot.cameras.camera import Camera
from robot.cameras.config import CameraConfig, MultiCameraConfig
from robot.cameras.realsense import record_synthetic
from robot.config import load_config
from robot.process import DeviceProcessError
from tests.robot.cameras.helpers import ROOT, preview_headless

pytestmark = pytest.mark.timeout(60)

W, H, FPS, N = 96, 64, 30, 24
START_MS = 5000.0


def _frames():
    rng = np.random.default_rng(3)
    color = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)]
    depth = [np.full((H, W), 400 + 7 * i, np.uint16) for i in range(N)]
    return color, depth


def _wait_for_end(cam: Camera, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cam.stats()["ended"]:
        assert time.monotonic() < deadline, f"the recording did not end ({cam.stats()})"
        cam.check()
        time.sleep(0.02)


@contextlib.contextmanager
def _busy_processes(n: int):
    """``n`` CPU-burning processes beside the test (a machine running a demo or a collection)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)
    ]
    try:
        yield
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("busy", [0, 2], ids=["idle", "2 busy processes"])
@pytest.mark.parametrize("with_depth", [False, True], ids=["color", "color+depth"])
def test_replay_keeps_the_recorded_timestamps_and_every_frame(tmp_path, with_depth, busy):
    color, depth = _frames()
    path = record_synthetic(
        tmp_path / "take.db3",
        color,
        FPS,
        depth if with_depth else None,
        intrinsics=(80.0, 81.0, 47.5, 31.5),
        start_timestamp_ms=START_MS,
    )
    cfg = CameraConfig(
        name="pb",
        backend="playback",
        width=W,
        height=H,
        fps=FPS,
        depth=with_depth,
        playback={"path": str(path)},
    )
    with _busy_processes(busy), Camera(cfg) as cam:
        intr = cam.intrinsics
        _wait_for_end(cam)
        count = cam.ring.count
        recs = cam.ring.get_last(count)
        stats = cam.stats()
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (80.0, 81.0, 47.5, 31.5, W, H)
    assert stats["ended"] and stats["frames"] == N and stats["dropped"] == 0
    idx = recs["frame_index"]
    assert count == N and np.array_equal(idx, np.arange(N))
    for j, i in enumerate(idx):  # bit-exact color
        assert np.array_equal(recs["color"][j], color[i])
    if with_depth:
        # Aligned to color by rs.align: each color frame's own depth value, 0 (no data) only where the
        # reprojection leaves holes.
        for j, i in enumerate(idx):
            d = recs["depth"][j]
            assert set(np.unique(d[d > 0])) == {400 + 7 * i} and (d > 0).mean() > 0.8
    else:
        assert "depth" not in recs
    cap, rx = recs["capture_time"], recs["receive_time"]
    recorded_s = (START_MS + idx * 1000.0 / FPS) / 1000.0
    shift = cap - recorded_s
    assert np.ptp(shift) < 0.001, f"capture - recorded timestamp varies by {1000 * np.ptp(shift):.2f} ms"
    assert np.all(rx >= cap) and np.all(np.diff(rx) > 0)


def test_a_gap_in_the_recording_counts_as_drops_and_keeps_its_time(tmp_path):
    color, _ = _frames()
    keep = [i for i in range(N) if i not in (4, 5, 6)]
    path = record_synthetic(
        tmp_path / "take.db3", [color[i] for i in keep], FPS, frame_numbers=keep, start_timestamp_ms=START_MS
    )
    cfg = CameraConfig(
        name="pb", backend="playback", width=W, height=H, fps=FPS, playback={"path": str(path)}
    )
    with Camera(cfg) as cam:
        _wait_for_end(cam)
        recs = cam.ring.get_last(cam.ring.count)
        stats = cam.stats()
    assert np.array_equal(recs["frame_index"], keep) and stats["dropped"] == 3
    shift = recs["capture_time"] - (START_MS + np.array(keep) * 1000.0 / FPS) / 1000.0
    assert np.ptp(shift) < 0.001


def test_playback_of_a_missing_file_or_wrong_size_fails_with_a_clear_message(tmp_path):
    cfg = CameraConfig(
        name="pb", backend="playback", width=W, height=H, playback={"path": str(tmp_path / "nope.db3")}
    )
    cam = Camera(cfg)
    try:
        with pytest.raises(
            DeviceProcessError, match=r"camera pb \(playback of .*nope.db3\): recording .* does not exist"
        ):
            cam.start()
    finally:
        cam.close()
    color, _ = _frames()
    path = record_synthetic(tmp_path / "take.db3", color[:3], FPS)
    cfg = CameraConfig(name="pb", backend="playback", width=640, height=480, playback={"path": str(path)})
    cam = Camera(cfg)
    try:
        with pytest.raises(DeviceProcessError, match=r"color stream is 96x64 but the config says 640x480"):
            cam.start()
    finally:
        cam.close()


@pytest.mark.parametrize(
    "serial,devices,message",
    [
        ("123", [], r"no RealSense camera is connected; check the USB3 cable"),
        ("123", [("555", "3.2"), ("777", "3.2")], r"serial 123 not found; connected: 555, 777"),
        ("555", [("555", "2.1")], r"USB 2.1 link; it needs USB3"),
        (
            None,
            [("555", "3.2"), ("777", "3.2")],
            r"several cameras are connected \(\['555', '777'\]\); set serial",
        ),
    ],
)
def test_live_camera_problems_are_explained(monkeypatch, serial, devices, message):
    """The checks before a live pipeline starts (what the person at the rig sees); no hardware here, so
    the device list is faked."""
    import robot.cameras.realsense as rsb

    fake = [
        {"name": "Intel RealSense D435", "serial": s, "firmware": "5.16", "usb": u, "product_line": "D400"}
        for s, u in devices
    ]
    monkeypatch.setattr(rsb, "list_devices", lambda: fake)
    backend = rsb.RealSenseBackend(CameraConfig(name="scene", backend="realsense", serial=serial))
    with pytest.raises(RuntimeError, match=message) as exc:
        backend.open()
    assert "camera scene" in str(exc.value)


@pytest.mark.parametrize("name", ["junk.bag", "junk.db3"])
def test_a_file_that_is_not_a_recording_is_named_as_such(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cam = Camera(CameraConfig(name="pb", backend="playback", width=W, height=H, playback={"path": str(path)}))
    try:
        with pytest.raises(DeviceProcessError) as exc:
            cam.start()
    finally:
        cam.close()
    message = str(exc.value)
    assert f"camera pb (playback of {path}): not a RealSense recording" in message
    assert "USB" not in message and "\n" not in message


def test_a_config_fps_other_than_the_recordings_is_an_error(tmp_path):
    color, _ = _frames()
    path = record_synthetic(tmp_path / "take.db3", color[:3], FPS)
    cfg = CameraConfig(name="pb", backend="playback", width=W, height=H, fps=15, playback={"path": str(path)})
    cam = Camera(cfg)
    try:
        with pytest.raises(DeviceProcessError, match=r"the recording is at 30 fps but the config says 15"):
            cam.start()
    finally:
        cam.close()


def test_preview_of_the_shipped_playback_config_reports_the_end_of_the_recording(tmp_path):
    cfg = load_config(MultiCameraConfig, ROOT / "configs/cameras/playback.yaml").cameras["scene"]
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8) for _ in range(20)]
    path = record_synthetic(tmp_path / "scene.db3", frames, cfg.fps)
    r = preview_headless(
        "--config", "cameras/playback.yaml", f"cameras.scene.playback.path={path}", "--seconds", "30"
    )
    assert r.returncode == 0, r.stderr
    end = [line for line in r.stderr.splitlines() if line.startswith("camera scene: end of recording")]
    assert end == [
        f"camera scene: end of recording {path} (20 frames, 0 missing from the recording); no frame comes after it"
    ]
    # The preview stops at the end (its figures are printed once a second, --seconds was 30).
    assert len([line for line in r.stdout.splitlines() if line.startswith("scene:")]) < 10
