"""Convert a Diffusion Policy reference workspace checkpoint into a run of this project.

Supported policy classes (``cfg.policy._target_``):

- ``DiffusionUnetImagePolicy``: MultiImageObsEncoder with one torchvision ResNet-18 per camera
  (BatchNorm replaced by GroupNorm), global average pool, optional resize (only to the image's own
  size), center crop at inference, ImageNet normalization;
- ``DiffusionUnetHybridImagePolicy``: robomimic's encoder (ResNet-18 conv trunk, spatial softmax,
  a linear layer to ``feature_dimension``; GroupNorm), center crop at inference.

Both with ``obs_as_global_cond`` and a ``DDIMScheduler`` (eta 0; sampled with the config's
``num_inference_steps``). Their weights map onto :class:`policy.diffusion.DiffusionPolicy` by renames
and two permutations that change no arithmetic: the U-Net's down/up-sampling convs lose their
``.conv`` level; the observation feature's layout (the reference orders cameras sorted, or robomimic
in shape_meta order, and spatial-softmax keypoints interleaved as x0, y0, x1, y1 ...) is matched by
permuting the input columns of the U-Net's FiLM layers and of the keypoint projection. The image
path is the reference's: uint8 / 255, its range normalizer (x * 2 - 1), then ImageNet mean/std
where configured (``VisionConfig.pixel_range = "symmetric"``).

Tensors are taken from the (memory-mapped) reference state dicts as they are, so the conversion
holds one copy of the weights at most (torch.save writes from the file's pages).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from policy.reference.safe_load import RestrictedUnpickler

SUPPORTED = ("DiffusionUnetImagePolicy", "DiffusionUnetHybridImagePolicy")
# The reference's real-robot loop runs at 10 Hz (its eval_real_robot.py frequency) on 10 Hz data.
DEFAULT_DT_S = 0.1
POSE_STORED_DIM = 6  # this rig's robot_eef_pose and pose actions: x, y, z, rx, ry, rz


class ReferenceCheckpointError(ValueError):
    """The checkpoint is readable but cannot be converted (one line saying what and why)."""


@dataclass
class Converted:
    """What :func:`convert` produces: the run's checkpoint payload and the key table to print."""

    payload: dict[str, Any]
    table: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    policy_class: str = ""


def _get(cfg: dict[str, Any], path: str, default: Any = ...) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise ReferenceCheckpointError(f"the checkpoint's config has no {path}")
            return default
        node = node[part]
    return node


def _small_pickle(blob: Any) -> Any:
    """A workspace ``pickles`` entry (dill bytes of an int such as global_step), read with the same
    allow-list; anything else is ignored."""
    if not isinstance(blob, bytes | bytearray):
        return None
    try:
        value = RestrictedUnpickler(io.BytesIO(blob)).load()
    except Exception:  # not needed for the conversion: an unreadable entry is only not reported
        return None
    return value if isinstance(value, int) else None


def _check_scheduler(pcfg: dict[str, Any]) -> dict[str, Any]:
    sched = _get(pcfg, "noise_scheduler")
    target = str(sched.get("_target_", "")).rsplit(".", 1)[-1]
    if target != "DDIMScheduler":
        raise ReferenceCheckpointError(
            f"the checkpoint samples with {target or 'an unnamed scheduler'}; only DDIMScheduler (as the "
            "reference's real-world configs) is converted"
        )
    if sched.get("beta_schedule", "linear") != "squaredcos_cap_v2":
        raise ReferenceCheckpointError(
            f"beta_schedule {sched.get('beta_schedule')!r} is not supported (squaredcos_cap_v2 only)"
        )
    if not sched.get("set_alpha_to_one", True) or int(sched.get("steps_offset", 0)) != 0:
        raise ReferenceCheckpointError(
            "DDIMScheduler with set_alpha_to_one false or steps_offset != 0 is not supported"
        )
    if sched.get("prediction_type", "epsilon") not in ("epsilon", "sample"):
        raise ReferenceCheckpointError(f"prediction_type {sched.get('prediction_type')!r} is not supported")
    steps = pcfg.get("num_inference_steps") or sched.get("num_train_timesteps", 1000)
    return {
        "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": sched.get("prediction_type", "epsilon"),
        "clip_sample": bool(sched.get("clip_sample", True)),
        "num_inference_steps": int(steps),
    }


