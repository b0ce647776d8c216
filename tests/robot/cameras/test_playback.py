"""Playback of a RealSense recording through the RealSense backend (the same pipeline code as live
cameras): the test writes its own recording with pyrealsense2's software device + recorder."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot.cameras.camera import Camera
from robot.cameras.config import CameraConfig
from robot.cameras.realsense import record_synthetic
from robot.process import DeviceProcessError

pytestmark = pytest.mark.timeout(60)

W, H, FPS, N = 96, 64, 30, 12


def _frames():
    rng = np.random.default_rng(3)
    color = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)]
    depth = [np.full((H, W), 400 + 7 * i, np.uint16) for i in range(N)]
    return color, depth


def _wait_for(cam: Camera, n: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while cam.ring.count < n and time.monotonic() < deadline:
        cam.check()
        time.sleep(0.02)


def test_recording_replays_through_the_realsense_backend(tmp_path):
    color, depth = _frames()
    path = record_synthetic(tmp_path / "take.db3", color, FPS, depth, intrinsics=(80.0, 81.0, 47.5, 31.5))
    cfg = CameraConfig(
        name="pb", backend="playback", width=W, height=H, fps=FPS, depth=True, playback={"path": str(path)}
    )
    with Camera(cfg) as cam:
        intr = cam.intrinsics
        _wait_for(cam, N)
        time.sleep(0.3)  # nothing more may come: the recording has ended
        count = cam.ring.count
        recs = cam.ring.get_last(count)
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (80.0, 81.0, 47.5, 31.5, W, H)
    # Real-time playback behaves like a live camera: a process starved of CPU may miss a frame, and a
    # missed frame shows as a gap in frame_index (never as a duplicate or a wrong picture).
    idx = recs["frame_index"]
    assert N - 2 <= count <= N and np.all(np.diff(idx) >= 1) and idx[0] >= 0 and idx[-1] == N - 1
    assert recs["color"].shape == (count, H, W, 3) and recs["depth"].shape == (count, H, W)
    for j, i in enumerate(idx):  # bit-exact color
        assert np.array_equal(recs["color"][j], color[i])
    # Depth aligned to color by rs.align: recorded values, 0 (no data) only where reprojection leaves holes.
    d = recs["depth"]
    assert set(np.unique(d[d > 0])) <= {400 + 7 * i for i in range(N)}
    assert (d > 0).mean() > 0.8
    cap, rx = recs["capture_time"], recs["receive_time"]
    # Monotonic, at the recorded spacing (up to the playback's own scatter), never after the frame
    # was received.
    assert np.all(np.diff(cap) > 0) and np.allclose(np.diff(cap), np.diff(idx) / FPS, atol=0.005)
    assert np.all(rx >= cap) and np.all(np.diff(rx) > 0)


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
