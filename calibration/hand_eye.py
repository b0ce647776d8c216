"""Hand-eye calibration: where a camera is, from board views at known arm poses.

Setups (``mount``): ``world`` (eye-to-hand: a static camera, the board on the tool) solves
``X = T_base_cam`` and ``Y = T_tcp_board`` from ``T_cam_board_i = X^-1 T_base_tcp_i Y``; ``tool``
(eye-in-hand: the camera on the tool, the board on the table) solves ``X = T_tcp_cam`` and
``Z = T_base_board`` from ``T_cam_board_i = X^-1 T_base_tcp_i^-1 Z``.

Every method in ``methods`` is tried: ``cv2.calibrateHandEye`` (TSAI, PARK, HORAUD, ANDREFF,
DANIILIDIS; the second unknown is then averaged over the views) and
``cv2.calibrateRobotWorldHandEye`` (SHAH, LI). Each solution is scored by the board corners'
reprojection RMS over all views when the board pose is *predicted* from the arm pose and the
solution; the best is kept and (``refine``) polished by least squares on that same reprojection
error. Views whose residual is far above the median are dropped (with their residual printed) and
the solution recomputed. The result is the camera pose in the calibration file (``T_base_cam`` for a
world camera, ``T_tcp_cam`` for a wrist camera), with its residual.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from calibration.capture import View, check_views, run_capture
from calibration.procedures import HandEyeProcedure, load_procedure
from calibration.result import CalibrationError, emit_json, progress, result_path, update_calibration
from robot.calibration_data import ExtrinsicsValue
from robot.geometry.transforms import invert, matrix_to_pose, pose_to_matrix
from robot.rig_config import RigConfig

HAND_EYE_METHODS = {
    "TSAI": cv2.CALIB_HAND_EYE_TSAI,
    "PARK": cv2.CALIB_HAND_EYE_PARK,
    "HORAUD": cv2.CALIB_HAND_EYE_HORAUD,
    "ANDREFF": cv2.CALIB_HAND_EYE_ANDREFF,
    "DANIILIDIS": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
ROBOT_WORLD_METHODS = {"SHAH": cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH, "LI": cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI}


def _T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).ravel()
    return T


@dataclass
class Obs:
    """One usable view: arm pose ``G = T_base_tcp``, board pose ``C = T_cam_board`` (PnP), corners."""

    index: int
    G: np.ndarray
    C: np.ndarray
    obj: np.ndarray
    img: np.ndarray


def board_poses(views: list[View], K: np.ndarray, dist: np.ndarray) -> list[Obs]:
    out = []
    for v in views:
        obj, img = v.object_m.astype(np.float64), v.corners_px.astype(np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            v.rejected = "board pose (PnP) failed"
            continue
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
        out.append(Obs(v.index, pose_to_matrix(v.tcp_pose), _T(cv2.Rodrigues(rvec)[0], tvec), obj, img))
    return out


def predict_C(mount: str, X: np.ndarray, Y: np.ndarray, G: np.ndarray) -> np.ndarray:
    return invert(X) @ G @ Y if mount == "world" else invert(X) @ invert(G) @ Y


def _mean_T(Ts: list[np.ndarray]) -> np.ndarray:
    R = Rotation.from_matrix(np.array([T[:3, :3] for T in Ts])).mean().as_matrix()
    return _T(R, np.mean([T[:3, 3] for T in Ts], axis=0))


def solve(method: str, mount: str, obs: list[Obs]) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) by one OpenCV method (see the module docstring for X, Y per mount)."""
    G = [o.G for o in obs]
    C = [o.C for o in obs]
    if method in HAND_EYE_METHODS:
        A = [invert(g) for g in G] if mount == "world" else G
        R, t = cv2.calibrateHandEye(
            [a[:3, :3] for a in A],
            [a[:3, 3] for a in A],
            [c[:3, :3] for c in C],
            [c[:3, 3] for c in C],
            method=HAND_EYE_METHODS[method],
        )
        X = _T(R, t)
        Y = (
            _mean_T([invert(g) @ X @ c for g, c in zip(G, C, strict=True)])
            if mount == "world"
            else _mean_T([g @ X @ c for g, c in zip(G, C, strict=True)])
        )
        return X, Y
    if method in ROBOT_WORLD_METHODS:
        W = [invert(c) for c in C] if mount == "world" else C
        B = [invert(g) for g in G]
        R_bw, t_bw, R_gc, t_gc = cv2.calibrateRobotWorldHandEye(
            [w[:3, :3] for w in W],
            [w[:3, 3] for w in W],
            [b[:3, :3] for b in B],
            [b[:3, 3] for b in B],
            method=ROBOT_WORLD_METHODS[method],
        )
        base2world, gripper2cam = _T(R_bw, t_bw), _T(R_gc, t_gc)
        if mount == "world":
            return invert(base2world), invert(gripper2cam)
        return invert(gripper2cam), invert(base2world)
    raise CalibrationError(
        f"unknown hand-eye method {method!r}; known: {[*HAND_EYE_METHODS, *ROBOT_WORLD_METHODS]}"
    )


