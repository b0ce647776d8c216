"""Starting the rig for a calibration, and the fixtures the simulated rig adds for it.

Calibration runs the normal :class:`robot.env.Env` (arm + cameras, no SpaceMouse: the sim rig's
SpaceMouse is a scripted expert that would move the arm). On the sim rig the task is replaced by an
empty table, and the procedure's fixture (a screen in front of a camera, a ChArUco board on the tool
or the table) is added to the sim camera's scene, standing in for what the operator sets up by hand.
"""

from __future__ import annotations

import numpy as np

from robot.calibration_data import CalibrationFile
from robot.env import Env
from robot.geometry.camera_geometry import PlaneConfig
from robot.rig_config import RigConfig


def open_env(rig: RigConfig, calibration: CalibrationFile, screen_rings: dict | None = None) -> Env:
    """An unstarted Env for calibration (use as a context manager); sim: empty table."""
    task = None
    if rig.is_sim:
        from robot.sim.world import NoTask

        task = NoTask()
    return Env(rig, spacemouse=False, task=task, calibration=calibration, screen_rings=screen_rings)


def check_cameras(rig: RigConfig, names: list[str]) -> list[str]:
    """``names`` (all cameras when empty), each checked to exist in the rig."""
    known = list(rig.cameras.cameras)
    if not known:
        from calibration.result import CalibrationError

        raise CalibrationError(f"rig {rig.name!r} has no cameras configured (cameras.cameras is empty)")
    if not names:
        return known
    bad = [n for n in names if n not in known]
    if bad:
        from calibration.result import CalibrationError

        raise CalibrationError(f"unknown camera(s) {bad}; rig {rig.name!r} has {known}")
    return list(names)


def with_sim_plane(rig: RigConfig, camera: str, plane_name: str, plane: PlaneConfig) -> RigConfig:
    """A copy of ``rig`` whose sim camera ``camera`` also sees ``plane``."""
    out = rig.model_copy(deep=True)
    out.cameras.cameras[camera].sim.planes[plane_name] = plane
    return out


def screen_plane_in_front(
    rig: RigConfig, camera: str, distance_m: float, fill: float, width_px: int, height_px: int
) -> PlaneConfig:
    """A ``screen`` plane facing sim camera ``camera`` on its optical axis at ``distance_m``, covering
    ``fill`` of the image width, mounted like the camera (world or tool)."""
    from robot.geometry.camera_geometry import camera_to_parent
    from robot.geometry.transforms import matrix_to_pose, pose_to_matrix

    cam = rig.cameras.cameras[camera]
    width_m = fill * distance_m * cam.width / cam.sim.intrinsics.fx
    height_m = width_m * height_px / width_px
    # Plane frame = camera frame shifted: x right, y down, z away from the camera (visible side -z).
    T_cam_plane = pose_to_matrix([-width_m / 2, -height_m / 2, distance_m, 0.0, 0.0, 0.0])
    T = camera_to_parent(cam.sim) @ T_cam_plane
    return PlaneConfig(
        kind="screen",
        mount=cam.sim.mount,
        pose=[float(v) for v in matrix_to_pose(T)],
        width_m=width_m,
        height_m=height_m,
        screen_width_px=width_px,
        screen_height_px=height_px,
    )


def home_pose(rig: RigConfig) -> np.ndarray:
    return np.asarray(rig.arm.start_pose, dtype=np.float64)


def move_and_settle(
    env: Env,
    pose: np.ndarray,
    speed_m_s: float = 0.1,
    settle_s: float = 0.3,
    angular_speed_rad_s: float = 0.5,
) -> None:
    """Move the arm to ``pose`` at no more than ``speed_m_s`` / ``angular_speed_rad_s`` (the controller
    also applies its own limits), wait until it is at rest there, then ``settle_s`` more."""
    import time

    from robot.arm.interpolator import pose_distance

    state = env.arm.get_state()
    lin, ang = pose_distance(state["actual_tcp_pose"], pose)
    duration = max(lin / speed_m_s, ang / angular_speed_rad_s, 0.2)
    env.arm.servo_to(pose, duration)
    deadline = time.monotonic() + duration + 10.0
    while time.monotonic() < deadline:
        env.check()
        env.heartbeat()  # a real arm's controller stops it after heartbeat_timeout_s without one
        st = env.arm.get_state()
        lin, ang = pose_distance(st["actual_tcp_pose"], pose)
        if lin < 5e-4 and ang < 2e-3 and float(np.linalg.norm(st["actual_tcp_speed"][:3])) < 1e-3:
            settle_end = time.monotonic() + settle_s
            while time.monotonic() < settle_end:
                env.heartbeat()
                time.sleep(min(0.1, settle_s))
            return
        time.sleep(0.02)
    raise RuntimeError(f"arm did not reach {np.round(pose, 4).tolist()} (workspace limits? reachability?)")
