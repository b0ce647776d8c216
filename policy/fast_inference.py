"""Inference fast path for the denoisers: convolutions and linear layers as matrix products on
reduced-precision, pre-laid-out weights.

Why: at inference the U-Net runs with batch 1 on a 16-step sequence, so every denoising step is a
pass over all ~300 M weights (paper config) with almost no arithmetic per weight -- the step is bound
by how fast the weights stream from memory. PyTorch's CPU conv1d at batch 1 takes slow paths (im2col
into a generic conv kernel, ~1 GB/s, and far worse for bf16), while a plain ``linear`` on a contiguous
bf16 (Cout, Cin*k) matrix streams weights at close to memory bandwidth. So each ``Conv1d`` becomes
"pad, unfold the (tiny) input, one matmul", and each ``ConvTranspose1d`` becomes "one matmul, then an
overlap-add of the k taps". Numerically the same convolution up to the weights' rounding.

Precision: only the big weight matrices are reduced. Activations between layers, residual sums,
GroupNorm, FiLM and biases stay fp32. A CPU bf16 matmul rounds its input and its output to bf16;
``split_input`` writes the fp32 input as ``hi + lo`` (two bf16 rows each, one matmul, weights still
read once) to remove the input rounding. What moves the sampled actions most is rounding in the first,
high-noise denoising steps (DDIM divides the noise estimate by a small sqrt(alpha_bar) there), so
``keep_fp32`` keeps an fp32 copy of the weights and :func:`set_precise` runs chosen steps on it.

The FiLM parameters (per-block Linear on [step embedding, observation feature]) do not depend on the
noisy actions; :meth:`policy.unet.ConditionalUnet1D.cond_cache` computes them for all steps at once, so
they are not part of the per-step weight traffic at all.

The transformer backbone (policy/transformer.py) is mostly ``nn.Linear`` layers over a handful of
tokens (16 action tokens at batch 1): the same argument holds, so its per-step Linears get the same
pre-packed (and optionally reduced-precision) weights, while the layers that only build the
conditioning cache (observation tokens, cross-attention keys/values) stay fp32 and run once per chunk.
Attention itself is ``scaled_dot_product_attention`` on activations and has no weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _linear(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T``; with ``packed`` (oneDNN's pre-blocked copy of ``weight``) on CPU."""
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return F.linear(x, weight)


