"""Model building blocks: matmul-form convolutions, torchvision weight loading, FiLM caching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policy.fast_inference import LinearConv1d, LinearConvTranspose1d, convert_for_inference
from policy.resnet import ResNetGN, load_torchvision_state_dict
from policy.unet import ConditionalUnet1D


@pytest.mark.parametrize(
    "conv", [nn.Conv1d(8, 5, 5, padding=2), nn.Conv1d(8, 8, 3, stride=2, padding=1), nn.Conv1d(8, 5, 1)]
)
def test_matmul_conv1d_equals_conv1d(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(LinearConv1d(conv, torch.float32)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_matmul_conv_transpose_equals_conv_transpose():
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(8, 6, 4, stride=2, padding=1)
    x = torch.randn(2, 8, 4)
    torch.testing.assert_close(LinearConvTranspose1d(conv, torch.float32)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_split_input_bf16_matmul_is_closer_than_plain_bf16():
    torch.manual_seed(0)
    conv = nn.Conv1d(256, 256, 5, padding=2)
    x = torch.randn(1, 256, 16)
    ref = conv(x)
    err_split = (LinearConv1d(conv, torch.bfloat16, split_input=True)(x) - ref).abs().max()
    err_plain = (LinearConv1d(conv, torch.bfloat16, split_input=False)(x) - ref).abs().max()
    assert err_split < err_plain


def test_unet_with_cached_film_and_matmul_convs_matches_plain_unet():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(6, 40, 32, [16, 32, 64]).eval()
    x, g = torch.randn(3, 16, 6), torch.randn(3, 40)
    ts = torch.tensor([90, 50, 3])
    with torch.inference_mode():
        plain = unet(x, torch.tensor(50), global_cond=g)
        films = unet.cond_cache(ts, g)
        cached = unet(x, cache=[f[3:6] for f in films])  # timestep index 1 -> 50
        torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
        convert_for_inference(unet, torch.float32)
        torch.testing.assert_close(unet(x, torch.tensor(50), global_cond=g), plain, atol=1e-5, rtol=1e-5)


def test_resnet_loads_torchvision_format_state_dict():
    torch.manual_seed(0)
    src = ResNetGN(width=64)
    # A torchvision resnet18 state dict: BatchNorm running stats and an fc head besides our keys.
    sd = {k: torch.randn_like(v) for k, v in src.state_dict().items()}
    tv = dict(sd)
    for k in list(sd):
        if ".bn" in k or k.startswith("bn1") or ".downsample.1." in k:
            base = k.rsplit(".", 1)[0]
            tv[f"{base}.running_mean"] = torch.zeros(sd[k].shape)
            tv[f"{base}.running_var"] = torch.ones(sd[k].shape)
            tv[f"{base}.num_batches_tracked"] = torch.tensor(0)
    tv["fc.weight"], tv["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    for name in (
        "conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "fc.weight",
    ):
        assert name in tv
    assert tv["conv1.weight"].shape == (64, 3, 7, 7) and tv["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    dst = ResNetGN(width=64)
    load_torchvision_state_dict(dst, tv)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(ValueError, match="shape mismatches"):
        load_torchvision_state_dict(ResNetGN(width=32), tv)


def test_spatial_softmax_on_a_1x1_map_is_refused_with_advice():
    from policy.config import VisionConfig
    from policy.normalizer import LinearNormalizer
    from policy.obs_encoder import ObsEncoder

    meta = {"obs": {"camera_0": {"type": "rgb", "shape": [3, 24, 24]}}}
    cfg = VisionConfig(width=8, layers=[1, 1, 1, 1], pool="spatial_softmax")
    with pytest.raises(ValueError, match="too small for spatial softmax.*stem_stride=1"):
        ObsEncoder(meta, cfg, LinearNormalizer())
    ok = ObsEncoder(meta, cfg.model_copy(update={"stem_stride": 1, "stem_pool": False}), LinearNormalizer())
    feats = ok({"camera_0": torch.zeros(2, 2, 24, 24, 3, dtype=torch.uint8)})
    assert feats.shape == (2, 2, 2 * cfg.num_keypoints)


def test_precise_steps_use_full_precision_weights():
    from policy.fast_inference import set_precise

    torch.manual_seed(0)
    unet = ConditionalUnet1D(6, 40, 32, [64, 128]).eval()
    x, g = torch.randn(1, 16, 6), torch.randn(1, 40)
    with torch.inference_mode():
        ref = unet(x, torch.tensor(20), global_cond=g)
        convert_for_inference(unet, torch.bfloat16, keep_fp32=True)
        fast = unet(x, torch.tensor(20), global_cond=g)
        set_precise(unet, True)
        precise = unet(x, torch.tensor(20), global_cond=g)
    assert (precise - ref).abs().max() < 1e-4
    assert (fast - ref).abs().max() > 10 * (precise - ref).abs().max()


def test_only_weights_past_the_threshold_are_packed_and_both_compute_the_linear():
    from policy.fast_inference import PACK_MIN_BYTES, PackedLinear

    if not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN packing is CPU/mkldnn only")
    torch.manual_seed(0)
    small, large = nn.Linear(128, 128), nn.Linear(512, 1024)
    assert small.weight.numel() * 4 < PACK_MIN_BYTES <= large.weight.numel() * 4
    x = torch.randn(1, 16, 512)
    for linear, inp in ((small, x[..., :128]), (large, x)):
        fast = PackedLinear(linear)
        with torch.inference_mode():
            torch.testing.assert_close(fast(inp), linear(inp), atol=1e-5, rtol=1e-5)
        assert bool(fast._packed) == (linear is large)
