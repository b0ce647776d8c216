"""`rig train` through policy.train_cli.main: the loss falls, checkpoints and resume work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from policy.checkpoint import load_checkpoint
from policy.train_cli import main
from tests.policy.conftest import TRANSFORMER_CONFIG, TRANSFORMER_TEST_OVERRIDES, run_train, torchrun_train


@pytest.mark.timeout(120)
def test_training_loss_falls_5x_and_run_dir_is_complete(trained_run):
    assert trained_run["rc"] == 0
    summary = trained_run["summary"]
    for key in ("final_loss", "train_seconds", "steps", "checkpoint", "val_loss", "val_action_mse"):
        assert key in summary, key
    assert summary["steps"] == 300
    assert summary["dt_s"] == pytest.approx(0.1)
    # Where training ends, it names its loss curve and log, and they are there.
    assert summary["loss_plot"] == str(trained_run["run_dir"] / "loss.png")
    assert summary["log"] == str(trained_run["run_dir"] / "log.jsonl")
    assert Path(summary["loss_plot"]).stat().st_size > 0 and Path(summary["log"]).stat().st_size > 0
    (done,) = [line for line in trained_run["stdout"] if line.startswith("training done:")]
    assert summary["checkpoint"] in done and "loss.png" in done and "log.jsonl" in done, done
    run_dir = trained_run["run_dir"]
    ckpt = load_checkpoint(run_dir)
    losses = np.asarray(ckpt["history"]["train_loss"])
    assert len(losses) == 300
    first, last = losses[:10].mean(), losses[-30:].mean()
    assert first / last >= 5.0, f"loss fell only {first / last:.1f}x ({first:.3f} -> {last:.3f})"
    assert summary["final_loss"] == pytest.approx(losses[-50:].mean(), rel=1e-6)
    # checkpoint contents
    for key in (
        "model",
        "ema_model",
        "optimizer",
        "lr_scheduler",
        "normalizer",
        "config",
        "shape_meta",
        "git_revision",
    ):
        assert ckpt[key] is not None, key
    assert any(k.startswith("normalizer.") for k in ckpt["model"])
    assert ckpt["shape_meta"]["obs"]["camera_0"] == {"type": "rgb", "shape": [3, 24, 24]}
    assert ckpt["step"] == 300
    assert (run_dir / "latest").is_symlink()
    assert ckpt["path"] == summary["checkpoint"]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == [
        "step_00000150.pt",
        "step_00000300.pt",
    ]
    png = (run_dir / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "config.yaml").is_file()
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("val_action_mse" in rec for rec in logged)
    # EMA weights differ from the raw weights after training
    assert not torch.equal(
        ckpt["model"]["unet.final_conv.1.weight"], ckpt["ema_model"]["unet.final_conv.1.weight"]
    )


@pytest.mark.parametrize("shared_run", ["trained_run", "trained_transformer_run"], indirect=True)
def test_resume_continues_step_count_and_history(shared_run, tmp_path):
    import shutil

    trained_run = shared_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run["run_dir"], run_dir, symlinks=True)
    before = load_checkpoint(run_dir)
    rc, summary, _ = run_train(
        "--out", run_dir, "--resume", "--max-steps", "320", "training.val_every_steps=0"
    )
    assert rc == 0
    assert summary["steps"] == 320 and summary["steps_this_run"] == 20
    after = load_checkpoint(run_dir)
    assert after["step"] == 320 and after["path"].endswith("step_00000320.pt")
    assert after["history"]["train_loss"][:300] == before["history"]["train_loss"]
    assert len(after["history"]["train_loss"]) == 320
    # the optimizer continued (Adam step counters advanced by 20), not restarted
    first_state = next(iter(after["optimizer"]["state"].values()))
    assert int(first_state["step"]) == 320
    # the resumed loss stays at the trained level (a restart from scratch would be ~1.0)
    assert (
        np.mean(after["history"]["train_loss"][300:])
        < 2 * np.mean(before["history"]["train_loss"][-30:]) + 0.05
    )


def test_refuses_to_overwrite_a_run_without_resume(trained_run):
    from robot.config import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        main(["--dataset", str(trained_run["store"]), "--out", str(trained_run["run_dir"])])


def test_unknown_config_key_is_rejected(trained_run, tmp_path):
    from robot.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'training.lrr'"):
        main(["--dataset", str(trained_run["store"]), "--out", str(tmp_path / "x"), "training.lrr=1"])


def _backbone_args(backbone: str, tiny_overrides: list[str]) -> list[str]:
    """Config and overrides of the tests' small policy with the given denoiser."""
    if backbone == "transformer":
        return ["--config", TRANSFORMER_CONFIG, *TRANSFORMER_TEST_OVERRIDES]
    return list(tiny_overrides)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_ddp_path_runs_single_process_on_cpu(trained_run, tiny_overrides, tmp_path, monkeypatch, backbone):
    """WORLD_SIZE/RANK set (as torchrun does): DDP over gloo must work on a CPU-only machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", str(port))
    rc, summary, _ = run_train(
        "--dataset",
        trained_run["store"],
        "--out",
        tmp_path / "ddp",
        "--max-steps",
        "5",
        *_backbone_args(backbone, tiny_overrides),
    )
    assert rc == 0 and summary["steps"] == 5 and summary["backbone"] == backbone
    assert not torch.distributed.is_initialized()


def test_rig_dispatches_train_to_this_module(capsys):
    from robot.cli import main as rig

    with pytest.raises(SystemExit) as exc:
        rig(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--out", "--resume", "--max-steps", "--config"):
        assert flag in out


def test_missing_dataset_is_a_config_error(tmp_path):
    from robot.config import ConfigError

    with pytest.raises(ConfigError, match="--dataset"):
        main(["--out", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match="does not exist"):
        main(["--dataset", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "r2")])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_torchrun_two_ranks_train_in_step_over_gloo(trained_run, tiny_overrides, tmp_path, backbone):
    """The README's multi-GPU command, on CPU: `torchrun --nproc-per-node 2 -m robot.cli train`
    starts two ranks that train with DistributedDataParallel over gloo, end with the same weights,
    and only rank 0 writes the checkpoint and the summary."""
    out_dir = tmp_path / "ddp2"
    small_batch = [
        o for o in _backbone_args(backbone, tiny_overrides) if not o.startswith("training.batch_size")
    ]
    proc, summaries = torchrun_train(
        2,
        "--dataset",
        trained_run["store"],
        "--out",
        out_dir,
        "--max-steps",
        "6",
        *small_batch,  # --config first: the overrides after it stay one run of positionals
        "training.device=cpu",
        "training.batch_size=8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(summaries) == 1, proc.stdout  # rank 0 alone reports
    summary = summaries[0]
    assert summary["world_size"] == 2 and summary["steps"] == 6 and summary["backbone"] == backbone
    assert summary["ranks_in_sync"] is True
    ckpts = sorted((out_dir / "checkpoints").glob("*.pt"))
    assert [c.name for c in ckpts] == ["step_00000006.pt"] and (out_dir / "latest").exists()
    from policy.inference import Policy

    policy = Policy.load(out_dir)
    assert policy.horizon == 16


def test_fp16_mixed_precision_on_cpu_is_refused(trained_run, tiny_overrides, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        main(
            [
                "--dataset",
                str(trained_run["store"]),
                "--out",
                str(tmp_path / "fp16"),
                "--max-steps",
                "2",
                "training.device=cpu",
                "training.mixed_precision=fp16",
                *tiny_overrides,
            ]
        )


def test_bf16_autocast_trains_on_cpu(trained_run, tiny_overrides, tmp_path):
    """training.mixed_precision=bf16 runs the autocast path (the GPU default) on CPU as well: same
    seed as an fp32 run, so the two runs differ only by the bf16 rounding (a bare `no` from YAML is
    accepted as the fp32 setting)."""
    summaries = {}
    for mode in ("no", "bf16"):
        rc, summaries[mode], _ = run_train(
            "--dataset",
            trained_run["store"],
            "--out",
            tmp_path / mode,
            "--max-steps",
            "10",  # the autocast path, not learning: 10 steps show the bf16 rounding
            "training.device=cpu",
            f"training.mixed_precision={mode}",
            *tiny_overrides,
        )
        assert rc == 0
    fp32, bf16 = summaries["no"], summaries["bf16"]
    assert fp32["mixed_precision"] == "no" and bf16["mixed_precision"] == "bfloat16"
    assert np.isfinite(bf16["final_loss"]) and np.isfinite(bf16["val_loss"])
    assert bf16["final_loss"] != fp32["final_loss"]  # autocast did run in bf16
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=0.05)
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], rel=0.05)


def test_bf16_on_a_cpu_without_native_bf16_says_it_is_slower(
    trained_run, tiny_overrides, tmp_path, monkeypatch, capsys
):
    """configs/policy/tiny_pick_place.yaml trains in bf16 (faster where the CPU computes bf16: AVX512-BF16
    or AMX); on a CPU that emulates it, rig train still trains and says in one line how to turn it off."""
    import policy.train

    monkeypatch.setattr(policy.train, "_cpu_has_bf16", lambda: False)
    rc, summary, _ = run_train(
        "--dataset", trained_run["store"], "--out", tmp_path / "emulated", "--max-steps", "2",
        "training.device=cpu", "training.mixed_precision=bf16", *tiny_overrides,
    )  # fmt: skip
    assert rc == 0 and summary["mixed_precision"] == "bfloat16"
    said = [line for line in capsys.readouterr().err.splitlines() if "AVX512-BF16" in line]
    assert len(said) == 1 and "training.mixed_precision=no" in said[0]


def test_train_on_an_empty_folder_is_one_line_exit_2_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "robot.cli", "train", "--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not a zarr episode store" in out.stderr and "--dataset" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written before the inputs were checked


def test_a_nan_in_the_dataset_is_named_by_key_episode_and_step_before_anything_is_written(tmp_path):
    from collection.episode_store import EpisodeStore

    store = tmp_path / "nan.zarr"
    with EpisodeStore.open(store, "w", image_codec="raw") as s:
        for i in range(3):
            action = np.zeros((12, 6))
            if i == 2:
                action[5, 1] = np.nan
            s.add_episode(
                {
                    "camera_0": np.zeros((12, 8, 8, 3), np.uint8),
                    "robot_eef_pose": np.zeros((12, 6)),
                    "action": action,
                    "timestamp": 0.1 * np.arange(12) + 10 * i,
                }
            )
    out = subprocess.run(
        [sys.executable, "-m", "robot.cli", "train", "--dataset", str(store), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data/action: episode 2 step 5: not finite" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(240)
def test_sigint_to_the_group_saves_a_resumable_checkpoint_and_exits_130(
    trained_run, tiny_overrides, tmp_path
):
    from tests.sigint import RIG, interrupt_command

    run_dir = tmp_path / "run"
    cmd = [*RIG, "train", "--dataset", str(trained_run["store"]), "--out", str(run_dir), "--max-steps", "100000",
           *tiny_overrides]  # fmt: skip
    result = interrupt_command(cmd, tmp_path, ready="train:", settle_s=2.0)
    result.assert_clean_interrupt(kept="rig train --resume --out")
    step = load_checkpoint(run_dir)["step"]
    assert 0 < step < 100000 and f"step {step}" in result.err
    rc, summary, _ = run_train("--out", run_dir, "--resume", "--max-steps", str(step + 2))
    assert rc == 0 and summary["steps"] == step + 2 and summary["steps_this_run"] == 2


def test_train_names_a_damaged_low_dim_chunk_before_writing_anything(tmp_path):
    from collection.episode_store import EpisodeStore

    store = tmp_path / "damaged.zarr"
    with EpisodeStore.open(store, "w", image_codec="raw") as s:
        for i in range(3):
            s.add_episode(
                {
                    "camera_0": np.zeros((12, 8, 8, 3), np.uint8),
                    "robot_eef_pose": np.zeros((12, 6)),
                    "action": np.ones((12, 6)),
                    "timestamp": 0.1 * np.arange(12) + 10 * i,
                }
            )
    chunk = store / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:40])  # truncated, as a full disk or a bad copy leaves it
    out = subprocess.run(
        [sys.executable, "-m", "robot.cli", "train", "--dataset", str(store), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert (
        "data/action: episodes 0..2 (episode 0 step 0 .. episode 2 step 11): cannot be decoded" in out.stderr
    )
    assert "rig episodes check" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
