"""Min-max normalizer for actions and low-dimensional observations, fitted on the training data.

Each key is mapped linearly to [-1, 1] per dimension. A dimension whose range in the data is
(near) zero, e.g. a constant z height, is not stretched: it is shifted so that its value maps to 0
(scale 1), which avoids dividing by zero and keeps unseen values finite. The parameters are buffers
of an ``nn.Module`` so that they travel with the model (device, dtype, state dict, checkpoint).
Images are not handled here: the encoder scales uint8 pixels to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

RANGE_EPS = 1e-4


class LinearNormalizer(nn.Module):
    """Per-key affine map ``y = x * scale + offset`` to [-1, 1]; inverse with :meth:`unnormalize`."""

    def __init__(self, dims: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.keys: list[str] = []
        for key, dim in (dims or {}).items():
            self._add(key, torch.ones(dim), torch.zeros(dim))

    def _add(self, key: str, scale: torch.Tensor, offset: torch.Tensor) -> None:
        if key not in self.keys:
            self.keys.append(key)
        self.register_buffer(f"{key}__scale", scale.float())
        self.register_buffer(f"{key}__offset", offset.float())

    def fit(self, key: str, data: np.ndarray) -> None:
        """Fit ``key`` from samples (..., D): min-max over all leading axes."""
        data = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        if len(data) == 0:
            raise ValueError(f"cannot fit normalizer for {key!r}: no samples")
        lo, hi = data.min(axis=0), data.max(axis=0)
        span = hi - lo
        flat = span < RANGE_EPS
        safe_span = np.where(flat, 2.0, span)
        scale = 2.0 / safe_span
        offset = -1.0 - scale * lo
        # Constant dims: scale 1, the observed value maps to 0.
        offset = np.where(flat, -lo, offset)
        self._add(key, torch.from_numpy(scale), torch.from_numpy(offset))

    def scale(self, key: str) -> torch.Tensor:
        return getattr(self, f"{key}__scale")

    def offset(self, key: str) -> torch.Tensor:
        return getattr(self, f"{key}__offset")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(key).to(x.dtype) + self.offset(key).to(x.dtype)

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset(key).to(y.dtype)) / self.scale(key).to(y.dtype)

    def dims(self) -> dict[str, int]:
        return {k: int(self.scale(k).shape[0]) for k in self.keys}