def _matmul(
    x: torch.Tensor, weight: torch.Tensor, split_input: bool, packed: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ weight.T`` for fp32 ``x`` (..., K) and ``weight`` (N, K) in any dtype; fp32 result.

    Note that a bf16 matmul on CPU also rounds its *output* to bf16 (PyTorch has no fp32-output
    variant there); that rounding and the weights' are what remains of the error with ``split_input``.
    """
    if weight.dtype == torch.float32:
        return _linear(x.float(), weight, packed)
    if not split_input:
        return _linear(x.to(weight.dtype), weight, packed).float()
    hi = x.to(weight.dtype)
    lo = (x - hi.float()).to(weight.dtype)
    both = _linear(torch.cat([hi, lo], dim=-2), weight, packed).float()
    n = x.shape[-2]
    return both[..., :n, :] + both[..., n:, :]


def _can_pack(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.backends.mkldnn.is_available()


# A packed matmul pays a fixed cost per call (oneDNN primitive dispatch) that only streaming a large
# weight faster earns back: at 16 rows, one thread, a packed fp32 (1024 x 256) matmul beat F.linear
# (201 against 221 us) while (768 x 256) and smaller ones were slower (158 against 138 us, and 58
# against 11 us at 128 x 128). The tiny configs' layers (and the transformer's) are mostly below this.
PACK_MIN_BYTES = 1 << 20


class _MatmulConv(nn.Module):
    """Shared state of the matmul-form convolutions: weights in the fast dtype, plus optionally an
    fp32 copy used while ``precise`` is set (see :func:`set_precise`).

    On CPU the weights of at least ``PACK_MIN_BYTES`` are re-laid-out once, at the first call, into
    oneDNN's blocked format (``torch.ops.mkldnn``, what ``torch.compile``'s weight freezing uses): a
    batch-1 matmul then streams them at 2-3x the speed of a plain ``linear`` (measured 22-26 GB/s fp32,
    30-38 GB/s bf16 on 2 cores, against 8-9 and 23). The plain copies are dropped after packing to save
    memory.
    """

    weight: nn.Parameter
    weight_fp32: nn.Parameter | None
    precise: bool
    split_input: bool

    def _set_weight(self, w: torch.Tensor, dtype: torch.dtype, keep_fp32: bool) -> None:
        self.weight = nn.Parameter(w.to(dtype).contiguous(), requires_grad=False)
        self.weight_fp32 = None
        if keep_fp32 and dtype != torch.float32:
            self.weight_fp32 = nn.Parameter(w.float().contiguous(), requires_grad=False)
        self.precise = False
        self.pack = True
        self._packed: dict[str, torch.Tensor] = {}
        self._nbytes = {"fast": self.weight.numel() * self.weight.element_size()}
        self._nbytes["precise"] = (
            self.weight.numel() * 4 if self.weight_fp32 is not None else self._nbytes["fast"]
        )

    def weight_nbytes(self, precise: bool = False) -> int:
        """Bytes of weights one call reads (fast or precise mode), packed or not."""
        return self._nbytes["precise" if precise else "fast"]

    def _packed_weight(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        packed = self._packed.get(name)
        if packed is not None:
            if x.device.type != "cpu":
                raise RuntimeError(
                    "this policy's weights were packed for CPU inference; move the policy to the device "
                    "before calling optimize_for_inference()"
                )
            return packed
        w = getattr(self, name)
        if not (self.pack and _can_pack(x)) or w.numel() * w.element_size() < PACK_MIN_BYTES:
            return None
        if packed is None:
            rows = x.shape[-2] * (2 if (w.dtype != torch.float32 and self.split_input) else 1)
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), rows)
            self._packed[name] = packed
            # keep the shape/dtype for the checks in _matmul, drop the storage
            stub = w.detach().new_zeros((1, w.shape[1])).expand(w.shape[0], -1)
            setattr(self, name, nn.Parameter(stub, requires_grad=False))
        return packed

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        if self.precise and self.weight_fp32 is not None:
            return _matmul(x.float(), self.weight_fp32, False, self._packed_weight("weight_fp32", x))
        return _matmul(x, self.weight, self.split_input, self._packed_weight("weight", x))


class LinearConv1d(_MatmulConv):
    """A Conv1d (any stride/padding, dilation 1, groups 1) evaluated as unfold + one matmul."""

    def __init__(
        self, conv: nn.Conv1d, dtype: torch.dtype, split_input: bool = True, keep_fp32: bool = False
    ) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1,) or conv.padding_mode != "zeros":
            raise ValueError("LinearConv1d supports groups=1, dilation=1, zero padding only")
        self.k, self.stride, self.pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        self.split_input = split_input
        w = conv.weight.detach()
        self._set_weight(w.reshape(w.shape[0], -1), dtype, keep_fp32)
        bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().float(), requires_grad=False)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, L) -> (B, Cout, Lout), fp32
        x = x.float()
        if self.k == 1 and self.stride == 1 and self.pad == 0:
            cols = x.transpose(1, 2)
        else:
            x = F.pad(x, (self.pad, self.pad))
            cols = x.unfold(2, self.k, self.stride)  # (B, Cin, Lout, k)
            b, c, lo, k = cols.shape
            cols = cols.permute(0, 2, 1, 3).reshape(b, lo, c * k)
        y = self._mm(cols)
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)


class LinearConvTranspose1d(_MatmulConv):
    """A ConvTranspose1d (dilation 1, groups 1, no output padding) as one matmul + overlap-add."""

    def __init__(
        self,
        conv: nn.ConvTranspose1d,
        dtype: torch.dtype,
        split_input: bool = True,
        keep_fp32: bool = False,
    ) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1,) or conv.output_padding != (0,):
            raise ValueError("LinearConvTranspose1d supports groups=1, dilation=1, output_padding=0 only")
        self.k, self.stride, self.pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        self.split_input = split_input
        w = conv.weight.detach()  # (Cin, Cout, k)
        self.cout = w.shape[1]
        # rows ordered (k, Cout): tap j of output channel o is row j * Cout + o
        self._set_weight(w.permute(2, 1, 0).reshape(self.k * self.cout, w.shape[0]), dtype, keep_fp32)
        bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().float(), requires_grad=False)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, L) -> (B, Cout, (L-1)*s - 2p + k)
        b, _, length = x.shape
        z = self._mm(x.float().transpose(1, 2))
        z = z.reshape(b, length, self.k, self.cout)
        full = (length - 1) * self.stride + self.k
        y = torch.zeros(b, self.cout, full, dtype=z.dtype, device=z.device)
        span = (length - 1) * self.stride + 1
        for j in range(self.k):
            y[:, :, j : j + span : self.stride] += z[:, :, j].transpose(1, 2)
        y = y[:, :, self.pad : full - self.pad]
        if self.bias is not None:
            y = y + self.bias[None, :, None]
        return y


class PackedLinear(_MatmulConv):
    """An ``nn.Linear`` whose weight is pre-laid-out for oneDNN on CPU, in ``dtype`` (fp32 output).

    fp32 for the U-Net's FiLM layers: computed once per chunk for all steps, 16 rows, ~250 MB of fp32
    weights in the paper config; a plain ``addmm`` streams them at ~8 GB/s, the packed matmul at ~18,
    with the same fp32 result up to summation order. The transformer's per-step Linears may use bf16
    (with ``keep_fp32`` for precise steps), like the U-Net's convolutions."""

    def __init__(
        self,
        linear: nn.Linear,
        dtype: torch.dtype = torch.float32,
        split_input: bool = False,
        keep_fp32: bool = False,
    ) -> None:
        super().__init__()
        self.split_input = split_input
        self._set_weight(linear.weight.detach(), dtype, keep_fp32)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._mm(x)
        return y if self.bias is None else y + self.bias


