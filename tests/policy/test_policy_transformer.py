"""The time-series diffusion transformer backbone (policy/transformer.py) behind the policy interface:
shapes, causal masking, conditioning, the conditioning cache, the optimizer groups, and a real
`rig train --config policy/tiny_reach_transformer.yaml` run through checkpoint, resume, inpainting
and the inference fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.checkpoint import load_checkpoint
from policy.inference import Policy
from policy.transformer import TransformerForDiffusion
from tests.policy.conftest import TRANSFORMER_CONFIG, TRANSFORMER_TEST_OVERRIDES, run_train
from tests.policy.test_policy_inference import _obs_from_store

BOUND = 0.02  # normalized action units: 1% of the [-1, 1] range


def _obs(store, step: int = 5) -> dict[str, np.ndarray]:
    """The store's observation at ``step`` with the pose columns tiny_reach observes (x, y)."""
    obs = _obs_from_store(store, step)
    return {**obs, "robot_eef_pose": obs["robot_eef_pose"][:, :2]}


def _model(causal: bool = True, **kw) -> TransformerForDiffusion:
    """A small transformer with O(1) weights: the GPT-style initialisation (std 0.02) makes a fresh
    model's output depend on its inputs only at the 1e-6 level, too little to tell from rounding."""
    torch.manual_seed(0)
    args = dict(action_dim=3, horizon=12, n_obs_steps=2, cond_dim=5, n_layer=2, n_head=2, n_emb=16)
    model = TransformerForDiffusion(**{**args, **kw}, causal_attn=causal).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return model


def test_output_and_cache_shapes():
    model = _model()
    x, g = torch.randn(4, 12, 3), torch.randn(4, 2 * 5)
    with torch.no_grad():
        assert model(x, torch.tensor(7), global_cond=g).shape == (4, 12, 3)
        assert model(x, torch.randint(0, 100, (4,)), global_cond=g).shape == (4, 12, 3)
        cache = model.cond_cache(torch.tensor([90, 40, 3]), g)
    # one tensor per layer: 3 steps x 4 observations, the step token + 2 observation tokens, keys and values
    assert [c.shape for c in cache] == [(12, 3, 32)] * 2
    with pytest.raises(ValueError, match="timestep and global_cond"):
        model(x)


def test_cached_conditioning_equals_per_step_conditioning():
    model = _model()
    x, g = torch.randn(2, 12, 3), torch.randn(2, 10)
    with torch.no_grad():
        cache = model.cond_cache(torch.tensor([90, 40, 3]), g)
        for i, t in enumerate((90, 40, 3)):
            plain = model(x, torch.tensor(t), global_cond=g)
            torch.testing.assert_close(model(x, cache=[c[2 * i : 2 * i + 2] for c in cache]), plain)


def test_changing_a_later_action_never_changes_an_earlier_output():
    model = _model()
    x, g = torch.randn(2, 12, 3), torch.randn(2, 10)
    later = x.clone()
    later[:, 7] += 3.0
    with torch.no_grad():
        a = model(x, torch.tensor(50), global_cond=g)
        b = model(later, torch.tensor(50), global_cond=g)
    torch.testing.assert_close(b[:, :7], a[:, :7], rtol=0, atol=1e-6)
    assert (b[:, 7:] - a[:, 7:]).abs().amax(dim=(0, 2)).min() > 1e-4  # every later token moved
    # without causal attention the change reaches the earlier tokens too
    free = _model(causal=False)
    with torch.no_grad():
        a = free(x, torch.tensor(50), global_cond=g)
        b = free(later, torch.tensor(50), global_cond=g)
    assert (b[:, :7] - a[:, :7]).abs().max() > 1e-4


