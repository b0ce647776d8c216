"""Board views for intrinsics and hand-eye: generated pose set, arm motion, frames, ChArUco detection.

:func:`capture_views` moves the arm through :func:`generate_pose_set` (speed-limited
``servo_to`` moves inside the workspace box), waits at each pose until the arm is at rest, takes
the first frame *captured* after that (so camera latency does not matter), and records the arm's
TCP pose with it. Each view is then searched for the ChArUco board.

The two setups (``mount``): ``world`` = a static camera and the board on the tool (eye-to-hand);
``tool`` = a camera on the tool and the board on the table (eye-in-hand). On the sim rig the board
is added to the camera's scene (see :mod:`calibration.rig_session`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from calibration.procedures import CaptureProcedure, PoseSetConfig
from calibration.result import CalibrationError, progress
from robot.geometry.camera_geometry import CharucoSpec, PlaneConfig, camera_to_parent, charuco_board
from robot.geometry.transforms import matrix_to_pose, pose_to_matrix
from robot.rig_config import RigConfig


# ---------------------------------------------------------------------------------------- pose set
def generate_pose_set(center: np.ndarray, cfg: PoseSetConfig, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``cfg.n_poses`` TCP poses (N, 6) around ``center`` (see :class:`PoseSetConfig`), ordered for
    short moves; the first is the centre itself. Raises CalibrationError if the box leaves the
    workspace ``lo..hi``."""
    from scipy.stats import qmc

    rng_box = np.asarray(cfg.translation_range_m)
    c = np.asarray(center, dtype=np.float64)
    if np.any(c[:3] - rng_box < lo - 1e-9) or np.any(c[:3] + rng_box > hi + 1e-9):
        raise CalibrationError(
            f"the pose set around {np.round(c[:3], 3).tolist()} +- {rng_box.tolist()} m leaves the workspace "
            f"{np.round(lo, 3).tolist()}..{np.round(hi, 3).tolist()}: change the centre offset or translation_range_m"
        )
    n = cfg.n_poses
    u = qmc.Halton(d=5, scramble=True, seed=cfg.seed).random(max(n - 1, 1))[: n - 1]
    R0 = Rotation.from_rotvec(c[3:])
    poses = [c.copy()]
    for row in u:
        p = c.copy()
        p[:3] += (2 * row[:3] - 1) * rng_box
        phi = 2 * math.pi * row[3]
        tilt = math.radians(cfg.tilt_deg) * math.sqrt(0.3 + 0.7 * row[4])
        yaw = math.radians(cfg.yaw_deg) * math.sin(2 * math.pi * (row[3] * 3 + row[4]))
        R_tilt = Rotation.from_rotvec(tilt * np.array([math.cos(phi), math.sin(phi), 0.0]))
        R_yaw = Rotation.from_rotvec([0.0, 0.0, yaw])
        p[3:] = (R_tilt * R_yaw * R0).as_rotvec()
        poses.append(p)
    # Greedy nearest-neighbour order from the centre: short, quick moves.
    order = [0]
    left = list(range(1, len(poses)))
    while left:
        last = poses[order[-1]]
        j = min(left, key=lambda k: np.linalg.norm(poses[k][:3] - last[:3]))
        order.append(j)
        left.remove(j)
    return np.array([poses[k] for k in order])


def resolve_mount(rig: RigConfig, camera: str, mount: str, calibration) -> str:
    if mount != "auto":
        return mount
    cam = rig.cameras.cameras[camera]
    if cam.backend == "sim":
        return cam.sim.mount
    cal = calibration.cameras.get(camera) if calibration is not None else None
    if cal is not None and cal.extrinsics is not None:
        return cal.extrinsics.mount
    return "world"


def pose_set_center(rig: RigConfig, mount: str, cfg: PoseSetConfig) -> np.ndarray:
    c = np.asarray(rig.arm.start_pose, dtype=np.float64).copy()
    off = cfg.world_camera_center_offset_m if mount == "world" else cfg.tool_camera_center_offset_m
    c[:3] += np.asarray(off)
    return c


