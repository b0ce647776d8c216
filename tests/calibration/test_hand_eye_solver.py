"""The hand-eye solver on synthetic views: every method agrees, and a view whose arm pose is wrong
(the board slipped, a bad robot reading) is dropped as an outlier instead of bending the result."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from calibration.capture import generate_pose_set
from calibration.hand_eye import Obs, calibrate, predict_C
from calibration.procedures import HandEyeProcedure, PoseSetConfig
from robot.geometry.camera_geometry import CharucoSpec, charuco_board
from robot.geometry.transforms import pose_to_matrix


def _views(mount: str, X: np.ndarray, Y: np.ndarray, center: np.ndarray, K: np.ndarray, rng) -> list[Obs]:
    import cv2

    spec = CharucoSpec(squares_x=7, squares_y=5, square_length_m=0.04, marker_length_m=0.03)
    obj = charuco_board(spec).getChessboardCorners().astype(np.float64)
    poses = generate_pose_set(center, PoseSetConfig(n_poses=12, seed=3), np.full(3, -9.0), np.full(3, 9.0))
    out = []
    for i, p in enumerate(poses):
        G = pose_to_matrix(p)
        C = predict_C(mount, X, Y, G)
        img, _ = cv2.projectPoints(obj, cv2.Rodrigues(C[:3, :3])[0], C[:3, 3], K, np.zeros(5))
        img = img.reshape(-1, 2) + rng.normal(0, 0.05, (len(obj), 2))
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, np.zeros(5), flags=cv2.SOLVEPNP_IPPE)
        Cm = np.eye(4)
        Cm[:3, :3], Cm[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
        out.append(Obs(i, G, Cm, obj, img))
    return out


def test_eye_in_hand_solver_drops_a_view_with_a_wrong_arm_pose():
    rng = np.random.default_rng(0)
    K = np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    X = pose_to_matrix([0.061, -0.004, -0.087, 0.02, -0.33, 0.01])  # T_tcp_cam
    center = np.array([0.45, 0.0, 0.3, np.pi, 0.0, 0.0])
    # Board on the table under the camera: Z = T_base_board from the centre view.
    C0 = pose_to_matrix([-0.14, -0.1, 0.3, 0.0, 0.0, 0.0])
    Z = pose_to_matrix(center) @ X @ C0
    views = _views("tool", X, Z, center, K, rng)
    views[5].G = views[5].G @ pose_to_matrix([0.01, 0.0, 0.0, 0.0, 0.02, 0.0])  # the robot lied here
    r = calibrate("tool", views, K, np.zeros(5), HandEyeProcedure(), "wrist")
    assert 5 in r.rejected and "residual" in r.rejected[5]
    assert len(r.rejected) <= 2
    assert np.linalg.norm(r.X[:3, 3] - X[:3, 3]) < 1e-3
    assert Rotation.from_matrix(r.X[:3, :3].T @ X[:3, :3]).magnitude() < np.radians(0.1)
    assert len(r.method_rms_px) == 7  # all OpenCV methods ran and were compared


def test_eye_to_hand_solver_recovers_camera_in_base():
    rng = np.random.default_rng(1)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    center = np.array([0.5, 0.0, 0.1, np.pi, 0.0, 0.0])
    Y = pose_to_matrix([-0.14, -0.1, -0.1, 0.0, 0.0, 0.0])  # T_tcp_board (board faces up)
    # Camera 0.5 m away looking at the board from above and in front.
    board_c = pose_to_matrix(center) @ Y @ np.array([0.14, 0.1, 0.0, 1.0])
    eye = board_c[:3] + np.array([0.25, 0.05, 0.4])
    from robot.geometry.transforms import look_at_rotation

    X = np.eye(4)
    X[:3, :3] = look_at_rotation(eye, board_c[:3], np.array([0.0, 0.0, 1.0]))
    X[:3, 3] = eye
    views = _views("world", X, Y, center, K, rng)
    r = calibrate("world", views, K, np.zeros(5), HandEyeProcedure(), "scene")
    assert not r.rejected
    assert np.linalg.norm(r.X[:3, 3] - X[:3, 3]) < 1e-3
    assert r.rms_px < 0.2
