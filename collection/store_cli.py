"""``rig episodes``: list, inspect and delete episodes of an episode store.

    rig episodes list PATH              index, length (steps), duration (s), late steps, lag mm and
                                        flags (collection/demo_quality.py: late, stall) of every
                                        episode; for evaluation stores (rig deploy) its success
                                        (yes, no, or interrupted: cut short by Ctrl-C)
    rig episodes show PATH I            keys, shapes, dtypes and value ranges of episode I
    rig episodes delete-last PATH       delete the last episode (asks first unless --yes)
    rig episodes check PATH             decode everything, report each problem by array, episode, step
    rig episodes repair PATH [--dry-run]  drop what a crash left past the last episode, nothing else
    rig episodes export PATH --video/--frames/--plots DIR   mp4 / PNG frames / PNG plots (export_cli.py)
    rig episodes export PATH --format lerobot DIR           a LeRobotDataset v3 (export_lerobot.py)
    rig episodes import DIR --format lerobot PATH           a LeRobotDataset v3 into a new store (lerobot_cli.py)
    rig episodes view PATH [I ...] [--save FILE.rrd]        open episodes in the rerun viewer (viewer.py)
    rig episodes convert-time PATH OUT [--lead-s S]         a legacy store's actions to the action-time
                                                            rule, into a new store (convert_time.py)

Exit status, as every ``rig`` command: 0 done, 2 a user error (no store at the path, not an episode
store, no such episode; one line on stderr), 1 a finding or a refusal (``check`` found problems,
``repair`` refused, ``delete-last`` answered no or the store changed while asking).

``list`` and ``show`` open the store read only and never change it; ``delete-last`` asks on a read-only
view and opens the store for appending only after a yes (which also drops trailing data left by a
crash, and says so).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from collection.episode_store import LATE_FACTOR, EpisodeInfo, EpisodeStore, EpisodeStoreError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rig episodes",
        description="List, inspect, check, repair and delete recorded episodes; export them (mp4, PNG, "
        "plots, LeRobot), import LeRobot datasets, view them in rerun, convert a legacy store's action time.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="index, length and duration of every episode")
    ls.add_argument("path", type=Path, help="episode store (.zarr directory)")
    show = sub.add_parser("show", help="keys, shapes and value ranges of one episode")
    show.add_argument("path", type=Path)
    show.add_argument("index", type=int, help="episode index (negative counts from the end)")
    dl = sub.add_parser("delete-last", help="delete the last episode")
    dl.add_argument("path", type=Path)
    dl.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    ck = sub.add_parser("check", help="decode every chunk; report problems by array, episode and step")
    ck.add_argument("path", type=Path)
    rp = sub.add_parser("repair", help="drop the rows a crash left past the last episode (nothing else)")
    rp.add_argument("path", type=Path)
    rp.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    from collection import convert_time, export_cli, lerobot_cli, viewer

    convert_time.add_parser(sub)
    export_cli.add_parser(sub)
    lerobot_cli.add_parser(sub)
    viewer.add_parser(sub)
    return p


def _describe(info: EpisodeInfo) -> str:
    return f"episode {info.index} ({info.length} steps, {info.duration_s:.2f} s)"


def _cmd_list(store: EpisodeStore) -> int:
    infos = store.episodes()
    print(f"{store.path}: {len(infos)} episodes, {store.n_steps} steps, keys: {', '.join(store.keys) or '-'}")
    if store.dropped_steps:
        print(
            f"note: {store.dropped_steps} trailing steps of an unfinished episode (left by a crash); "
            "they are dropped the next time the store is opened for appending"
        )
    if not infos:
        return 0
    from collection import action_time
    from collection import demo_quality as dq

    note = action_time.describe(store.attrs, store.dt_s)
    print(
        f"actions: {note}"
        if note
        else f"actions: {action_time.CONVENTION} (the pose commanded for each step's timestamp)"
    )
    period = f"dt_s {store.dt_s} s" if store.dt_s else "no recorded dt_s"
    print(f"late: steps more than {LATE_FACTOR} dt_s after the previous one ({period})")
    judge_stall = action_time.is_current(store.attrs)
    print(
        f"lag mm: largest distance of the TCP from its action's position; flags: late (> "
        f"{dq.MAX_LATE_FRACTION:.0%} of the steps late), stall (TCP > {dq.STALL_DISTANCE_M * 1e3:.0f} mm behind "
        f"on >= {dq.STALL_MIN_STEPS} steps" + (")" if judge_stall else "; not judged: legacy action rule)")
    )
    attrs = [store.episode_attrs(i.index) for i in infos]
    evaluation = "chunk_index" in store.keys or any("end_reason" in a for a in attrs)
    if evaluation:
        print("success: evaluation episodes (rig deploy); interrupted: cut short by Ctrl-C or an error")
    keys = [k for k in ("timestamp", "robot_eef_pose", "action") if k in store.keys]
    head = f"{'index':>5}  {'length':>7}  {'duration s':>10}  {'late':>5}  {'lag mm':>6}  {'flags':<10}"
    print(head + (f"  {'success':>11}" if evaluation else ""))
    n_flagged = 0
    for info, a in zip(infos, attrs, strict=True):
        q = dq.assess(store.get_episode(info.index, keys), store.dt_s, judge_stall) if keys else None
        late = "-" if info.late_steps is None else info.late_steps
        lag = "-" if q is None or q.max_lag_m is None else f"{q.max_lag_m * 1e3:.1f}"
        flags = ",".join(q.flags) if q is not None and q.flags else "-"
        n_flagged += flags != "-"
        row = f"{info.index:>5}  {info.length:>7}  {info.duration_s:>10.2f}  {late:>5}  {lag:>6}  {flags:<10}"
        print(row + (f"  {_result(a):>11}" if evaluation else ""))
    total_s = float(np.nansum([i.duration_s for i in infos]))
    lates = [i.late_steps for i in infos if i.late_steps is not None]
    total_late = sum(lates) if lates else "-"
    flagged = f"{n_flagged} flagged"
    total = f"{'total':>5}  {store.n_steps:>7}  {total_s:>10.2f}  {total_late:>5}  {'':>6}  {flagged:<10}"
    if evaluation:
        judged = [a["success"] for a in attrs if not a.get("interrupted") and a.get("success") is not None]
        ratio = f"{sum(judged)}/{len(judged)}" if judged else "-"  # successes of the episodes judged
        total += f"  {ratio:>11}"
    print(total)
    return 0


def _result(attrs: dict) -> str:
    """An evaluation episode's outcome from its attributes (runner.py writes them): success, no,
    interrupted (Ctrl-C or an error cut it short), or - (not recorded: a real rig, an older store)."""
    if attrs.get("interrupted"):
        return "interrupted"
    if attrs.get("success") is None:
        return "-"
    return "yes" if attrs["success"] else "no"


def _cmd_show(store: EpisodeStore, index: int) -> int:
    info = store.episodes()[index] if -store.n_episodes <= index < store.n_episodes else None
    if info is None:
        print(f"rig episodes: no episode {index}; {store.path} has {store.n_episodes}", file=sys.stderr)
        return 2
    print(f"{_describe(info)}: steps [{info.start}, {info.end}) of {store.path}")
    arrays = store.get_episode(info.index)
    print(f"  {'key':<20} {'shape':<22} {'dtype':<8} {'min':>10} {'max':>10}")
    for key in sorted(arrays):  # a stable order, whatever order the store lists them in
        arr = arrays[key]
        if key.endswith("timestamp") and arr.size:
            # Host monotonic seconds: show the span within the episode, not 1.7e+09.
            lo, hi = "0.000 s", f"{arr.max() - arr.min():.3f} s"
        else:
            lo, hi = (f"{arr.min():.4g}", f"{arr.max():.4g}") if arr.size else ("-", "-")
        print(f"  {key:<20} {str(arr.shape):<22} {str(arr.dtype):<8} {lo:>10} {hi:>10}")
    if "timestamp" in arrays and arrays["timestamp"].size:
        print(f"  timestamps are host monotonic s; the episode starts at {arrays['timestamp'][0]:.3f}")
    return 0


def _cmd_delete_last(store: EpisodeStore, yes: bool) -> int:
    """``store`` is open read only: nothing changes before the answer (not even a crash's leftovers,
    which opening for append drops)."""
    if store.n_episodes == 0:
        print(f"rig episodes: {store.path} has no episodes to delete", file=sys.stderr)
        return 2
    last = store.episodes()[-1]
    if not yes:
        try:
            answer = input(f"Delete {_describe(last)} from {store.path}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    store.close()
    with EpisodeStore.open(store.path, "a") as writable:
        if (writable.n_episodes, writable.n_steps) != (last.index + 1, last.end):
            print(f"rig episodes: {store.path} changed while asking; nothing deleted", file=sys.stderr)
            return 1
        if writable.dropped_steps:
            print(f"dropped {writable.dropped_steps} trailing steps an unfinished episode left (a crash)")
        writable.delete_last()
        remaining = writable.n_episodes
    print(f"deleted {_describe(last)}; {remaining} episodes remain")
    # Its videos, where collection writes them by default (<store>.videos/episode_<i>/).
    from robot.cameras.video_recorder import episode_dir

    videos = episode_dir(Path(str(store.path) + ".videos"), last.index)
    if videos.is_dir():
        shutil.rmtree(videos)
        print(f"deleted its videos ({videos})")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "export":
        from collection.export_cli import run

        return run(args)
    if args.command == "import":
        from collection.lerobot_cli import run

        return run(args)
    if args.command == "view":
        from collection.viewer import run

        return run(args)
    if args.command == "convert-time":
        from collection.convert_time import run

        return run(args)
    if not args.path.exists():
        print(f"rig episodes: no episode store at {args.path}", file=sys.stderr)
        return 2
    if args.command in ("check", "repair"):
        from collection.store_check import check_store, repair_store

        if args.command == "check":
            return 1 if check_store(args.path) else 0
        return repair_store(args.path, args.dry_run)
    try:
        with EpisodeStore.open(args.path, mode="r") as store:
            if args.command == "list":
                return _cmd_list(store)
            if args.command == "show":
                return _cmd_show(store, args.index)
            return _cmd_delete_last(store, args.yes)
    except EpisodeStoreError as exc:  # not an episode store, or one that cannot be read as one
        print(f"rig episodes: {exc}", file=sys.stderr)
        return 2
