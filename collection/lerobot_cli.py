"""``rig episodes import DIR --format lerobot STORE``: a LeRobotDataset v3.0 into a new episode store
(collection/import_lerobot.py). The other direction is ``rig episodes export STORE --format lerobot DIR``
(collection/export_cli.py with collection/export_lerobot.py).

Errors (no dataset, not a v3 dataset, STORE exists, a failure mid-way, ...) print one line and exit
2, leaving nothing (the store is built aside and renamed into place when complete). Features left
out are printed one per line (``left out NAME (dtype, shape S): why``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("lerobot",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``import`` subcommand of ``rig episodes``."""
    from collection.episode_store import DEFAULT_IMAGE_CODEC, IMAGE_CODECS

    im = sub.add_parser(
        "import", help="read a LeRobotDataset v3 into a new store (DIR --format lerobot STORE)"
    )
    im.add_argument("path", type=Path, metavar="DIR", help="LeRobot dataset folder")
    im.add_argument("--format", choices=FORMATS, required=True, help="dataset format")
    im.add_argument("store", type=Path, metavar="STORE", help="new episode store (.zarr)")
    im.add_argument(
        "--image-codec",
        choices=IMAGE_CODECS,
        default=None,
        help=f"default: jpegxl_lossless for PNG image features (exact), {DEFAULT_IMAGE_CODEC} for videos",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``import``; returns the exit status."""
    from collection.episode_store import EpisodeStoreError
    from collection.import_lerobot import import_lerobot

    try:
        if not args.path.is_dir():
            raise FileNotFoundError(f"no LeRobot dataset at {args.path}")
        s = import_lerobot(
            args.path,
            args.store,
            image_codec=args.image_codec,
            progress=print,
            warn=lambda msg: print(f"rig episodes import: warning: {msg}", file=sys.stderr),
        )
    except (FileNotFoundError, FileExistsError, ValueError, EpisodeStoreError) as exc:
        print(f"rig episodes import: {exc} (nothing was written)", file=sys.stderr)
        return 2
    for what in s["dropped"]:
        print(f"left out {what}")
    print(
        f"imported {s['episodes']} episodes, {s['steps']} steps into {args.store}; keys: {', '.join(s['keys'])}; "
        f"images: {s['image_codec']}"
    )
    return 0
