"""Encoder shapes with finer feature maps (``stage_strides``, a stage of 0 blocks): the map size the
config declares is what the trunk produces, and the shipped pick_place policy trains a step and
predicts through the fast path (``optimize_for_inference``) like the eager one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.config import TrainConfig, VisionConfig
from policy.diffusion import DiffusionPolicy
from policy.inference import Policy
from policy.obs_encoder import ImageEncoder, feature_map_size
from robot.config import config_path, load_config


@pytest.mark.parametrize(
    "layers, strides, expected",
    [
        ([1, 1, 1, 1], (2, 2, 2), (3, 4)),  # the reach demo's encoder
        ([1, 1, 1, 1], (2, 2, 1), (6, 8)),
        ([1, 1, 1, 1], (2, 1, 1), (11, 15)),
        ([1, 1, 1, 0], (2, 1, 2), (11, 15)),  # no layer4: its stride does not apply
        ([1, 1, 0, 0], (2, 2, 2), (11, 15)),
    ],
)
def test_declared_feature_map_size_is_what_the_trunk_produces(layers, strides, expected):
    cfg = VisionConfig(width=8, layers=layers, stem_stride=2, stem_pool=False, stage_strides=strides)
    trunk = ImageEncoder(cfg.model_copy(update={"pool": "avg"})).trunk
    out = trunk(torch.zeros(1, 3, 44, 58))
    assert feature_map_size(cfg, (44, 58)) == expected == tuple(out.shape[-2:])
    assert out.shape[1] == trunk.out_channels


def test_stage_strides_other_than_1_or_2_are_refused():
    with pytest.raises(ValueError, match="stage_strides"):
        VisionConfig(stage_strides=(2, 3, 2))


def _shape_meta(cfg: TrainConfig, hw: tuple[int, int]) -> dict:
    obs = {}
    for key, oc in cfg.policy.obs.items():
        if oc.type == "rgb":
            obs[key] = {"type": "rgb", "shape": [3, *hw]}
        else:
            dims = oc.dims if oc.dims is not None else [0]
            obs[key] = {"type": "low_dim", "shape": [len(dims)], "dims": dims}
    return {"obs": obs, "action": {"shape": [len(cfg.policy.action_dims)], "dims": cfg.policy.action_dims}}


FINER_MAP = ["policy.vision.layers=[1,1,1,0]", "policy.vision.stage_strides=[2,1,1]"]  # 11x15


@pytest.mark.parametrize("overrides", [[], FINER_MAP], ids=["shipped", "finer_map"])
def test_pick_place_policy_trains_a_step_and_its_fast_path_matches_eager(overrides):
    cfg = load_config(TrainConfig, config_path("policy/tiny_pick_place.yaml"), overrides)
    sm = _shape_meta(cfg, (96, 128))
    torch.manual_seed(0)
    model = DiffusionPolicy(cfg.policy, sm)
    rng = np.random.default_rng(0)
    for key, meta in [*sm["obs"].items(), ("action", sm["action"])]:
        if key == "action" or meta["type"] == "low_dim":
            model.normalizer.fit(key, rng.uniform(-0.5, 0.5, (100, meta["shape"][0])))
    ih, iw = cfg.policy.vision.image_size
    b, h = 2, cfg.policy.horizon
    batch = {
        "obs": {
            k: torch.from_numpy(rng.integers(0, 256, (b, h, ih, iw, 3), dtype=np.uint8))
            if m["type"] == "rgb"
            else torch.from_numpy(rng.uniform(-0.5, 0.5, (b, h, m["shape"][0])).astype(np.float32))
            for k, m in sm["obs"].items()
        },
        "action": torch.from_numpy(
            rng.uniform(-0.5, 0.5, (b, h, len(cfg.policy.action_dims))).astype(np.float32)
        ),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.obs_encoder.named_parameters()}
    loss = model.compute_loss(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = [n for n, p in model.obs_encoder.named_parameters() if not torch.equal(p, before[n])]
    assert any("pool.conv" in n for n in moved) and any("trunk.layer" in n for n in moved)

    model.eval()
    obs = {
        k: rng.integers(0, 256, (cfg.policy.n_obs_steps, 96, 128, 3), dtype=np.uint8)
        if m["type"] == "rgb"
        else rng.uniform(-0.4, 0.4, (cfg.policy.n_obs_steps, m["shape"][0]))
        for k, m in sm["obs"].items()
    }
    eager = Policy(model, cfg, sm, dt_s=0.1)
    ref = eager.predict(obs, seed=3).actions
    fast = Policy(DiffusionPolicy(cfg.policy, sm), cfg, sm, dt_s=0.1)
    fast.model.load_state_dict(model.state_dict())
    fast.model.eval()
    fast.optimize_for_inference()
    got = fast.predict(obs, seed=3).actions
    assert (
        got.shape
        == ref.shape
        == (cfg.policy.horizon - cfg.policy.n_obs_steps + 1, len(cfg.policy.action_dims))
    )
    np.testing.assert_allclose(got, ref, atol=1e-3)
