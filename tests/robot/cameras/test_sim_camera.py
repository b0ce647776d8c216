"""Simulated cameras through their real processes: frame timing, injected latency/jitter/drops, and an
exact pinhole image (ChArUco corners, object outlines, the tool at the capture-time world state)."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from robot.cameras.camera import Camera
from robot.cameras.config import CameraConfig
from robot.geometry.camera_geometry import PlaneConfig, charuco_board
from robot.sim.world_state import ObjectKind
from tests.robot.cameras.helpers import (
    T_from_pose,
    collect_frames,
    empty_world_record,
    make_world_ring,
    mask_centroid,
    polygon_centroid,
    project,
)

pytestmark = pytest.mark.timeout(60)


def first_frame(cam: Camera, timeout_s: float = 10.0) -> dict:
    """The newest frame once the camera has one (waiting up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while cam.ring.count == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return cam.ring.latest()


def frame_of_world(cfg: CameraConfig, world_record: dict) -> dict:
    """The first frame a sim camera ``cfg`` renders of a world frozen at ``world_record``."""
    world = make_world_ring()
    try:
        world.put(world_record)
        with Camera(cfg, world_ring=world) as cam:
            return first_frame(cam)
    finally:
        world.close()


@pytest.mark.parametrize("fps,latency_s", [(30.0, 0.083), (20.0, 0.137)])
def test_frames_arrive_at_fps_with_injected_latency(fps, latency_s):
    cfg = CameraConfig(
        name="lat", fps=fps, width=320, height=240, sim={"latency_s": latency_s, "jitter_s": 0.003, "seed": 4}
    )
    with Camera(cfg) as cam:
        time.sleep(0.3)  # let the pipeline fill (frames in flight = latency / period)
        got = collect_frames(cam.ring, 2.5)
        stats = cam.stats()
    n = len(got["frame_index"])
    assert n >= 0.9 * 2.5 * fps
    # Delivered rate over the whole window (robust to a pause of a few frames), within 2%.
    rx = got["receive_time"]
    rate = (n - 1) / (rx[-1] - rx[0])
    assert abs(rate - fps) / fps < 0.02, rate
    assert np.all(np.diff(got["frame_index"]) >= 1) and np.all(np.diff(rx) >= 0)
    # Capture times are on the camera's frame grid; latency = receive - capture is the injected one.
    cap = got["capture_time"]
    grid = (cap - cap[0]) * fps
    assert np.allclose(grid, np.round(grid), atol=1e-6)
    lat = rx - cap
    assert abs(lat.mean() - latency_s) < 0.001
    assert 0.0015 < lat.std() < 0.0045  # the injected 3 ms jitter is there
    # Never visible before its receive time: the latency is real, not just a stamp.
    assert np.all(got["seen_time"] >= rx)
    assert abs(stats["latency_mean_s"] - latency_s) < 0.002 and abs(stats["fps"] - fps) / fps < 0.02


def test_injected_drops_show_as_frame_index_gaps():
    cfg = CameraConfig(name="drops", width=320, height=240, sim={"drop_prob": 0.2, "seed": 11})
    with Camera(cfg) as cam:
        got = collect_frames(cam.ring, 2.0)
        stats = cam.stats()
    idx = got["frame_index"]
    gaps = int((np.diff(idx) - 1).sum())
    span = idx[-1] - idx[0] + 1
    assert 0.08 < gaps / span < 0.35, (gaps, span)
    assert stats["dropped"] >= gaps  # the camera's own counter saw every gap the reader saw
    assert stats["frames"] + stats["dropped"] >= idx[-1] - 1


def _board_plane(pose) -> PlaneConfig:
    return PlaneConfig(
        kind="charuco",
        pose=pose,
        charuco={
            "squares_x": 7,
            "squares_y": 5,
            "square_length_m": 0.04,
            "marker_length_m": 0.03,
            "px_per_square": 96,
        },
    )


def _detect_charuco(img_rgb: np.ndarray, plane: PlaneConfig):
    board = charuco_board(plane.charuco)
    detector = cv2.aruco.CharucoDetector(board)
    gray = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY)
    corners, ids, _, _ = detector.detectBoard(gray)
    assert ids is not None and len(ids) >= 12, "board not detected in the rendered image"
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
    corners = cv2.cornerSubPix(gray, corners.astype(np.float32), (4, 4), (-1, -1), crit)
    return corners.reshape(-1, 2), ids.ravel(), board.getChessboardCorners()


