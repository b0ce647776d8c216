"""Camera intrinsics: the device's factory values, or a ChArUco calibration from board views.

ChArUco: the views come from :mod:`calibration.capture` (the arm shows the board to the camera:
board on the tool for a static camera, on the table for a wrist camera). Views are rejected, each
with a reason printed, when the board is missing, has too few or collinear corners, duplicates an
already used view, or (after a first ``cv2.calibrateCamera``) reprojects much worse than the others;
the calibration is then redone without them. The result is refused when the overall reprojection
RMS is above ``max_rms_px`` or the used corners cover too little of the image (``min_coverage``:
distortion and the principal point would be guesses).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.capture import View, check_views, run_capture
from calibration.procedures import IntrinsicsProcedure, load_procedure
from calibration.result import CalibrationError, emit_json, progress, result_path, update_calibration
from robot.calibration_data import IntrinsicsValue
from robot.rig_config import RigConfig

_GRID = (8, 6)
_FLAGS = {
    "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2p1p2": cv2.CALIB_FIX_K3,
    "k1k2p1p2k3": 0,
}


@dataclass
class IntrinsicsResult:
    K: np.ndarray
    dist: np.ndarray
    rms_px: float
    per_view_rms_px: dict[int, float]
    coverage: float
    used: list[int]
    rejected: dict[int, str]
    width: int
    height: int

    def value(self, method: str) -> IntrinsicsValue:
        """The calibration file's entry for this result, measured by ``method`` (what was run)."""
        return IntrinsicsValue.from_camera_matrix(
            self.width,
            self.height,
            self.K,
            self.dist,
            method=method,
            residual=self.rms_px,
            residual_unit="px RMS reprojection",
            n_samples=len(self.used),
        )


def coverage(views: list[View], width: int, height: int) -> float:
    """Fraction of an 8x6 grid of image cells that contain at least one corner of the views."""
    cells = np.zeros(_GRID[::-1], bool)
    for v in views:
        ix = np.clip((v.corners_px[:, 0] / width * _GRID[0]).astype(int), 0, _GRID[0] - 1)
        iy = np.clip((v.corners_px[:, 1] / height * _GRID[1]).astype(int), 0, _GRID[1] - 1)
        cells[iy, ix] = True
    return float(cells.mean())


def _duplicates(views: list[View], tol_px: float) -> dict[int, str]:
    out: dict[int, str] = {}
    kept: list[View] = []
    for v in views:
        dup = None
        for k in kept:
            common, a, b = np.intersect1d(v.ids, k.ids, return_indices=True)
            if (
                len(common) >= 0.8 * len(v.ids)
                and np.max(np.linalg.norm(v.corners_px[a] - k.corners_px[b], axis=1)) < tol_px
            ):
                dup = k
                break
        if dup is not None:
            out[v.index] = f"duplicate of the view at pose {dup.index + 1}"
        else:
            kept.append(v)
    return out


def _calibrate(views: list[View], size: tuple[int, int], model: str):
    obj = [v.object_m.astype(np.float32) for v in views]
    img = [v.corners_px.astype(np.float32).reshape(-1, 1, 2) for v in views]
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=_FLAGS[model])
    per = {}
    for v, o, r, t in zip(views, obj, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, K, dist)
        per[v.index] = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - v.corners_px) ** 2, axis=1))))
    return float(rms), K, dist.ravel(), per


def calibrate_charuco(
    views: list[View], width: int, height: int, proc: IntrinsicsProcedure, camera: str
) -> IntrinsicsResult:
    """``cv2.calibrateCamera`` over the usable views with frame rejection (module docstring)."""
    rejected = {v.index: v.rejected for v in views if v.rejected}
    good = check_views(views, camera, proc.min_poses, "intrinsics")
    dups = _duplicates(good, proc.duplicate_px)
    rejected.update(dups)
    good = [v for v in good if v.index not in dups]
    if len(good) < proc.min_poses:
        raise CalibrationError(
            f"intrinsics: only {len(good)} distinct views of camera {camera} (need {proc.min_poses})"
        )
    size = (width, height)
    rms, K, dist, per = _calibrate(good, size, proc.distortion_model)
    med = float(np.median(list(per.values())))
    bad = {i: e for i, e in per.items() if e > proc.frame_outlier_factor * med and e > 0.3}
    if bad and len(good) - len(bad) >= proc.min_poses:
        for i, e in bad.items():
            rejected[i] = f"reprojection error {e:.2f} px (median {med:.2f} px)"
        good = [v for v in good if v.index not in bad]
        rms, K, dist, per = _calibrate(good, size, proc.distortion_model)
    cov = coverage(good, width, height)
    if rms > proc.max_rms_px:
        raise CalibrationError(
            f"intrinsics: camera {camera} reprojection RMS {rms:.2f} px is above {proc.max_rms_px} px: "
            "check focus/motion blur and that the board is flat and matches the spec"
        )
    if cov < proc.min_coverage:
        raise CalibrationError(
            f"intrinsics: the board covered only {cov:.0%} of camera {camera}'s image (need "
            f"{proc.min_coverage:.0%}): show it near the image corners and edges too"
        )
    return IntrinsicsResult(K, dist, rms, per, cov, [v.index for v in good], rejected, width, height)


