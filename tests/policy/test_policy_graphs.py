"""CUDA-graph replay of predict (policy/cuda_graphs.py), driven on CPU through its emulation mode:
the same static-buffer protocol (copy in, replay, results aliased until the next call), so the
plumbing in DiffusionPolicy.sample is tested without a GPU. tests/policy/test_policy_gpu.py runs the
real capture where CUDA exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.cuda_graphs import GraphedCall
from policy.inference import Policy
from tests.policy.test_policy_inference import _obs_from_store


def test_graphed_call_copies_inputs_replays_and_aliases_outputs():
    calls = []

    def fn(a, b):
        calls.append(1)
        return a * 2 + b, a.sum(dim=-1)

    g = GraphedCall(fn, mode="emulate")
    x, y = torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)
    out1 = g(x, y)
    torch.testing.assert_close(out1[0], x * 2 + y)
    first = out1[0]
    x2 = -x
    out2 = g(x2, y)
    # new inputs reach the replay; the result lives in the same static buffer as before
    torch.testing.assert_close(out2[0], x2 * 2 + y)
    torch.testing.assert_close(out2[1], x2.sum(-1))
    assert out2[0] is first and g.captures == 1 and g.replays == 2
    # mutating the caller's tensor after a call does not reach the static input
    x2.fill_(100.0)
    torch.testing.assert_close(g(torch.zeros(2, 3), y)[0], y)
    # a new shape is a new capture; beyond max_signatures the oldest is dropped
    g.max_signatures = 2
    g(torch.zeros(4, 3), torch.zeros(4, 3))
    g(torch.zeros(5, 3), torch.zeros(5, 3))
    assert g.captures == 3 and len(g._graphs) == 2


def test_graphed_call_cuda_mode_rejects_cpu_tensors_and_bad_mode():
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        GraphedCall(lambda a: a + 1, mode="cuda")(torch.zeros(3))
    with pytest.raises(ValueError, match="mode must be"):
        GraphedCall(lambda a: a, mode="gpu")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_predict_through_emulated_graphs_matches_plain_fast_path(trained_run, dtype):
    """Same seeds, same weights: the graph protocol (one conditioning graph, one graph per weight
    mode for the U-Net steps) gives the plain fast path's chunks, with and without inpainting."""
    plain = Policy.load(trained_run["run_dir"])
    graphed = Policy.load(trained_run["run_dir"])
    plain.optimize_for_inference(dtype=dtype, precise_steps=3, cuda_graphs=False)
    graphed.optimize_for_inference(dtype=dtype, precise_steps=3, cuda_graphs="emulate")
    assert graphed.model.graph_mode == "emulate" and plain.model.graph_mode is None
    for step in (5, 77):
        obs = _obs_from_store(trained_run["store"], step)
        a = plain.predict(obs, seed=step).actions
        b = graphed.predict(obs, seed=step).actions
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        committed = a[:2] + 0.01
        ca = plain.predict(obs, committed_actions=committed, seed=step).actions
        cb = graphed.predict(obs, committed_actions=committed, seed=step).actions
        np.testing.assert_array_equal(cb[:2], committed)
        np.testing.assert_allclose(cb, ca, rtol=0, atol=1e-6)
    calls = graphed.model._graph_calls
    steps = graphed.config.policy.noise.num_inference_steps
    modes = {k[1] for k in calls if isinstance(k, tuple)}
    # bf16 keeps fp32 copies for the first steps: a graph per weight mode; fp32 has one mode only
    assert modes == ({True, False} if dtype == "bf16" else {False})
    assert all(c.captures == 1 for c in calls.values())  # captured once, replayed for every chunk
    assert calls["cond"].replays == 4
    assert sum(c.replays for k, c in calls.items() if k != "cond") == 4 * steps
    if dtype == "bf16":
        assert calls[("step", True)].replays == 4 * 3


def test_graph_options_are_checked():
    from benchmarks.policy_bench import make_policy

    policy = make_policy("policy/tiny.yaml", (96, 128), torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        policy.optimize_for_inference(cuda_graphs=True)
    with pytest.raises(ValueError, match="fp16 weights are for GPUs"):
        policy.optimize_for_inference(dtype="fp16")
    with pytest.raises(ValueError, match="dtype must be"):
        policy.optimize_for_inference(dtype="int8")
