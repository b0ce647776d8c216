"""``rig episodes check`` and ``rig episodes repair``: find what is wrong with a store, fix only crashes.

``check`` reads the store read-only, without trusting it (collection/store_verify.py): group
metadata and root attributes present, the layout (``meta/episode_ends`` against the data arrays),
every chunk under the episodes present and decoded (checksums verified; a progress bar on stderr),
and per episode: timestamps strictly increasing, low-dim values finite. Each problem is one line
naming the array and the episodes and steps it spans; a store without checksums is said to have
none. Exit 0 when there is no problem, 1 otherwise.

``repair`` does the documented crash repair and nothing else: with valid, increasing
``episode_ends``, rows past the last episode (an episode that was being recorded when the process
died) and a trailing fill value of ``episode_ends`` are dropped. ``--dry-run`` says what would go.
Any other inconsistency is left for a person to decide.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from collection.episode_store import EpisodeStore, EpisodeStoreError
from collection.store_verify import print_report, verify_store


def check_store(path: Path, out: Any = None, progress: bool = True) -> list[str]:
    """The problems of the store at ``path`` (empty: none), each one line; prints them, notes (no
    checksums, no dt_s) and a summary to ``out``. Everything is decoded (collection/store_verify.py)."""
    from tqdm import tqdm

    bars: list[Any] = []

    def total(n: int) -> None:
        bars.append(
            tqdm(total=n, desc="decoding chunks", unit="chunk", disable=not progress, file=sys.stderr)
        )

    rep = verify_store(path, decode="all", progress=lambda n: bars[0].update(n), total=total)
    for bar in bars:
        bar.close()
    print_report(rep, out)
    return [p.text for p in rep.problems]


def repair_store(path: Path, dry_run: bool, out: Any = None) -> int:
    """The crash repair (see the module docstring); 0 done or nothing to do, 1 not a crash's leftovers."""
    out = out or sys.stdout
    try:
        with EpisodeStore.open(path, "r") as store:
            dropped, n_eps = store.dropped_steps, store.n_episodes
    except EpisodeStoreError as exc:
        print(f"not repaired: {exc}", file=out)
        return 1
    if dropped <= 0:
        print(f"{path}: {n_eps} episodes, nothing to repair", file=out)
        return 0
    if dry_run:
        print(f"{path}: would drop {dropped} rows past the last of {n_eps} episodes (dry run)", file=out)
        return 0
    with EpisodeStore.open(path, "a"):
        pass  # opening for append does the crash repair
    print(f"{path}: dropped {dropped} rows past the last of {n_eps} episodes", file=out)
    return 0
