"""``rig calibrate board``: a printable ChArUco board at true scale (PNG with DPI metadata, or PDF).

Print at 100 % (no "fit to page"), then measure one square with a ruler: it must be
``square_length_m``. The same spec (``configs/calibration/procedures/*.yaml``) is what the
calibration procedures detect, so print the board from the procedure you will run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from calibration.procedures import BoardProcedure, HandEyeProcedure, load_procedure
from calibration.result import CalibrationError, emit_json, progress
from robot.geometry.camera_geometry import CharucoSpec, charuco_board

_M_PER_INCH = 0.0254


def board_image(spec: CharucoSpec, margin_m: float, dpi: int) -> np.ndarray:
    """The board (white margin included) as a grayscale uint8 image at ``dpi`` dots per inch."""
    px_per_m = dpi / _M_PER_INCH
    w_m = spec.squares_x * spec.square_length_m + 2 * margin_m
    h_m = spec.squares_y * spec.square_length_m + 2 * margin_m
    size = (int(round(w_m * px_per_m)), int(round(h_m * px_per_m)))
    margin_px = int(round(margin_m * px_per_m))
    return charuco_board(spec).generateImage(size, marginSize=margin_px, borderBits=1)


def run(args: argparse.Namespace) -> int:
    proc = load_procedure(BoardProcedure, "board", args.procedure, args.proc_overrides)
    if proc.preset == "custom":
        spec = proc.board
    else:
        cap = load_procedure(HandEyeProcedure, "hand_eye", None, [])
        spec = cap.table_board if proc.preset == "table" else cap.tool_board
    if args.dpi < 72:
        raise CalibrationError(f"--dpi {args.dpi} is too coarse to print a board (use 150-600)")
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".pdf"):
        raise CalibrationError(f"--out must end in .png or .pdf, got {out.name!r}")
    img = board_image(spec, proc.margin_m, args.dpi)
    out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h_px, w_px = img.shape
    if suffix == ".png":
        plt.imsave(out, img, cmap="gray", vmin=0, vmax=255, dpi=args.dpi)
    else:
        fig = plt.figure(figsize=(w_px / args.dpi, h_px / args.dpi), dpi=args.dpi)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        fig.text(
            0.5,
            0.002,
            f"ChArUco {spec.squares_x}x{spec.squares_y} {spec.dictionary}, square {spec.square_length_m * 1e3:g} mm, "
            f"marker {spec.marker_length_m * 1e3:g} mm: print at 100 %",
            ha="center",
            va="bottom",
            fontsize=5,
            color="0.5",
        )
        fig.savefig(out, dpi=args.dpi)
        plt.close(fig)
    size_mm = [round(w_px / args.dpi * 25.4, 2), round(h_px / args.dpi * 25.4, 2)]
    progress(
        f"board: {spec.squares_x}x{spec.squares_y} squares of {spec.square_length_m * 1e3:g} mm, markers "
        f"{spec.marker_length_m * 1e3:g} mm ({spec.dictionary}), {size_mm[0]} x {size_mm[1]} mm -> {out}. "
        "Print at 100 % and check a square with a ruler."
    )
    emit_json(
        {
            "out": str(out),
            "squares": [spec.squares_x, spec.squares_y],
            "square_mm": spec.square_length_m * 1e3,
            "marker_mm": spec.marker_length_m * 1e3,
            "dictionary": spec.dictionary,
            "size_mm": size_mm,
            "pixels": [w_px, h_px],
            "dpi": args.dpi,
        }
    )
    return 0