def test_observation_and_step_condition_the_output():
    model = _model()
    x, g = torch.randn(2, 12, 3), torch.randn(2, 10)
    newest = g.clone()
    newest[:, 5:] += 1.0  # the second (newest) observation step's features
    with torch.no_grad():
        a = model(x, torch.tensor(50), global_cond=g)
        b = model(x, torch.tensor(50), global_cond=newest)
        c = model(x, torch.tensor(10), global_cond=g)
    assert (b - a)[:, 1:].abs().amax(dim=(0, 2)).min() > 1e-4
    # window position 0 is the time of the first observation: causal, it never sees the second
    torch.testing.assert_close(b[:, 0], a[:, 0], rtol=0, atol=1e-6)
    assert (c - a).abs().amax(dim=(0, 2)).min() > 1e-4  # the step token reaches every position


def test_optimizer_groups_decay_weight_matrices_and_the_encoder_separately():
    from policy.config import PolicyConfig
    from policy.diffusion import DiffusionPolicy

    cfg = PolicyConfig.model_validate(
        {
            "obs": {"robot_eef_pose": {"type": "low_dim"}, "camera_0": {"type": "rgb"}},
            "vision": {"width": 8, "layers": [1, 1, 1, 1], "stem_stride": 1, "stem_pool": False},
            "model": {"backbone": "transformer", "transformer": {"n_layer": 2, "n_emb": 16}},
        }
    )
    meta = {
        "obs": {
            "robot_eef_pose": {"type": "low_dim", "shape": [6]},
            "camera_0": {"type": "rgb", "shape": [3, 24, 24]},
        },
        "action": {"shape": [6]},
    }
    model = DiffusionPolicy(cfg, meta)
    groups = model.optim_groups(1e-3, 1e-6)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(decay) == len(list(model.parameters()))
    tf = model.transformer
    assert decay[id(tf.layers[0].qkv.weight)] == decay[id(tf.head.weight)] == 1e-3
    for p in (tf.pos_emb, tf.cond_pos_emb, tf.layers[0].norm1.weight, tf.layers[1].qkv.bias, tf.ln_f.bias):
        assert decay[id(p)] == 0.0
    assert {decay[id(p)] for p in model.obs_encoder.parameters()} == {1e-6}
    # the U-Net keeps one group when its decay equals the encoder's (older optimizer states load)
    unet = DiffusionPolicy(
        cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": "unet"})}), meta
    )
    assert [len(g["params"]) for g in unet.optim_groups(1e-6, None)] == [len(list(unet.parameters()))]