def save_views(views: list[View], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for v in views:
        cv2.imwrite(str(directory / f"view_{v.index:03d}.png"), cv2.cvtColor(v.image, cv2.COLOR_RGB2BGR))
    progress(f"intrinsics: saved {len(views)} views to {directory}")


def views_from_files(rig: RigConfig, proc: IntrinsicsProcedure):
    """(camera, board spec, views) from the images in ``proc.frames_dir`` (sorted by name)."""
    from calibration.capture import BoardDetector

    directory = Path(proc.frames_dir)
    files = sorted(p for p in directory.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise CalibrationError(f"intrinsics: no .png/.jpg images in {directory}")
    camera = proc.camera or next(iter(rig.cameras.cameras), "camera")
    spec = proc.table_board if proc.board == "table" else proc.tool_board
    det = BoardDetector(spec)
    views = []
    for i, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"intrinsics: cannot read image {f}")
        v = View(i, np.zeros(6), cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        det.detect(v, proc.min_corners)
        progress(f"  {f.name}: {v.rejected or f'{v.n_corners} corners'}")
        views.append(v)
    return camera, spec, views


def run(args: argparse.Namespace, rig: RigConfig) -> int:
    from calibration.result import load_existing

    proc = load_procedure(IntrinsicsProcedure, "intrinsics", args.procedure, args.proc_overrides)
    out = result_path(rig, args.out)
    calibration = load_existing(out, rig.name)
    source = "charuco" if proc.source == "auto" else proc.source
    if source == "factory":
        from calibration.rig_session import check_cameras, open_env

        names = check_cameras(rig, [proc.camera] if proc.camera else [])
        with open_env(rig, calibration) as env:
            intr = {n: env.cameras.cameras[n].intrinsics for n in names}

        def apply_factory(cal):
            for n, i in intr.items():
                cal.camera(n).intrinsics = IntrinsicsValue(
                    width=i.width,
                    height=i.height,
                    fx=i.fx,
                    fy=i.fy,
                    cx=i.cx,
                    cy=i.cy,
                    distortion=[float(d) for d in i.distortion],
                    method=f"factory ({rig.cameras.cameras[n].backend} device)",
                )

        update_calibration(out, rig.name, apply_factory)
        for n, i in intr.items():
            progress(
                f"camera {n}: factory intrinsics fx {i.fx:.2f} fy {i.fy:.2f} cx {i.cx:.2f} cy {i.cy:.2f}"
            )
        progress(f"intrinsics: wrote {out}")
        res = [
            {"camera": n, "source": "factory", "fx": i.fx, "fy": i.fy, "cx": i.cx, "cy": i.cy}
            for n, i in intr.items()
        ]
        emit_json(res[0] if len(res) == 1 else {"cameras": res})
        return 0

    if proc.frames_dir:
        camera, spec, views = views_from_files(rig, proc)
    else:
        camera, mount, spec, views, dev_intr, _ = run_capture(rig, calibration, proc, "intrinsics")
        if proc.save_frames_dir:
            save_views(views, Path(proc.save_frames_dir))
    h, w = views[0].image.shape[:2]
    if any(v.image.shape[:2] != (h, w) for v in views):
        raise CalibrationError(f"intrinsics: the images of camera {camera} do not all have the same size")
    cam_cfg = rig.cameras.cameras.get(camera)
    if cam_cfg is not None and (cam_cfg.out_width, cam_cfg.out_height) != (w, h):
        progress(
            f"intrinsics: WARNING: images are {w}x{h} but camera {camera} streams "
            f"{cam_cfg.out_width}x{cam_cfg.out_height}; the result is for {w}x{h}"
        )
    r = calibrate_charuco(views, w, h, proc, camera)
    for i, why in sorted(r.rejected.items()):
        progress(f"  view at pose {i + 1} rejected: {why}")
    K = r.K
    progress(
        f"camera {camera}: fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f} "
        f"dist {np.round(r.dist, 4).tolist()}; RMS {r.rms_px:.3f} px over {len(r.used)} views, coverage {r.coverage:.0%}"
    )

    def apply(cal):
        cal.camera(camera).intrinsics = r.value(
            f"ChArUco {spec.squares_x}x{spec.squares_y} {spec.dictionary}, cv2.calibrateCamera "
            f"({proc.distortion_model}), coverage {r.coverage:.0%}"
        )

    update_calibration(out, rig.name, apply)
    progress(f"intrinsics: wrote {out}")
    emit_json(
        {
            "camera": camera,
            "source": "charuco",
            "fx": round(float(K[0, 0]), 4),
            "fy": round(float(K[1, 1]), 4),
            "cx": round(float(K[0, 2]), 4),
            "cy": round(float(K[1, 2]), 4),
            "distortion": [round(float(d), 6) for d in r.dist],
            "rms_px": round(r.rms_px, 4),
            "views_used": len(r.used),
            "views_rejected": len(r.rejected),
            "coverage": round(r.coverage, 3),
        }
    )
    return 0
