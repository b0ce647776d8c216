"""Training loop of ``rig train`` (see policy/train_cli.py for the command line).

Single process on CPU or one GPU, or DistributedDataParallel when started by ``torchrun`` (which sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``): each rank reads its share of every epoch, rank 0 validates,
logs and writes checkpoints. Ctrl-C (SIGINT, also as torchrun forwards it to every rank) ends the
run at the next step boundary (all ranks at the same step): rank 0 writes a resumable checkpoint
first, then :class:`robot.interrupt.Interrupted` says where it is. AdamW with linear warmup + cosine decay (diffusers ``get_scheduler``),
EMA of the weights (diffusers ``EMAModel``, warmup power 0.75), gradient-norm clipping, autocast
(bf16, or fp16 with a grad scaler) on GPU only unless configured otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from policy.checkpoint import git_revision, load_checkpoint, save_checkpoint
from policy.config import TrainConfig
from policy.dataset import EpisodeDataset, make_loader
from policy.diffusion import DiffusionPolicy
from policy.threads import ThreadChooser
from robot.interrupt import Interrupted


def _dist_info() -> tuple[bool, int, int, int]:
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return (
            True,
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    return False, 0, 1, 0


def _replicas_in_sync(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether every rank ends with the same weights (DDP keeps them equal; a rank that skipped an
    update or diverged shows here): the min and max over ranks of a weight checksum agree."""
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
        lo, hi = total.clone().to(device), total.clone().to(device)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool((hi - lo).abs() <= 1e-9 * max(1.0, float(hi.abs())))


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"training.device={name} but no CUDA GPU is visible; use training.device=cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "no" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        if device.type != "cuda":
            raise ValueError(
                "training.mixed_precision=fp16 needs a GPU (its grad scaler is CUDA-only); use bf16 or no"
            )
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there autocast's bf16 convolutions
    are faster than fp32 (benchmarks/encoder_bench.py, variant bf16); elsewhere oneDNN emulates them."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def plot_losses(path: Path, history: dict[str, list]) -> None:
    """Write the loss curve PNG (train loss per step, smoothed; validation loss points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.asarray(history["train_step"])
    losses = np.asarray(history["train_loss"])
    if len(steps):
        ax.plot(steps, losses, lw=0.5, alpha=0.4, label="train (per step)")
        w = max(1, len(losses) // 50)
        if w > 1:
            smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1 :], smooth, lw=1.5, label=f"train ({w}-step mean)")
    if history["val_step"]:
        ax.plot(history["val_step"], history["val_loss"], "o-", label="validation (EMA)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def validate(
    model: DiffusionPolicy, loader: Any, cfg: TrainConfig, device: torch.device, seed: int
) -> dict[str, float]:
    """Denoising loss on up to ``val_batches`` batches and action MSE of sampled chunks (normalized
    units, executed part of the window) on ``sample_batches`` batches of held-out episodes."""
    was_training = model.training
    model.eval()
    tc, pc = cfg.training, cfg.policy
    losses, mses, raw_mses = [], [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for i, batch in enumerate(loader):
            if i >= max(tc.val_batches, tc.sample_batches):
                break
            batch = _to_device(batch, device)
            if i < tc.val_batches:
                losses.append(float(model.compute_loss(batch)))
            if i < tc.sample_batches:
                pred = model.predict_action(batch["obs"], gen)
                sl = slice(pc.n_obs_steps - 1, pc.n_obs_steps - 1 + pc.n_action_steps)
                gt = batch["action"][:, sl].float()
                norm = model.normalizer
                mses.append(
                    float(
                        ((norm.normalize("action", pred[:, sl]) - norm.normalize("action", gt)) ** 2).mean()
                    )
                )
                raw_mses.append(float(((pred[:, sl] - gt) ** 2).mean()))
    model.train(was_training)
    out = {}
    if losses:
        out["val_loss"] = float(np.mean(losses))
    if mses:
        out["val_action_mse"] = float(np.mean(mses))
        out["val_action_mse_raw"] = float(np.mean(raw_mses))
    return out


@contextlib.contextmanager
def _sigint_as_flag() -> Any:
    """SIGINT sets the yielded event instead of raising mid-step (a half-applied optimizer step
    must not be checkpointed); outside the main thread (tests) nothing is installed."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _any_rank(flag: bool, distributed: bool, device: torch.device) -> bool:
    """True on every rank once one rank has the flag (so that all ranks stop at the same step)."""
    if not distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _end_distributed(train_model: torch.nn.Module) -> None:
    """Barrier, then the end of the process group, with DDP's reducer freed in between.

    The reducer holds the group from C++. Freed last through it (when the DDP wrapper goes, possibly at
    interpreter exit), the group's destructor joins gloo's worker threads while holding the GIL, and a
    worker that still has to free the barrier's work waits for the GIL: the rank hangs at exit (seen
    under load, 1 in ~6 torchrun runs; the PyTorch binding of the group itself releases the GIL there).
    """
    dist.barrier()
    if isinstance(train_model, torch.nn.parallel.DistributedDataParallel):
        train_model.logger = None  # the logger holds the reducer too
        train_model.reducer = None  # freed now: the group is still registered, so it stays
    dist.destroy_process_group()


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) into ``run_dir``; returns the summary printed as the final JSON line
    (empty on ranks other than 0). ``training.torch_threads`` applies for the call only
    (policy/threads.py)."""
    prev_threads = torch.get_num_threads()
    try:
        return _train(cfg, run_dir, resume)
    finally:
        torch.set_num_threads(prev_threads)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    distributed, rank, world, local_rank = _dist_info()
    tc, pc = cfg.training, cfg.policy
    device = _pick_device(tc.device, local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    is_main = rank == 0
    if cfg.dataset.path is None:
        raise ValueError("no episode store given: pass --dataset PATH (or dataset.path=PATH)")

    ckpt = load_checkpoint(run_dir, map_location="cpu") if resume else None
    torch.manual_seed(tc.seed + rank + (ckpt["step"] if ckpt else 0))
    np.random.seed((tc.seed + rank) % 2**32)

    shape_meta = ckpt["shape_meta"] if ckpt else None
    train_ds = EpisodeDataset(cfg.dataset.path, pc, cfg.dataset, "train", shape_meta=shape_meta)
    shape_meta = train_ds.shape_meta
    if len(train_ds) == 0:
        raise ValueError(f"episode store {cfg.dataset.path} gives no training windows")
    val_ds = None
    if cfg.dataset.val_ratio > 0 and train_ds.n_episodes > 1:
        val_ds = EpisodeDataset(cfg.dataset.path, pc, cfg.dataset, "val", shape_meta=shape_meta)
    dt_s = ckpt["dt_s"] if ckpt else train_ds.dt_s

    model = DiffusionPolicy(pc, shape_meta)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    else:
        fit = train_ds.low_dim_data()
        if model.relative_pairs:  # the action ranges the model sees: offsets from the observed TCP
            actions, eef = (torch.from_numpy(a).double() for a in train_ds.action_windows())
            rel = model.to_relative(actions, {"robot_eef_pose": eef})
            fit["action"] = rel.reshape(-1, rel.shape[-1]).numpy()
        for key, data in fit.items():
            model.normalizer.fit(key, data)
    model.to(device)

    ema_model, ema = None, None
    if tc.use_ema:
        ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        ema = EMAModel(
            model.parameters(), decay=tc.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0, power=tc.ema_power
        )
        if ckpt and ckpt.get("ema_model") is not None:
            ema_model.load_state_dict(ckpt["ema_model"])
            meta = dict(ckpt["ema_meta"])
            meta["shadow_params"] = [p.detach().clone() for p in ema_model.parameters()]
            ema.load_state_dict(meta)

    optimizer = torch.optim.AdamW(
        model.optim_groups(tc.weight_decay, tc.obs_encoder_weight_decay), lr=tc.lr, betas=tc.betas
    )
    loader = make_loader(train_ds, tc.batch_size, True, cfg.dataset.num_workers, tc.seed, distributed)
    val_loader = None
    if val_ds is not None and len(val_ds) > 0 and is_main:
        val_loader = make_loader(val_ds, tc.batch_size, True, 0, cfg.dataset.seed, False, drop_last=False)
    per_epoch = len(loader)
    total_steps = tc.num_epochs * per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps) if tc.num_epochs > 0 else tc.max_steps
    lr_sched = get_scheduler(
        tc.lr_scheduler,
        optimizer,
        num_warmup_steps=tc.lr_warmup_steps,
        num_training_steps=max(1, total_steps),
    )
    step, epoch = 0, 0
    history: dict[str, list] = {
        "train_step": [],
        "train_loss": [],
        "val_step": [],
        "val_loss": [],
        "val_action_mse": [],
    }
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_sched.load_state_dict(ckpt["lr_scheduler"])
        step, epoch = int(ckpt["step"]), int(ckpt["epoch"])
        history = {k: list(v) for k, v in ckpt["history"].items()}

    train_model: torch.nn.Module = model
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp_dtype = _autocast_dtype(tc.mixed_precision, device)
    if amp_dtype == torch.bfloat16 and device.type == "cpu" and is_main and not _cpu_has_bf16():
        print(
            "train: training.mixed_precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated "
            "there and slower than fp32; set training.mixed_precision=no",
            file=sys.stderr,
            flush=True,
        )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device.type == "cuda")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "log.jsonl"
    rev = git_revision()
    last_ckpt: Path | None = None
    last_val: dict[str, float] = {}
    start_step = step

    def checkpoint() -> Path:
        if ema is not None:
            ema.copy_to(ema_model.parameters())
        ema_meta = None
        if ema is not None:
            ema_meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
        payload = {
            "config": cfg.model_dump(mode="json"),
            "backbone": pc.model.backbone,  # also in config; here for other tools
            "shape_meta": shape_meta,
            "dt_s": float(dt_s),
            "action_time": train_ds.action_time,  # the store's action-time rule (None: legacy)
            "model": model.state_dict(),
            "normalizer": model.normalizer.state_dict(),  # also inside "model"; here for other tools
            "ema_model": ema_model.state_dict() if ema_model is not None else None,
            "ema_meta": ema_meta,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_sched.state_dict(),
            "step": step,
            "epoch": epoch,
            "git_revision": rev,
            "history": history,
        }
        path = save_checkpoint(run_dir, step, payload, tc.keep_checkpoints)
        plot_losses(run_dir / "loss.png", history)
        return path

    def run_validation() -> dict[str, float]:
        if val_loader is None:
            return {}
        if ema is not None:
            ema.copy_to(ema_model.parameters())
        metrics = validate(
            ema_model if ema_model is not None else model, val_loader, cfg, device, cfg.dataset.seed
        )
        if "val_loss" in metrics and not math.isfinite(metrics["val_loss"]):
            raise FloatingPointError(
                f"validation loss is {metrics['val_loss']} at step {step}: the validation episodes hold "
                "non-finite values? Run `rig episodes check` on the dataset"
            )
        if "val_loss" in metrics:
            history["val_step"].append(step)
            history["val_loss"].append(metrics["val_loss"])
            history["val_action_mse"].append(metrics.get("val_action_mse", float("nan")))
        return metrics

    threads = ThreadChooser(
        tc.torch_threads,
        (lambda msg: print(msg, file=sys.stderr, flush=True)) if is_main else (lambda _m: None),
        world_size=world,
    )
    t0 = time.monotonic()
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not is_main,
        desc="train",
        unit="step",
        mininterval=0.5,
        dynamic_ncols=True,
    )
    model.train()
    done = step >= total_steps
    interrupted = False
    with (
        open(log_path, "a") if is_main else contextlib.nullcontext() as log,
        _sigint_as_flag() as sigint,
    ):
        while not done:
            if distributed:
                loader.sampler.set_epoch(epoch)
            for batch in loader:
                threads.before_step()
                batch = _to_device(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = train_model(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tc.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                lr_sched.step()
                if ema is not None:
                    ema.step(model.parameters())
                step += 1
                loss_value = float(loss.detach())
                threads.after_step()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"training loss became {loss_value} at step {step}; "
                        "lower training.lr or check the data"
                    )
                if is_main:
                    history["train_step"].append(step)
                    history["train_loss"].append(loss_value)
                    bar.update(1)
                    if step % tc.log_every_steps == 0:
                        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_sched.get_last_lr()[0]:.2e}")
                        log.write(
                            json.dumps(
                                {
                                    "step": step,
                                    "epoch": epoch,
                                    "loss": loss_value,
                                    "lr": lr_sched.get_last_lr()[0],
                                }
                            )
                            + "\n"
                        )
                    if tc.val_every_steps > 0 and step % tc.val_every_steps == 0 and step < total_steps:
                        last_val = run_validation()
                        if last_val:
                            log.write(json.dumps({"step": step, **last_val}) + "\n")
                            text = ", ".join(f"{k}={v:.4f}" for k, v in last_val.items())
                            bar.write(f"step {step}: {text}", file=sys.stderr)
                    if (
                        tc.checkpoint_every_steps > 0
                        and step % tc.checkpoint_every_steps == 0
                        and step < total_steps
                    ):
                        last_ckpt = checkpoint()
                if step >= total_steps:
                    done = True
                    break
                if _any_rank(sigint.is_set(), distributed, device):
                    interrupted = done = True
                    break
            else:
                epoch += 1
    bar.close()
    if interrupted:
        kept = ""
        if is_main:
            kept = (
                f"checkpoint of step {step} saved in {checkpoint()}; continue with "
                f"`rig train --resume --out {run_dir}`"
            )
        if distributed:
            _end_distributed(train_model)
        if not is_main:
            raise SystemExit(130)  # rank 0 alone says what was kept
        raise Interrupted(kept)
    train_seconds = time.monotonic() - t0
    ranks_in_sync = _replicas_in_sync(model, device) if distributed else True
    summary: dict[str, Any] = {}
    if is_main:
        last_val = run_validation() or last_val
        if last_val:
            with open(log_path, "a") as log:
                log.write(json.dumps({"step": step, **last_val}) + "\n")
        last_ckpt = checkpoint()
        recent = history["train_loss"][-min(50, max(1, len(history["train_loss"]))) :]
        summary = {
            "final_loss": float(np.mean(recent)) if recent else float("nan"),
            "train_seconds": round(train_seconds, 3),
            "steps": step,
            "steps_this_run": step - start_step,
            "checkpoint": str(last_ckpt),
            "run_dir": str(run_dir),
            "loss_plot": str(run_dir / "loss.png"),  # written with every checkpoint
            "log": str(log_path),  # one JSON line per logged step (losses, lr, speed)
            "dt_s": float(dt_s),
            "world_size": world,
            "device": str(device),
            "mixed_precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "no",
            "backbone": pc.model.backbone,
            "ranks_in_sync": ranks_in_sync,
            **last_val,
        }
    if distributed:
        _end_distributed(train_model)
    return summary