def test_transformer_training_loss_falls_and_checkpoint_says_transformer(trained_transformer_run):
    run = trained_transformer_run
    assert run["rc"] == 0
    assert run["summary"]["backbone"] == "transformer" and run["summary"]["steps"] == 300
    ckpt = load_checkpoint(run["run_dir"])
    assert ckpt["backbone"] == "transformer"
    assert ckpt["config"]["policy"]["model"]["backbone"] == "transformer"
    assert any(k.startswith("transformer.layers.1.") for k in ckpt["model"])
    assert not any(k.startswith("unet.") for k in ckpt["model"])
    # the shipped config's optimizer: AdamW betas (0.9, 0.95), decays 1e-3 / 0 / 1e-6 (encoder)
    groups = ckpt["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 1e-6, 1e-3]
    assert all(tuple(g["betas"]) == (0.9, 0.95) for g in groups)
    losses = np.asarray(ckpt["history"]["train_loss"])
    first, last = losses[:10].mean(), losses[-30:].mean()
    assert first / last >= 4.0, f"loss fell only {first / last:.1f}x ({first:.3f} -> {last:.3f})"
    # EMA weights travel with the checkpoint and differ from the raw ones
    key = "transformer.head.weight"
    assert not torch.equal(ckpt["model"][key], ckpt["ema_model"][key])


def test_transformer_checkpoint_round_trip_gives_identical_predictions(trained_transformer_run):
    run = trained_transformer_run
    a = Policy.load(run["run_dir"])
    b = Policy.load(run["summary"]["checkpoint"])
    assert a.backbone == "transformer" and a.model.transformer is a.model.denoiser
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    obs = _obs(run["store"])
    ca = a.predict(obs, seed=3)
    assert ca.actions.shape == (a.horizon - a.n_obs_steps + 1, 2)  # x, y of tiny_reach
    np.testing.assert_array_equal(ca.actions, b.predict(obs, seed=3).actions)
    assert not np.array_equal(ca.actions, a.predict(obs, seed=4).actions)
    # a trained policy reads the observation: another scene gives another chunk for the same seed
    assert not np.allclose(ca.actions, a.predict(_obs(run["store"], 77), seed=3).actions)


def test_transformer_inpainting_keeps_the_committed_prefix(trained_transformer_run):
    policy = Policy.load(trained_transformer_run["run_dir"])
    obs = _obs(trained_transformer_run["store"])
    free = policy.predict(obs, seed=1).actions
    committed = free[:3] + np.array([0.05, -0.04]) + 1e-9 * np.pi
    chunk = policy.predict(obs, committed_actions=committed, seed=1)
    np.testing.assert_array_equal(chunk.actions[:3], committed)
    assert not np.allclose(chunk.actions[3:], free[3:])  # the sampler saw them


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_transformer_fast_path_within_bound_of_the_reference(trained_transformer_run, dtype):
    """fp32 eager with the conditioning recomputed at every step against the fast path (pre-packed
    weights, conditioning once per chunk; bf16 with 3 precise steps), same seeds."""
    from policy.fast_inference import PackedLinear

    run = trained_transformer_run
    ref = Policy.load(run["run_dir"])
    ref.cache_cond = False
    fast = Policy.load(run["run_dir"])
    fast.optimize_for_inference(dtype=dtype, precise_steps=3)
    linears = [m for m in fast.model.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and any(isinstance(m, PackedLinear) for m in fast.model.transformer.modules())
    worst = 0.0
    for step in (5, 77, 222):
        obs = _obs(run["store"], step)
        ref.predict(obs, seed=step)
        fast.predict(obs, seed=step)
        diff = (fast.model.last_normalized_actions - ref.model.last_normalized_actions).abs().max()
        worst = max(worst, float(diff))
    assert worst <= BOUND, f"{dtype} fast path differs by {worst:.4f} normalized units"
    assert fast.model.precise_steps == (3 if dtype == "bf16" else 0)


def test_transformer_through_emulated_graphs_matches_plain_fast_path(trained_transformer_run):
    run = trained_transformer_run
    plain = Policy.load(run["run_dir"])
    graphed = Policy.load(run["run_dir"])
    plain.optimize_for_inference(dtype="bf16", precise_steps=3, cuda_graphs=False)
    graphed.optimize_for_inference(dtype="bf16", precise_steps=3, cuda_graphs="emulate")
    for step in (5, 77):
        obs = _obs(run["store"], step)
        a = plain.predict(obs, seed=step).actions
        np.testing.assert_allclose(graphed.predict(obs, seed=step).actions, a, rtol=0, atol=1e-6)
        committed = a[:2] + 0.01
        chunk = graphed.predict(obs, committed_actions=committed, seed=step).actions
        np.testing.assert_array_equal(chunk[:2], committed)
        ref = plain.predict(obs, committed_actions=committed, seed=step).actions
        np.testing.assert_allclose(chunk, ref, rtol=0, atol=1e-6)
    calls = graphed.model._graph_calls
    assert set(calls) == {"cond", ("step", True), ("step", False)}
    assert all(c.captures == 1 for c in calls.values()) and calls["cond"].replays == 4


def test_transformer_trains_under_bf16_autocast(trained_transformer_run, tmp_path):
    rc, summary, _ = run_train(
        "--config",
        TRANSFORMER_CONFIG,
        "--dataset",
        trained_transformer_run["store"],
        "--out",
        tmp_path / "bf16",
        "--max-steps",
        "5",
        "training.mixed_precision=bf16",
        *TRANSFORMER_TEST_OVERRIDES,
    )
    assert rc == 0 and summary["mixed_precision"] == "bfloat16" and np.isfinite(summary["final_loss"])


def test_checkpoints_from_before_the_backbone_choice_load_as_unet():
    from policy.config import PolicyConfig

    cfg = PolicyConfig.model_validate({"unet": {"down_dims": [8, 16]}})
    assert cfg.model.backbone == "unet" and cfg.model.unet.down_dims == [8, 16]
