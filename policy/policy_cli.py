"""``rig policy``: tools for policy checkpoints.

Usage::

    rig policy import-reference CKPT --out RUN [--map REF_KEY=KEY ...] [--frame-size HxW] [--dt-s 0.1]

``import-reference`` converts a Diffusion Policy reference workspace checkpoint (``*.ckpt`` of
real-stanford/diffusion_policy: ``DiffusionUnetImagePolicy`` or ``DiffusionUnetHybridImagePolicy``)
into a run directory of this project, which ``rig deploy --checkpoint RUN``, ``python -m
deploy.serving RUN`` and ``rig train --resume --out RUN --dataset STORE`` (fine-tuning) accept. The
file is read without running code from it (policy/reference/safe_load.py). It prints how the
reference's observation keys map to this rig's (``--map`` renames one; by default a key keeps its
name; ``--frame-size`` when the rig's cameras deliver larger frames of the same aspect ratio), then
one JSON line: ``run_dir``, ``checkpoint``, ``policy_class``, ``weights`` (EMA when the
file has them), ``n_obs_steps``, ``n_action_steps``, ``horizon``, ``num_inference_steps``, ``dt_s``.
Exit status 0, or 2 with one line naming what is not supported.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rig policy", description="policy checkpoint tools")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import-reference",
        help="convert a Diffusion Policy reference workspace checkpoint (*.ckpt) into a run",
    )
    imp.add_argument("checkpoint", help="the reference workspace checkpoint (.ckpt)")
    imp.add_argument("--out", required=True, help="run directory to create")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="REF_KEY=KEY",
        help="observation key of the reference -> key on this rig (repeatable; default: same name)",
    )
    imp.add_argument(
        "--frame-size",
        metavar="HxW",
        help="size of this rig's camera frames when it differs from the checkpoint's image size "
        "(same aspect ratio; the policy resizes them), e.g. 480x640",
    )
    imp.add_argument(
        "--dt-s",
        type=float,
        default=None,
        help="seconds between policy steps (default 0.1: the reference's real-robot loop at 10 Hz)",
    )
    return p


def _import_reference(args: argparse.Namespace) -> int:
    from policy.checkpoint import save_checkpoint
    from policy.reference.convert import DEFAULT_DT_S, convert
    from policy.reference.safe_load import load_reference_checkpoint

    key_map = {}
    for item in args.map:
        ref, sep, ours = item.partition("=")
        if not sep or not ref or not ours:
            raise ValueError(f"--map {item!r}: expected REF_KEY=KEY, e.g. --map camera_1=camera_0")
        key_map[ref] = ours
    run_dir = Path(args.out)
    if (run_dir / "latest").exists():
        raise ValueError(f"{run_dir} already holds a run; choose another --out")
    dt_s = DEFAULT_DT_S if args.dt_s is None else args.dt_s
    if not dt_s > 0:
        raise ValueError(f"--dt-s must be positive, got {dt_s}")
    frame_size = None
    if args.frame_size:
        h, sep, w = args.frame_size.lower().partition("x")
        if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
            raise ValueError(f"--frame-size {args.frame_size!r}: expected HxW, e.g. 480x640")
        frame_size = (int(h), int(w))
    ckpt = load_reference_checkpoint(args.checkpoint)
    converted = convert(
        ckpt, key_map, dt_s=dt_s, source=str(Path(args.checkpoint).resolve()), frame_size=frame_size
    )
    del ckpt
    rows = [("reference key", "rig key", "type", "shape"), *converted.table]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for note in converted.notes:
        print(f"note: {note}")
    payload = converted.payload
    run_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(run_dir, 0, payload, keep=0)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(payload["config"], sort_keys=False))
    pc = payload["config"]["policy"]
    print(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "checkpoint": str(path),
                "policy_class": converted.policy_class,
                "weights": payload["imported_from"]["weights"],
                "n_obs_steps": pc["n_obs_steps"],
                "n_action_steps": pc["n_action_steps"],
                "horizon": pc["horizon"],
                "num_inference_steps": pc["noise"]["num_inference_steps"],
                "dt_s": payload["dt_s"],
            }
        ),
        flush=True,
    )
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _import_reference(args)
    except (FileNotFoundError, ValueError) as exc:  # bad input: one line (the traceback with --debug)
        if "--debug" in sys.argv:
            traceback.print_exc()
        print(f"rig policy {args.command}: {exc}", file=sys.stderr)
        return 2
