"""`rig demo`, shortened, end to end through the CLI: every stage leaves its artifact."""

import json
import subprocess
import sys

import pytest

from collection.episode_store import EpisodeStore


@pytest.mark.timeout(600)
def test_short_demo_produces_every_artifact(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "robot.cli", "demo", "--episodes", "2", "--eval-episodes", "1"]
    cmd += ["--train-steps", "8", "--train", "training.torch_threads=1", "--out", str(out), "max_episode_s=4"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=580, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "success_rate",
        "episodes",
        "train_seconds",
        "final_loss",
        "inference_p50_ms",
        "inference_p99_ms",
        "actions_dropped",
    ):
        assert key in summary, key
    assert summary["episodes"] == 2 and summary["train_steps"] == 8
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["inference_p50_ms"] > 0
    assert EpisodeStore.open(out / "demos.zarr", "r").n_episodes == 2
    assert (out / "train" / "latest").exists() and (out / "train" / "loss.png").is_file()
    # --train reaches rig train; training says its thread count first.
    assert "torch threads: 1 (training.torch_threads)" in (out / "train.log").read_text()
    assert EpisodeStore.open(out / "eval.zarr", "r").n_episodes == 1
    assert "rig demo summary" in res.stdout and json.loads(res.stdout.strip().splitlines()[-1]) == summary


def test_policy_names_resolve_to_shipped_configs_of_either_backbone():
    from deploy.demo import policy_config
    from policy.config import TrainConfig
    from robot.config import config_path, load_config

    for name, backbone in (("tiny_reach", "unet"), ("tiny_reach_transformer", "transformer")):
        cfg = load_config(TrainConfig, config_path(policy_config(name)))
        assert cfg.policy.model.backbone == backbone
    assert policy_config("policy/tiny_reach.yaml") == "policy/tiny_reach.yaml"
