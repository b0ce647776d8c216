"""The diffusion policy network: observation encoder + denoiser + noise schedules.

The denoiser is the backbone chosen by ``policy.model.backbone``: the conditional 1-D U-Net
(policy/unet.py, the observation feature enters by FiLM) or the time-series diffusion transformer
(policy/transformer.py, the observation steps and the diffusion step enter as cross-attention tokens).
Both take the same inputs and share the conditioning-cache contract below.

Training (:meth:`DiffusionPolicy.compute_loss`): normalize actions, add DDPM noise at a random step
(100 steps, squared-cosine schedule), regress the noise (epsilon) from the noisy action window and
the observation feature of the first ``n_obs_steps`` steps.

Sampling (:meth:`DiffusionPolicy.sample`): DDIM with ``num_inference_steps`` (16) steps from Gaussian
noise drawn from a caller-given generator (so a seed fixes the result). Known leading actions are
inpainted: at every step their positions are replaced by the known values noised to that step's
level, and by the exact values at the end. The denoiser's conditioning of all steps (U-Net: FiLM
parameters; transformer: each layer's cross-attention keys and values) is computed in one batched
call before the loop: it depends only on step and observation, not on the noisy actions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policy.config import PolicyConfig
from policy.normalizer import LinearNormalizer
from policy.obs_encoder import ObsEncoder
from policy.transformer import TransformerForDiffusion
from policy.unet import ConditionalUnet1D


def make_schedulers(cfg: PolicyConfig) -> tuple[Any, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler

    nc = cfg.noise
    common = dict(
        num_train_timesteps=nc.num_train_timesteps,
        beta_schedule=nc.beta_schedule,
        prediction_type=nc.prediction_type,
        clip_sample=nc.clip_sample,
    )
    ddpm = DDPMScheduler(variance_type="fixed_small", **common)
    ddim = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    return ddpm, ddim


def relative_pairs(shape_meta: dict[str, Any]) -> list[tuple[int, int]]:
    """(action column, ``robot_eef_pose`` column) for each predicted position (stored columns 0-2),
    for ``policy.relative_action``; ValueError when the observations cannot give them."""
    adims = list(shape_meta["action"].get("dims") or range(shape_meta["action"]["shape"][0]))
    eef = shape_meta["obs"].get("robot_eef_pose")
    edims = (
        None if eef is None or eef["type"] != "low_dim" else list(eef.get("dims") or range(eef["shape"][0]))
    )
    wanted = [(j, d) for j, d in enumerate(adims) if d in (0, 1, 2)]
    if not wanted:
        raise ValueError(f"policy.relative_action: the action columns {adims} hold no position (0, 1, 2)")
    missing = [d for _, d in wanted if edims is None or d not in edims]
    if edims is None or missing:
        raise ValueError(
            f"policy.relative_action needs robot_eef_pose among the observations with columns {missing} in "
            f"its dims (it has {'no robot_eef_pose' if edims is None else edims})"
        )
    return [(j, edims.index(d)) for j, d in wanted]


class DiffusionPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, shape_meta: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.shape_meta = shape_meta
        self.action_dim = int(shape_meta["action"]["shape"][0])
        dims = {k: m["shape"][0] for k, m in shape_meta["obs"].items() if m["type"] == "low_dim"}
        dims["action"] = self.action_dim
        self.normalizer = LinearNormalizer(dims)
        self.obs_encoder = ObsEncoder(shape_meta, cfg.vision, self.normalizer)
        # policy.relative_action: (action column, robot_eef_pose column) of each predicted position.
        self.relative_pairs = relative_pairs(shape_meta) if cfg.relative_action else []
        self.obs_feature_dim = self.obs_encoder.out_dim
        self.backbone = cfg.model.backbone
        # registered under the backbone's name, so the state dict's keys say which it is
        if self.backbone == "unet":
            u = cfg.model.unet
            self.unet = ConditionalUnet1D(
                input_dim=self.action_dim,
                global_cond_dim=self.obs_feature_dim * cfg.n_obs_steps,
                diffusion_step_embed_dim=u.diffusion_step_embed_dim,
                down_dims=list(u.down_dims),
                kernel_size=u.kernel_size,
                n_groups=u.n_groups,
                cond_predict_scale=u.cond_predict_scale,
            )
        else:
            tc = cfg.model.transformer
            self.transformer = TransformerForDiffusion(
                action_dim=self.action_dim,
                horizon=cfg.horizon,
                n_obs_steps=cfg.n_obs_steps,
                cond_dim=self.obs_feature_dim,
                n_layer=tc.n_layer,
                n_head=tc.n_head,
                n_emb=tc.n_emb,
                p_drop_emb=tc.p_drop_emb,
                p_drop_attn=tc.p_drop_attn,
                causal_attn=tc.causal_attn,
            )
        self.train_scheduler, self.infer_scheduler = make_schedulers(cfg)
        # Fast path (policy.fast_inference): this many first denoising steps use the precise weights.
        self.precise_steps = 0
        # CUDA graphs for the conditioning (encoders + cache) and the denoiser steps (policy.cuda_graphs):
        # None (plain calls), "cuda" or "emulate" (the same buffer protocol on CPU, for tests).
        self.graph_mode: str | None = None
        self._graph_calls: dict[Any, Any] = {}
        self._timesteps_dev: torch.Tensor | None = None
        self._timesteps_key: Any = None

    @property
    def denoiser(self) -> ConditionalUnet1D | TransformerForDiffusion:
        return self.unet if self.backbone == "unet" else self.transformer

    @property
    def dtype(self) -> torch.dtype:
        """The dtype activations enter the denoiser in: the model's own (``.to(dtype)`` casts the
        normalizer with everything else). The fast path's reduced-precision weights do not change it:
        their layers take fp32 activations and round inside (policy/fast_inference.py)."""
        return self.normalizer.scale("action").dtype

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def optim_groups(self, weight_decay: float, obs_encoder_weight_decay: float | None) -> list[dict]:
        """AdamW parameter groups, one per distinct weight decay, each in parameter order: the
        denoiser's decays (see its ``optim_groups``) and the observation encoder's
        (``obs_encoder_weight_decay``, None = ``weight_decay``). A U-Net with one decay for all gives
        the single group that optimizer states of older checkpoints hold."""
        decay = {
            id(p): g["weight_decay"] for g in self.denoiser.optim_groups(weight_decay) for p in g["params"]
        }
        enc_decay = weight_decay if obs_encoder_weight_decay is None else obs_encoder_weight_decay
        decay.update({id(p): enc_decay for p in self.obs_encoder.parameters()})
        groups: dict[float, list[nn.Parameter]] = {}
        for p in self.parameters():
            groups.setdefault(decay[id(p)], []).append(p)
        return [{"params": params, "weight_decay": wd} for wd, params in groups.items()]

    def encode_obs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw obs (B, >= n_obs_steps, ...) -> global condition (B, n_obs_steps * feature_dim)."""
        n = self.cfg.n_obs_steps
        feats = self.obs_encoder({k: v[:, :n] for k, v in obs.items()})
        return feats.reshape(feats.shape[0], -1).to(self.dtype)

    def _shift_positions(
        self, actions: torch.Tensor, obs: dict[str, torch.Tensor], sign: float
    ) -> torch.Tensor:
        """``actions`` (B, T, Da) raw, with ``sign`` x the TCP position at the last observation step
        added to the position columns (-1: absolute -> relative, +1: back); unchanged without
        ``policy.relative_action``."""
        if not self.relative_pairs:
            return actions
        a_cols = [a for a, _ in self.relative_pairs]
        e_cols = [e for _, e in self.relative_pairs]
        ref = obs["robot_eef_pose"][:, self.cfg.n_obs_steps - 1, e_cols].to(actions.device, actions.dtype)
        out = actions.clone()
        out[..., a_cols] = out[..., a_cols] + sign * ref[:, None, :]
        return out

    def to_relative(self, actions: torch.Tensor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._shift_positions(actions, obs, -1.0)

    def to_absolute(self, actions: torch.Tensor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._shift_positions(actions, obs, 1.0)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Denoising MSE on a batch ``{"obs": {key: (B, T, ...)}, "action": (B, horizon, Da)}``."""
        raw = self.to_relative(batch["action"].to(self.dtype), batch["obs"])
        actions = self.normalizer.normalize("action", raw)
        global_cond = self.encode_obs(batch["obs"])
        noise = torch.randn_like(actions)
        b = actions.shape[0]
        timesteps = torch.randint(
            0, self.train_scheduler.config.num_train_timesteps, (b,), device=actions.device
        )
        noisy = self.train_scheduler.add_noise(actions, noise, timesteps)
        pred = self.denoiser(noisy, timesteps, global_cond=global_cond)
        target = noise if self.cfg.noise.prediction_type == "epsilon" else actions
        return F.mse_loss(pred.float(), target.float())

    def sample(
        self,
        global_cond: torch.Tensor,
        generator: torch.Generator | None = None,
        known: torch.Tensor | None = None,
        known_start: int = 0,
        cache_cond: bool = True,
        caches: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """DDIM-sample normalized action windows (B, horizon, Da).

        known: optional normalized actions (B, m, Da) that must occupy window positions
        ``known_start .. known_start + m - 1`` (inpainting). Noise is drawn with ``generator`` (fp32,
        on the generator's device) so that a seed gives the same chunk on any dtype and device.
        caches: the denoiser's conditioning of all inference steps (from :meth:`condition`), else
        computed here (``cache_cond``) or per step.
        """
        b = global_cond.shape[0]
        sched = self.infer_scheduler
        sched.set_timesteps(self.cfg.noise.num_inference_steps)
        shape = (b, self.cfg.horizon, self.action_dim)
        gen_device = generator.device if generator is not None else self.device
        traj = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        traj = traj.to(self.device)
        known_noise = None
        sl = slice(0, 0)
        if known is not None and known.shape[1] > 0:
            sl = slice(known_start, known_start + known.shape[1])
            known = known.to(device=self.device, dtype=torch.float32)
            known_noise = torch.randn(known.shape, generator=generator, device=gen_device).to(self.device)
        timesteps = sched.timesteps
        denoiser = self.denoiser
        if caches is None and cache_cond:
            caches = denoiser.cond_cache(timesteps.to(self.device), global_cond)
        if self.precise_steps:
            from policy.fast_inference import set_precise
        graphed = self.graph_mode is not None and caches is not None
        for i, t in enumerate(timesteps):
            precise = i < self.precise_steps
            if self.precise_steps and not graphed:
                set_precise(denoiser, precise)
            if known_noise is not None:
                traj[:, sl] = sched.add_noise(known, known_noise, t.reshape(1))
            step_cache = None if caches is None else [c[i * b : (i + 1) * b] for c in caches]
            if graphed:
                out = self._step_call(precise)(traj.to(self.dtype), *step_cache)[0]
            elif step_cache is not None:
                out = denoiser(traj.to(self.dtype), cache=step_cache)
            else:
                out = denoiser(traj.to(self.dtype), t.to(self.device), global_cond=global_cond)
            traj = sched.step(out.float(), t, traj, generator=None).prev_sample
        if known is not None and known.shape[1] > 0:
            traj[:, sl] = known
        return traj

    def _graph_call(self, key: Any, fn: Any) -> Any:
        from policy.cuda_graphs import GraphedCall

        call = self._graph_calls.get(key)
        if call is None or call.mode != self.graph_mode:
            call = GraphedCall(fn, mode=self.graph_mode)
            self._graph_calls[key] = call
        return call

    def _step_call(self, precise: bool) -> Any:
        """The denoiser on one step's conditioning cache, as a graph per weight mode (fast / precise)."""

        def step(x: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
            if self.precise_steps:
                from policy.fast_inference import set_precise

                set_precise(self.denoiser, precise)
            return self.denoiser(x, cache=list(cache))

        return self._graph_call(("step", precise), step)

    def condition(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Observation feature and the denoiser's conditioning cache of all inference steps, as one
        graph call when ``graph_mode`` is set (the encoders are a few hundred kernel launches of their
        own)."""
        sched = self.infer_scheduler
        sched.set_timesteps(self.cfg.noise.num_inference_steps)
        steps_key = (tuple(sched.timesteps.tolist()), self.device)
        if self._timesteps_dev is None or self._timesteps_key != steps_key:
            # made outside any graph (no host-to-device copy inside a capture); a graph that holds
            # older timesteps is dropped with them
            self._timesteps_dev = sched.timesteps.to(self.device)
            self._timesteps_key = steps_key
            self._graph_calls.pop("cond", None)
        timesteps = self._timesteps_dev
        keys = tuple(self.shape_meta["obs"])

        def cond(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            global_cond = self.encode_obs(dict(zip(keys, values, strict=True)))
            return (global_cond, *self.denoiser.cond_cache(timesteps, global_cond))

        if self.graph_mode is None:
            out = cond(*(obs[k] for k in keys))
        else:
            out = self._graph_call("cond", cond)(*(obs[k] for k in keys))
        return out[0], list(out[1:])

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Training forward (what DistributedDataParallel calls): the denoising loss."""
        return self.compute_loss(batch)

    def predict_action(
        self,
        obs: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        committed: torch.Tensor | None = None,
        cache_cond: bool = True,
    ) -> torch.Tensor:
        """Raw obs -> raw action windows (B, horizon, Da); window index ``n_obs_steps - 1`` is the
        action at the last observation's time. ``committed`` (B, m, Da) raw actions are inpainted
        from that index on."""
        caches = None
        if cache_cond:
            global_cond, caches = self.condition(obs)
        else:
            global_cond = self.encode_obs(obs)
        known = None
        if committed is not None:
            rel = self.to_relative(committed.to(self.device, torch.float32), obs)
            known = self.normalizer.normalize("action", rel)
        norm = self.sample(
            global_cond,
            generator,
            known=known,
            known_start=self.cfg.n_obs_steps - 1,
            cache_cond=cache_cond,
            caches=caches,
        )
        self.last_normalized_actions = norm
        return self.to_absolute(self.normalizer.unnormalize("action", norm.float()), obs)
