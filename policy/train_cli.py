"""``rig train``: train a diffusion policy on an episode store.

Usage::

    rig train --dataset data/reach.zarr [--config policy/tiny.yaml] [--out runs/reach] [key=value ...]
    rig train --out runs/reach --resume [training.max_steps=4000]

``--out`` is the run directory (default ``runs/<UTC time>_<config name>``): checkpoints under
``checkpoints/`` with a ``latest`` link, ``config.yaml``, ``log.jsonl`` and ``loss.png``. ``--resume``
continues the run in ``--out`` from its latest checkpoint (its saved config, plus any overrides given
now), keeping the step count, optimizer, LR schedule and EMA. Under ``torchrun`` it trains with
DistributedDataParallel. The last line on stdout is one JSON object: ``final_loss`` (mean training
loss of the last 50 steps), ``train_seconds``, ``steps``, ``checkpoint``, ``run_dir``, ``dt_s`` and the
last validation metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from robot.config import (
    ConfigError,
    _deep_merge,
    add_config_arguments,
    build_config,
    config_from_args,
    parse_overrides,
)

DEFAULT_CONFIG = "policy/tiny.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rig train", description="train a diffusion policy on an episode store")
    add_config_arguments(p, DEFAULT_CONFIG)
    p.add_argument("--dataset", help="episode store (zarr directory); sets dataset.path")
    p.add_argument("--out", help="run directory (default runs/<time>_<config>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in total")
    p.add_argument("--epochs", type=int, help="number of epochs (training.num_epochs)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from policy.config import TrainConfig

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        from policy.checkpoint import load_checkpoint

        run_dir = Path(args.out)
        try:
            saved = load_checkpoint(run_dir)["config"]
        except FileNotFoundError as exc:
            raise ConfigError(f"cannot resume: {exc}") from None
        data = _deep_merge(saved, parse_overrides(args.overrides)) if args.overrides else saved
        cfg = build_config(
            TrainConfig, data, f"{run_dir} (saved config) with overrides {' '.join(args.overrides)}"
        )
    else:
        cfg = config_from_args(TrainConfig, args)
        stem = Path(args.config).stem if args.config else "default"
        run_dir = (
            Path(args.out)
            if args.out
            else Path("runs") / f"{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{stem}"
        )
        if (run_dir / "latest").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
    if args.dataset:
        cfg.dataset.path = str(args.dataset)
    if args.max_steps is not None:
        cfg.training.max_steps = args.max_steps
    if args.epochs is not None:
        cfg.training.num_epochs = args.epochs

    if cfg.dataset.path is None:
        raise ConfigError("no episode store given: pass --dataset PATH (or dataset.path=PATH)")
    if not Path(cfg.dataset.path).exists():
        raise ConfigError(f"episode store {cfg.dataset.path} does not exist (check --dataset)")
    # Cheap checks of the input before anything is written.
    from policy.dataset import open_store

    try:
        root = open_store(cfg.dataset.path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"{exc} (check --dataset)") from None
    if root["meta/episode_ends"].shape[0] == 0:
        raise ConfigError(f"episode store {cfg.dataset.path} has no episodes (check --dataset)")
    _check_finite(root, cfg.dataset.path)
    from collection import action_time

    note = action_time.describe(root.attrs, root.attrs.get("dt_s"))
    if note is not None:
        print(f"note: {cfg.dataset.path}: {note}", flush=True)

    from policy.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    try:
        summary = train(cfg, run_dir, resume=args.resume)
    except FloatingPointError as exc:
        print(f"rig train: {exc}", file=sys.stderr)
        return 1
    if summary:
        print(json.dumps(summary, allow_nan=False), flush=True)
    return 0


def _check_finite(root: Any, path: str) -> None:
    """A NaN/inf in a low-dim array of the dataset is named by key, episode and step before training
    starts (cheap: low-dim arrays are small; images are checked by `rig episodes check`)."""
    import numpy as np

    from policy.dataset import valid_episode_ends

    ends = valid_episode_ends(root, path)
    for key, arr in root["data"].arrays():
        if arr.dtype.kind != "f" or arr.ndim > 2:
            continue
        try:
            values = np.asarray(arr[: int(ends[-1])])
        except Exception as exc:  # any codec's error on a damaged chunk: name the array, not the codec
            raise ConfigError(
                f"episode store {path}: data/{key} cannot be decoded ({type(exc).__name__}: {exc}); "
                f"`rig episodes check {path}` names the episodes"
            ) from None
        bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
        if len(bad):
            row = int(bad[0])
            ep = int(np.searchsorted(ends, row, side="right"))
            step = row - (int(ends[ep - 1]) if ep else 0)
            raise ConfigError(
                f"episode store {path}: data/{key} is not finite at episode {ep} step {step} "
                f"({len(bad)} step(s) in all); fix or drop those episodes (`rig episodes check {path}`)"
            )
