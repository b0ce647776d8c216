"""Policy.load / predict: round trip, seeds, validation messages, inpainting of committed actions."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from policy.inference import ActionChunk, Policy


def _obs_from_store(store, step: int = 5) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(store), mode="r")
    return {
        "camera_0": np.asarray(root["data/camera_0"][step - 1 : step + 1]),
        "robot_eef_pose": np.asarray(root["data/robot_eef_pose"][step - 1 : step + 1]),
    }


def test_checkpoint_round_trip_gives_identical_predictions(trained_run):
    run_dir = trained_run["run_dir"]
    a = Policy.load(run_dir, device="cpu")
    b = Policy.load(trained_run["summary"]["checkpoint"], device="cpu")
    obs = _obs_from_store(trained_run["store"])
    ca, cb = a.predict(obs, seed=3), b.predict(obs, seed=3)
    assert isinstance(ca, ActionChunk) and ca.first_index == 0
    assert ca.actions.shape == (a.horizon - a.n_obs_steps + 1, 6)
    assert ca.actions.shape[0] >= a.n_action_steps
    np.testing.assert_array_equal(ca.actions, cb.actions)
    np.testing.assert_array_equal(ca.actions, a.predict(obs, seed=3).actions)
    assert not np.array_equal(ca.actions, a.predict(obs, seed=4).actions)
    assert a.dt_s == pytest.approx(0.1) and a.n_obs_steps == 2 and a.n_action_steps == 8 and a.horizon == 16
    assert a.shape_meta["obs"]["robot_eef_pose"]["shape"] == [6]


def test_predict_names_missing_extra_and_misshapen_keys(trained_run):
    policy = Policy.load(trained_run["run_dir"])
    obs = _obs_from_store(trained_run["store"])
    bad = {"camera_0": obs["camera_0"][:, :20], "gripper": np.zeros((2, 1))}
    with pytest.raises(ValueError) as err:
        policy.predict(bad)
    msg = str(err.value)
    assert "missing key(s): robot_eef_pose" in msg
    assert "unexpected key(s): gripper" in msg
    assert "'camera_0': shape (2, 20, 24, 3), expected (2, 24, 24, 3)" in msg
    with pytest.raises(ValueError, match=r"'robot_eef_pose': shape \(1, 6\), expected \(2, 6\)"):
        policy.predict({**obs, "robot_eef_pose": obs["robot_eef_pose"][:1]})
    with pytest.raises(ValueError, match="expected uint8"):
        policy.predict({**obs, "camera_0": obs["camera_0"].astype(np.float32)})
    with pytest.raises(ValueError, match="committed_actions"):
        policy.predict(obs, committed_actions=np.zeros((3, 5)))


def test_committed_actions_are_reproduced_exactly_and_continued(trained_run):
    policy = Policy.load(trained_run["run_dir"])
    obs = _obs_from_store(trained_run["store"])
    free = policy.predict(obs, seed=1).actions
    committed = free[:3] + np.array([0.05, -0.04, 0.0, 0.0, 0.0, 0.0]) + 1e-9 * np.pi
    chunk = policy.predict(obs, committed_actions=committed, seed=1)
    np.testing.assert_array_equal(chunk.actions[:3], committed)
    assert chunk.actions.shape == free.shape
    # the inpainted chunk differs from the free one after the committed part (the sampler saw them)
    assert not np.allclose(chunk.actions[3:], free[3:])
    # zero committed rows is the same as none
    np.testing.assert_array_equal(
        policy.predict(obs, committed_actions=np.zeros((0, 6)), seed=1).actions, free
    )


def test_fast_path_stays_within_1_percent_of_the_normalized_range(trained_run):
    import torch

    policy = Policy.load(trained_run["run_dir"])
    fast = Policy.load(trained_run["run_dir"])
    fast.optimize_for_inference(dtype=torch.bfloat16, encoder_dtype=torch.bfloat16)
    policy.cache_cond = False  # the reference: FiLM recomputed at every step
    worst = 0.0
    for step in (5, 77, 222):
        obs = _obs_from_store(trained_run["store"], step)
        ref = policy.predict(obs, seed=step)
        ref_norm = policy.model.last_normalized_actions.clone()
        out = fast.predict(obs, seed=step)
        worst = max(worst, float((fast.model.last_normalized_actions - ref_norm).abs().max()))
        assert out.actions.shape == ref.actions.shape
    assert worst <= 0.02, f"bf16 fast path differs by {worst:.4f} normalized units"
