"""Inference API of a trained diffusion policy (used by ``deploy/``).

::

    from policy.inference import Policy, ActionChunk
    policy = Policy.load(checkpoint_path, device="cpu")   # a .pt file, or a run dir (its 'latest')
    policy.shape_meta; policy.n_obs_steps; policy.n_action_steps; policy.horizon; policy.dt_s
    chunk = policy.predict(obs, committed_actions=None, seed=None)

``obs``: dict key -> np.ndarray with ``n_obs_steps`` observations, oldest first, spaced ``dt_s``
apart: images uint8 (n_obs_steps, H, W, 3) exactly as stored in the episode store (the policy resizes
and crops them itself); low-dim float (n_obs_steps, D) in the stored units (only the dims in
``shape_meta``). Keys and shapes must match ``shape_meta`` exactly; otherwise ``ValueError`` names each
missing key, extra key and shape/dtype mismatch.

``committed_actions``: optional (m, action_dim) raw actions already sent to the arm; the first m rows
of the returned chunk equal them exactly (they are inpainted during sampling so that the rest of the
chunk continues them smoothly, then written over the output).

Returns :class:`ActionChunk`: ``actions`` float64 (horizon - n_obs_steps + 1, action_dim) in raw
units, ``actions[i]`` meant for time ``t_last_obs + (first_index + i) * dt_s``; ``first_index`` is 0
(the first action is the one aligned with the last observation, as in training). At least
``n_action_steps`` rows are returned; rows beyond ``n_action_steps`` are the rest of the predicted
horizon (less reliable the further out).

Timing: one ``predict`` runs the observation encoder and the denoiser's conditioning once and the
denoiser (U-Net or transformer, ``policy.backbone``) ``num_inference_steps`` (16) times. Call
``policy.optimize_for_inference()`` once after loading for the fast path (pre-packed matmul weights,
bf16 for large denoisers; see its docstring); ``benchmarks/policy_bench.py [--backbone transformer]``
gives the latencies of both paths. ``seed`` fixes the sampling noise: the same
obs, committed actions and seed give the same chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.checkpoint import load_checkpoint
from policy.config import TrainConfig
from policy.dataset import resize_image
from policy.diffusion import DiffusionPolicy


@dataclass(frozen=True)
class ActionChunk:
    """``actions[i]`` (raw units) is meant for ``t_last_obs + (first_index + i) * dt_s``."""

    actions: np.ndarray
    first_index: int


class Policy:
    """A loaded policy ready to predict action chunks. Not thread-safe (one predict at a time)."""

    def __init__(
        self,
        model: DiffusionPolicy,
        config: TrainConfig,
        shape_meta: dict[str, Any],
        dt_s: float,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.shape_meta = shape_meta
        self.dt_s = float(dt_s)
        self.device = torch.device(device)
        self.cache_cond = True
        self._compiled = False
        self.trained_action_time: str | None = None

    @classmethod
    def load(cls, checkpoint_path: str | Path, device: str = "cpu", use_ema: bool = True) -> Policy:
        """Load a checkpoint file or a run directory (its ``latest``); EMA weights when saved."""
        ckpt = load_checkpoint(checkpoint_path)
        config = TrainConfig.model_validate(ckpt["config"])
        model = DiffusionPolicy(config.policy, ckpt["shape_meta"])
        state = ckpt["ema_model"] if use_ema and ckpt.get("ema_model") is not None else ckpt["model"]
        model.load_state_dict(state)
        policy = cls(model, config, ckpt["shape_meta"], ckpt["dt_s"], device)
        # The action-time rule of the store it was trained on (collection/action_time.py); None:
        # a legacy store, or a checkpoint from before stores said.
        policy.trained_action_time = ckpt.get("action_time")
        return policy

    @property
    def backbone(self) -> str:
        """The denoiser: ``"unet"`` or ``"transformer"``."""
        return self.config.policy.model.backbone

    @property
    def n_obs_steps(self) -> int:
        return self.config.policy.n_obs_steps

    @property
    def n_action_steps(self) -> int:
        return self.config.policy.n_action_steps

    @property
    def horizon(self) -> int:
        return self.config.policy.horizon

    @property
    def action_dim(self) -> int:
        return int(self.shape_meta["action"]["shape"][0])

    def optimize_for_inference(
        self,
        dtype: torch.dtype | str | None = "auto",
        encoder_dtype: torch.dtype | None = None,
        split_input: bool = False,
        precise_steps: int = 3,
        compile: bool = False,
        cuda_graphs: bool | str = "auto",
    ) -> None:
        """Switch to the fast path (irreversible for this object).

        - The denoiser's convolutions and per-step linear layers become matmuls on pre-laid-out
          weights in ``dtype``, activations stay fp32 between layers (see policy/fast_inference.py;
          ``split_input`` also keeps the matmul inputs exact, at the cost of twice the rows: measured
          slower for the same accuracy as one more precise step).
          ``"auto"``: bf16 for denoisers over 20 M parameters (memory-bound, e.g. the paper U-Net),
          fp32 for small ones (overhead-bound, e.g. the tiny configs and the paper transformer);
          ``None``: fp32.
        - With bf16, the first ``precise_steps`` denoising steps use an fp32 copy of the weights:
          the high-noise steps are where rounding moves the result most. Costs the copy's memory
          and fp32 bytes on those steps.
        - Camera encoders run in ``encoder_dtype`` (None = fp32) with channels-last layout; the
          normalizer stays fp32; the denoiser's conditioning (U-Net FiLM, transformer cross-attention
          keys/values) is computed once per chunk (``cache_cond``).
        - ``compile=True`` wraps the denoiser in ``torch.compile``.
        - ``cuda_graphs``: on a CUDA device (``"auto"`` or True) the conditioning (encoders + cache of
          all steps) and each denoiser step are replayed from captured CUDA graphs (policy/cuda_graphs.py;
          one graph per weight mode, captured at the first predict). ``"emulate"`` runs the same
          static-buffer protocol on CPU (tests); False: plain calls. Not combined with ``compile``.
        - ``dtype`` may also be given as ``"bf16"``, ``"fp16"`` (GPU) or ``"fp32"``.

        benchmarks/policy_bench.py measures the speed and the action difference to fp32 (bound:
        0.02 normalized units = 1% of the range; ~0.01 on freshly initialised paper weights, less
        on trained policies). On a CPU shared with other processes (the rig), one torch thread is
        the robust choice: two OpenMP threads that wait on each other stall badly under load.
        """
        from policy.fast_inference import convert_for_inference

        named = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
        if isinstance(dtype, str) and dtype != "auto":
            if dtype not in named:
                raise ValueError(
                    f"dtype must be 'auto', {', '.join(map(repr, named))} or a torch dtype, got {dtype!r}"
                )
            dtype = named[dtype]
        if dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError("fp16 weights are for GPUs (CPU matmuls in fp16 are slow); use bf16 on CPU")
        if cuda_graphs == "auto":
            cuda_graphs = self.device.type == "cuda" and not compile
        if cuda_graphs is True and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, the policy is on {self.device}")
        denoiser = self.model.denoiser
        if dtype == "auto":
            # bf16 pays off where the denoiser is memory-bound (large); small ones are overhead-bound
            # and bf16 conversions only add work there.
            n_params = sum(p.numel() for p in denoiser.parameters())
            dtype = torch.bfloat16 if n_params > 20_000_000 else None
        keep = precise_steps > 0 and dtype not in (None, torch.float32)
        convert_for_inference(denoiser, dtype or torch.float32, split_input, keep_fp32=keep)
        self.model.precise_steps = precise_steps if keep else 0
        self.model.obs_encoder.encoders.to(
            dtype=encoder_dtype or torch.float32, memory_format=torch.channels_last
        )
        if compile and not self._compiled:
            from policy.fast_inference import _MatmulConv

            for m in denoiser.modules():
                if isinstance(m, _MatmulConv):
                    m.pack = False  # inductor lays out the weights itself
            denoiser.forward = torch.compile(denoiser.forward, dynamic=False)
            self._compiled = True
        if cuda_graphs:
            if self._compiled:
                raise ValueError("use either compile or cuda_graphs, not both")
            self.model.graph_mode = "emulate" if cuda_graphs == "emulate" else "cuda"

    def validate_obs(self, obs: dict[str, Any]) -> None:
        """Raise ValueError naming every missing/extra key and every shape or dtype mismatch."""
        if not isinstance(obs, dict):
            raise ValueError(f"obs must be a dict of arrays, got {type(obs).__name__}")
        expected = self.shape_meta["obs"]
        errors = []
        missing = [k for k in expected if k not in obs]
        extra = [k for k in obs if k not in expected]
        if missing:
            errors.append(f"missing key(s): {', '.join(missing)}")
        if extra:
            errors.append(f"unexpected key(s): {', '.join(extra)}")
        n = self.n_obs_steps
        for key, meta in expected.items():
            if key not in obs:
                continue
            arr = np.asarray(obs[key])
            if meta["type"] == "rgb":
                _, h, w = meta["shape"]
                want = (n, h, w, 3)
                if arr.shape != want:
                    errors.append(
                        f"'{key}': shape {arr.shape}, expected {want} (n_obs_steps, H, W, 3) as stored"
                    )
                elif arr.dtype != np.uint8:
                    errors.append(f"'{key}': dtype {arr.dtype}, expected uint8 images")
            else:
                want = (n, *meta["shape"])
                if arr.shape != want:
                    errors.append(f"'{key}': shape {arr.shape}, expected {want} (n_obs_steps, D)")
                elif not np.issubdtype(arr.dtype, np.number):
                    errors.append(f"'{key}': dtype {arr.dtype} is not numeric")
        if errors:
            raise ValueError(
                "policy observation does not match the checkpoint's shape_meta: " + "; ".join(errors)
            )

    def _obs_tensors(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        size = self.config.policy.vision.image_size
        out = {}
        for key, meta in self.shape_meta["obs"].items():
            arr = np.asarray(obs[key])
            if meta["type"] == "rgb":
                arr = np.stack([resize_image(f, size) for f in arr])
                out[key] = torch.from_numpy(np.ascontiguousarray(arr))[None].to(self.device)
            else:
                out[key] = torch.as_tensor(arr, dtype=torch.float32)[None].to(self.device)
        return out

    def predict(
        self, obs: dict[str, Any], committed_actions: np.ndarray | None = None, seed: int | None = None
    ) -> ActionChunk:
        """Predict the next action chunk; see the module docstring for the contract."""
        self.validate_obs(obs)
        n_out = self.horizon - self.n_obs_steps + 1
        committed = None
        if committed_actions is not None:
            committed = np.asarray(committed_actions, dtype=np.float64)
            if committed.ndim != 2 or committed.shape[1] != self.action_dim or committed.shape[0] > n_out:
                raise ValueError(
                    f"committed_actions has shape {committed.shape}, expected (m, {self.action_dim}) "
                    f"with m <= {n_out}"
                )
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        with torch.inference_mode():
            tens = self._obs_tensors(obs)
            known = None
            if committed is not None and len(committed):
                known = torch.as_tensor(committed, dtype=torch.float32)[None]
            actions = self.model.predict_action(tens, generator, committed=known, cache_cond=self.cache_cond)
        out = actions[0, self.n_obs_steps - 1 :].double().cpu().numpy()
        if committed is not None and len(committed):
            out[: len(committed)] = committed
        return ActionChunk(actions=out, first_index=0)
