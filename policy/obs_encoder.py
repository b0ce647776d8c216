"""Observation encoder: one ResNet-GN per camera (or shared) plus the normalized low-dim streams.

Input per key: rgb uint8 (B, T, H, W, 3) at the configured ``image_size``; low-dim float (B, T, D),
raw units. Output: (B, T, feature_dim) -- the concatenation, per observation step, of every camera's
feature (global average pool or spatial-softmax keypoints) and the normalized low-dim values.
Images are scaled to [0, 1] (and optionally ImageNet-normalized), randomly cropped in training mode
and center-cropped in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policy.config import VisionConfig
from policy.normalizer import LinearNormalizer
from policy.resnet import ResNetGN, load_torchvision_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpatialSoftmax(nn.Module):
    """1x1 conv to K keypoint maps, softmax over pixels, expected (x, y) in [-1, 1]: (N, 2K)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, k, h, w = x.shape
        attn = F.softmax(x.reshape(n, k, h * w).float(), dim=-1).to(x.dtype)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        ex = (attn * gx.reshape(1, 1, -1)).sum(-1)
        ey = (attn * gy.reshape(1, 1, -1)).sum(-1)
        return torch.cat([ex, ey], dim=-1)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.trunk = ResNetGN(cfg.width, cfg.layers, cfg.stem_stride, cfg.stem_pool, cfg.stage_strides)
        if cfg.pretrained:
            state = torch.load(cfg.pretrained, map_location="cpu", weights_only=True)
            load_torchvision_state_dict(self.trunk, state)
        if cfg.pool == "avg":
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.out_dim = self.trunk.out_channels
        else:
            self.pool = SpatialSoftmax(self.trunk.out_channels, cfg.num_keypoints)
            self.out_dim = 2 * cfg.num_keypoints
        self.proj: nn.Module = nn.Identity()
        if cfg.feature_dim is not None:
            self.proj = nn.Linear(self.out_dim, cfg.feature_dim)
            self.out_dim = cfg.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images (N, 3, h, w) -> features (N, out_dim) float32, computed in the weights' dtype."""
        w = self.trunk.conv1.weight
        if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
            x = x.to(dtype=w.dtype, memory_format=torch.channels_last)
        else:
            x = x.to(w.dtype)
        out = self.pool(self.trunk(x))
        if isinstance(self.proj, nn.Linear):
            out = F.relu(self.proj(out.to(self.proj.weight.dtype)))
        return out.float()


def feature_map_size(cfg: VisionConfig, hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the trunk's last feature map for (H, W) inputs."""

    def down(n: int, stride: int) -> int:
        return (n - 1) // stride + 1

    h, w = down(hw[0], cfg.stem_stride), down(hw[1], cfg.stem_stride)
    if cfg.stem_pool:
        h, w = down(h, 2), down(w, 2)
    for stride, n_blocks in zip(cfg.stage_strides, cfg.layers[1:], strict=True):
        if n_blocks:  # a stage of 0 blocks is skipped: the map is the previous stage's
            h, w = down(h, stride), down(w, stride)
    return h, w


class ObsEncoder(nn.Module):
    def __init__(self, shape_meta: dict[str, Any], cfg: VisionConfig, normalizer: LinearNormalizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalizer = normalizer
        self.rgb_keys = [k for k, m in shape_meta["obs"].items() if m["type"] == "rgb"]
        self.low_dim_keys = [k for k, m in shape_meta["obs"].items() if m["type"] == "low_dim"]
        self.encoders = nn.ModuleDict()
        self.out_dim = 0
        for key in self.rgb_keys:
            _, h, w = shape_meta["obs"][key]["shape"]
            hw = tuple(cfg.image_size) if cfg.image_size else (h, w)
            if cfg.crop_shape and (cfg.crop_shape[0] > hw[0] or cfg.crop_shape[1] > hw[1]):
                raise ValueError(f"crop_shape {cfg.crop_shape} is larger than the {key} image {hw}")
            fh, fw = feature_map_size(cfg, tuple(cfg.crop_shape) if cfg.crop_shape else hw)
            if cfg.pool == "spatial_softmax" and fh * fw < 4:
                raise ValueError(
                    f"{key}: the encoder's last feature map is {fh}x{fw} for {cfg.crop_shape or hw} inputs, too "
                    "small for spatial softmax; use a larger image_size/crop_shape, stem_stride=1 or stem_pool=false"
                )
            if cfg.share_encoder and self.encoders:
                continue
            enc = ImageEncoder(cfg)
            self.encoders["shared" if cfg.share_encoder else key] = enc
        for key in self.rgb_keys:
            self.out_dim += self._encoder(key).out_dim
        for key in self.low_dim_keys:
            self.out_dim += shape_meta["obs"][key]["shape"][0]
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def _encoder(self, key: str) -> ImageEncoder:
        return self.encoders["shared" if self.cfg.share_encoder else key]

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        crop = self.cfg.crop_shape
        if crop is None:
            return x
        ch, cw = crop
        n, c, h, w = x.shape
        if (ch, cw) == (h, w):
            return x
        if self.training and self.cfg.random_crop:
            oh = torch.randint(0, h - ch + 1, (n,), device=x.device)
            ow = torch.randint(0, w - cw + 1, (n,), device=x.device)
            rows = oh[:, None] + torch.arange(ch, device=x.device)
            cols = ow[:, None] + torch.arange(cw, device=x.device)
            batch = torch.arange(n, device=x.device)[:, None, None]
            out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, ch, cw, c)
            return out.permute(0, 3, 1, 2)
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[:, :, top : top + ch, left : left + cw]

    def preprocess(self, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, h, w) in [0, 1] or [-1, 1] (``pixel_range``), then
        optionally ImageNet-normalized; cropped."""
        x = images.permute(0, 3, 1, 2).to(dtype) / 255.0
        if self.cfg.pixel_range == "symmetric":
            x = x * 2.0 - 1.0  # the reference's range normalizer: x * scale(2) + offset(-1)
        x = self._crop(x)
        if self.cfg.imagenet_norm:
            x = (x - self.img_mean.to(dtype)) / self.img_std.to(dtype)
        return x.contiguous()

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw obs -> (B, T, out_dim) float32 features."""
        feats = []
        b, t = None, None
        for key in self.rgb_keys:
            img = obs[key]
            b, t = img.shape[:2]
            x = self.preprocess(img.reshape(b * t, *img.shape[2:]), torch.float32)
            feats.append(self._encoder(key)(x).reshape(b, t, -1))
        for key in self.low_dim_keys:
            v = obs[key]
            b, t = v.shape[:2]
            feats.append(self.normalizer.normalize(key, v.float()))
        return torch.cat(feats, dim=-1)
