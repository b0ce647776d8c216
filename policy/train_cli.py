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

Before anything is written the store is verified as ``rig episodes check`` does it, less decoding
the images (collection/store_verify.py: metadata, layout, every chunk present, every checksum,
low-dim values finite): a store it would flag is refused with one line (exit 2), or with
``--skip-damaged`` trained without the damaged episodes, named on stderr and kept in the run's
``dataset.skip_episodes``. A store whose episodes are all shorter than one training window is
refused the same way.
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
    p.add_argument(
        "--skip-damaged",
        action="store_true",
        help="train without the episodes `rig episodes check` finds damaged (named on stderr) instead of "
        "refusing the store",
    )
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
    _verify_store(cfg, args.skip_damaged)
    _check_windows(root, cfg)
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
        print(
            f"training done: checkpoint {summary['checkpoint']}; loss curve {summary['loss_plot']}, "
            f"per-step log {summary['log']}",
            flush=True,
        )
        print(json.dumps(summary, allow_nan=False), flush=True)
    return 0


def _verify_store(cfg: Any, skip_damaged: bool) -> None:
    """Refuse a store that `rig episodes check` would flag, before anything is written: metadata,
    layout, every chunk present, every checksum against the bytes on disk, low-dim values finite
    (collection/store_verify.py; images are not decoded here). With ``skip_damaged`` the damaged
    episodes are left out (``dataset.skip_episodes``) and named on stderr; damage to the whole store
    (metadata, layout) is refused either way. A lost ``dt_s`` is accepted when ``dataset.dt_s`` is set."""
    from collection.store_verify import verify_store

    path = cfg.dataset.path
    rep = verify_store(path, decode="checksums")
    problems = [p for p in rep.problems if not (p.kind == "dt_s" and cfg.dataset.dt_s is not None)]
    if not problems:
        return
    whole = [p for p in problems if p.episodes is None]
    damaged = sorted({e for p in problems if p.episodes for e in p.episodes})
    first = (whole or problems)[0].text
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if whole or not skip_damaged:
        hint = "" if whole else f"; or pass --skip-damaged to train without episodes {_ranges(damaged)}"
        raise ConfigError(
            f"episode store {path} is damaged: {first}{more}. `rig episodes check {path}` lists every "
            f"problem{hint}"
        )
    if len(damaged) >= rep.n_episodes:
        raise ConfigError(f"episode store {path}: every episode is damaged ({first}{more})")
    cfg.dataset.skip_episodes = sorted(set(cfg.dataset.skip_episodes) | set(damaged))
    print(
        f"rig train: skipping {len(damaged)} damaged episode(s) of {rep.n_episodes}: {_ranges(damaged)} "
        f"({first}{more})",
        file=sys.stderr,
    )


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    out: list[str] = []
    for v in values:
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def _check_windows(root: Any, cfg: Any) -> None:
    """One line (exit 2) when no episode is long enough for one training window (the policy's
    ``horizon`` steps, less the padding its sampler allows at the ends)."""
    import numpy as np

    from policy.dataset import create_indices, episode_step_indices, valid_episode_ends

    pc = cfg.policy
    ends = valid_episode_ends(root, cfg.dataset.path)
    _, ds_ends = episode_step_indices(ends, cfg.dataset.downsample)
    mask = np.ones(len(ends), dtype=bool)
    mask[[e for e in cfg.dataset.skip_episodes if 0 <= e < len(ends)]] = False
    windows = create_indices(ds_ends, pc.horizon, pc.n_obs_steps - 1, pc.n_action_steps - 1, mask)
    if len(windows):
        return
    lengths = np.diff(np.concatenate([[0], ds_ends]))[mask]  # in kept (downsampled) steps
    need = pc.horizon - (pc.n_obs_steps - 1) - (pc.n_action_steps - 1)
    step = f" at downsample {cfg.dataset.downsample}" if cfg.dataset.downsample > 1 else ""
    raise ConfigError(
        f"episode store {cfg.dataset.path}: every episode is shorter than a training window (longest "
        f"{int(lengths.max()) if len(lengths) else 0} steps{step}; policy.horizon={pc.horizon} with "
        f"n_obs_steps={pc.n_obs_steps}, n_action_steps={pc.n_action_steps} needs {need} steps): record "
        "longer episodes or lower policy.horizon"
    )
