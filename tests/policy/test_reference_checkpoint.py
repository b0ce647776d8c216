"""A Diffusion Policy reference checkpoint, converted by ``rig policy import-reference``, reproduces the
reference's own outputs.

The reference's model code (tests/policy/reference_dp/third_party/, MIT, carried unmodified) runs in
its own virtualenv (``reference_dp/requirements.txt`` + ``no_deps.txt``), built once into
``.cache/reference-policy/`` (ignored by git; rebuilt when those files change; tests/compat_venv.py).
There ``harness.py`` builds a small checkpoint from random weights (EMA weights different from the
training weights) with the reference's real-world workspace config, saves it with the workspace's own
``save_checkpoint`` (dill, OmegaConf config), and records its outputs for one observation. Here the
file is converted through the CLI and the run is loaded the way ``rig deploy`` loads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.compat_venv import compat_python
from tests.policy.rig_policy import rig_policy

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "reference_dp"
CACHE = REPO / ".cache" / "reference-policy"
TOL = 1e-4  # normalized units


def reference_policy_python() -> Path:
    """The reference policy's virtualenv (built once; a failed build raises)."""
    return compat_python(CACHE, HERE / "requirements.txt", HERE / "no_deps.txt", what="reference policy")


@pytest.fixture(scope="module")
def reference_python() -> Path:
    return reference_policy_python()


