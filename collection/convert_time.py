"""``rig episodes convert-time STORE OUT [--lead-s S]``: rewrite a legacy store's actions to the
action-time rule (:mod:`collection.action_time`), into a new store.

A legacy store (no ``action_time`` attribute) holds, as step ``k``'s action, the target ``rig collect``
scheduled for the loop deadline plus one step: the arm reached it about ``dt_s`` plus the camera
latency after the observation at ``timestamp[k]``. The conversion looks the action path up that
*lead* earlier, so that ``action[k]`` becomes (approximately) the pose the arm was commanded to be
at at ``timestamp[k]``. The lead is ``--lead-s`` or, by default, estimated from the store itself: the
shift that best lines each episode's action path up with its measured TCP path
(:func:`collection.action_time.estimate_lead_s`), median over the episodes that moved. It is an
approximation (a constant shift of the scheduled path, not the commanded history, which a legacy
store does not hold) and the converted store says so in its ``action_time_converted`` attribute.

The source is never changed: the output is built beside ``OUT`` and renamed into place when complete.
Exit status: 0 converted, 2 bad input (not a store, already converted, ``OUT`` exists).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from collection import action_time

MIN_MOTION_M = 0.01
"""An episode whose action path spans less than this (m) gives no lead estimate."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert-time",
        help="rewrite a legacy store's actions to the action-time rule (an approximate shift)",
    )
    p.add_argument("path", type=Path, help="legacy episode store (.zarr directory)")
    p.add_argument("out", type=Path, help="the converted store (must not exist)")
    p.add_argument(
        "--lead-s",
        type=float,
        default=None,
        help="how long after its observation a legacy action was reached (s); default: estimated",
    )


def convert(src: Path, out: Path, lead_s: float | None, say: Any = print) -> dict[str, Any]:
    """Convert ``src`` into ``out`` (see the module docstring); returns the figures used.
    ValueError for bad input."""
    import zarr

    from collection.episode_store import open_root_readonly, register_image_codecs

    register_image_codecs()
    if out.exists():
        raise ValueError(f"{out} exists; give a new path for the converted store")
    root = open_root_readonly(src)
    if action_time.is_current(root.attrs):
        raise ValueError(f"{src} already follows the {action_time.CONVENTION!r} rule; nothing to convert")
    for key in ("data/action", "data/timestamp", "meta/episode_ends"):
        if key not in root:
            raise ValueError(f"{src} has no {key}: it cannot be converted")
    ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
    ts = np.asarray(root["data/timestamp"][:], dtype=np.float64).reshape(-1)
    actions = np.asarray(root["data/action"][:], dtype=np.float64)
    eef = (
        np.asarray(root["data/robot_eef_pose"][:], dtype=np.float64)
        if "data/robot_eef_pose" in root
        else None
    )
    starts = np.concatenate([[0], ends[:-1]])
    leads: list[float] = []
    if lead_s is None:
        if eef is None:
            raise ValueError(f"{src} has no robot_eef_pose to estimate the lead from; pass --lead-s")
        for a, b in zip(starts, ends, strict=True):
            span = np.ptp(actions[a:b, :3], axis=0).max() if b - a > 3 else 0.0
            if span >= MIN_MOTION_M:
                leads.append(action_time.estimate_lead_s(ts[a:b], actions[a:b], eef[a:b]))
        if not leads:
            raise ValueError(f"no episode of {src} moves enough to estimate the lead; pass --lead-s")
        lead_s = float(np.median(leads))
    converted = actions.copy()
    for a, b in zip(starts, ends, strict=True):
        if b > a:
            converted[a:b] = action_time.shift_actions(ts[a:b], actions[a:b], lead_s)
    tmp = out.with_name(f".{out.name}.converting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        dst = zarr.open_group(str(tmp), mode="r+")
        arr = dst["data/action"]
        # Every chunk stays stored (a missing one is damage to `rig episodes check`), zeros included.
        arr.with_config({"write_empty_chunks": True})[: len(converted)] = converted.astype(arr.dtype)
        dst.attrs[action_time.ATTR] = action_time.CONVENTION
        dst.attrs[action_time.CONVERTED_ATTR] = {
            "from": "legacy",
            "lead_s": round(float(lead_s), 4),
            "episode_leads_s": [round(x, 4) for x in leads],
            "approximate": True,
        }
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"lead_s": float(lead_s), "episodes": len(ends), "estimated_from": len(leads)}


def run(args: argparse.Namespace) -> int:
    if not args.path.exists():
        print(f"rig episodes: no episode store at {args.path}", file=sys.stderr)
        return 2
    try:
        fig = convert(args.path, args.out, args.lead_s)
    except ValueError as exc:
        print(f"rig episodes: {exc}", file=sys.stderr)
        return 2
    how = "given" if args.lead_s is not None else f"estimated (median of {fig['estimated_from']} episodes)"
    print(
        f"converted {fig['episodes']} episodes into {args.out}: actions looked up {fig['lead_s'] * 1e3:.0f} ms "
        f"earlier, lead {how}. This is an approximate shift of the scheduled path (a legacy store does not "
        "hold what the arm was commanded); replay an episode to check it."
    )
    return 0
