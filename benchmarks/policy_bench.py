"""Diffusion-policy inference latency: plain fp32 eager against the fast path, same seed and noise.

    python benchmarks/policy_bench.py [--backbone unet|transformer] [--runs N] [--tiny-runs N] [--compile]
                                      [--device cpu|cuda]

Configs, per backbone, both with freshly initialised weights (latency does not depend on training):
the paper's real-robot config (2 cameras 240x320 cropped to 216x288, ResNet-18-GN encoders, DDIM 16
steps) with the U-Net (configs/policy/paper.yaml, down dims 512/1024/2048 = ~307 M parameters) or the
transformer (configs/policy/paper_transformer.yaml, 8 layers x 256 = ~9 M parameters), and the tiny
config (configs/policy/tiny.yaml, or tiny_reach_transformer.yaml, what `rig demo --policy
tiny_reach_transformer` trains).

- eager: fp32 weights, ``torch.no_grad``, the denoiser's conditioning (U-Net: FiLM; transformer:
  condition tokens and cross-attention keys/values) recomputed at every step (what the reference
  implementation does).
- fast, two variants, through the public ``Policy.predict`` (validation included), both with
  ``inference_mode``, the conditioning of all 16 steps computed once per chunk, the denoiser's
  convolutions and per-step linear layers as matmuls on contiguous pre-laid-out weights
  (policy/fast_inference.py), attention through ``scaled_dot_product_attention``, channels-last
  encoders, optionally ``torch.compile``:
  * fp32 weights;
  * bf16 weights, fp32 activations, the first 3 (high-noise) denoising steps on an fp32 copy.
  The reported fast path is the quicker variant whose actions stay within the bound.

Both sample from the same seed, so the initial noise is identical; ``max_abs_diff`` is the largest
difference of the sampled action windows in normalized units ([-1, 1] range; the acceptance bound
is 0.02 = 1% of that range). ``limit_ms`` estimates the memory-bound floor of the fast path: the
bytes of weights each chunk must stream (per-step denoiser weights 16 times, conditioning and encoder
weights once)
divided by the memory bandwidth measured in the same run with a large tensor copy (bytes read +
written per second).

The table goes to stdout; the last line is one JSON object with ``eager_p50_ms``, ``fast_p50_ms``,
``speedup`` (eager/fast, paper config), ``max_abs_diff``, ``limit_ms``, ``tiny_p50_ms`` and more, for
the chosen ``--backbone``.
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
from policy.fast_inference import _MatmulConv  # noqa: E402
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


CONFIGS = {  # backbone -> (paper config, tiny config)
    "unet": ("policy/paper.yaml", "policy/tiny.yaml"),
    "transformer": ("policy/paper_transformer.yaml", "policy/tiny_reach_transformer.yaml"),
}
POSE_LOW, POSE_HIGH = np.array([-0.5, -0.5, 0.0, -3, -3, -3]), np.array([0.5, 0.5, 0.3, 3, 3, 3])


def shape_meta_for(cfg: TrainConfig, stored_hw: tuple[int, int]) -> dict:
    """A 6-D pose store's shape_meta, with the pose columns the config selects (``dims``)."""
    obs = {}
    for key, oc in cfg.policy.obs.items():
        if oc.type == "rgb":
            obs[key] = {"type": "rgb", "shape": [3, *stored_hw]}
        else:
            dims = oc.dims if oc.dims is not None else list(range(6))
            obs[key] = {"type": "low_dim", "shape": [len(dims)], "dims": dims}
    adims = cfg.policy.action_dims if cfg.policy.action_dims is not None else list(range(6))
    return {"obs": obs, "action": {"shape": [len(adims)], "dims": adims, "key": "action"}}


def make_policy(name: str, stored_hw: tuple[int, int], device: torch.device) -> Policy:
    cfg = load_config(TrainConfig, config_path(name))
    sm = shape_meta_for(cfg, stored_hw)
    torch.manual_seed(0)
    model = DiffusionPolicy(cfg.policy, sm)
    rng = np.random.default_rng(0)
    for key in ("robot_eef_pose", "action"):
        dims = sm["obs"][key]["dims"] if key in sm["obs"] else sm["action"]["dims"]
        model.normalizer.fit(key, rng.uniform(POSE_LOW[dims], POSE_HIGH[dims], (500, len(dims))))
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
        policy.model.predict_action(tens, gen, cache_cond=False)
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
    """Bytes of weights the fast path streams per chunk: per plain denoiser step, per precise (fp32)
    step, and once per chunk (the conditioning cache's layers; camera encoders)."""
    denoiser = policy.model.denoiser
    once_ids = {id(p) for m in denoiser.cache_modules() for p in m.parameters()}
    fast_only, precise_only, shared, once = 0, 0, 0, 0
    for m in denoiser.modules():
        for name, p in m.named_parameters(recurse=False):
            nbytes = p.numel() * p.element_size()
            if id(p) in once_ids:
                once += nbytes
            elif isinstance(m, _MatmulConv) and name == "weight_fp32":
                precise_only += nbytes
            elif isinstance(m, _MatmulConv) and name == "weight" and m.weight_fp32 is not None:
                fast_only += nbytes
            else:
                shared += nbytes
    once += sum(p.numel() * p.element_size() for p in policy.model.obs_encoder.parameters())
    return {"per_step": shared + fast_only, "per_precise_step": shared + precise_only, "once": once}


