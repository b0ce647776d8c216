"""ResNet-18 layout with GroupNorm instead of BatchNorm, written here because torchvision is not
installed (its only build on these machines is a 5 GB CUDA one).

Parameter names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0`` ...), so :func:`load_torchvision_state_dict` can initialise it from a
torchvision checkpoint: GroupNorm takes BatchNorm's affine ``weight``/``bias``, and the running
statistics and the ``fc`` head are dropped. ``width`` and ``layers`` shrink it for small configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from policy.checkpoint import state_dict_mismatch


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with channels // 16 groups (as the Diffusion Policy reference), at least 1."""
    return nn.GroupNorm(num_groups=max(1, channels // 16), num_channels=channels)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = group_norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = group_norm(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), group_norm(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetGN(nn.Module):
    """ResNet trunk (no pooling, no head): (N, 3, H, W) float -> (N, 8*width, H/32, W/32) with the
    torchvision stem (stride-2 conv, stride-2 max pool) and stage strides; /16 or /8 with a lighter
    stem, and 2x finer per stage stride of 1."""

    def __init__(
        self,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        stem_stride: int = 2,
        stem_pool: bool = True,
        stage_strides: Sequence[int] = (2, 2, 2),
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"resnet layers must list 4 stages, got {list(layers)}")
        if len(stage_strides) != 3:
            raise ValueError(
                f"resnet stage_strides must list 3 strides (layer2..4), got {list(stage_strides)}"
            )
        strides = (1, *stage_strides)
        self.conv1 = nn.Conv2d(3, width, 7, stem_stride, 3, bias=False)
        self.bn1 = group_norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        in_ch = width
        for i, n_blocks in enumerate(layers):
            out_ch = width * 2**i
            blocks = []
            for b in range(n_blocks):
                blocks.append(BasicBlock(in_ch, out_ch, stride=strides[i] if b == 0 else 1))
                in_ch = out_ch
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_torchvision_state_dict(model: ResNetGN, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ResNet state dict into ``model`` (GroupNorm takes BatchNorm's affine params).

    Raises ValueError naming missing/unexpected keys or shape mismatches (e.g. a ResNet-34 file, or a
    model built with ``width`` != 64).
    """
    dropped = ("running_mean", "running_var", "num_batches_tracked")
    sd = {
        k.removeprefix("module."): v
        for k, v in state_dict.items()
        if not k.startswith("fc.") and not k.endswith(dropped)
    }
    own = model.state_dict()
    missing, unexpected, reshaped = state_dict_mismatch(own, sd)
    if missing or unexpected or reshaped:
        mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in reshaped]
        raise ValueError(
            "torchvision ResNet weights do not fit this encoder: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {mismatched[:5]}"
        )
    model.load_state_dict(sd, strict=True)