def _crop_fits(hw: tuple[int, int], crop: tuple[int, int] | None, key: str) -> None:
    if crop is None:
        return
    for size, c in zip(hw, crop, strict=True):
        if c > size:
            raise ReferenceCheckpointError(f"{key}: crop {list(crop)} is larger than the image {list(hw)}")
        # torchvision's center_crop rounds (size - c) / 2 half to even; ours floors: equal unless
        # (size - c) % 4 == 3
        if (size - c) % 4 == 3:
            raise ReferenceCheckpointError(
                f"{key}: a center crop of {list(crop)} from {list(hw)} is placed by torchvision one pixel "
                "off from this project's crop; not supported"
            )


def _unet_key(ref_key: str) -> str:
    # Downsample1d / Upsample1d wrap their conv as `.conv`
    return "unet." + re.sub(r"^((?:down|up)_modules\.\d+\.2)\.conv\.", r"\1.", ref_key.removeprefix("model."))


_ROBOMIMIC_TRUNK = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def convert(ckpt: dict[str, Any], *args: Any, **kwargs: Any) -> Converted:
    """See :func:`_convert`; a config or state dict missing an entry it needs is one clear error."""
    try:
        return _convert(ckpt, *args, **kwargs)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ReferenceCheckpointError(
            f"the checkpoint's config or weights are not laid out as a Diffusion Policy workspace's "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _convert(
    ckpt: dict[str, Any],
    key_map: dict[str, str] | None = None,
    dt_s: float = DEFAULT_DT_S,
    source: str = "",
    frame_size: tuple[int, int] | None = None,
) -> Converted:
    """Reference checkpoint (from :func:`policy.reference.safe_load.load_reference_checkpoint`) ->
    our checkpoint payload. ``key_map``: reference observation key -> ours (default: the same name).
    ``frame_size``: (H, W) of the rig's camera frames when they differ from the checkpoint's image
    size (the policy resizes them with INTER_AREA, as the reference's real-robot env does; same
    aspect ratio only). Raises ReferenceCheckpointError naming what is not supported."""
    cfg = ckpt["cfg"]
    pcfg = _get(cfg, "policy")
    policy_class = str(pcfg.get("_target_", "")).rsplit(".", 1)[-1]
    if policy_class not in SUPPORTED:
        raise ReferenceCheckpointError(
            f"policy class {policy_class or '(none)'} is not supported; import-reference converts "
            f"{' and '.join(SUPPORTED)}"
        )
    hybrid = policy_class == "DiffusionUnetHybridImagePolicy"
    key_map = dict(key_map or {})
    if not pcfg.get("obs_as_global_cond", True):
        raise ReferenceCheckpointError(
            "obs_as_global_cond false (observations inpainted into the trajectory) is not supported"
        )
    if int(cfg.get("n_latency_steps", 0) or 0) != 0:
        raise ReferenceCheckpointError(f"n_latency_steps {cfg['n_latency_steps']} is not supported (0 only)")
    noise = _check_scheduler(pcfg)
    shape_meta = pcfg.get("shape_meta") or _get(cfg, "shape_meta")
    ref_obs: dict[str, Any] = shape_meta["obs"]
    unknown = sorted(set(key_map) - set(ref_obs))
    if unknown:
        raise ReferenceCheckpointError(
            f"--map names {', '.join(unknown)}, which the checkpoint does not observe ({', '.join(ref_obs)})"
        )
    rgb_ref = [k for k, a in ref_obs.items() if a.get("type", "low_dim") == "rgb"]
    low_ref = [k for k, a in ref_obs.items() if a.get("type", "low_dim") == "low_dim"]
    other = [k for k, a in ref_obs.items() if a.get("type", "low_dim") not in ("rgb", "low_dim")]
    if other:
        raise ReferenceCheckpointError(
            f"observation types other than rgb/low_dim are not supported ({other})"
        )
    if not rgb_ref:
        raise ReferenceCheckpointError("the checkpoint observes no camera; image policies only")
    ours = {k: key_map.get(k, k) for k in ref_obs}
    if len(set(ours.values())) != len(ours):
        raise ReferenceCheckpointError(f"--map gives two observations the same key: {ours}")
    if "action" in ours.values():
        raise ReferenceCheckpointError("an observation cannot be mapped to 'action'")

    sd_all = ckpt["state_dicts"]
    if "model" not in sd_all:
        raise ReferenceCheckpointError("the checkpoint has no state_dicts.model")
    ema_sd = sd_all.get("ema_model")
    states = {"model": sd_all["model"], "ema_model": ema_sd}
    ref = ema_sd if ema_sd is not None else sd_all["model"]  # shapes are read from either

    # feature layout of the reference encoder (per observation step), and ours
    if hybrid:
        ref_order = list(ref_obs)  # robomimic: shape_meta order
        if not pcfg.get("obs_encoder_group_norm", False):
            raise ReferenceCheckpointError(
                "obs_encoder_group_norm false (BatchNorm in the encoder) is not supported"
            )
        crop = pcfg.get("crop_shape")
        first = f"obs_encoder.obs_nets.{rgb_ref[0]}"
        kp_w = ref.get(f"{first}.pool.nets.weight")
        lin = [
            k for k in ref if re.fullmatch(re.escape(first) + r"\.nets\.\d+\.weight", k) and ref[k].ndim == 2
        ]
        if kp_w is None or len(lin) != 1:
            raise ReferenceCheckpointError(
                "the hybrid encoder is not robomimic's ResNet18Conv + SpatialSoftmax + Linear"
            )
        num_kp = int(kp_w.shape[0])
        feat_dim = int(ref[lin[0]].shape[0])
        vision = {
            "pool": "spatial_softmax",
            "num_keypoints": num_kp,
            "feature_dim": feat_dim,
            "imagenet_norm": False,
        }
        rgb_dim = feat_dim
        if not pcfg.get("eval_fixed_crop", False) and crop is not None:
            # robomimic's CropRandomizer crops at random even in eval mode
            crop_note = (
                "eval_fixed_crop false: the reference crops at random at inference, this run in the center"
            )
        else:
            crop_note = ""
    else:
        ref_order = sorted(rgb_ref) + sorted(low_ref)
        enc = _get(pcfg, "obs_encoder")
        rgb_model = enc.get("rgb_model", {})
        name = rgb_model.get("name") if isinstance(rgb_model, dict) else None
        if name != "resnet18" or (rgb_model.get("weights") or "").lower() == "r3m":
            raise ReferenceCheckpointError(
                f"rgb_model {name or rgb_model} ({rgb_model.get('weights') if isinstance(rgb_model, dict) else ''}) "
                "is not supported; torchvision resnet18 only"
            )
        if enc.get("share_rgb_model", False):
            raise ReferenceCheckpointError(
                "share_rgb_model true is not supported (its ResNet keeps BatchNorm)"
            )
        if not enc.get("use_group_norm", False):
            raise ReferenceCheckpointError("use_group_norm false (BatchNorm in the encoder) is not supported")
        resize = enc.get("resize_shape")
        for key in rgb_ref:
            r = resize[key] if isinstance(resize, dict) else resize
            hw = list(ref_obs[key]["shape"][1:])
            if r is not None and list(r) != hw:
                raise ReferenceCheckpointError(
                    f"{key}: resize_shape {list(r)} differs from the image shape {hw}; not supported "
                    "(give the policy images of the size it resizes to)"
                )
        crop = enc.get("crop_shape")
        if isinstance(crop, dict):
            crops = {tuple(v) for v in crop.values()}
            if len(crops) != 1:
                raise ReferenceCheckpointError(
                    f"per-camera crop shapes {crop} are not supported (one crop for all)"
                )
            crop = list(crops.pop())
        if not enc.get("random_crop", True):
            # the reference builds a CenterCrop for random_crop false and then overwrites it: no crop
            crop = None
        vision = {"pool": "avg", "imagenet_norm": bool(enc.get("imagenet_norm", False))}
        rgb_dim = 512
        crop_note = ""
        width = ref.get(f"obs_encoder.key_model_map.{rgb_ref[0]}.conv1.weight")
        if width is None or tuple(width.shape) != (64, 3, 7, 7):
            raise ReferenceCheckpointError(
                "the image encoder's weights are not a ResNet-18's (conv1 64x3x7x7)"
            )
    shapes = {tuple(ref_obs[k]["shape"][1:]) for k in rgb_ref}
    if len(shapes) != 1:
        raise ReferenceCheckpointError(f"cameras of different sizes are not supported ({sorted(shapes)})")
    for key in rgb_ref:
        _crop_fits(tuple(ref_obs[key]["shape"][1:]), tuple(crop) if crop else None, key)
    image_hw = next(iter(shapes))
    if frame_size is not None:
        fh, fw = frame_size
        if fh * image_hw[1] != fw * image_hw[0]:
            raise ReferenceCheckpointError(
                f"--frame-size {fh}x{fw} has another aspect ratio than the checkpoint's images "
                f"{image_hw[0]}x{image_hw[1]}; give camera frames of the same shape"
            )

    # our shape_meta: cameras first, each group in the reference's feature order
    our_order = [k for k in ref_order if k in rgb_ref] + [k for k in ref_order if k in low_ref]
    obs_meta: dict[str, Any] = {}
    obs_cfg: dict[str, Any] = {}
    table: list[tuple[str, str, str, str]] = []
    for key in our_order:
        shape = [int(x) for x in ref_obs[key]["shape"]]
        ok = ours[key]
        if key in rgb_ref:
            stored = [3, *frame_size] if frame_size is not None else shape
            obs_meta[ok] = {"type": "rgb", "shape": stored}
            obs_cfg[ok] = {"type": "rgb"}
            what = f"{shape[1]}x{shape[2]} RGB" + (f", center crop {crop[0]}x{crop[1]}" if crop else "")
            if frame_size is not None:
                what = f"{frame_size[0]}x{frame_size[1]} frames resized to " + what
            table.append((key, ok, "rgb", what))
        else:
            d = shape[0]
            # the reference's real-robot obs: a 2-D pose is x, y of the arm's pose (get_real_obs_dict)
            dims = [0, 1] if ("pose" in key and d == 2) else list(range(d))
            obs_meta[ok] = {"type": "low_dim", "shape": [d], "dims": dims}
            obs_cfg[ok] = {"type": "low_dim", "dims": dims}
            what = f"{d} values" + (" (x, y of the rig's pose)" if "pose" in key and d == 2 else "")
            table.append((key, ok, "low_dim", what))
    da = int(shape_meta["action"]["shape"][0])
    stored = da if da >= POSE_STORED_DIM else POSE_STORED_DIM
    adims = list(range(da))
    table.append(
        (
            "action",
            "action",
            "action",
            f"{da} values" + (f" (columns {adims} of {stored})" if da < stored else ""),
        )
    )
    action_meta = {"shape": [da], "dims": adims, "key": "action", "stored_dim": stored}

    dims_of = {k: (rgb_dim if k in rgb_ref else int(ref_obs[k]["shape"][0])) for k in ref_obs}

    def offsets(order: list[str]) -> dict[str, int]:
        out, at = {}, 0
        for k in order:
            out[k] = at
            at += dims_of[k]
        return out

    ref_off, our_off = offsets(ref_order), offsets(our_order)
    feat = sum(dims_of.values())
    src = torch.empty(feat, dtype=torch.long)  # our feature i = reference feature src[i]
    for k in our_order:
        src[our_off[k] : our_off[k] + dims_of[k]] = torch.arange(ref_off[k], ref_off[k] + dims_of[k])
    to = int(pcfg["n_obs_steps"])
    dsed = int(pcfg.get("diffusion_step_embed_dim", 256))
    cond_src = torch.cat([torch.arange(dsed), *[dsed + s * feat + src for s in range(to)]])

    def map_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            if k.startswith("model."):
                nk = _unet_key(k)
                if re.search(r"\.cond_encoder\.1\.weight$", k) and not torch.equal(
                    cond_src, torch.arange(len(cond_src))
                ):
                    v = v[:, cond_src]
                out[nk] = v
            elif k.startswith("normalizer.params_dict."):
                name, _, leaf = k.removeprefix("normalizer.params_dict.").rpartition(".")
                if leaf not in ("scale", "offset") or name.endswith("input_stats"):
                    continue
                if name in rgb_ref:
                    want = 2.0 if leaf == "scale" else -1.0
                    if not torch.allclose(v.float(), torch.full_like(v.float(), want)):
                        raise ReferenceCheckpointError(
                            f"{name}: the image normalizer is not the reference's range normalizer "
                            f"(scale 2, offset -1); found {leaf} {v.flatten()[:3].tolist()}"
                        )
                    continue
                target = "action" if name == "action" else ours.get(name)
                if target is None:
                    continue
                out[f"normalizer.{target}__{leaf}"] = v.float()
                out[f"obs_encoder.normalizer.{target}__{leaf}"] = v.float()
            elif hybrid and k.startswith("obs_encoder.obs_nets."):
                key, _, rest = k.removeprefix("obs_encoder.obs_nets.").partition(".")
                base = f"obs_encoder.encoders.{ours[key]}"
                m = re.fullmatch(r"backbone\.nets\.(\d+)\.(.+)", rest)
                if m and m.group(1) in _ROBOMIMIC_TRUNK:
                    out[f"{base}.trunk.{_ROBOMIMIC_TRUNK[m.group(1)]}.{m.group(2)}"] = v
                elif rest in ("pool.nets.weight", "pool.nets.bias"):
                    temp = sd.get(f"obs_encoder.obs_nets.{key}.pool.temperature")
                    # softmax(conv(x) / T) == softmax((conv / T)(x))
                    out[f"{base}.pool.conv.{rest.rsplit('.', 1)[1]}"] = (
                        v if temp is None else v / temp.reshape(-1)[0]
                    )
                elif re.fullmatch(r"nets\.\d+\.(weight|bias)", rest) and k.rsplit(".", 1)[
                    0
                ] + ".weight" in lin_keys(key, sd):
                    if rest.endswith("weight"):
                        kp = torch.arange(num_kp)
                        # ours: x0..x(K-1), y0..y(K-1); robomimic: x0, y0, x1, y1, ...
                        v = v[:, torch.cat([2 * kp, 2 * kp + 1])]
                    out[f"{base}.proj.{rest.rsplit('.', 1)[1]}"] = v
            elif not hybrid and k.startswith("obs_encoder.key_model_map."):
                key, _, rest = k.removeprefix("obs_encoder.key_model_map.").partition(".")
                if rest.startswith("fc."):
                    continue
                out[f"obs_encoder.encoders.{ours[key]}.trunk.{rest}"] = v
        return out

    def lin_keys(key: str, sd: dict[str, torch.Tensor]) -> set[str]:
        pre = f"obs_encoder.obs_nets.{key}"
        return {k for k in sd if re.fullmatch(re.escape(pre) + r"\.nets\.\d+\.weight", k) and sd[k].ndim == 2}

    unet = {
        "down_dims": [int(x) for x in pcfg.get("down_dims", [256, 512, 1024])],
        "kernel_size": int(pcfg.get("kernel_size", 5)),
        "n_groups": int(pcfg.get("n_groups", 8)),
        "diffusion_step_embed_dim": dsed,
        "cond_predict_scale": bool(pcfg.get("cond_predict_scale", True)),
    }
    policy_cfg = {
        "obs": obs_cfg,
        "action_key": "action",
        "action_dims": adims,
        "horizon": int(pcfg["horizon"]),
        "n_obs_steps": to,
        "n_action_steps": int(pcfg["n_action_steps"]),
        "vision": {
            "image_size": list(image_hw) if frame_size is not None else None,
            "crop_shape": [int(c) for c in crop] if crop else None,
            "random_crop": True,
            "width": 64,
            "layers": [2, 2, 2, 2],
            "pixel_range": "symmetric",
            **vision,
        },
        "model": {"backbone": "unet", "unet": unet},
        "noise": noise,
    }
    opt = cfg.get("optimizer", {}) or {}
    tr = cfg.get("training", {}) or {}
    ema = cfg.get("ema", {}) or {}
    training = {
        "seed": int(tr.get("seed", 42)),
        "batch_size": int((cfg.get("dataloader") or {}).get("batch_size", 64)),
        "num_epochs": int(tr.get("num_epochs", 100)),
        "lr": float(opt.get("lr", 1e-4)),
        "weight_decay": float(opt.get("weight_decay", 1e-6)),
        "betas": [float(b) for b in opt.get("betas", [0.95, 0.999])],
        "lr_scheduler": str(tr.get("lr_scheduler", "cosine")),
        "lr_warmup_steps": int(tr.get("lr_warmup_steps", 500)),
        "use_ema": ema_sd is not None and bool(tr.get("use_ema", True)),
        "ema_power": float(ema.get("power", 0.75)),
        "ema_max_decay": float(ema.get("max_value", 0.9999)),
    }
    from policy.config import TrainConfig

    try:
        config = TrainConfig.model_validate({"policy": policy_cfg, "training": training})
    except Exception as exc:  # pydantic's multi-line message: its first error is enough here
        first = str(exc).strip().splitlines()
        raise ReferenceCheckpointError(
            f"the checkpoint's settings do not fit this project's policy: {' '.join(first[:3])}"
        ) from None
    full_meta = {"obs": obs_meta, "action": action_meta}
    mapped = {name: (map_state(sd) if sd is not None else None) for name, sd in states.items()}
    _check_against_model(config, full_meta, mapped["model"])
    if mapped["ema_model"] is not None:
        _check_against_model(config, full_meta, mapped["ema_model"])
    global_step = _small_pickle(ckpt.get("pickles", {}).get("global_step"))
    epoch = _small_pickle(ckpt.get("pickles", {}).get("epoch"))
    optimizer, lr_sched, ema_meta = _fresh_training_state(config, full_meta, global_step or 0)
    chosen = mapped["ema_model"] if mapped["ema_model"] is not None else mapped["model"]
    payload = {
        "config": config.model_dump(mode="json"),
        "backbone": "unet",
        "shape_meta": full_meta,
        "dt_s": float(dt_s),
        # The reference records an action at its command time on the observations' grid and
        # evaluates with offset 0: main's action-time rule (collection/action_time.py CONVENTION).
        "action_time": "commanded_at_timestamp",
        "model": mapped["model"],
        "normalizer": {
            k.removeprefix("normalizer."): v for k, v in chosen.items() if k.startswith("normalizer.")
        },
        "ema_model": mapped["ema_model"] if config.training.use_ema else None,
        "ema_meta": ema_meta if config.training.use_ema else None,
        "optimizer": optimizer,
        "lr_scheduler": lr_sched,
        "step": 0,
        "epoch": 0,
        "git_revision": None,
        "history": {"train_step": [], "train_loss": [], "val_step": [], "val_loss": [], "val_action_mse": []},
        "imported_from": {
            "path": source,
            "policy_class": policy_class,
            "global_step": global_step,
            "epoch": epoch,
            "weights": "ema_model" if ema_sd is not None else "model",
        },
    }
    notes = [n for n in [crop_note] if n]
    if ema_sd is None:
        notes.append("the checkpoint has no EMA weights: the training weights are used")
    return Converted(payload=payload, table=table, notes=notes, policy_class=policy_class)


def _check_against_model(config: Any, shape_meta: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """The mapped state must be exactly our model's (built on the meta device: no memory)."""
    from policy.checkpoint import state_dict_mismatch
    from policy.diffusion import DiffusionPolicy

    with torch.device("meta"):
        model = DiffusionPolicy(config.policy, shape_meta)
    own = model.state_dict()
    missing, unexpected, reshaped = state_dict_mismatch(own, state)
    if missing or unexpected or reshaped:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in reshaped]
        raise ReferenceCheckpointError(
            f"the checkpoint's weights do not map onto the converted model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, shapes {shapes[:3]}"
        )


def _fresh_training_state(
    config: Any, shape_meta: dict[str, Any], global_step: int
) -> tuple[dict, dict, dict]:
    """Optimizer and LR schedule states for fine-tuning from step 0 (the reference's optimizer state is
    not carried over: its parameter order differs), and EMA bookkeeping continued from the reference's
    step count (so that the EMA decay does not restart its warm-up)."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from policy.diffusion import DiffusionPolicy

    tc = config.training
    with torch.device("meta"):
        model = DiffusionPolicy(config.policy, shape_meta)
    optimizer = torch.optim.AdamW(
        model.optim_groups(tc.weight_decay, tc.obs_encoder_weight_decay), lr=tc.lr, betas=tc.betas
    )
    sched = get_scheduler(
        tc.lr_scheduler, optimizer, num_warmup_steps=tc.lr_warmup_steps, num_training_steps=1
    )
    dummy = torch.nn.Parameter(torch.zeros(1, device="cpu"))
    ema = EMAModel([dummy], decay=tc.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0, power=tc.ema_power)
    meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    meta["optimization_step"] = int(global_step)
    return optimizer.state_dict(), sched.state_dict(), meta