def encoder_ms(policy: Policy, obs: dict[str, np.ndarray], runs: int, device: torch.device) -> float:
    def enc() -> None:
        with torch.inference_mode():
            policy.model.encode_obs(policy._obs_tensors(obs))

    return float(np.median(time_fn(enc, runs, device)))


def make_fast(
    base: Policy,
    device: torch.device,
    dtype: torch.dtype | None,
    encoder_dtype: torch.dtype | None,
    compile_: bool,
    cuda_graphs: bool | str = "auto",
) -> Policy:
    fast = Policy(copy.deepcopy(base.model), base.config, base.shape_meta, base.dt_s, device)
    fast.optimize_for_inference(dtype, encoder_dtype=encoder_dtype, compile=compile_, cuda_graphs=cuda_graphs)
    return fast


# Fast variants: key -> (table label, U-Net weight dtype, CUDA graphs). On CUDA also fp16 and a
# bf16 run without graphs (what the graphs save); on CPU graphs do not apply.
VARIANTS_CPU = {"fp32": ("fast, fp32 weights", None, False), "bf16": ("fast, bf16", torch.bfloat16, False)}
VARIANTS_CUDA = {
    "fp32": ("fast, fp32, graphs", None, True),
    "bf16": ("fast, bf16, graphs", torch.bfloat16, True),
    "fp16": ("fast, fp16, graphs", torch.float16, True),
    "bf16_nograph": ("fast, bf16, no graphs", torch.bfloat16, False),
}


