"""1-D temporal conditional U-Net (the Diffusion Policy paper's CNN backbone).

Convolutions run over the action sequence (channels = action dims). Every residual block is
conditioned by FiLM on ``cond = [diffusion-step embedding, global observation feature]``: a Linear
layer maps ``cond`` to a per-channel scale and bias. Since ``cond`` depends only on the denoising
step and the observation -- not on the noisy actions -- :meth:`ConditionalUnet1D.cond_cache` computes
the FiLM parameters of all denoising steps in one batched call, and :meth:`forward` accepts them, so
an inference chunk does this work once instead of once per step (the transformer backbone,
policy/transformer.py, keeps the same contract).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def batch_timesteps(
    timestep: torch.Tensor | int | None, global_cond: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """A denoiser's diffusion ``timestep`` ((B,) or scalar) as a (B,) tensor on ``device``. Raises
    ValueError when ``timestep`` or ``global_cond`` is missing (a denoiser's forward takes both, or
    a precomputed conditioning cache instead)."""
    if global_cond is None or timestep is None:
        raise ValueError("give timestep and global_cond, or a precomputed cache")
    ts = torch.as_tensor(timestep, device=device)
    return ts.expand(batch) if ts.ndim == 0 else ts


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(
            torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1))
        )
        arg = t.float()[:, None] * freq[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int, predict_scale: bool
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_ch, out_ch, kernel_size, n_groups),
                Conv1dBlock(out_ch, out_ch, kernel_size, n_groups),
            ]
        )
        self.out_ch = out_ch
        self.predict_scale = predict_scale
        self.cond_encoder = nn.Sequential(
            nn.Mish(), nn.Linear(cond_dim, out_ch * (2 if predict_scale else 1))
        )
        self.residual_conv = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def film(self, cond: torch.Tensor) -> torch.Tensor:
        """(N, cond_dim) -> (N, 2 or 1, out_ch, 1) scale/bias."""
        e = self.cond_encoder(cond)
        return e.reshape(e.shape[0], 2 if self.predict_scale else 1, self.out_ch, 1)

    def forward(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        if self.predict_scale:
            out = film[:, 0] * out + film[:, 1]
        else:
            out = out + film[:, 0]
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class CachedConditionDenoiser(nn.Module):
    """A denoiser whose conditioning (the diffusion step and the observation feature, never the noisy
    actions) becomes a per-row cache: :meth:`forward` builds it from ``timestep`` and ``global_cond``,
    or takes the one a subclass's ``cond_cache`` built for every denoising step of a chunk at once.
    Subclasses (the U-Net below, the transformer of policy/transformer.py) give ``_row_cache`` and
    ``_denoise``."""

    def _row_cache(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> list[torch.Tensor]:
        """The cache for (N,) steps and (N, G) features: row n for step n and feature n."""
        raise NotImplementedError

    def _denoise(self, sample: torch.Tensor, cache: list[torch.Tensor]) -> torch.Tensor:
        """(B, T, action_dim) noisy actions and their cache (rows = batch) -> noise estimate."""
        raise NotImplementedError

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | None = None,
        global_cond: torch.Tensor | None = None,
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Either ``timestep`` ((B,) or scalar) and ``global_cond`` (B, G), or a precomputed ``cache``
        (from ``cond_cache`` for one timestep, rows = batch)."""
        if cache is None:
            ts = batch_timesteps(timestep, global_cond, sample.shape[0], sample.device)
            cache = self._row_cache(ts, global_cond)
        return self._denoise(sample, cache)


class ConditionalUnet1D(CachedConditionDenoiser):
    """(B, T, input_dim) noisy actions + step + global cond -> (B, T, input_dim) noise estimate."""

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        diffusion_step_embed_dim: int = 128,
        down_dims: list[int] | tuple[int, ...] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        cond_predict_scale: bool = True,
    ) -> None:
        super().__init__()
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed)
        )
        cond_dim = dsed + global_cond_dim
        dims = [input_dim, *down_dims]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))

        def res(i: int, o: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups, cond_predict_scale)

        self.down_modules = nn.ModuleList()
        for ind, (d_in, d_out) in enumerate(in_out):
            last = ind >= len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        res(d_in, d_out),
                        res(d_out, d_out),
                        nn.Conv1d(d_out, d_out, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid, mid), res(mid, mid)])
        self.up_modules = nn.ModuleList()
        for d_in, d_out in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList(
                    [res(d_out * 2, d_in), res(d_in, d_in), nn.ConvTranspose1d(d_in, d_in, 4, 2, 1)]
                )
            )
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )
        self._res_blocks = [m for m in self.modules() if isinstance(m, ConditionalResidualBlock1D)]

    def _step_embedding(self, timesteps: torch.Tensor) -> torch.Tensor:
        enc = self.diffusion_step_encoder
        dtype = enc[1].weight.dtype
        return enc[1:](enc[0](timesteps).to(dtype))

    def cache_modules(self) -> list[nn.Module]:
        """The modules that only build the conditioning cache (run once per chunk, not per step)."""
        return [self.diffusion_step_encoder, *(blk.cond_encoder for blk in self._res_blocks)]

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: every parameter decays alike (the reference U-Net's optimizer)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    def cond_cache(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> list[torch.Tensor]:
        """FiLM parameters of every residual block for ``K`` timesteps and ``B`` observations.

        timesteps: (K,) ints; global_cond: (B, G). Returns one tensor per block, shaped
        (K * B, 2, C, 1), row ``k * B + b`` for timestep k and observation b.
        """
        k, b = timesteps.shape[0], global_cond.shape[0]
        t_emb = self._step_embedding(timesteps.to(global_cond.device))
        cond = torch.cat([t_emb.repeat_interleave(b, 0), global_cond.repeat(k, 1)], dim=-1)
        return [blk.film(cond) for blk in self._res_blocks]

    def _row_cache(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> list[torch.Tensor]:
        """FiLM parameters for (N,) steps and (N, G) features, row n for step n and feature n."""
        cond = torch.cat([self._step_embedding(timesteps), global_cond], dim=-1)
        return [blk.film(cond) for blk in self._res_blocks]

    def _denoise(self, sample: torch.Tensor, film: list[torch.Tensor]) -> torch.Tensor:
        it = iter(film)
        x = sample.transpose(1, 2)
        skips = []
        for r1, r2, down in self.down_modules:
            x = r2(r1(x, next(it)), next(it))
            skips.append(x)
            x = down(x)
        for r in self.mid_modules:
            x = r(x, next(it))
        for r1, r2, up in self.up_modules:
            x = torch.cat([x, skips.pop()], dim=1)
            x = r2(r1(x, next(it)), next(it))
            x = up(x)
        x = self.final_conv(x)
        return x.transpose(1, 2)
