"""Intrinsics and hand-eye calibration on the sim rig through ``rig calibrate``, against injected
ground truth (odd intrinsics and camera poses the procedures cannot guess), plus the printable board."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot.calibration_data import load_calibration
from robot.config import config_path, load_config
from robot.geometry.camera_geometry import camera_to_parent, charuco_board
from robot.geometry.transforms import pose_to_matrix
from robot.rig_config import RigConfig
from tests.calibration.helpers import run_cli

FAST = ["-p", "poses.n_poses=10"]  # intrinsics: views spread over the image
FAST_HE = ["-p", "poses.n_poses=8"]  # hand-eye: fewer views are plenty


def _gt_camera_pose(overrides: list[str], camera: str) -> np.ndarray:
    rig = load_config(RigConfig, config_path("rig/sim.yaml"), overrides)
    return camera_to_parent(rig.cameras.cameras[camera].sim)


def _pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    dt_mm = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]) * 1e3)
    dr_deg = float(np.degrees(Rotation.from_matrix(T_gt[:3, :3].T @ T_est[:3, :3]).magnitude()))
    return dt_mm, dr_deg


@pytest.mark.timeout(150)
def test_charuco_intrinsics_recover_injected_intrinsics(tmp_path, calibrate, cal_file):
    truth = {"fx": 231.7, "fy": 228.4, "cx": 163.1, "cy": 116.2}
    rc, res, text = calibrate(
        "intrinsics",
        *FAST,
        "cameras.cameras.wrist.sim.intrinsics={fx: 231.7, fy: 228.4, cx: 163.1, cy: 116.2}",
        p=["camera=wrist", f"save_frames_dir={tmp_path / 'views'}"],
    )
    assert rc == 0, text
    for key, value in truth.items():
        assert abs(res[key] - value) < 0.005 * value, (key, res)
    assert res["rms_px"] < 0.5
    intr = load_calibration(cal_file).cameras["wrist"].intrinsics
    assert (intr.width, intr.height) == (320, 240)
    assert abs(intr.cx - 163.1) < 0.005 * 163.1
    assert "ChArUco" in intr.method and intr.residual == pytest.approx(res["rms_px"], abs=1e-3)
    assert len(list((tmp_path / "views").glob("view_*.png"))) == 10


def test_intrinsics_from_saved_images_with_rejection_reasons(tmp_path, calibrate):
    """Images taken by hand (here rendered in-process from odd intrinsics), plus a blank one."""
    from robot.cameras.config import CameraConfig
    from robot.geometry.camera_geometry import PlaneConfig
    from robot.geometry.transforms import look_at_rotation, matrix_to_pose
    from robot.sim.render import SceneRenderer

    # 640x480: at 320x240 these hand-held-like views leave the principal point ~1 px uncertain.
    truth = {"fx": 602.6, "fy": 595.6, "cx": 332.8, "cy": 227.8}
    board = PlaneConfig(kind="charuco", pose=[0.3, 0.1, 0.0005, np.pi, 0.0, 0.0])  # 7x5 table board
    centre = np.array([0.44, 0.0, 0.0])
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(7)
    for i in range(12):
        az, el, dist = (
            rng.uniform(0, 2 * np.pi),
            rng.uniform(np.radians(45), np.radians(80)),
            rng.uniform(0.35, 0.5),
        )
        eye = centre + dist * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        aim = centre + np.r_[rng.uniform(-0.1, 0.1, 2), 0.0]
        T = np.eye(4)
        roll = Rotation.from_rotvec([0.0, 0.0, rng.uniform(-1.2, 1.2)]).as_matrix()  # about the optical axis
        T[:3, :3] = look_at_rotation(eye, aim, np.array([0.0, 0.0, 1.0])) @ roll
        T[:3, 3] = eye
        cfg = CameraConfig(name="c", width=640, height=480)
        cfg.sim.intrinsics = truth
        cfg.sim.pose = matrix_to_pose(T).tolist()
        cfg.sim.planes = {"board": board}
        color, _ = SceneRenderer(cfg.sim, cfg.width, cfg.height).render(None, np.eye(4))
        cv2.imwrite(str(frames / f"img_{i:02d}.png"), cv2.cvtColor(color, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(frames / "img_99_blank.png"), np.full((480, 640, 3), 128, np.uint8))
    rc, res, text = calibrate("intrinsics", p=["camera=scene", f"frames_dir={frames}"])
    assert rc == 0, text
    for key, value in truth.items():
        assert abs(res[key] - value) < 0.005 * value, (key, res)
    assert "board not found" in text  # the blank image is rejected with its reason
    assert res["views_rejected"] >= 1


@pytest.mark.timeout(150)
def test_hand_eye_eye_to_hand_recovers_static_camera_pose(calibrate, cal_file):
    rig_over = [
        "cameras.cameras.scene.sim.pose=[0.737, 0.023, 0.607, 0, 0, 0]",
        "cameras.cameras.scene.sim.look_at=[0.462, -0.017, 0.03]",
    ]
    rc, res, text = calibrate("hand-eye", *FAST_HE, *rig_over, p=["camera=scene"])
    assert rc == 0, text
    assert res["setup"] == "eye-to-hand" and res["frame"] == "T_base_cam"
    assert len(res["methods_rms_px"]) >= 5  # the OpenCV methods were compared
    ext = load_calibration(cal_file).cameras["scene"].extrinsics
    assert ext.mount == "world"
    dt_mm, dr_deg = _pose_error(pose_to_matrix(ext.pose), _gt_camera_pose(rig_over, "scene"))
    assert dt_mm < 2.0 and dr_deg < 0.5, (dt_mm, dr_deg, res)
    assert "pose 1: residual" in text  # per-pose residuals are reported


@pytest.mark.timeout(150)
def test_hand_eye_eye_in_hand_recovers_wrist_camera_pose_with_charuco_intrinsics(calibrate, cal_file):
    rig_over = [
        "cameras.cameras.wrist.sim.pose=[0.057, 0.006, -0.093, 0.03, -0.38, 0.02]",
        "cameras.cameras.wrist.sim.intrinsics={fx: 214.3, fy: 216.9, cx: 157.6, cy: 121.8}",
    ]
    rc, res, text = calibrate("hand-eye", *FAST_HE, *rig_over, p=["camera=wrist", "intrinsics=charuco"])
    assert rc == 0, text
    assert res["setup"] == "eye-in-hand" and res["frame"] == "T_tcp_cam"
    cal = load_calibration(cal_file).cameras["wrist"]
    dt_mm, dr_deg = _pose_error(pose_to_matrix(cal.extrinsics.pose), _gt_camera_pose(rig_over, "wrist"))
    assert dt_mm < 2.0 and dr_deg < 0.5, (dt_mm, dr_deg, res)
    assert abs(cal.intrinsics.fx - 214.3) < 0.005 * 214.3  # written alongside, from the same views


@pytest.mark.timeout(90)
def test_hand_eye_fails_cleanly_when_no_board_is_visible(calibrate, cal_file):
    # The board was mounted upside down: the camera only ever sees its blank back.
    rc, res, text = calibrate(
        "hand-eye", p=["camera=scene", "sim_tool_board_pose=[0.0875, -0.07, -0.1, 0, 3.14159, 0]"]
    )
    assert rc == 1
    assert "saw no board" in text and "camera scene" in text
    assert "error" in res
    assert not cal_file.exists()


def test_too_few_poses_is_refused_before_moving(calibrate, cal_file):
    for what in ("hand-eye", "intrinsics"):
        rc, res, text = calibrate(what, p=["poses.n_poses=3"])
        assert rc == 1
        assert "too few poses" in text
    assert not cal_file.exists()


def test_printable_board_is_detectable_at_true_scale(tmp_path, capsys):
    png = tmp_path / "board.png"
    rc, res, _ = run_cli(capsys, ["board", "--out", str(png), "--dpi", "150"])
    assert rc == 0
    assert res["size_mm"] == pytest.approx([300.0, 220.0], abs=0.2)  # 7x5 squares of 40 mm + 10 mm margins
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (res["pixels"][1], res["pixels"][0])
    from robot.geometry.camera_geometry import CharucoSpec

    board = charuco_board(CharucoSpec(squares_x=7, squares_y=5, square_length_m=0.04, marker_length_m=0.03))
    _, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(img)
    assert ids is not None and len(ids) == 6 * 4
    pdf = tmp_path / "board.pdf"
    rc, res, _ = run_cli(capsys, ["board", "--out", str(pdf), "-p", "preset=tool"])
    assert rc == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    assert res["squares"] == [5, 4]


def test_unknown_procedure_key_is_a_config_error(calibrate, cal_file):
    rc, res, text = calibrate("hand-eye", p=["poses.n_pose=10"])
    assert rc == 2
    assert "poses.n_pose" in text
    assert not cal_file.exists()


@pytest.mark.timeout(90)
def test_factory_intrinsics_are_read_from_the_device(calibrate, cal_file):
    rc, res, text = calibrate(
        "intrinsics",
        "cameras.cameras.scene.sim.intrinsics={fx: 341.9, fy: 338.2, cx: 157.3, cy: 122.6}",
        p=["source=factory", "camera=scene"],
    )
    assert rc == 0, text
    assert (res["fx"], res["fy"], res["cx"], res["cy"]) == pytest.approx((341.9, 338.2, 157.3, 122.6))
    intr = load_calibration(cal_file).cameras["scene"].intrinsics
    assert intr.fx == pytest.approx(341.9) and intr.method.startswith("factory")