@pytest.fixture(scope="module", params=["image", "hybrid"])
def converted(request, reference_python: Path, tmp_path_factory) -> dict:
    kind = request.param
    out = tmp_path_factory.mktemp(f"ref_{kind}")
    done = subprocess.run(
        [str(reference_python), str(HERE / "harness.py"), kind, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = out / "run"
    cli = rig_policy(
        "import-reference",
        str(out / "ref.ckpt"),
        "--out",
        str(run),
        timeout_s=300,
    )
    assert cli.returncode == 0, cli.stderr
    summary = json.loads(cli.stdout.strip().splitlines()[-1])
    return {
        "kind": kind,
        "run": run,
        "stdout": cli.stdout,
        "summary": summary,
        "ref": torch.load(out / "outputs.pt", weights_only=True),
        "obs": dict(np.load(out / "obs.npz")),
    }


def _policy(run: Path):
    from deploy.policy_client import PolicySpec, load_policy

    return load_policy(PolicySpec(str(run), "cpu"))  # as rig deploy and deploy.serving load it


def test_the_cli_prints_the_key_table_and_takes_steps_from_the_checkpoint(converted) -> None:
    s = converted["summary"]
    ref = converted["ref"]
    assert (
        s["policy_class"]
        == {
            "image": "DiffusionUnetImagePolicy",
            "hybrid": "DiffusionUnetHybridImagePolicy",
        }[converted["kind"]]
    )
    assert s["weights"] == "ema_model"
    assert (s["n_obs_steps"], s["n_action_steps"], s["horizon"]) == (2, 8, 16)
    assert s["num_inference_steps"] == ref["num_inference_steps"]
    table = converted["stdout"]
    for key in ("camera_1", "camera_3", "robot_eef_pose", "action"):
        assert any(line.split()[:2] == [key, key] for line in table.splitlines()), table


def test_features_noise_prediction_and_chunk_match_the_reference(converted) -> None:
    ref, obs = converted["ref"], converted["obs"]
    policy = _policy(converted["run"])
    model = policy.model
    with torch.inference_mode():
        t = policy._obs_tensors(obs)
        feats = model.obs_encoder({k: v[:, : policy.n_obs_steps] for k, v in t.items()})
        feat_err = (feats.reshape(-1, feats.shape[-1]) - ref["features"]).abs().max().item()
        eps = model.unet(ref["step_sample"], ref["step_t"], global_cond=model.encode_obs(t))
        eps_err = (eps - ref["step_eps"]).abs().max().item()
        chunk = policy.predict(obs, seed=int(ref["seed"]))
        ours_norm = model.normalizer.normalize("action", torch.from_numpy(chunk.actions).float())
    to = policy.n_obs_steps
    chunk_err = (ours_norm - ref["action_pred_norm"][0, to - 1 :]).abs().max().item()
    print(
        f"{converted['kind']}: features {feat_err:.2e}, noise prediction {eps_err:.2e}, chunk {chunk_err:.2e}"
    )
    assert feat_err < TOL
    assert eps_err < TOL
    assert chunk_err < TOL
    # the EMA weights were used: the training weights give another chunk
    assert ref["action_pred_norm"].abs().max() > 0


def test_the_deploy_path_sends_the_references_predict_action(converted) -> None:
    from deploy.policy_client import run_predict

    ref, obs = converted["ref"], dict(converted["obs"])
    policy = _policy(converted["run"])
    # the rig observes the full pose; the policy was trained on x, y
    rng = np.random.default_rng(5)
    pose = np.concatenate([obs["robot_eef_pose"], rng.normal(size=(len(obs["robot_eef_pose"]), 4))], axis=1)
    obs["robot_eef_pose"] = pose
    actions, first, error, _ = run_predict(policy, obs, None, int(ref["seed"]))
    assert error is None, error
    n = policy.n_action_steps
    sent = actions[:n]
    want = ref["action"][0].double().numpy()
    scale = policy.model.normalizer.scale("action").double().numpy()
    assert np.abs((sent[:, :2] - want) * scale).max() < TOL
    np.testing.assert_array_equal(sent[:, 2:], np.repeat(pose[-1:, 2:], n, axis=0))


def _deploy(checkpoint: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "robot.cli",
        "deploy",
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "1",
        f"store={tmp_path / 'eval.zarr'}",
        "max_episode_s=5",  # inference takes ~1 s on a loaded CPU (two ResNet-18s)
        "spacemouse=false",
        "rig.calibration_file=/nonexistent/cal.yaml",
    ]
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def test_rig_deploy_refuses_a_rig_without_the_cameras_before_starting_it(converted, tmp_path: Path) -> None:
    if converted["kind"] != "hybrid":
        pytest.skip("one policy class is enough for the rig checks")
    # the reference observes camera_1 and camera_3; the simulated rig has camera_0 and camera_1
    done = _deploy(converted["run"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "camera_3" in lines[0] and "--map" in lines[0], lines
    assert not (tmp_path / "eval.zarr").exists()  # nothing was started or recorded


@pytest.fixture(scope="module")
def mapped_run(converted) -> Path:
    """The hybrid checkpoint imported for the simulated rig: its cameras renamed, its frames resized."""
    if converted["kind"] != "hybrid":
        pytest.skip("one policy class is enough for the rig checks")
    run = converted["run"].parent / "mapped"
    cli = rig_policy(
        "import-reference",
        str(converted["run"].parent / "ref.ckpt"),
        "--out",
        str(run),
        "--map",
        "camera_1=camera_0",
        "--map",
        "camera_3=camera_1",
        "--frame-size",
        "240x320",  # the simulated cameras' frames, resized by the policy
        timeout_s=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert any(line.split()[:2] == ["camera_3", "camera_1"] for line in cli.stdout.splitlines())
    return run


def test_an_imported_run_with_mapped_cameras_drives_the_simulated_rig(
    mapped_run: Path, tmp_path: Path
) -> None:
    done = _deploy(mapped_run, tmp_path)
    # random weights may send the arm where the safety layer stops it (exit 3); either way the policy
    # ran on the rig's frames and poses
    assert done.returncode in (0, 3), done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1
    assert summary["per_episode"][0]["chunks"] >= 1


def test_rig_train_resume_fine_tunes_an_imported_run(mapped_run: Path, tmp_path: Path) -> None:
    import shutil

    from collection.episode_store import EpisodeStore
    from policy.checkpoint import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(mapped_run, run, symlinks=True)
    store = tmp_path / "ft.zarr"
    with EpisodeStore.open(store, "w") as st:
        for i in range(2):
            rng = np.random.default_rng(i)
            n = 10
            st.add_episode(
                {
                    "camera_0": rng.integers(0, 256, size=(n, 240, 320, 3), dtype=np.uint8),
                    "camera_1": rng.integers(0, 256, size=(n, 240, 320, 3), dtype=np.uint8),
                    "robot_eef_pose": rng.normal(0.3, 0.1, size=(n, 6)),
                    "action": rng.normal(0.3, 0.1, size=(n, 6)),
                    "timestamp": 5.0 * i + 0.1 * np.arange(n),
                }
            )
    before = load_checkpoint(run)
    assert before["ema_meta"]["optimization_step"] == 1234  # the EMA continues from the reference's step
    cmd = [
        sys.executable,
        "-m",
        "robot.cli",
        "train",
        "--resume",
        "--out",
        str(run),
        "--dataset",
        str(store),
        "--max-steps",
        "2",
        "training.batch_size=1",
        "dataset.val_ratio=0",
        "training.checkpoint_every_steps=0",
        # a fresh schedule's first step has LR 0 (warm-up); without warm-up the second step moves the weights
        "training.lr_warmup_steps=0",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    after = load_checkpoint(run)
    assert after["step"] == 2
    changed = [k for k, v in before["model"].items() if not torch.equal(v, after["model"][k])]
    assert any(k.startswith("unet.") for k in changed) and any(".trunk." in k for k in changed)


def test_deploy_serving_serves_the_references_action(converted) -> None:
    if converted["kind"] != "image":
        pytest.skip("one policy class is enough for the server (the hybrid one drives the simulated rig)")
    from tests.deploy.test_serving import predict_served

    ref, obs = converted["ref"], dict(converted["obs"])
    pose = np.concatenate([obs["robot_eef_pose"], np.zeros((len(obs["robot_eef_pose"]), 4))], axis=1)
    obs["robot_eef_pose"] = pose
    _, res = predict_served(converted["run"], obs, None, seed=int(ref["seed"]), timeout_s=120)
    assert res is not None and res.error is None, res
    from policy.checkpoint import load_checkpoint

    want = ref["action"][0].double().numpy()
    scale = load_checkpoint(converted["run"])["normalizer"]["action__scale"].double().numpy()
    sent = res.actions[: len(want)]
    assert np.abs((sent[:, :2] - want) * scale).max() < TOL  # normalized units
    np.testing.assert_array_equal(sent[:, 2:], np.zeros((len(want), 4)))  # held at the observed pose


def test_a_map_of_a_key_the_checkpoint_lacks_is_one_line(converted, tmp_path: Path) -> None:
    if converted["kind"] != "image":
        pytest.skip("the key check does not depend on the policy class")
    ckpt = converted["run"].parent / "ref.ckpt"
    done = rig_policy(
        "import-reference",
        str(ckpt),
        "--out",
        str(tmp_path / "r"),
        "--map",
        "camera_0=camera_1",
        timeout_s=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "camera_0" in lines[0] and "camera_1, camera_3" in lines[0], lines
    assert not (tmp_path / "r").exists()