def view_residuals(mount: str, X: np.ndarray, Y: np.ndarray, obs: list[Obs], K, dist) -> np.ndarray:
    """Per view reprojection RMS (px) of the corners with the board pose predicted by (X, Y)."""
    out = []
    for o in obs:
        C = predict_C(mount, X, Y, o.G)
        proj, _ = cv2.projectPoints(o.obj, cv2.Rodrigues(C[:3, :3])[0], C[:3, 3], K, dist)
        out.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - o.img) ** 2, axis=1)))))
    return np.array(out)


def refine(
    mount: str, X: np.ndarray, Y: np.ndarray, obs: list[Obs], K, dist
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on all corners' reprojection error over (X, Y)."""

    def unpack(p):
        return pose_to_matrix(p[:6]), pose_to_matrix(p[6:])

    def fun(p):
        Xp, Yp = unpack(p)
        res = []
        for o in obs:
            C = predict_C(mount, Xp, Yp, o.G)
            proj, _ = cv2.projectPoints(o.obj, cv2.Rodrigues(C[:3, :3])[0], C[:3, 3], K, dist)
            res.append((proj.reshape(-1, 2) - o.img).ravel())
        return np.concatenate(res)

    p0 = np.concatenate([matrix_to_pose(X), matrix_to_pose(Y)])
    r = least_squares(fun, p0, method="lm", x_scale="jac")
    return unpack(r.x)


@dataclass
class HandEyeResult:
    X: np.ndarray
    Y: np.ndarray
    method: str
    rms_px: float
    per_view_px: dict[int, float]
    method_rms_px: dict[str, float]
    rejected: dict[int, str]
    translation_residual_mm: float
    rotation_residual_deg: float


def _pose_errors(mount: str, X, Y, obs: list[Obs]) -> tuple[float, float]:
    """Median translation (mm) and rotation (deg) difference of predicted vs PnP board poses."""
    dt, dr = [], []
    for o in obs:
        C = predict_C(mount, X, Y, o.G)
        dt.append(np.linalg.norm(C[:3, 3] - o.C[:3, 3]) * 1e3)
        dr.append(np.degrees(Rotation.from_matrix(C[:3, :3] @ o.C[:3, :3].T).magnitude()))
    return float(np.median(dt)), float(np.median(dr))


def calibrate(mount: str, obs: list[Obs], K, dist, proc: HandEyeProcedure, camera: str) -> HandEyeResult:
    rejected: dict[int, str] = {}
    for attempt in range(4):  # up to three rounds of outlier removal, then the final solve
        if len(obs) < proc.min_poses:
            raise CalibrationError(
                f"hand-eye: only {len(obs)} consistent views of camera {camera} (need {proc.min_poses})"
            )
        scores: dict[str, float] = {}
        sols = {}
        for m in proc.methods:
            try:
                X, Y = solve(m, mount, obs)
            except cv2.error as exc:
                progress(f"  method {m}: failed ({exc.err})")
                continue
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
                continue
            res = view_residuals(mount, X, Y, obs, K, dist)
            scores[m] = float(np.sqrt(np.mean(res**2)))
            sols[m] = (X, Y)
        if not scores:
            raise CalibrationError("hand-eye: every solver failed: the poses may lack rotation diversity")
        best = min(scores, key=scores.get)
        X, Y = sols[best]
        method = best
        if proc.refine:
            X, Y = refine(mount, X, Y, obs, K, dist)
            method = f"{best} + reprojection refinement"
        res = view_residuals(mount, X, Y, obs, K, dist)
        med = float(np.median(res))
        bad = [o for o, e in zip(obs, res, strict=True) if e > proc.outlier_factor * med and e > 0.5]
        if attempt == 3:
            bad = []
        if not bad:
            break
        for o in bad:
            e = float(res[[p.index for p in obs].index(o.index)])
            rejected[o.index] = f"hand-eye residual {e:.2f} px (median {med:.2f} px)"
        obs = [o for o in obs if o.index not in rejected]
    rms = float(np.sqrt(np.mean(res**2)))
    dt, dr = _pose_errors(mount, X, Y, obs)
    return HandEyeResult(
        X,
        Y,
        method,
        rms,
        {o.index: float(e) for o, e in zip(obs, res, strict=True)},
        scores,
        rejected,
        dt,
        dr,
    )


def _camera_model(proc: HandEyeProcedure, calibration, camera: str, dev, views: list[View], w: int, h: int):
    """(K, dist, description, intrinsics result to write or None)."""
    cal = calibration.cameras.get(camera)
    file_intr = cal.intrinsics if cal is not None else None
    choice = proc.intrinsics
    if choice == "auto":
        choice = (
            "calibration"
            if file_intr is not None and (file_intr.width, file_intr.height) == (w, h)
            else "device"
        )
    if choice == "calibration":
        if file_intr is None:
            raise CalibrationError(
                f"hand-eye: no intrinsics for camera {camera} in the calibration file: run `rig calibrate intrinsics` or use -p intrinsics=device"
            )
        if (file_intr.width, file_intr.height) != (w, h):
            raise CalibrationError(
                f"hand-eye: the file's intrinsics of camera {camera} are for {file_intr.width}x{file_intr.height}, frames are {w}x{h}"
            )
        K = np.array([[file_intr.fx, 0, file_intr.cx], [0, file_intr.fy, file_intr.cy], [0, 0, 1.0]])
        return K, np.array(file_intr.distortion or [0.0] * 5, dtype=np.float64), "calibration file", None
    if choice == "device":
        return dev.K, np.asarray(dev.distortion, dtype=np.float64), "device (factory)", None
    from calibration.intrinsics import calibrate_charuco
    from calibration.procedures import IntrinsicsProcedure

    iproc = IntrinsicsProcedure(min_poses=proc.min_poses, min_corners=proc.min_corners)
    r = calibrate_charuco(views, w, h, iproc, camera)
    return r.K, r.dist, "ChArUco from these views", r


def run(args: argparse.Namespace, rig: RigConfig) -> int:
    from calibration.result import load_existing

    proc = load_procedure(HandEyeProcedure, "hand_eye", args.procedure, args.proc_overrides)
    out = result_path(rig, args.out)
    calibration = load_existing(out, rig.name)
    camera, mount, spec, views, dev, _ = run_capture(rig, calibration, proc, "hand-eye")
    good = check_views(views, camera, proc.min_poses, "hand-eye")
    h, w = good[0].image.shape[:2]
    K, dist, model_src, intr_res = _camera_model(proc, calibration, camera, dev, good, w, h)
    progress(
        f"hand-eye: camera model: {model_src} (fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f})"
    )
    obs = board_poses(good, K, dist)
    r = calibrate(mount, obs, K, dist, proc, camera)
    rejected = {v.index: v.rejected for v in views if v.rejected}
    rejected.update(r.rejected)
    for m, s in sorted(r.method_rms_px.items(), key=lambda kv: kv[1]):
        progress(f"  method {m:<10} reprojection RMS {s:.3f} px")
    for i, e in sorted(r.per_view_px.items()):
        progress(f"  pose {i + 1}: residual {e:.3f} px")
    for i, why in sorted(rejected.items()):
        progress(f"  pose {i + 1} not used: {why}")
    if r.rms_px > proc.max_rms_px:
        raise CalibrationError(
            f"hand-eye: residual {r.rms_px:.2f} px is above {proc.max_rms_px} px: the board may have moved on its "
            "mount, the intrinsics may be wrong, or the arm poses are not what the robot reports"
        )
    pose = matrix_to_pose(r.X)
    frame = "T_base_cam" if mount == "world" else "T_tcp_cam"
    setup = "eye-to-hand" if mount == "world" else "eye-in-hand"
    progress(
        f"camera {camera} ({setup}): {frame} = {np.round(pose, 5).tolist()} by {r.method}; RMS {r.rms_px:.3f} px, "
        f"board pose residual {r.translation_residual_mm:.2f} mm / {r.rotation_residual_deg:.3f} deg (median)"
    )

    def apply(cal):
        cal.camera(camera).extrinsics = ExtrinsicsValue(
            mount=mount,
            pose=[float(v) for v in pose],
            method=f"{setup}, {len(r.per_view_px)} poses, {r.method}; intrinsics: {model_src}",
            residual=r.rms_px,
            residual_unit="px RMS reprojection",
            n_samples=len(r.per_view_px),
            rotation_residual_deg=r.rotation_residual_deg,
        )
        if intr_res is not None:
            cal.camera(camera).intrinsics = intr_res.value("ChArUco (hand-eye views), cv2.calibrateCamera")

    update_calibration(out, rig.name, apply)
    progress(f"hand-eye: wrote {out}")
    emit_json(
        {
            "camera": camera,
            "setup": setup,
            "frame": frame,
            "pose": [round(float(v), 6) for v in pose],
            "method": r.method,
            "rms_px": round(r.rms_px, 4),
            "methods_rms_px": {m: round(s, 4) for m, s in r.method_rms_px.items()},
            "translation_residual_mm": round(r.translation_residual_mm, 3),
            "rotation_residual_deg": round(r.rotation_residual_deg, 4),
            "views_used": len(r.per_view_px),
            "views_rejected": len(rejected),
        }
    )
    return 0