@pytest.mark.parametrize("crop,resize", [(None, None), ([60, 40, 520, 400], [390, 300])])
def test_charuco_corners_land_at_their_pinhole_projection(crop, resize):
    # Non-default intrinsics and a tilted board, so nothing matches by accident; with crop + resize
    # the published intrinsics must describe the published images.
    board_pose = [0.42, 0.08, 0.0005, np.pi, 0.0, 0.35]
    plane = _board_plane(board_pose)
    cam_pose = [0.95, 0.05, 0.55, -1.8, -1.6, 0.8]
    intr = {"fx": 640.0, "fy": 628.0, "cx": 331.7, "cy": 228.4}
    cfg = CameraConfig(
        name="pinhole",
        depth=True,
        crop=crop,
        resize=resize,
        sim={"pose": cam_pose, "intrinsics": intr, "planes": {"b": plane}},
    )
    with Camera(cfg) as cam:
        frame = first_frame(cam)
        got_intr = cam.intrinsics
    if crop is None:
        assert (got_intr.fx, got_intr.fy, got_intr.cx, got_intr.cy) == (640.0, 628.0, 331.7, 228.4)
    else:
        assert frame["color"].shape == (300, 390, 3) and (got_intr.width, got_intr.height) == (390, 300)
    corners, ids, obj = _detect_charuco(frame["color"], plane)
    K = got_intr.K
    T_world_cam = T_from_pose(cam_pose)
    pts_world = obj[ids] @ T_from_pose(board_pose)[:3, :3].T + T_from_pose(board_pose)[:3, 3]
    expected = project(K, T_world_cam, pts_world)
    err = np.linalg.norm(corners - expected, axis=1)
    # No systematic offset (a half-pixel convention slip would show here), and small scatter (larger
    # in the 0.75x resized image, where the squares are smaller).
    assert np.linalg.norm((corners - expected).mean(axis=0)) < 0.05
    limit_mean, limit_max = (0.1, 0.3) if resize is None else (0.15, 0.45)
    assert err.mean() < limit_mean and err.max() < limit_max, err
    if crop is not None:
        return
    # Depth (mm along the optical axis) at the detected corners matches the geometry within 1 mm.
    z_expected = (pts_world @ np.linalg.inv(T_world_cam)[:3, :3].T + np.linalg.inv(T_world_cam)[:3, 3])[:, 2]
    uv = np.round(corners).astype(int)
    z_got = frame["depth"][uv[:, 1], uv[:, 0]] * got_intr.depth_scale_m
    assert np.abs(z_got - z_expected).max() < 0.0015


