"""CUDA graphs for the fixed-shape parts of a policy's ``predict`` (GPU only).

Why: at batch 1 the paper-config U-Net reads its ~0.6 GB of bf16 weights in well under a millisecond
on a current GPU, but one step launches a few hundred small kernels (GroupNorm, Mish, FiLM, the
matmuls), and launching them from Python costs more than running them. A captured graph replays the
whole launch sequence in one call. Shapes are fixed per chunk (batch, horizon, action dim, image
sizes), so each callable is captured once per input signature and replayed for every later chunk.

:class:`GraphedCall` wraps ``fn(*tensors) -> tensor | tuple of tensors``. Calling it copies the
arguments into static input buffers and replays the graph, which writes the static output buffers;
it returns those buffers, so **a result is valid only until the next call of the same GraphedCall**
(the consumers in :meth:`policy.diffusion.DiffusionPolicy.sample` use each result before the next
call). Python side effects inside ``fn`` run once, at capture: a mode switch such as
:func:`policy.fast_inference.set_precise` is baked into the graph, so each mode gets a callable of
its own.

``mode="emulate"`` runs the same static-buffer protocol without a GPU (``fn`` is re-run on the static
inputs and its results are copied into the static outputs), so the buffer handling is tested on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


_primed: set[torch.device] = set()


def _prime_capture(device: torch.device) -> None:
    """Capture one trivial graph outside inference mode, once per device. A first capture under
    ``torch.inference_mode`` (where ``predict`` runs) makes the CUDA generator's graph-state tensors
    inference tensors, and later captures then fail with "Inplace update to inference tensor outside
    InferenceMode" in PyTorch releases before the fix of pytorch/pytorch#166792."""
    if device in _primed:
        return
    with torch.inference_mode(False), torch.no_grad():
        x = torch.zeros(1, device=device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            x.add_(1)
        del graph
    _primed.add(device)


class _Captured:
    def __init__(self, static_in: list[torch.Tensor], static_out: tuple[torch.Tensor, ...], graph) -> None:
        self.static_in = static_in
        self.static_out = static_out
        self.graph = graph


class GraphedCall:
    """``fn`` replayed through a CUDA graph captured per input signature (shapes, dtypes, device).

    mode: ``"cuda"`` (capture with ``torch.cuda.graph``; arguments must be CUDA tensors) or
    ``"emulate"`` (CPU stand-in with the same buffer semantics, for tests).
    ``max_signatures`` bounds how many graphs are kept; the oldest is dropped beyond it.
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
        mode: Literal["cuda", "emulate"] = "cuda",
        warmup: int = 2,
        max_signatures: int = 4,
    ) -> None:
        if mode not in ("cuda", "emulate"):
            raise ValueError(f"mode must be 'cuda' or 'emulate', got {mode!r}")
        self.fn = fn
        self.mode = mode
        self.warmup = warmup
        self.max_signatures = max_signatures
        self._graphs: dict[Signature, _Captured] = {}
        self.captures = 0
        self.replays = 0

    @staticmethod
    def signature(args: tuple[torch.Tensor, ...]) -> Signature:
        return tuple((tuple(a.shape), a.dtype, a.device) for a in args)

    def _capture(self, args: tuple[torch.Tensor, ...]) -> _Captured:
        if self.mode == "cuda" and any(a.device.type != "cuda" for a in args):
            raise ValueError("GraphedCall(mode='cuda') needs CUDA tensors; use the plain call on CPU")
        static_in = [a.detach().clone() for a in args]
        if self.mode == "emulate":
            out = tuple(o.clone() for o in _as_tuple(self.fn(*static_in)))
            captured = _Captured(static_in, out, None)
        else:
            # Warm-up on a side stream (cuDNN/cuBLAS pick their algorithms and allocate workspaces
            # outside the capture), then capture on it.
            side = torch.cuda.Stream(device=args[0].device)
            side.wait_stream(torch.cuda.current_stream(args[0].device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(*static_in)
            torch.cuda.current_stream(args[0].device).wait_stream(side)
            _prime_capture(args[0].device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = _as_tuple(self.fn(*static_in))
            captured = _Captured(static_in, out, graph)
        self.captures += 1
        return captured

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Copy ``args`` into the static inputs, replay, return the static outputs (valid until the
        next call)."""
        sig = self.signature(args)
        captured = self._graphs.get(sig)
        if captured is None:
            if len(self._graphs) >= self.max_signatures:
                self._graphs.pop(next(iter(self._graphs)))
            captured = self._capture(args)
            self._graphs[sig] = captured
        for dst, src in zip(captured.static_in, args, strict=True):
            dst.copy_(src)
        if captured.graph is not None:
            captured.graph.replay()
        else:
            for dst, src in zip(captured.static_out, _as_tuple(self.fn(*captured.static_in)), strict=True):
                dst.copy_(src)
        self.replays += 1
        return captured.static_out
