"""Checkpoint files of ``rig train`` and how to find them.

A run directory holds ``checkpoints/step_<N>.pt``, a ``latest`` symlink to the newest one, the config
(``config.yaml``), ``log.jsonl`` and ``loss.png``. A checkpoint is a ``torch.save`` dict of plain
types and tensors (loadable with ``weights_only=True``):

``format``, ``config`` (the full TrainConfig as a dict), ``backbone`` (``"unet"`` or ``"transformer"``,
as in ``config["policy"]["model"]``; absent in checkpoints older than the transformer, which are all
U-Nets), ``shape_meta``, ``dt_s``, ``model`` (state
dict), ``normalizer`` (its buffers, also part of ``model``), ``ema_model`` (state dict of the EMA
weights, or None), ``ema_meta`` (EMA bookkeeping),
``optimizer``, ``lr_scheduler``, ``step``, ``epoch``, ``git_revision``, ``history``.
A run made by ``rig policy import-reference`` (policy/reference/convert.py) also holds
``imported_from`` (the reference checkpoint's path, policy class, global_step, epoch, and which of
its weights became ``ema_model``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = "rig-diffusion-policy/1"
LATEST = "latest"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``latest`` link) -> the checkpoint file."""
    p = Path(path)
    if p.is_dir():
        link = p / LATEST
        if not link.exists():
            raise FileNotFoundError(
                f"run directory {p} has no '{LATEST}' checkpoint (did training save one?)"
            )
        p = link
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p.resolve()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or another program's pickle
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ValueError(
            f"{p} is not a rig diffusion-policy checkpoint: torch.load failed ({type(exc).__name__}: {first}). "
            "Pass a .pt file or a run directory written by `rig train`"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{p} is not a rig diffusion-policy checkpoint (format {FORMAT})")
    ckpt["path"] = str(p)
    return ckpt


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically, repoint ``latest``, keep the newest ``keep``."""
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:08d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    link = run_dir / LATEST
    tmp_link = run_dir / f".{LATEST}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(path.relative_to(run_dir))
    os.replace(tmp_link, link)
    if keep > 0:
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep]:
            old.unlink()
    return path


def state_dict_mismatch(
    own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """How ``given`` fails to fit a model whose state dict is ``own``: the keys it lacks and the keys
    the model lacks (both sorted), and the shared keys whose shapes differ (in the model's order). All
    three empty: it loads with ``strict=True``."""
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    reshaped = [k for k in own if k in given and given[k].shape != own[k].shape]
    return missing, unexpected, reshaped


def git_revision() -> str | None:
    """The project's git commit (with ``-dirty`` when the tree has changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
