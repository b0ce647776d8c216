"""``rig episodes export STORE --format lerobot DIR`` and ``rig episodes import DIR --format lerobot STORE``.

    export   a LeRobotDataset v3.0 (collection/export_lerobot.py); fps = 1 / rig.obs.dt_s of --config
             (the rig the store was recorded on) unless --fps is given
    import   a LeRobotDataset v3.0 into a new episode store (collection/import_lerobot.py)

Errors (no such store, DIR not empty, not a v3 dataset, ...) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("lerobot",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``export`` and ``import`` subcommands of ``rig episodes``."""
    from collection.episode_store import DEFAULT_IMAGE_CODEC, IMAGE_CODECS
    from collection.export_lerobot import DEFAULT_CRF

    ex = sub.add_parser("export", help="write the episodes as a LeRobotDataset v3 (--format lerobot DIR)")
    ex.add_argument("path", type=Path, help="episode store (.zarr directory)")
    ex.add_argument("--format", choices=FORMATS, required=True, help="dataset format")
    ex.add_argument("out", type=Path, metavar="DIR", help="new (or empty) folder for the dataset")
    ex.add_argument("--fps", type=int, default=None, help="frames per second (default: 1 / rig.obs.dt_s)")
    ex.add_argument("--config", default="rig/sim.yaml", help="rig config the store was recorded on")
    ex.add_argument(
        "--task", default=None, help="task description of every frame (default: the store's name)"
    )
    ex.add_argument("--crf", type=int, default=DEFAULT_CRF, help="H.264 quality (0 best, 51 worst)")
    im = sub.add_parser(
        "import", help="read a LeRobotDataset v3 into a new store (DIR --format lerobot STORE)"
    )
    im.add_argument("path", type=Path, metavar="DIR", help="LeRobot dataset folder")
    im.add_argument("--format", choices=FORMATS, required=True, help="dataset format")
    im.add_argument("store", type=Path, metavar="STORE", help="new episode store (.zarr)")
    im.add_argument("--image-codec", choices=IMAGE_CODECS, default=DEFAULT_IMAGE_CODEC)


def _fps_of_rig(config: str) -> int:
    from robot.config import config_path, load_config
    from robot.rig_config import RigConfig

    dt_s = load_config(RigConfig, config_path(config)).obs.dt_s
    fps = round(1.0 / dt_s)
    if abs(fps * dt_s - 1.0) > 1e-6:
        raise ValueError(
            f"rig.obs.dt_s = {dt_s} s in {config} is not a whole number of frames per second: pass --fps"
        )
    return fps


def run(args: argparse.Namespace) -> int:
    """Run ``export`` or ``import``; returns the exit status."""
    from collection.episode_store import EpisodeStoreError

    say = print
    try:
        if args.command == "export":
            from collection.export_lerobot import export_lerobot

            if not args.path.exists():
                raise FileNotFoundError(f"no episode store at {args.path}")
            fps = args.fps or _fps_of_rig(args.config)
            s = export_lerobot(args.path, args.out, fps, task=args.task, crf=args.crf, progress=say)
            say(
                f"exported {s.episodes} episodes, {s.frames} frames at {s.fps} fps to {s.out_dir} (LeRobot v3.0)"
            )
            return 0
        from collection.import_lerobot import import_lerobot

        if not args.path.is_dir():
            raise FileNotFoundError(f"no LeRobot dataset at {args.path}")
        s = import_lerobot(args.path, args.store, image_codec=args.image_codec, progress=say)
        say(
            f"imported {s['episodes']} episodes, {s['steps']} steps into {args.store}; keys: {', '.join(s['keys'])}"
        )
        return 0
    except (FileNotFoundError, FileExistsError, ValueError, EpisodeStoreError) as exc:
        print(f"rig episodes {args.command}: {exc}", file=sys.stderr)
        return 2