def bench_config(
    name: str,
    stored_hw: tuple[int, int],
    runs: int,
    device: torch.device,
    compile_: bool,
    encoder_dtype: torch.dtype | None,
) -> dict:
    """Eager fp32 and two fast variants (fp32 / bf16 U-Net weights): fresh weights, same obs, seed and
    noise. The paths are timed round-robin (eager, fp32, bf16, eager, ...) so that a change of load on
    a shared machine hits all of them alike."""
    seed = 123
    eager = make_policy(name, stored_hw, device)
    obs = make_obs(eager)
    variants = VARIANTS_CUDA if device.type == "cuda" else VARIANTS_CPU
    paths = {"eager": (eager, eager_predict)}
    for key, (_, dtype, graphs) in variants.items():
        enc = encoder_dtype if dtype is not None else None
        graphs_ = graphs and not compile_
        paths[key] = (make_fast(eager, device, dtype, enc, compile_, graphs_), fast_predict)
    outs = {key: fn(pol, obs, seed) for key, (pol, fn) in paths.items()}  # warm-up (and compile)
    times: dict[str, list[float]] = {key: [] for key in paths}
    for _ in range(runs):
        for key, (pol, fn) in paths.items():
            sync(device)
            t0 = time.perf_counter()
            fn(pol, obs, seed)
            sync(device)
            times[key].append((time.perf_counter() - t0) * 1e3)
    row = {
        "config": name,
        "denoiser_params_m": sum(p.numel() for p in eager.model.denoiser.parameters()) / 1e6,
        "steps": eager.config.policy.noise.num_inference_steps,
        "eager_p50_ms": float(np.percentile(times["eager"], 50)),
        "eager_p99_ms": float(np.percentile(times["eager"], 99)),
        "eager_encoder_ms": encoder_ms(eager, obs, max(1, runs // 2), device),
    }
    row["variants"] = {k: v[0] for k, v in variants.items()}
    for key in variants:
        fast = paths[key][0]
        wb = weight_bytes(fast)
        row[key] = {
            "p50_ms": float(np.percentile(times[key], 50)),
            "p99_ms": float(np.percentile(times[key], 99)),
            "encoder_ms": encoder_ms(fast, obs, max(1, runs // 2), device),
            "max_abs_diff": float((outs[key] - outs["eager"]).abs().max()),
            "bytes_per_step": wb["per_step"],
            "bytes_per_precise_step": wb["per_precise_step"],
            "precise_steps": fast.model.precise_steps,
            "bytes_once": wb["once"],
            "matmul_layers": sum(isinstance(m, _MatmulConv) for m in fast.model.denoiser.modules()),
            "graphs": fast.model.graph_mode == "cuda",
        }
    for pol, _ in paths.values():
        pol.model.to("meta")
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=sorted(CONFIGS), default="unet", help="the denoiser to measure")
    p.add_argument("--runs", type=int, default=3, help="timed chunks per path for the paper config")
    p.add_argument("--tiny-runs", type=int, default=20, help="timed chunks per path for the tiny config")
    p.add_argument("--compile", action="store_true", help="also torch.compile the U-Net in the fast paths")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine two OpenMP threads stall under load)",
    )
    p.add_argument(
        "--encoder-dtype",
        choices=["bf16", "fp32"],
        default="fp32",
        help="camera encoders in the bf16 fast path",
    )
    p.add_argument("--bound", type=float, default=0.02, help="max |fast - eager|, normalized action units")
    args = p.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    enc_dtype = torch.bfloat16 if args.encoder_dtype == "bf16" else None
    bw = measure_bandwidth_gbs(device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, copy bandwidth {bw:.1f} GB/s (read + write)"
    )
    paper_cfg, tiny_cfg = CONFIGS[args.backbone]
    paper = bench_config(paper_cfg, (240, 320), args.runs, device, args.compile, enc_dtype)
    tiny = bench_config(tiny_cfg, (96, 128), args.tiny_runs, device, args.compile, enc_dtype)
    print()
    print(
        f"backbone {args.backbone}: {paper['denoiser_params_m']:.1f} M denoiser parameters (paper), "
        f"{tiny['denoiser_params_m']:.2f} M (tiny)"
    )
    hdr = f"{'config':<22} {'path':<36} {'p50 ms':>9} {'p99 ms':>9} {'encoder':>9} {'limit ms':>9} {'speedup':>8} {'max|d|':>8}"
    print(hdr)
    print("-" * len(hdr))
    for row in (paper, tiny):
        cfg = Path(row["config"]).stem
        print(
            f"{cfg:<22} {'eager fp32':<36} {row['eager_p50_ms']:9.1f} {row['eager_p99_ms']:9.1f} "
            f"{row['eager_encoder_ms']:9.1f} {'':>9} {1.0:7.2f}x {0.0:8.4f}"
        )
        for key, label in row["variants"].items():
            v = row[key]
            k = v["precise_steps"]
            if k:
                label = f"{label} ({k} fp32 steps)"
            chunk_bytes = (
                (row["steps"] - k) * v["bytes_per_step"] + k * v["bytes_per_precise_step"] + v["bytes_once"]
            )
            v["limit_ms"] = chunk_bytes / (bw * 1e9) * 1e3
            v["speedup"] = row["eager_p50_ms"] / v["p50_ms"]
            print(
                f"{'':<22} {label:<36} {v['p50_ms']:9.1f} {v['p99_ms']:9.1f} {v['encoder_ms']:9.1f} "
                f"{v['limit_ms']:9.1f} {v['speedup']:7.2f}x {v['max_abs_diff']:8.4f}"
            )
        # The fast path: the quickest variant whose actions stay within the bound.
        ok = [k for k in row["variants"] if row[k]["max_abs_diff"] <= args.bound]
        row["fast"] = min(ok, key=lambda k: row[k]["p50_ms"]) if ok else "fp32"
    print()
    pf = paper[paper["fast"]]
    k = pf["precise_steps"]
    print(
        f"paper fast path ({paper['fast']}): {paper['steps'] - k} denoiser steps x {pf['bytes_per_step'] / 1e6:.0f} MB "
        f"+ {k} x {pf['bytes_per_precise_step'] / 1e6:.0f} MB (fp32 steps) of weights "
        f"+ {pf['bytes_once'] / 1e6:.0f} MB once (conditioning, encoders) = {pf['limit_ms']:.0f} ms at "
        f"{bw:.1f} GB/s; measured {pf['p50_ms']:.0f} ms, of which the camera encoders (compute-bound, "
        f"4 images of 216x288) take {pf['encoder_ms']:.0f} ms"
    )
    for row in (paper, tiny):
        print(
            f"{Path(row['config']).stem}: bf16 max |d| {row['bf16']['max_abs_diff']:.4f} (bound {args.bound}) -> "
            f"fast path = {row['fast']} (freshly initialised weights; trained policies are less sensitive)"
        )
    tf = tiny[tiny["fast"]]
    result = {
        "eager_p50_ms": round(paper["eager_p50_ms"], 1),
        "fast_p50_ms": round(pf["p50_ms"], 1),
        "speedup": round(paper["eager_p50_ms"] / pf["p50_ms"], 2),
        "max_abs_diff": round(max(pf["max_abs_diff"], tf["max_abs_diff"]), 5),
        "limit_ms": round(pf["limit_ms"], 1),
        "tiny_p50_ms": round(tf["p50_ms"], 1),
        "fast_dtype": paper["fast"],
        "eager_p99_ms": round(paper["eager_p99_ms"], 1),
        "fast_p99_ms": round(pf["p99_ms"], 1),
        "fast_encoder_ms": round(pf["encoder_ms"], 1),
        "bf16_p50_ms": round(paper["bf16"]["p50_ms"], 1),
        "bf16_max_abs_diff": round(paper["bf16"]["max_abs_diff"], 5),
        "bf16_limit_ms": round(paper["bf16"]["limit_ms"], 1),
        "fp32_fast_p50_ms": round(paper["fp32"]["p50_ms"], 1),
        **{
            f"{k}_p50_ms": round(paper[k]["p50_ms"], 2)
            for k in paper["variants"]
            if k not in ("fp32", "bf16")
        },
        "graphs": pf["graphs"],
        "tiny_eager_p50_ms": round(tiny["eager_p50_ms"], 1),
        "bandwidth_gbs": round(bw, 2),
        "backbone": args.backbone,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "runs": args.runs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
