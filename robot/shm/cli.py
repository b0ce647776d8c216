"""``rig shm list|clean``: inspect and remove shared-memory segments left by killed runs."""

from __future__ import annotations

import argparse

from robot.shm.segments import clean_stale, list_segments, list_semaphores


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig shm", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "list",
        help="list this project's segments (is the owner alive?) and multiprocessing semaphores (in use?)",
    )
    clean = sub.add_parser(
        "clean", help="remove segments whose owner process is gone and semaphores no running process maps"
    )
    clean.add_argument("--all", action="store_true", help="also remove segments of live owners")
    clean.add_argument("--quiet", action="store_true", help="print only when something was removed")
    args = parser.parse_args(argv)

    if args.action == "list":
        segs = list_segments()
        if not segs:
            print("no rig shared-memory segments")
        for s in segs:
            state = "alive" if s.owner_alive else "STALE (owner gone)"
            print(f"{s.name:<48} {s.size_bytes / 1e6:10.2f} MB  owner pid {s.owner_pid}: {state}")
        for sem in list_semaphores():
            state = "in use" if sem.mapped else "STALE (no process maps it)"
            print(f"{sem.name:<48} {'semaphore':>13}  {state}")
        return 0
    removed = clean_stale(all_segments=args.all)
    if removed or not args.quiet:
        print(
            f"removed {len(removed)} segment(s)/semaphore(s)" + (": " + ", ".join(removed) if removed else "")
        )
    return 0
