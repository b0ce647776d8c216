"""Training speed and fast-path inference latency of the tiny pick_place policy per encoder shape.

    python benchmarks/encoder_bench.py [--config policy/tiny_pick_place.yaml] [--steps N] [--threads N]
                                       [--variant NAME=KEY=VALUE,KEY=VALUE ...] [--only NAME ...]

Each variant is the config plus overrides (``policy.vision.stage_strides=[2,2,1]`` ...; ``-KEY`` drops
the observation KEY, e.g. ``-camera_1``: the scene camera alone). For each: the
last feature map's size (where spatial softmax finds its keypoints), the encoder's parameters, training
steps/s (forward + backward + AdamW, under the autocast of ``training.mixed_precision`` as ``rig train``
runs it, on a synthetic batch of ``training.batch_size`` windows at the config's ``image_size``: what
``rig train`` does per step minus data loading, which the image cache makes small), the minutes 3000
steps would take at that rate, and the latency of ``Policy.predict`` after ``optimize_for_inference``
(the deploy path: resize from the stored 240x320 frames, encoders, 16 DDIM steps), p50 and p99.
Freshly initialised weights: speed does not depend on training.

With ``--threads 1`` the CPU time a step consumed (``cpu_steps_per_s``, ``cpu_min_3000``) is its cost
on an idle core, whatever else runs: the figure to compare on a shared machine (wall-clock figures
beside it). The variants are timed round-robin (a block of steps of each in turn) so that a change of load on a
shared machine hits all of them alike. The table goes to stdout; the last line is one JSON object
``{"variants": {name: {map_hw, train_steps_per_s, train_min_3000, infer_p50_ms, infer_p99_ms, ...}},
"threads": N}``. Compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.config import TrainConfig  # noqa: E402
from policy.diffusion import DiffusionPolicy  # noqa: E402
from policy.inference import Policy  # noqa: E402
from policy.obs_encoder import feature_map_size  # noqa: E402
from policy.train import _autocast_dtype  # noqa: E402
from robot.config import config_path, load_config  # noqa: E402

STORED_HW = (240, 320)  # the sim cameras' frames
# name -> overrides. "base" is the config as shipped.
DEFAULT_VARIANTS = {
    "base": [],
    "l4s1": ["policy.vision.stage_strides=[2,2,1]"],
    "l34s1": ["policy.vision.stage_strides=[2,1,1]"],
    "stem1": ["policy.vision.stem_stride=1"],
    "96x128_l4s1": [
        "policy.vision.image_size=[96,128]",
        "policy.vision.crop_shape=[88,116]",
        "policy.vision.stage_strides=[2,2,1]",
    ],
    "scene_only": ["-camera_1"],  # the config shipped before the wrist camera (issue 31)
    # bf16 autocast on the CPU (rig train's training.mixed_precision; the weights stay fp32): oneDNN's
    # bf16 convolutions where the CPU has AVX512-BF16 or AMX
    "bf16": ["training.mixed_precision=bf16"],
}


def shape_meta_for(cfg: TrainConfig) -> dict:
    """The sim pick_place store's shape_meta with the config's observation and action columns."""
    obs = {}
    for key, oc in cfg.policy.obs.items():
        if oc.type == "rgb":
            obs[key] = {"type": "rgb", "shape": [3, *STORED_HW]}
        else:
            n = 6 if key == "robot_eef_pose" else 1
            dims = oc.dims if oc.dims is not None else list(range(n))
            obs[key] = {"type": "low_dim", "shape": [len(dims)], "dims": dims}
    adims = cfg.policy.action_dims if cfg.policy.action_dims is not None else list(range(7))
    return {"obs": obs, "action": {"shape": [len(adims)], "dims": adims, "key": "action"}}


def make_model(cfg: TrainConfig, sm: dict) -> DiffusionPolicy:
    torch.manual_seed(0)
    model = DiffusionPolicy(cfg.policy, sm)
    rng = np.random.default_rng(0)
    for key, meta in [*sm["obs"].items(), ("action", sm["action"])]:
        if key == "action" or meta["type"] == "low_dim":
            d = meta["shape"][0]
            model.normalizer.fit(key, rng.uniform(-0.5, 0.5, (500, d)))
    return model


def make_batch(cfg: TrainConfig, sm: dict, rng: np.random.Generator) -> dict:
    b, h = cfg.training.batch_size, cfg.policy.horizon
    ih, iw = cfg.policy.vision.image_size or STORED_HW
    obs = {}
    for key, meta in sm["obs"].items():
        if meta["type"] == "rgb":
            obs[key] = torch.from_numpy(rng.integers(0, 256, (b, h, ih, iw, 3), dtype=np.uint8))
        else:
            obs[key] = torch.from_numpy(rng.uniform(-0.5, 0.5, (b, h, meta["shape"][0])).astype(np.float32))
    action = torch.from_numpy(rng.uniform(-0.5, 0.5, (b, h, sm["action"]["shape"][0])).astype(np.float32))
    return {"obs": obs, "action": action}


class Variant:
    def __init__(self, name: str, config: str, overrides: list[str]) -> None:
        self.name, self.overrides = name, overrides
        self.cfg = load_config(TrainConfig, config_path(config), [o for o in overrides if o[:1] != "-"])
        for key in (o[1:] for o in overrides if o[:1] == "-"):  # "-KEY": without that observation
            if self.cfg.policy.obs.pop(key, None) is None:
                raise SystemExit(
                    f"variant {name}: no observation '{key}' to drop ({', '.join(self.cfg.policy.obs)})"
                )
        self.sm = shape_meta_for(self.cfg)
        vc = self.cfg.policy.vision
        self.map_hw = feature_map_size(vc, tuple(vc.crop_shape or vc.image_size or STORED_HW))
        self.model = make_model(self.cfg, self.sm).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.amp_dtype = _autocast_dtype(self.cfg.training.mixed_precision, torch.device("cpu"))
        self.batch = make_batch(self.cfg, self.sm, np.random.default_rng(0))
        self.step_s: list[float] = []
        self.step_cpu_s: list[float] = []
        self.infer_ms: list[float] = []
        self.infer_cpu_ms: list[float] = []
        self.policy: Policy | None = None

    def train_steps(self, n: int) -> None:
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast("cpu", dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self.model.compute_loss(self.batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step_s.append(time.perf_counter() - t0)
            self.step_cpu_s.append(time.process_time() - c0)

    def make_policy(self) -> None:
        model = make_model(self.cfg, self.sm).eval()
        self.policy = Policy(model, self.cfg, self.sm, dt_s=0.1, device=torch.device("cpu"))
        self.policy.optimize_for_inference()
        rng = np.random.default_rng(1)
        n = self.policy.n_obs_steps
        self.obs = {
            k: rng.integers(0, 256, (n, *STORED_HW, 3), dtype=np.uint8)
            if m["type"] == "rgb"
            else rng.uniform(-0.4, 0.4, (n, m["shape"][0]))
            for k, m in self.sm["obs"].items()
        }
        self.policy.predict(self.obs, seed=0)  # warm-up

    def infer(self, n: int) -> None:
        assert self.policy is not None
        for i in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            self.policy.predict(self.obs, seed=i)
            self.infer_ms.append((time.perf_counter() - t0) * 1e3)
            self.infer_cpu_ms.append((time.process_time() - c0) * 1e3)

    def row(self) -> dict:
        steps_per_s = 1.0 / float(np.median(self.step_s))
        cpu_steps_per_s = 1.0 / float(np.median(self.step_cpu_s))
        vc = self.cfg.policy.vision
        return {
            "overrides": self.overrides,
            "image_hw": list(vc.image_size or STORED_HW),
            "map_hw": list(self.map_hw),
            "cameras": sum(m["type"] == "rgb" for m in self.sm["obs"].values()),
            "encoder_params_k": round(sum(p.numel() for p in self.model.obs_encoder.parameters()) / 1e3, 1),
            "train_steps_per_s": round(steps_per_s, 3),
            "train_min_3000": round(3000 / steps_per_s / 60, 1),
            "cpu_steps_per_s": round(cpu_steps_per_s, 3),
            "cpu_min_3000": round(3000 / cpu_steps_per_s / 60, 1),
            "infer_p50_ms": round(float(np.percentile(self.infer_ms, 50)), 1),
            "infer_p99_ms": round(float(np.percentile(self.infer_ms, 99)), 1),
            "infer_cpu_p50_ms": round(float(np.percentile(self.infer_cpu_ms, 50)), 1),
        }


def parse_variant(text: str) -> tuple[str, list[str]]:
    if "=" not in text:
        raise SystemExit(f"--variant wants NAME=KEY=VALUE[;KEY=VALUE...], got {text!r}")
    name, rest = text.split("=", 1)
    return name, [o for o in rest.split(";") if o]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="policy/tiny_pick_place.yaml")
    p.add_argument("--steps", type=int, default=12, help="timed training steps per variant (after 2 warm-up)")
    p.add_argument("--infer-runs", type=int, default=20, help="timed predicts per variant")
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads for training (inference: 1, as deploy)"
    )
    p.add_argument("--only", nargs="*", default=None, help="names of the default variants to run")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=KEY=VALUE;KEY=VALUE (repeatable): an extra variant",
    )
    args = p.parse_args(argv)
    variants = dict(DEFAULT_VARIANTS)
    if args.only is not None:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            raise SystemExit(f"--only: unknown variant(s) {unknown}; known: {', '.join(variants)}")
        variants = {k: variants[k] for k in args.only}
    variants.update(dict(parse_variant(v) for v in args.variant))
    vs = [Variant(name, args.config, ov) for name, ov in variants.items()]

    torch.set_num_threads(args.threads)
    for v in vs:
        v.train_steps(2)
        v.step_s.clear()
    block = 3
    for _ in range(max(1, args.steps // block)):
        for v in vs:
            v.train_steps(block)
    torch.set_num_threads(1)  # deploy's inference process runs one thread
    for v in vs:
        v.make_policy()
    block = 5
    for _ in range(max(1, args.infer_runs // block)):
        for v in vs:
            v.infer(block)

    rows = {v.name: v.row() for v in vs}
    print(
        f"config {args.config}, training threads {args.threads}, inference threads 1, stored frames {STORED_HW}"
    )
    hdr = (
        f"{'variant':<14} {'image':>8} {'map':>6} {'cams':>4} {'enc k':>7} {'steps/s':>8} "
        f"{'min/3000':>9} {'cpu st/s':>9} {'cpu min':>8} {'infer p50':>10} {'p99 ms':>7} {'cpu p50':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        print(
            f"{name:<14} {'x'.join(map(str, r['image_hw'])):>8} {'x'.join(map(str, r['map_hw'])):>6} "
            f"{r['cameras']:>4} {r['encoder_params_k']:>7} {r['train_steps_per_s']:>8.2f} "
            f"{r['train_min_3000']:>9.1f} {r['cpu_steps_per_s']:>9.2f} {r['cpu_min_3000']:>8.1f} "
            f"{r['infer_p50_ms']:>10.1f} {r['infer_p99_ms']:>7.1f} {r['infer_cpu_p50_ms']:>8.1f}"
        )
    print(json.dumps({"variants": rows, "threads": args.threads, "config": args.config}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