def test_wrist_camera_follows_the_tool_and_renders_objects_exactly():
    """Tool-mounted camera + world ring: the board seen from the wrist and a marker disc's outline
    land at the projection through T_world_tool(tcp_pose) @ T_tool_cam."""
    board_pose = [0.40, -0.02, 0.0005, np.pi, 0.0, 0.0]
    plane = _board_plane(board_pose)
    cam_pose = [-0.06, 0.01, -0.08, 0.05, 0.12, -0.03]
    intr = {"fx": 420.0, "fy": 420.0, "cx": 319.5, "cy": 239.5}
    cfg = CameraConfig(
        name="wrist", sim={"mount": "tool", "pose": cam_pose, "intrinsics": intr, "planes": {"b": plane}}
    )
    tcp = [0.49, 0.03, 0.27, np.pi - 0.1, 0.05, 0.2]
    marker_xy, marker_d = (0.60, 0.12), 0.05
    rec = empty_world_record(0.0, tcp)
    rec["object_kind"][0] = ObjectKind.MARKER
    rec["object_pose"][0] = [*marker_xy, 0.0, 0, 0, 0]
    rec["object_size"][0] = [marker_d, marker_d, 0.0001]  # thin: its rim hardly shows
    frame = frame_of_world(cfg, rec)
    K = np.array([[420.0, 0, 319.5], [0, 420.0, 239.5], [0, 0, 1]])
    T_world_cam = T_from_pose(tcp) @ T_from_pose(cam_pose)
    corners, ids, obj = _detect_charuco(frame["color"], plane)
    pts = obj[ids] @ T_from_pose(board_pose)[:3, :3].T + T_from_pose(board_pose)[:3, 3]
    err = np.linalg.norm(corners - project(K, T_world_cam, pts), axis=1)
    assert err.mean() < 0.1 and err.max() < 0.3, err
    # The red disc: its pixel centroid equals the centroid of its projected outline (top face).
    a = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    rim = np.stack(
        [
            marker_xy[0] + marker_d / 2 * np.cos(a),
            marker_xy[1] + marker_d / 2 * np.sin(a),
            np.full_like(a, 0.0001),
        ],
        1,
    )
    img = frame["color"].astype(int)
    red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.sum() > 200
    c = mask_centroid(red)
    assert np.linalg.norm(c - polygon_centroid(project(K, T_world_cam, rim))) < 0.2


def test_frame_shows_the_world_state_at_its_capture_time():
    """The sim arm moves the tool at 1 m/s; each frame shows the tool where the world record at or
    before its capture_time puts it (not where it is when the frame is received, 120 ms later)."""
    cam_pose = [0.5, -0.6, 0.35, -2.0, 0.0, 0.0]  # looking at the workspace from the side
    cfg = CameraConfig(name="tracker", sim={"pose": cam_pose, "latency_s": 0.12, "look_at": [0.5, 0.0, 0.2]})
    from robot.geometry.camera_geometry import camera_to_parent

    T_world_cam = camera_to_parent(cfg.sim)
    K = np.array([[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]])
    world = make_world_ring(capacity=512)
    stop = threading.Event()
    t0 = time.monotonic()

    def tcp_at(t):  # back and forth along x between 0.3 and 0.7 m at 1 m/s, height 0.2 m
        s = ((t - t0) * 1.0) % 0.8
        x = 0.3 + (s if s < 0.4 else 0.8 - s)
        return [x, 0.0, 0.2, np.pi, 0, 0]

    def arm():
        while not stop.is_set():
            t = time.monotonic()
            world.put(empty_world_record(t, tcp_at(t)))
            time.sleep(0.004)

    th = threading.Thread(target=arm, daemon=True)
    th.start()
    try:
        with Camera(cfg, world_ring=world) as cam:
            time.sleep(1.0)
            frames = cam.ring.get_last(20)
            hist = world.get_last(world.capacity)
    finally:
        stop.set()
        th.join()
        world.close()
    checked = 0
    for img, t_cap in zip(frames["color"], frames["capture_time"], strict=True):
        i = np.searchsorted(hist["time"], t_cap, side="right") - 1
        if i < 0:
            continue
        tip = hist["tcp_pose"][i][:3]
        img = img.astype(int)
        orange = (img[..., 0] > 200) & (img[..., 1] > 100) & (img[..., 1] < 180) & (img[..., 2] < 60)
        assert orange.sum() > 30
        expected = project(K, T_world_cam, tip[None])[0]
        # The tool moves along world x = image x of this camera: the tip's pixels are centred on its
        # projection in x (one world step is ~4 mm = ~3 px here, one frame period 33 mm = ~25 px,
        # the latency 120 mm). In y the body hides the top of the ball, so only roughly.
        c = mask_centroid(orange)
        assert abs(c[0] - expected[0]) < 1.0 and abs(c[1] - expected[1]) < 8
        checked += 1
    assert checked >= 10


