"""``rig episodes export``: write episodes of a store out as files for other tools.

    rig episodes export STORE [--episodes I ...] [--video DIR] [--frames DIR] [--plots DIR]
    rig episodes export STORE --format NAME DIR [--episodes I ...]       (e.g. --format lerobot DIR)

``--video``/``--frames``/``--plots`` (any combination, each its own folder) write media per episode
(:mod:`collection.export_media`). ``--format NAME DIR`` writes the episodes as a dataset of another
ecosystem; the formats are listed in :data:`FORMATS`, each a module with
``export(store, out_dir, episodes, out, fps) -> None`` (``store``: an open read-only
:class:`~collection.episode_store.EpisodeStore`, ``episodes``: store indices, ``out``: where to print
progress, ``fps``: ``--fps`` or None for the store's own rate); an input problem is a ``ValueError``
(one line, exit 2).

The store is opened read only and never changed. Exit status: 0 done, 2 input error (no store, an
episode that is not there, nothing asked for), 1 a failure while writing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, TextIO

# --format NAME -> module whose ``export(store, out_dir, episodes, out)`` writes that format.
FORMATS: dict[str, str] = {"lerobot": "collection.export_lerobot"}


EPISODES_HELP = "store indices (negative from the end); default all"
"""Help of the episodes a command on one store takes (read with :func:`select_episodes`)."""


def store_subcommand(sub: Any, name: str, summary: str, module_doc: str) -> argparse.ArgumentParser:
    """Add ``rig episodes NAME PATH ...`` to ``rig episodes``' subparsers: ``summary`` in the command
    list, the first paragraph of ``module_doc`` as its description, the episode store's ``path``."""
    p = sub.add_parser(name, help=summary, description=module_doc.split("\n\n")[0])
    p.add_argument("path", type=Path, help="episode store (.zarr directory)")
    return p


def add_parser(sub: Any) -> None:
    """Add the ``export`` subcommand to ``rig episodes``' subparsers."""
    p = store_subcommand(
        sub,
        "export",
        "write episodes as mp4 videos, PNG frames, PNG plots (or --format DIR: another dataset format)",
        __doc__,
    )
    p.add_argument("--episodes", type=int, nargs="+", default=None, help=EPISODES_HELP)
    p.add_argument("--video", type=Path, metavar="DIR", help="one mp4 per camera and episode")
    p.add_argument("--frames", type=Path, metavar="DIR", help="every camera image as PNG")
    p.add_argument("--plots", type=Path, metavar="DIR", help="pose vs action over time, one PNG per episode")
    p.add_argument(
        "--format",
        nargs=2,
        metavar=("NAME", "DIR"),
        help=f"write the episodes as a dataset of format NAME ({', '.join(sorted(FORMATS)) or 'none yet'}) into DIR",
    )
    p.add_argument(
        "--fps",
        type=int,
        default=None,
        help="frames per second of a --format dataset (default: 1 / the store's dt_s)",
    )


def select_episodes(n_episodes: int, wanted: list[int] | None, store_path: Path) -> list[int]:
    """Store indices for ``wanted`` (None: all; negatives count from the end); ValueError naming
    the first one that is not in the store."""
    if wanted is None:
        return list(range(n_episodes))
    out = []
    for i in wanted:
        if not -n_episodes <= i < n_episodes:
            raise ValueError(f"no episode {i}; {store_path} has {n_episodes} (0..{n_episodes - 1})")
        out.append(i % n_episodes)
    return out


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from collection.episode_store import EpisodeStore, EpisodeStoreError

    media = {k: getattr(args, k) for k in ("video", "frames", "plots") if getattr(args, k) is not None}
    if args.format and args.format[0] not in FORMATS:
        known = ", ".join(sorted(FORMATS)) or "none"
        print(f"rig episodes export: unknown format {args.format[0]!r} (known: {known})", file=sys.stderr)
        return 2
    if not media and not args.format:
        print(
            "rig episodes export: say what to write: --video DIR, --frames DIR, --plots DIR or --format",
            file=sys.stderr,
        )
        return 2
    if not args.path.exists():
        print(f"rig episodes export: no episode store at {args.path}", file=sys.stderr)
        return 2
    try:
        with EpisodeStore.open(args.path, mode="r") as store:
            episodes = select_episodes(store.n_episodes, args.episodes, args.path)
            if args.format:
                name, out_dir = args.format
                importlib.import_module(FORMATS[name]).export(
                    store, Path(out_dir), episodes, out, fps=args.fps
                )
            if media:
                export_media(store, episodes, media, out)
    except (ValueError, EpisodeStoreError) as exc:  # the user's input: arguments, path, store
        print(f"rig episodes export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine's: disk full, permissions
        print(f"rig episodes export: {exc}", file=sys.stderr)
        return 1
    return 0


def export_media(store: Any, episodes: list[int], media: dict[str, Path], out: TextIO) -> None:
    """Write the media of each episode in turn. Ctrl-C (SIGINT) is taken as a request between frames,
    never inside a zarr read or an encoder call: the episode being written is removed, the complete
    ones are kept, and :class:`robot.interrupt.Interrupted` says which."""
    import signal
    import threading

    from collection import action_time, demo_quality
    from collection import export_media as em
    from robot.cameras.config import VideoConfig

    video_config = VideoConfig(preset="veryfast", crf=20)  # offline: a little more CPU for sharper files
    asked = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: asked.set())
    done: list[int] = []
    index = None
    try:
        for index in episodes:
            if asked.is_set():
                raise KeyboardInterrupt
            arrays = store.get_episode(index)
            parts = []
            if "video" in media:
                paths = em.export_video(arrays, index, media["video"], video_config, asked.is_set)
                parts.append(f"{len(paths)} videos in {media['video'] / em.episode_name(index)}")
            if "frames" in media:
                folders = em.export_frames(arrays, index, media["frames"], asked.is_set)
                n = len(next(iter(arrays.values())))
                parts.append(
                    f"{n} frames x {len(folders)} cameras in {media['frames'] / em.episode_name(index)}"
                )
            if "plots" in media:
                quality = demo_quality.assess(arrays, store.dt_s, action_time.is_current(store.attrs))
                path = em.export_plot(arrays, index, media["plots"], f"{store.path.name} ", quality)
                parts.append(
                    f"plot {path}" + (f" (FLAGGED {','.join(quality.flags)})" if quality.flags else "")
                )
            done.append(index)
            print(f"episode {index}: " + "; ".join(parts), file=out, flush=True)
    except KeyboardInterrupt:
        from robot.interrupt import Interrupted

        partial = index if index is not None and index not in done else None
        removed = _remove_episode_media(media, partial) if partial is not None else []
        where = ", ".join(str(d) for d in media.values())
        kept = (
            f"kept the {len(done)} complete episode(s) {_span(done)} in {where}"
            if done
            else "no episode was complete, nothing kept"
        )
        gone = f"; removed the partial episode {partial} ({', '.join(removed)})" if removed else ""
        raise Interrupted(kept + gone) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _span(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}..{indices[-1]}"


def _remove_episode_media(media: dict[str, Path], index: int) -> list[str]:
    """Delete what episode ``index`` left in each media folder; returns the paths removed."""
    import shutil

    from collection.export_media import episode_name

    removed = []
    for kind, folder in media.items():
        path = folder / (f"{episode_name(index)}.png" if kind == "plots" else episode_name(index))
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(str(path))
        elif path.exists():
            path.unlink()
            removed.append(str(path))
    return removed
