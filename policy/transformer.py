"""Time-series diffusion transformer (the Diffusion Policy paper's transformer backbone, "-T").

The noisy action window is a sequence of tokens, one per step: ``Linear(action_dim -> n_emb)`` plus a
learned position embedding. ``n_layer`` pre-norm decoder layers refine them: causal self-attention
among the action tokens, cross-attention to the conditioning tokens, a GELU MLP. The conditioning
tokens are the diffusion step (its sinusoidal embedding, as a token of its own) followed by one token
per observation step (a Linear of that step's observation feature), with a learned position embedding,
passed through a token-wise MLP (the reference's ``n_cond_layers=0``). A final LayerNorm and Linear
give the noise estimate per action step.

With ``causal_attn`` (the reference's real-robot setting) window position ``i`` attends to action
positions ``<= i`` and to the step token and the observations of window positions ``<= i`` (memory
mask): window index ``j`` of the observations is the same time step as window index ``j`` of the
actions, so nothing sees its future.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU and
CPU). The conditioning tokens depend only on the denoising step and the observation, and so do the
keys and values that every layer's cross-attention computes from them: :meth:`cond_cache` computes
them for all denoising steps of a chunk in one batched call and :meth:`forward` takes them, so a
denoising step runs only the action-token path (the same contract as the U-Net's FiLM cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policy.unet import CachedConditionDenoiser, SinusoidalPosEmb


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: x += SelfAttn(LN(x)); x += CrossAttn(LN(x), memory); x += MLP(LN(x)).
    Dropout ``p_drop`` on the attention weights and on each sublayer's output (as
    ``nn.TransformerDecoderLayer`` with ``norm_first=True``)."""

    def __init__(self, n_emb: int, n_head: int, p_drop: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.p_drop = p_drop
        self.norm1 = nn.LayerNorm(n_emb)
        self.qkv = nn.Linear(n_emb, 3 * n_emb)
        self.self_out = nn.Linear(n_emb, n_emb)
        self.norm2 = nn.LayerNorm(n_emb)
        self.q = nn.Linear(n_emb, n_emb)
        self.kv = nn.Linear(n_emb, 2 * n_emb)  # from the memory: part of the conditioning cache
        self.cross_out = nn.Linear(n_emb, n_emb)
        self.norm3 = nn.LayerNorm(n_emb)
        self.mlp = nn.Sequential(
            nn.Linear(n_emb, 4 * n_emb), nn.GELU(), nn.Dropout(p_drop), nn.Linear(4 * n_emb, n_emb)
        )
        self.drop = nn.Dropout(p_drop)

    def _heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        """(B, L, parts * E) -> (parts, B, heads, L, E / heads)."""
        b, length, _ = x.shape
        return x.reshape(b, length, parts, self.n_head, -1).permute(2, 0, 3, 1, 4)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        p = self.p_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        b, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(b, length, -1)

    def forward(
        self, x: torch.Tensor, memory_kv: torch.Tensor, causal: bool, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, T, E) action tokens; memory_kv (B, S, 2E) from :attr:`kv` of the memory tokens."""
        q, k, v = self._heads(self.qkv(self.norm1(x)), 3)
        x = x + self.drop(self.self_out(self._attend(q, k, v, None, causal)))
        q = self._heads(self.q(self.norm2(x)), 1)[0]
        k, v = self._heads(memory_kv, 2)
        x = x + self.drop(self.cross_out(self._attend(q, k, v, memory_mask, False)))
        return x + self.drop(self.mlp(self.norm3(x)))


class TransformerForDiffusion(CachedConditionDenoiser):
    """(B, T, action_dim) noisy actions + step + observation features -> (B, T, action_dim).

    ``global_cond`` is the policy's observation feature ``(B, n_obs_steps * cond_dim)`` (the U-Net's
    layout); it is split into ``n_obs_steps`` tokens here.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        n_obs_steps: int,
        cond_dim: int,
        n_layer: int = 8,
        n_head: int = 4,
        n_emb: int = 256,
        p_drop_emb: float = 0.0,
        p_drop_attn: float = 0.3,
        causal_attn: bool = True,
    ) -> None:
        super().__init__()
        self.horizon, self.n_obs_steps, self.cond_dim = horizon, n_obs_steps, cond_dim
        self.causal = causal_attn
        self.input_emb = nn.Linear(action_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.time_emb = SinusoidalPosEmb(n_emb)
        self.cond_obs_emb = nn.Linear(cond_dim, n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, 1 + n_obs_steps, n_emb))
        self.cond_encoder = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        self.layers = nn.ModuleList([DecoderLayer(n_emb, n_head, p_drop_attn) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, action_dim)
        if causal_attn:
            # memory token s is the step (s = 0) or observation s - 1: position t sees s <= t + 1
            t = torch.arange(horizon)[:, None]
            s = torch.arange(1 + n_obs_steps)[None, :]
            self.register_buffer("memory_mask", s <= t + 1, persistent=False)
        else:
            self.memory_mask = None
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-style initialisation, as the reference: small normal weights, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def cache_modules(self) -> list[nn.Module]:
        """The modules that only build the conditioning cache (run once per chunk, not per step)."""
        return [self.cond_obs_emb, self.cond_encoder, *(layer.kv for layer in self.layers)]

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight matrices of Linear layers decay; biases, LayerNorms and the position
        embeddings do not (as the reference's ``get_optim_groups``)."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        ids = {id(p) for p in decay}
        no_decay = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def _memory(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        """(N,) steps and (N, n_obs_steps * cond_dim) features -> memory tokens (N, 1 + n_obs, E)."""
        time_tok = self.time_emb(timesteps).to(global_cond.dtype)[:, None]
        obs_tok = self.cond_obs_emb(global_cond.reshape(global_cond.shape[0], self.n_obs_steps, -1))
        tokens = torch.cat([time_tok, obs_tok], dim=1)
        return self.cond_encoder(self.drop(tokens + self.cond_pos_emb))

    def cond_cache(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's cross-attention keys and values for ``K`` timesteps and ``B`` observations.

        timesteps: (K,) ints; global_cond: (B, G). Returns one tensor per layer, shaped
        (K * B, 1 + n_obs_steps, 2 * n_emb), row ``k * B + b`` for timestep k and observation b.
        """
        k, b = timesteps.shape[0], global_cond.shape[0]
        ts = timesteps.to(global_cond.device).repeat_interleave(b, 0)
        return self._row_cache(ts, global_cond.repeat(k, 1))

    def _row_cache(self, timesteps: torch.Tensor, global_cond: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's cross-attention keys and values for (N,) steps and (N, G) features, row n for
        step n and feature n."""
        memory = self._memory(timesteps, global_cond)
        return [layer.kv(memory) for layer in self.layers]

    def _denoise(self, sample: torch.Tensor, cache: list[torch.Tensor]) -> torch.Tensor:
        t = sample.shape[1]
        x = self.input_emb(sample)
        x = self.drop(x + self.pos_emb[:, :t])
        mask = None if self.memory_mask is None else self.memory_mask[:t]
        for layer, kv in zip(self.layers, cache, strict=True):
            x = layer(x, kv, self.causal, mask)
        return self.head(self.ln_f(x))