def board_spec(proc: CaptureProcedure, mount: str) -> CharucoSpec:
    return proc.tool_board if mount == "world" else proc.table_board


def board_size_m(spec: CharucoSpec) -> tuple[float, float]:
    return spec.squares_x * spec.square_length_m, spec.squares_y * spec.square_length_m


def sim_board_plane(
    rig: RigConfig, camera: str, mount: str, proc: CaptureProcedure, center: np.ndarray
) -> PlaneConfig:
    """The board the sim rig adds for the procedure (the operator's job on a real rig)."""
    spec = board_spec(proc, mount)
    if mount == "world":
        return PlaneConfig(kind="charuco", mount="tool", pose=list(proc.sim_tool_board_pose), charuco=spec)
    if proc.sim_table_board != "under_camera":
        return PlaneConfig(kind="charuco", mount="world", pose=list(proc.sim_table_board), charuco=spec)
    T_world_cam = pose_to_matrix(center) @ camera_to_parent(rig.cameras.cameras[camera].sim)
    o, z = T_world_cam[:3, 3], T_world_cam[:3, 2]
    if z[2] > -0.2:
        raise CalibrationError(
            f"camera {camera} does not look down at the table: put the board by hand (sim_table_board)"
        )
    hit = o + z * ((0.0005 - o[2]) / z[2])
    x = T_world_cam[:3, 0].copy()
    x[2] = 0.0
    x /= np.linalg.norm(x)
    zb = np.array([0.0, 0.0, -1.0])
    yb = np.cross(zb, x)
    R = np.column_stack([x, yb, zb])
    w, h = board_size_m(spec)
    origin = hit - R @ np.array([w / 2, h / 2, 0.0])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, origin
    return PlaneConfig(
        kind="charuco", mount="world", pose=[float(v) for v in matrix_to_pose(T)], charuco=spec
    )


# ---------------------------------------------------------------------------------------- detection
@dataclass
class View:
    """One board view: the frame, the arm's TCP pose (base frame) and the detected corners."""

    index: int
    tcp_pose: np.ndarray
    image: np.ndarray = field(repr=False)
    ids: np.ndarray | None = None
    corners_px: np.ndarray | None = None  # (n, 2)
    object_m: np.ndarray | None = None  # (n, 3) board-frame coordinates
    rejected: str = ""

    @property
    def n_corners(self) -> int:
        return 0 if self.ids is None else len(self.ids)


class BoardDetector:
    def __init__(self, spec: CharucoSpec):
        self.board = charuco_board(spec)
        params = cv2.aruco.CharucoParameters()
        self._det = cv2.aruco.CharucoDetector(self.board, params)
        self._obj = self.board.getChessboardCorners()

    def detect(self, view: View, min_corners: int) -> None:
        gray = cv2.cvtColor(view.image, cv2.COLOR_RGB2GRAY) if view.image.ndim == 3 else view.image
        corners, ids, _, _ = self._det.detectBoard(gray)
        if ids is None or len(ids) == 0:
            view.rejected = "board not found"
            return
        view.ids = ids.ravel().astype(int)
        view.corners_px = corners.reshape(-1, 2).astype(np.float64)
        view.object_m = self._obj[view.ids].astype(np.float64)
        if len(view.ids) < min_corners:
            view.rejected = f"only {len(view.ids)} corners (need {min_corners})"
            return
        # Corners on one line (a board row seen edge-on) determine no pose.
        obj = view.object_m[:, :2] - view.object_m[:, :2].mean(axis=0)
        s = np.linalg.svd(obj, compute_uv=False)
        if s[1] < 1e-3 * s[0] or s[1] < 0.5 * self.board.getSquareLength():
            view.rejected = "corners (nearly) collinear"


# ---------------------------------------------------------------------------------------- capture
def _frame_after(env, camera: str, t_after: float, timeout_s: float = 3.0) -> np.ndarray:
    cam = env.cameras.cameras[camera]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = cam.ring.latest() if cam.ring.count else None
        if rec is not None and float(rec["capture_time"]) >= t_after:
            return np.array(rec["color"])
        time.sleep(0.01)
    raise RuntimeError(f"camera {camera}: no frame captured within {timeout_s:.0f} s; is it streaming?")


