"""``rig episodes check`` and ``rig episodes repair``: find what is wrong with a store, fix only crashes.

``check`` reads the store read-only, without trusting it: the layout (``meta/episode_ends`` against
the data arrays, through :func:`collection.episode_store.validate_layout`, the one validator the
store, the CLI and the dataset share), then every chunk of every array is decoded (a progress bar
on stderr), and per episode: timestamps strictly increasing, low-dim values finite. Each problem is
one line naming the array, the episode and the step. Exit 0 when there is none, 1 otherwise.

``repair`` does the documented crash repair and nothing else: with valid, increasing
``episode_ends``, rows past the last episode (an episode that was being recorded when the process
died) and a trailing fill value of ``episode_ends`` are dropped. ``--dry-run`` says what would go.
Any other inconsistency is left for a person to decide.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from collection.episode_store import EpisodeStore, EpisodeStoreError, open_root_readonly, validate_layout


def _episode_of(ends: np.ndarray, row: int) -> tuple[int, int]:
    """(episode, step within it) of global row ``row``; episode -1 past the last end."""
    i = int(np.searchsorted(ends, row, side="right"))
    if i >= len(ends):
        return -1, row - (int(ends[-1]) if len(ends) else 0)
    return i, row - (int(ends[i - 1]) if i else 0)


def _where(ends: np.ndarray, row: int) -> str:
    ep, step = _episode_of(ends, row)
    return f"row {row} (after the last episode)" if ep < 0 else f"episode {ep} step {step}"


def check_store(path: Path, out: Any = None, progress: bool = True) -> list[str]:
    """The problems of the store at ``path`` (empty: none). Prints them and a summary to ``out``."""
    out = out or sys.stdout
    from tqdm import tqdm

    problems: list[str] = []
    try:
        root = open_root_readonly(path)
        ends_list = [int(e) for e in root["meta/episode_ends"][:]]
        arrays = dict(root["data"].arrays())
    except Exception as exc:
        problems.append(f"{path}: not readable as an episode store ({type(exc).__name__}: {exc})")
        print(problems[-1], file=out)
        return problems
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    try:
        n_valid = validate_layout(path, ends_list, lengths)
    except EpisodeStoreError as exc:
        problems.append(str(exc).split(" Run `rig episodes check")[0])
        n_valid = 0
    ends = np.asarray(ends_list[:n_valid], dtype=np.int64)
    n_steps = int(ends[-1]) if len(ends) else 0
    leftovers = max(lengths.values(), default=0) - n_steps
    total = sum(-(-a.shape[0] // max(1, a.chunks[0])) for a in arrays.values())
    bar = tqdm(total=total, desc="decoding chunks", unit="chunk", disable=not progress, file=sys.stderr)
    for name, arr in arrays.items():
        step = max(1, arr.chunks[0])
        low_dim = arr.ndim <= 2 and arr.dtype.kind == "f"
        values = []
        for start in range(0, arr.shape[0], step):
            stop = min(start + step, arr.shape[0])
            try:
                block = arr[start:stop]
            except Exception as exc:
                problems.append(
                    f"data/{name}: {_where(ends, start)}..{stop - 1}: cannot be decoded "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                )
                block = None
            if low_dim or name == "timestamp":
                values.append(block if block is not None else np.full((stop - start, *arr.shape[1:]), np.nan))
            bar.update(1)
        if not values:
            continue
        data = np.concatenate(values)[:n_steps]
        if low_dim:
            bad = ~np.isfinite(data.reshape(len(data), -1)).all(axis=1)
            for row in np.flatnonzero(bad)[:20]:
                problems.append(f"data/{name}: {_where(ends, int(row))}: not finite ({data[row].tolist()})")
            if bad.sum() > 20:
                problems.append(f"data/{name}: {int(bad.sum()) - 20} more non-finite steps")
        if name == "timestamp":
            starts = np.concatenate([[0], ends[:-1]])
            for ep, (s, e) in enumerate(zip(starts, ends, strict=True)):
                d = np.diff(data[s:e])
                for j in np.flatnonzero(~(d > 0))[:5]:
                    problems.append(
                        f"data/timestamp: episode {ep} step {j + 1}: not after step {j} "
                        f"({data[s + j + 1]!r} after {data[s + j]!r})"
                    )
    bar.close()
    for line in problems:
        print(line, file=out)
    note = f"; {leftovers} rows past the last episode (a crash's leftovers: `rig episodes repair` drops them)"
    print(
        f"{path}: {len(ends)} episodes, {n_steps} steps, {len(arrays)} arrays: "
        f"{len(problems) or 'no'} problem(s){note if leftovers > 0 else ''}",
        file=out,
    )
    return problems


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
