"""policy.relative_action: positions predicted as offsets from the TCP at the last observation step,
converted back in the model, so that training, Policy.predict and deployment see absolute actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.config import PolicyConfig, TrainConfig
from policy.dataset import EpisodeDataset, open_store
from policy.diffusion import DiffusionPolicy, relative_pairs
from policy.inference import Policy
from tests.policy.conftest import run_train

SHAPE_META = {
    "obs": {
        "camera_0": {"type": "rgb", "shape": [3, 24, 24]},
        "robot_eef_pose": {"type": "low_dim", "shape": [3], "dims": [0, 1, 2]},
        "gripper_width": {"type": "low_dim", "shape": [1], "dims": [0]},
    },
    "action": {"shape": [4], "dims": [0, 1, 2, 6], "stored_dim": 7},
}


def test_the_position_columns_pair_with_the_observed_tcp_and_a_missing_one_is_named():
    assert relative_pairs(SHAPE_META) == [(0, 0), (1, 1), (2, 2)]  # the width (column 6) stays absolute
    no_z = {
        **SHAPE_META,
        "obs": {**SHAPE_META["obs"], "robot_eef_pose": {"type": "low_dim", "shape": [2], "dims": [0, 1]}},
    }
    with pytest.raises(ValueError, match=r"columns \[2\] in its dims \(it has \[0, 1\]\)"):
        relative_pairs(no_z)
    no_pose = {**SHAPE_META, "obs": {"camera_0": SHAPE_META["obs"]["camera_0"]}}
    with pytest.raises(ValueError, match="no robot_eef_pose"):
        relative_pairs(no_pose)


def test_offsets_and_back_shift_only_the_positions_by_the_last_observed_tcp():
    small = {"vision": {"width": 8, "layers": [1, 1, 1, 1]}, "model": {"unet": {"down_dims": [32, 64]}}}
    model = DiffusionPolicy(PolicyConfig(relative_action=True, **small), SHAPE_META)
    actions = torch.tensor([[[0.5, 0.1, 0.05, 0.085], [0.6, 0.2, 0.04, 0.0]]])
    obs = {"robot_eef_pose": torch.tensor([[[9.0, 9.0, 9.0], [0.4, 0.0, 0.15]]])}  # step 0 is not used
    rel = model.to_relative(actions, obs)
    assert torch.allclose(rel, torch.tensor([[[0.1, 0.1, -0.1, 0.085], [0.2, 0.2, -0.11, 0.0]]]))
    assert torch.allclose(model.to_absolute(rel, obs), actions)


def test_a_relative_policy_trains_on_offsets_and_predicts_absolute_positions(
    reach_store, tiny_overrides, tmp_path
):
    out = tmp_path / "rel"
    rc, summary, _ = run_train(
        "--dataset",
        reach_store,
        "--out",
        out,
        "--max-steps",
        "10",
        *tiny_overrides,
        "policy.relative_action=true",
        "training.val_every_steps=0",
    )
    assert rc == 0 and summary["steps"] == 10
    policy = Policy.load(out)
    assert policy.config.policy.relative_action
    root = open_store(reach_store)
    data = root["data"]
    t = 12  # inside episode 0, the arm away from the origin
    obs = {
        "camera_0": np.asarray(data["camera_0"][t - 1 : t + 1]),
        "robot_eef_pose": np.asarray(data["robot_eef_pose"][t - 1 : t + 1]),
    }
    chunk = policy.predict(obs, seed=0).actions
    # What the denoiser produced, unnormalized, is an offset: the chunk is it plus the observed TCP
    # position (x, y, z), the rotation columns as they came.
    model = policy.model
    raw = model.normalizer.unnormalize("action", model.last_normalized_actions.float())[0].double().numpy()
    raw = raw[policy.n_obs_steps - 1 :]
    np.testing.assert_allclose(chunk[:, :3], raw[:, :3] + obs["robot_eef_pose"][-1, :3], atol=1e-5)
    np.testing.assert_allclose(chunk[:, 3:], raw[:, 3:], atol=1e-5)
    # The normalizer was fit on the offsets of the training windows (x and y: their min and max map
    # to -1 and 1), not on the absolute actions.
    ds = EpisodeDataset(reach_store, policy.config.policy, policy.config.dataset, "train")
    last = policy.n_obs_steps - 1
    offsets = np.concatenate(
        [ds[i]["action"][:, :3] - ds[i]["obs"]["robot_eef_pose"][last, :3] for i in range(len(ds))]
    )
    ends = model.normalizer.unnormalize("action", torch.tensor([[-1.0] * 6, [1.0] * 6])).double().numpy()
    np.testing.assert_allclose(ends[:, :2], [offsets[:, :2].min(0), offsets[:, :2].max(0)], atol=1e-5)
    absolute = np.asarray(data["action"][:])
    assert not np.allclose(ends[:, :2], [absolute[:, :2].min(0), absolute[:, :2].max(0)], atol=1e-3)
    # Committed (absolute) rows are inpainted as offsets and come back as given.
    committed = chunk[:3].copy()
    again = policy.predict(obs, committed_actions=committed, seed=1).actions
    assert np.allclose(again[:3], committed)


def test_action_windows_are_the_items_without_their_images(reach_store):
    cfg = TrainConfig.model_validate({"policy": {"relative_action": True}, "dataset": {"val_ratio": 0.0}})
    ds = EpisodeDataset(reach_store, cfg.policy, cfg.dataset, "train")
    actions, eef = ds.action_windows()
    assert actions.shape[:2] == (len(ds), cfg.policy.horizon) and eef.shape[:2] == (
        len(ds),
        cfg.policy.n_obs_steps,
    )
    for i in (0, 5, len(ds) - 1):  # a padded start, the middle, a padded end
        item = ds[i]
        np.testing.assert_array_equal(actions[i], item["action"])
        np.testing.assert_array_equal(eef[i], item["obs"]["robot_eef_pose"])