def capture_views(
    env, camera: str, poses: np.ndarray, proc: CaptureProcedure, detector: BoardDetector
) -> list[View]:
    """Visit ``poses``, take one frame at each (see module docstring), detect the board."""
    from calibration.rig_session import move_and_settle

    cfg = proc.poses
    views: list[View] = []
    for i, pose in enumerate(poses):
        move_and_settle(
            env,
            pose,
            speed_m_s=cfg.speed_m_s,
            settle_s=cfg.settle_s,
            angular_speed_rad_s=cfg.angular_speed_rad_s,
        )
        t_rest = time.monotonic()
        tcp = np.array(env.arm.get_state()["actual_tcp_pose"])
        view = View(i, tcp, _frame_after(env, camera, t_rest))
        detector.detect(view, proc.min_corners)
        views.append(view)
        status = f"{view.n_corners} corners" if not view.rejected else view.rejected
        progress(f"  pose {i + 1}/{len(poses)}: {status}")
        if i + 1 == proc.abort_after_missing and all(v.ids is None for v in views):
            break
    return views


def check_views(views: list[View], camera: str, min_poses: int, what: str) -> list[View]:
    """The usable views; CalibrationError when the board was never seen or too few views remain."""
    if not views:
        raise CalibrationError(f"{what}: no poses were visited (n_poses = 0?)")
    if all(v.ids is None for v in views):
        raise CalibrationError(
            f"{what}: camera {camera} saw no board at the first {len(views)} poses. Check that the board is "
            "mounted (tool for a static camera, table for a wrist camera), in view, lit and matches the "
            "procedure's board spec (dictionary, squares)."
        )
    good = [v for v in views if not v.rejected]
    if len(good) < min_poses:
        reasons = "; ".join(f"pose {v.index + 1}: {v.rejected}" for v in views if v.rejected)
        raise CalibrationError(
            f"{what}: only {len(good)} usable views of camera {camera} (need {min_poses}). Rejected: {reasons or 'none'}. "
            "Use more poses (-p poses.n_poses=...) or keep the board in view."
        )
    return good


def run_capture(rig: RigConfig, calibration, proc: CaptureProcedure, what: str):
    """Start the rig (with the sim board if simulated), capture the views. Returns
    (camera name, mount, board spec, views, device intrinsics, rig config used)."""
    from calibration.rig_session import check_cameras, open_env, with_sim_plane

    camera = check_cameras(rig, [proc.camera] if proc.camera else [])[0]
    mount = resolve_mount(rig, camera, proc.mount, calibration)
    if proc.poses.n_poses < proc.min_poses:
        raise CalibrationError(
            f"{what}: {proc.poses.n_poses} poses requested but at least {proc.min_poses} usable views are needed "
            "(too few poses): raise -p poses.n_poses"
        )
    center = pose_set_center(rig, mount, proc.poses)
    lo, hi = np.asarray(rig.arm.limits.workspace_min_m), np.asarray(rig.arm.limits.workspace_max_m)
    poses = generate_pose_set(center, proc.poses, lo, hi)
    spec = board_spec(proc, mount)
    cam_cfg = rig.cameras.cameras[camera]
    if rig.is_sim and cam_cfg.backend == "sim":
        rig = with_sim_plane(
            rig, camera, "calibration_board", sim_board_plane(rig, camera, mount, proc, center)
        )
    setup = (
        "eye-to-hand: static camera, board on the tool"
        if mount == "world"
        else "eye-in-hand: camera on the tool, board on the table"
    )
    progress(
        f"{what}: camera {camera} ({setup}); {len(poses)} poses; board {spec.squares_x}x{spec.squares_y} {spec.dictionary}"
    )
    detector = BoardDetector(spec)
    with open_env(rig, calibration) as env:
        intr = env.cameras.cameras[camera].intrinsics
        views = capture_views(env, camera, poses, proc, detector)
    return camera, mount, spec, views, intr, rig