def convert_for_inference(
    denoiser: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    split_input: bool = True,
    keep_fp32: bool = False,
) -> nn.Module:
    """Replace (in place) every Conv1d / ConvTranspose1d / Linear of a denoiser (U-Net or
    transformer) that runs at every denoising step by its matmul form with weights in ``dtype``, and
    every Linear of its conditioning cache (``denoiser.cache_modules()``: FiLM, step embedding,
    cross-attention keys/values, run once per chunk) by a packed fp32 one; everything else stays
    fp32. ``keep_fp32`` also keeps an fp32 copy of the weights so that :func:`set_precise` can run
    chosen denoising steps at full precision. Inference only (no gradients)."""
    once = {id(m) for root in denoiser.cache_modules() for m in root.modules()}

    def convert(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv1d):
                setattr(module, name, LinearConv1d(child, dtype, split_input, keep_fp32))
            elif isinstance(child, nn.ConvTranspose1d):
                setattr(module, name, LinearConvTranspose1d(child, dtype, split_input, keep_fp32))
            elif isinstance(child, nn.Linear) and id(child) in once:
                setattr(module, name, PackedLinear(child))
            elif isinstance(child, nn.Linear):
                setattr(module, name, PackedLinear(child, dtype, split_input, keep_fp32))
            else:
                convert(child)

    convert(denoiser)
    return denoiser.requires_grad_(False)


def set_precise(denoiser: nn.Module, precise: bool) -> None:
    """Use (True) or not (False) the fp32 weight copies of converted layers.

    Precise steps read twice the bytes of plain bf16 steps (as many as fp32). The first, high-noise
    denoising steps are where weight rounding moves the final actions most (DDIM divides the noise
    estimate by a small sqrt(alpha_bar) there), so running just those precisely removes most of the
    bf16 error at a small cost.
    """
    for m in denoiser.modules():
        if isinstance(m, _MatmulConv) and m.weight_fp32 is not None:
            m.precise = precise
