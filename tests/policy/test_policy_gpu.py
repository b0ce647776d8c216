"""The policy on a CUDA GPU, both backbones (U-Net, transformer): inference (plain, fast path in
fp32/bf16/fp16 with CUDA graphs), training with mixed precision, and torchrun over NCCL. Skipped where no GPU is visible (CI, the 2-core
machines); run on a lent GPU machine with ``bash benchmarks/gpu_check.sh run`` (see that file).

References are computed on CPU in fp32 from the same checkpoint, seed and noise (the sampling noise
is drawn on CPU for every device), and compared in normalized action units: the fast-path bound is
0.02, 1% of the [-1, 1] range, as on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.inference import Policy
from tests.policy.conftest import TRANSFORMER_CONFIG, TRANSFORMER_TEST_OVERRIDES, run_train, torchrun_train
from tests.policy.test_policy_inference import _obs_from_store

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)"
)

BOUND = 0.02  # normalized action units: 1% of the [-1, 1] range
RUNS = ["trained_run", "trained_transformer_run"]  # the U-Net and the transformer run of conftest


def _obs(policy: Policy, store, step: int) -> dict:
    """The store's observation at ``step``, with the low-dim columns the policy was trained on."""
    obs = _obs_from_store(store, step)
    for key, meta in policy.shape_meta["obs"].items():
        if meta.get("dims") is not None:
            obs[key] = obs[key][:, meta["dims"]]
    return obs


def _normalized(policy: Policy, obs: dict, seed: int, committed: np.ndarray | None = None) -> torch.Tensor:
    chunk = policy.predict(obs, committed_actions=committed, seed=seed)
    assert np.all(np.isfinite(chunk.actions))
    return policy.model.last_normalized_actions.float().cpu()


@pytest.mark.parametrize("shared_run", RUNS, indirect=True)
def test_plain_cuda_predict_matches_cpu(shared_run):
    trained_run = shared_run
    cpu = Policy.load(trained_run["run_dir"], device="cpu")
    gpu = Policy.load(trained_run["run_dir"], device="cuda")
    assert gpu.model.device.type == "cuda" and gpu.model.graph_mode is None
    for step in (5, 77, 222):
        obs = _obs(cpu, trained_run["store"], step)
        diff = (_normalized(gpu, obs, step) - _normalized(cpu, obs, step)).abs().max().item()
        assert diff <= BOUND, f"step {step}: |cuda - cpu| = {diff:.4f}"


@pytest.mark.parametrize("shared_run", RUNS, indirect=True)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cuda_fast_path_with_graphs_matches_cpu_reference(shared_run, dtype):
    trained_run = shared_run
    ref = Policy.load(trained_run["run_dir"], device="cpu")
    ref.cache_cond = False  # the reference: conditioning recomputed at every step, fp32
    fast = Policy.load(trained_run["run_dir"], device="cuda")
    fast.optimize_for_inference(
        dtype=dtype,
        encoder_dtype=None
        if dtype == "fp32"
        else getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype]),
    )
    assert fast.model.graph_mode == "cuda"
    for step in (5, 77, 222):
        obs = _obs(ref, trained_run["store"], step)
        diff = (_normalized(fast, obs, step) - _normalized(ref, obs, step)).abs().max().item()
        assert diff <= BOUND, f"{dtype}, step {step}: |fast - ref| = {diff:.4f}"
        committed = ref.predict(obs, seed=step).actions[:3] + 0.01
        chunk = fast.predict(obs, committed_actions=committed, seed=step)
        np.testing.assert_array_equal(chunk.actions[:3], committed)
    calls = fast.model._graph_calls
    assert calls and all(c.captures == 1 for c in calls.values())  # replayed, never re-captured
    assert calls["cond"].replays == 6


@pytest.mark.parametrize("config", ["policy/paper.yaml", "policy/paper_transformer.yaml"])
def test_paper_config_fast_path_on_cuda_within_bound(config):
    from benchmarks.policy_bench import eager_predict, fast_predict, make_fast, make_obs, make_policy

    device = torch.device("cuda")
    eager = make_policy(config, (240, 320), device)
    obs = make_obs(eager)
    ref = eager_predict(eager, obs, seed=7)
    fast = make_fast(eager, device, torch.bfloat16, None, False)
    assert fast.model.graph_mode == "cuda" and fast.model.precise_steps == 3
    for _ in range(2):  # capture, then replay
        diff = (fast_predict(fast, obs, seed=7) - ref).abs().max().item()
        assert diff <= BOUND, f"{config} bf16 + graphs: |fast - eager| = {diff:.4f}"


@pytest.mark.parametrize("backbone", ["unet", "transformer"])
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_training_on_cuda_with_mixed_precision(trained_run, tiny_overrides, tmp_path, mode, backbone):
    config = ["--config", TRANSFORMER_CONFIG] if backbone == "transformer" else []
    overrides = TRANSFORMER_TEST_OVERRIDES if backbone == "transformer" else tiny_overrides
    rc, summary, _ = run_train(
        *config,
        "--dataset",
        trained_run["store"],
        "--out",
        tmp_path / mode,
        "--max-steps",
        "150",
        "training.device=cuda",
        f"training.mixed_precision={mode}",
        *overrides,
    )
    assert rc == 0 and summary["device"].startswith("cuda")
    assert summary["mixed_precision"] == {"bf16": "bfloat16", "fp16": "float16"}[mode]
    assert np.isfinite(summary["final_loss"]) and summary["final_loss"] < 0.5  # from ~1.0 at the start
    policy = Policy.load(tmp_path / mode, device="cpu")  # a GPU checkpoint loads on CPU
    assert policy.backbone == backbone
    obs = _obs(policy, trained_run["store"], 5)
    assert np.all(np.isfinite(policy.predict(obs, seed=0).actions))


def test_torchrun_over_nccl_on_one_gpu(trained_run, tiny_overrides, tmp_path):
    proc, summaries = torchrun_train(
        1,
        "--dataset",
        trained_run["store"],
        "--out",
        tmp_path / "nccl",
        "--max-steps",
        "20",
        "training.device=cuda",
        *tiny_overrides,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summaries[-1]
    assert summary["world_size"] == 1 and summary["device"] == "cuda:0" and summary["ranks_in_sync"] is True
