"""Runs in the reference's virtualenv: build a small Diffusion Policy checkpoint from random weights
and the reference's own real-world config, save it the way its workspace does, and record the
reference's outputs for one observation.

    python harness.py {image,hybrid} OUT_DIR [--full-size]

Writes ``OUT_DIR/ref.ckpt`` (BaseWorkspace.save_checkpoint: a dill pickle with an OmegaConf config),
``OUT_DIR/obs.npz`` (uint8 HWC frames and raw low-dim values, as a store holds them) and
``OUT_DIR/outputs.pt`` (plain tensors: obs-encoder features, one denoising step's noise prediction,
the sampled chunk, predict_action's action) for tests/policy/test_reference_checkpoint.py.
``--full-size`` keeps the real-world config's sizes (329 M parameters for the image policy: for
measuring what converting a full-size checkpoint costs, and its differences at that size).

torchvision's compiled ops do not load with the CPU torch here: its op registrations are stubbed
(ResNet and transforms are pure Python). hydra (used only for the workspace's output folder) and
zarr (a type hint of the normalizer) are stubbed too.
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations", "zarr"):
    sys.modules[_name] = types.ModuleType(_name)
sys.modules["zarr"].Array = type("Array", (), {})
_hydra = types.ModuleType("hydra")
_hydra_core = types.ModuleType("hydra.core")
_hydra_cfg = types.ModuleType("hydra.core.hydra_config")
_hydra_cfg.HydraConfig = None
sys.modules.update({"hydra": _hydra, "hydra.core": _hydra_core, "hydra.core.hydra_config": _hydra_cfg})
sys.path.insert(0, str(Path(__file__).resolve().parent / "third_party"))

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusion_policy.common.normalize_util import get_image_range_normalizer  # noqa: E402
from diffusion_policy.model.common.normalizer import LinearNormalizer  # noqa: E402
from diffusion_policy.workspace.base_workspace import BaseWorkspace  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

HERE = Path(__file__).resolve().parent / "third_party" / "diffusion_policy" / "config"
WORKSPACE_CONFIG = {
    "image": "train_diffusion_unet_real_image_workspace.yaml",
    "hybrid": "train_diffusion_unet_real_hybrid_workspace.yaml",
}
# Small sizes so that it runs fast on CPU; everything else is the reference's real-world config.
IMAGE_SHAPE = [3, 48, 64]  # 4:3 like the real config's 240x320
CROP = [44, 58]


def build_config(kind: str, full_size: bool = False) -> OmegaConf:
    cfg = OmegaConf.load(HERE / WORKSPACE_CONFIG[kind])
    task = OmegaConf.load(HERE / "task" / "real_pusht_image.yaml")
    del cfg["defaults"], cfg["hydra"], cfg["logging"], cfg["multi_run"]
    cfg.task = task
    p = cfg.policy
    if full_size:  # the real-world config as it is
        OmegaConf.register_new_resolver("eval", eval, replace=True)
        OmegaConf.resolve(cfg)
        return cfg
    cfg.task.image_shape = IMAGE_SHAPE
    p.diffusion_step_embed_dim = 16
    p.down_dims = [16, 32, 64]
    if kind == "image":
        p.obs_encoder.resize_shape = IMAGE_SHAPE[1:]
        p.obs_encoder.crop_shape = CROP
        p.num_inference_steps = 12  # the real config's 100, shortened for CPU time
    else:
        p.crop_shape = CROP
    # the reference's train.py registers `eval` and resolves the config before the workspace saves it
    OmegaConf.register_new_resolver("eval", eval, replace=True)
    OmegaConf.resolve(cfg)
    return cfg


def instantiate(node):
    """hydra.utils.instantiate for the nodes used here (recursive ``_target_``)."""
    if isinstance(node, dict):
        node = {k: instantiate(v) for k, v in node.items()}
        if "_target_" in node:
            module, _, name = node.pop("_target_").rpartition(".")
            return getattr(importlib.import_module(module), name)(**node)
        return node
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    return node


class Workspace(BaseWorkspace):
    include_keys = ("global_step", "epoch")

    def __init__(self, cfg, policy):
        super().__init__(cfg, output_dir=None)
        self.model = policy
        self.ema_model = copy.deepcopy(policy)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        self.global_step = 1234
        self.epoch = 7


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    full_size = "--full-size" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = build_config(kind, full_size)
    policy = instantiate(OmegaConf.to_container(cfg.policy, resolve=True))
    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    # random weights everywhere (GroupNorm affine and biases included), EMA weights different again
    ws = Workspace(cfg, policy)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (ws.model, ws.ema_model):
            for prm in m.parameters():
                prm.add_(0.2 * torch.randn(prm.shape, generator=gen))
    rng = np.random.default_rng(2)
    normalizer = LinearNormalizer()
    normalizer.fit(
        {
            "action": rng.normal(0.3, 0.1, size=(500, 2)).astype(np.float32),
            "robot_eef_pose": rng.normal(0.3, 0.1, size=(500, 2)).astype(np.float32),
        }
    )
    for key, attr in shape_meta["obs"].items():
        if attr["type"] == "rgb":
            normalizer[key] = get_image_range_normalizer()
    ws.model.set_normalizer(normalizer)
    ws.ema_model.set_normalizer(normalizer)
    # one optimizer step, so that the optimizer state holds tensors as a trained one does
    ws.model.train()
    ws.optimizer.zero_grad()
    sum(p.sum() for p in ws.model.parameters()).backward()
    ws.optimizer.step()
    ws.save_checkpoint(path=out / "ref.ckpt", use_thread=False)

    # one observation, as the store and the rig hold it: uint8 HWC frames, raw low-dim values
    to = cfg.n_obs_steps
    obs_np = {}
    for key, attr in shape_meta["obs"].items():
        shape = attr["shape"]
        if attr["type"] == "rgb":
            obs_np[key] = rng.integers(0, 256, size=(to, shape[1], shape[2], 3), dtype=np.uint8)
        else:
            obs_np[key] = rng.normal(0.3, 0.1, size=(to, *shape)).astype(np.float32)
    np.savez(out / "obs.npz", **obs_np)
    # the reference's real-robot path (real_world/real_inference_util.get_real_obs_dict): HWC uint8
    # -> CHW float32 in [0, 1]; low-dim as is
    obs = {}
    for key, arr in obs_np.items():
        if arr.dtype == np.uint8:
            arr = np.moveaxis(arr, -1, 1).astype(np.float32) / 255.0
        obs[key] = torch.from_numpy(arr)[None]
    policy = ws.ema_model.eval()
    with torch.no_grad():
        nobs = policy.normalizer.normalize(obs)
        flat = {k: v[:, :to].reshape(-1, *v.shape[2:]) for k, v in nobs.items()}
        features = policy.obs_encoder(flat)
        global_cond = features.reshape(1, -1)
        x = torch.randn((1, cfg.horizon, 2), generator=gen)
        t = torch.tensor(57)
        eps = policy.model(x, t, global_cond=global_cond)
        torch.manual_seed(42)
        result = policy.predict_action(obs)
    torch.save(
        {
            "features": features,
            "step_sample": x,
            "step_t": t,
            "step_eps": eps,
            "action_pred": result["action_pred"],
            "action_pred_norm": policy.normalizer["action"].normalize(result["action_pred"]),
            "action": result["action"],
            "seed": 42,
            "num_inference_steps": policy.num_inference_steps,
            "state_keys": list(ws.ema_model.state_dict().keys()),
        },
        out / "outputs.pt",
    )
    print("ok", kind, out)


if __name__ == "__main__":
    main()