def test_screen_plane_shows_the_image_displayed_at_capture_time():
    """The calibration code puts (image, display_time) records; each frame shows the image whose
    display_time is the newest at or before its capture_time (not the newest put)."""
    screen = PlaneConfig(
        kind="screen",
        pose=[0.55, -0.15, 0.3, -np.pi / 2, 0, 0],
        width_m=0.3,
        height_m=0.2,
        screen_width_px=64,
        screen_height_px=48,
    )
    # Camera at the front looking at the screen (screen plane faces -y: its -z side toward the camera).
    cfg = CameraConfig(
        name="screencam",
        width=320,
        height=240,
        sim={
            "pose": [0.7, -0.8, 0.2, 0, 0, 0],
            "look_at": [0.7, -0.15, 0.2],
            "intrinsics": {"fx": 300.0, "fy": 300.0, "cx": 159.5, "cy": 119.5},
            "latency_s": 0.05,
            "planes": {"screen": screen},
        },
    )
    from robot.cameras.sim import create_screen_ring

    ring = create_screen_ring(screen)
    shown = []  # (display_time, level)
    stop = threading.Event()

    def display():
        i = 0
        while not stop.is_set():
            level = 20 + (i * 37) % 220
            t_disp = time.monotonic() + 0.03  # shown 30 ms after it is handed over
            ring.put({"image": np.full((48, 64, 3), level, np.uint8), "display_time": t_disp})
            shown.append((t_disp, level))
            i += 1
            time.sleep(0.045)

    th = threading.Thread(target=display, daemon=True)
    try:
        with Camera(cfg, screen_ring=ring) as cam:
            th.start()
            time.sleep(1.5)
            frames = cam.ring.get_last(25)
    finally:
        stop.set()
        th.join()
        ring.close()
    disp = np.array(shown)
    checked = 0
    for img, t_cap in zip(frames["color"], frames["capture_time"], strict=True):
        i = np.searchsorted(disp[:, 0], t_cap, side="right") - 1
        if i < 0:
            continue
        # The centre of the screen (projects to the image centre for this camera).
        assert abs(int(img[120, 160, 0]) - int(disp[i, 1])) <= 1, (t_cap, disp[i], img[120, 160])
        checked += 1
    assert checked >= 15


def test_board_on_the_tool_is_seen_by_a_fixed_camera_where_the_tool_puts_it():
    """Eye-to-hand setup: a ChArUco board mounted on the tool, seen by a world camera."""
    board_in_tool = [-0.14, 0.10, 0.03, np.pi, 0.0, 0.0]  # its face (plane -z) looks along tool +z
    plane = _board_plane(board_in_tool).model_copy(update={"mount": "tool"})
    cam_pose = [0.5, 0.0, 0.9, np.pi, 0, 0]  # looking straight down from 0.9 m
    tcp = [0.48, 0.02, 0.35, 0.15, -0.1, 0.4]  # tool z about up: the board faces the camera
    cfg = CameraConfig(name="e2h", sim={"pose": cam_pose, "planes": {"b": plane}})
    frame = frame_of_world(cfg, empty_world_record(0.0, tcp))
    corners, ids, obj = _detect_charuco(frame["color"], plane)
    T_world_board = T_from_pose(tcp) @ T_from_pose(board_in_tool)
    pts = obj[ids] @ T_world_board[:3, :3].T + T_world_board[:3, 3]
    K = np.array([[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]])
    err = np.linalg.norm(corners - project(K, T_from_pose(cam_pose), pts), axis=1)
    assert err.mean() < 0.1 and err.max() < 0.3, err
