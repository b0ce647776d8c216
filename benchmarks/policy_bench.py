"""Diffusion-policy inference latency: plain fp32 eager against the fast path, same seed and noise.

    python benchmarks/policy_bench.py [--runs N] [--tiny-runs N] [--compile] [--device cpu|cuda]

Configs: the paper's real-robot config (configs/policy/paper.yaml: 2 cameras 240x320 cropped to
216x288, ResNet-18-GN encoders, U-Net down dims 512/1024/2048 = ~307 M parameters, DDIM 16 steps) and
configs/policy/tiny.yaml, both with freshly initialised weights (latency does not depend on training).

- eager: fp32 weights, ``torch.no_grad``, the U-Net's FiLM conditioning recomputed at every step
  (what the reference implementation does).
- fast: ``Policy.optimize_for_inference`` -- ``inference_mode``, FiLM parameters of all 16 steps computed
  once per chunk, U-Net convolutions as matmuls on contiguous bf16 weights, bf16 channels-last
  encoders, optionally ``torch.compile`` -- through the public ``Policy.predict`` (validation included).

Both sample from the same seed, so the initial noise is identical; ``max_abs_diff`` is the largest
difference of the sampled action windows in normalized units ([-1, 1] range; the acceptance bound
is 0.02 = 1% of that range). ``limit_ms`` estimates the memory-bound floor of the fast path: the
bytes of weights each chunk must stream (U-Net conv weights 16 times, FiLM and encoder weights once)
divided by the memory bandwidth measured in the same run with a large tensor copy.

The table goes to stdout; the last line is one JSON object with ``eager_p50_ms``, ``fast_p50_ms``,
``speedup`` (eager/fast, paper config), ``max_abs_diff``, ``limit_ms``, ``tiny_p50_ms`` and more.
Latencies on a shared machine are noisy: read p50 and p99 together, and compare only within a run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.config import TrainConfig  # noqa: E402
from policy.diffusion import DiffusionPolicy  # noqa: E402
from policy.fast_inference import LinearConv1d, LinearConvTranspose1d  # noqa: E402
from policy.inference import Policy  # noqa: E402
from robot.config import config_path, load_config  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth_gbs(device: torch.device, mbytes: int = 512, reps: int = 5) -> float:
    """Best-of-``reps`` copy bandwidth (bytes read + bytes written per second) of a large tensor."""
    n = mbytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / best / 1e9


def shape_meta_for(cfg: TrainConfig, stored_hw: tuple[int, int]) -> dict:
    obs = {}
    for key, oc in cfg.policy.obs.items():
        if oc.type == "rgb":
            obs[key] = {"type": "rgb", "shape": [3, *stored_hw]}
        else:
            obs[key] = {"type": "low_dim", "shape": [6], "dims": list(range(6))}
    return {"obs": obs, "action": {"shape": [6], "dims": list(range(6)), "key": "action"}}


def make_policy(name: str, stored_hw: tuple[int, int], device: torch.device) -> Policy:
    cfg = load_config(TrainConfig, config_path(name))
    sm = shape_meta_for(cfg, stored_hw)
    torch.manual_seed(0)
    model = DiffusionPolicy(cfg.policy, sm)
    rng = np.random.default_rng(0)
    model.normalizer.fit(
        "robot_eef_pose", rng.uniform([-0.5, -0.5, 0.0, -3, -3, -3], [0.5, 0.5, 0.3, 3, 3, 3], (500, 6))
    )
    model.normalizer.fit(
        "action", rng.uniform([-0.5, -0.5, 0.0, -3, -3, -3], [0.5, 0.5, 0.3, 3, 3, 3], (500, 6))
    )
    return Policy(model.eval(), cfg, sm, dt_s=0.1, device=device)


def make_obs(policy: Policy, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = policy.n_obs_steps
    obs = {}
    for key, meta in policy.shape_meta["obs"].items():
        if meta["type"] == "rgb":
            _, h, w = meta["shape"]
            obs[key] = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        else:
            obs[key] = rng.uniform(-0.4, 0.4, (n, *meta["shape"]))
    return obs


def eager_predict(policy: Policy, obs: dict[str, np.ndarray], seed: int) -> torch.Tensor:
    """The plain path: fp32, no_grad, per-step FiLM. Returns the normalized action window."""
    with torch.no_grad():
        tens = policy._obs_tensors(obs)
        gen = torch.Generator().manual_seed(seed)
        policy.model.predict_action(tens, gen, cache_film=False)
    return policy.model.last_normalized_actions.float().cpu()


def fast_predict(policy: Policy, obs: dict[str, np.ndarray], seed: int) -> torch.Tensor:
    policy.predict(obs, seed=seed)
    return policy.model.last_normalized_actions.float().cpu()


def time_fn(fn, runs: int, device: torch.device, warmup: int = 1) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def weight_bytes(policy: Policy) -> dict[str, int]:
    """Bytes of weights streamed per chunk by the fast path: per U-Net step and once per chunk."""
    per_step = once = 0
    unet = policy.model.unet
    film_params = {id(p) for blk in unet._res_blocks for p in blk.cond_encoder.parameters()}
    film_params |= {id(p) for p in unet.diffusion_step_encoder.parameters()}
    for p in unet.parameters():
        nbytes = p.numel() * p.element_size()
        if id(p) in film_params:
            once += nbytes
        else:
            per_step += nbytes
    for p in policy.model.obs_encoder.parameters():
        once += p.numel() * p.element_size()
    return {"per_step": per_step, "once": once}


def encoder_ms(policy: Policy, obs: dict[str, np.ndarray], runs: int, device: torch.device) -> float:
    def enc() -> None:
        with torch.inference_mode():
            policy.model.encode_obs(policy._obs_tensors(obs))

    return float(np.median(time_fn(enc, runs, device)))


def bench_config(
    name: str,
    stored_hw: tuple[int, int],
    runs: int,
    device: torch.device,
    compile_: bool,
    encoder_dtype: torch.dtype | None,
) -> dict:
    """Time eager and fast predictions of one config (fresh weights, same obs, seed and noise)."""
    eager = make_policy(name, stored_hw, device)
    obs = make_obs(eager)
    seed = 123
    n_params = sum(p.numel() for p in eager.model.unet.parameters())
    ref = eager_predict(eager, obs, seed)
    eager_ms = time_fn(lambda: eager_predict(eager, obs, seed), runs, device)
    fast = Policy(copy.deepcopy(eager.model), eager.config, eager.shape_meta, eager.dt_s, device)
    eager_enc = encoder_ms(eager, obs, max(1, runs // 2), device)
    eager.model.to("meta")  # free the fp32 copy (1.2 GB for the paper config)
    gc.collect()
    fast.optimize_for_inference(torch.bfloat16, encoder_dtype=encoder_dtype, compile=compile_)
    out = fast_predict(fast, obs, seed)
    fast_ms = time_fn(lambda: fast_predict(fast, obs, seed), runs, device)
    diff = float((out - ref).abs().max())
    enc = encoder_ms(fast, obs, max(1, runs // 2), device)
    wb = weight_bytes(fast)
    convs = sum(isinstance(m, LinearConv1d | LinearConvTranspose1d) for m in fast.model.unet.modules())
    return {
        "config": name,
        "unet_params_m": n_params / 1e6,
        "eager_p50_ms": float(np.percentile(eager_ms, 50)),
        "eager_p99_ms": float(np.percentile(eager_ms, 99)),
        "fast_p50_ms": float(np.percentile(fast_ms, 50)),
        "fast_p99_ms": float(np.percentile(fast_ms, 99)),
        "fast_encoder_ms": enc,
        "eager_encoder_ms": eager_enc,
        "max_abs_diff": diff,
        "bytes_per_step": wb["per_step"],
        "bytes_once": wb["once"],
        "steps": fast.config.policy.noise.num_inference_steps,
        "matmul_convs": convs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="timed chunks per path for the paper config")
    p.add_argument("--tiny-runs", type=int, default=20, help="timed chunks per path for the tiny config")
    p.add_argument("--compile", action="store_true", help="also torch.compile the U-Net in the fast path")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--encoder-dtype",
        choices=["bf16", "fp32"],
        default="fp32",
        help="camera encoder weights in the fast path",
    )
    args = p.parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    enc_dtype = torch.bfloat16 if args.encoder_dtype == "bf16" else None
    bw = measure_bandwidth_gbs(device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, copy bandwidth {bw:.1f} GB/s (read + write)"
    )
    rows = [
        bench_config("policy/paper.yaml", (240, 320), args.runs, device, args.compile, enc_dtype),
        bench_config("policy/tiny.yaml", (96, 128), args.tiny_runs, device, args.compile, enc_dtype),
    ]
    print()
    hdr = (
        f"{'config':<18} {'U-Net M':>8} {'eager p50':>10} {'eager p99':>10} {'fast p50':>9} {'fast p99':>9} "
    )
    hdr += f"{'encoder':>8} {'limit':>8} {'speedup':>8} {'max|d|':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        r["limit_ms"] = (r["steps"] * r["bytes_per_step"] + r["bytes_once"]) / (bw * 1e9) * 1e3
        r["speedup"] = r["eager_p50_ms"] / r["fast_p50_ms"]
        print(
            f"{Path(r['config']).stem:<18} {r['unet_params_m']:8.1f} {r['eager_p50_ms']:9.1f}ms {r['eager_p99_ms']:9.1f}ms"
            f" {r['fast_p50_ms']:8.1f}ms {r['fast_p99_ms']:8.1f}ms {r['fast_encoder_ms']:7.1f}ms {r['limit_ms']:7.1f}ms"
            f" {r['speedup']:7.2f}x {r['max_abs_diff']:8.4f}"
        )
    paper, tiny = rows
    print()
    print(
        f"paper fast path: {paper['steps']} U-Net steps x {paper['bytes_per_step'] / 1e6:.0f} MB of bf16 weights "
        f"+ {paper['bytes_once'] / 1e6:.0f} MB once = {paper['limit_ms']:.0f} ms at {bw:.1f} GB/s; "
        f"measured {paper['fast_p50_ms']:.0f} ms of which the camera encoders take {paper['fast_encoder_ms']:.0f} ms "
        f"(compute-bound convolutions on 4 images of 216x288)"
    )
    ok = paper["max_abs_diff"] <= 0.02 and tiny["max_abs_diff"] <= 0.02
    print(
        f"max |fast - eager| in normalized action units: paper {paper['max_abs_diff']:.4f}, "
        f"tiny {tiny['max_abs_diff']:.4f} (bound 0.02): {'OK' if ok else 'EXCEEDED'}"
    )
    result = {
        "eager_p50_ms": round(paper["eager_p50_ms"], 1),
        "fast_p50_ms": round(paper["fast_p50_ms"], 1),
        "speedup": round(paper["speedup"], 2),
        "max_abs_diff": round(max(paper["max_abs_diff"], tiny["max_abs_diff"]), 5),
        "limit_ms": round(paper["limit_ms"], 1),
        "tiny_p50_ms": round(tiny["fast_p50_ms"], 1),
        "tiny_eager_p50_ms": round(tiny["eager_p50_ms"], 1),
        "eager_p99_ms": round(paper["eager_p99_ms"], 1),
        "fast_p99_ms": round(paper["fast_p99_ms"], 1),
        "fast_encoder_ms": round(paper["fast_encoder_ms"], 1),
        "bandwidth_gbs": round(bw, 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "runs": args.runs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
