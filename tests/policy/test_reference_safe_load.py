"""Reading a Diffusion Policy reference checkpoint runs nothing from the file (policy/reference/safe_load.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from policy.reference.safe_load import UnsafeCheckpointError, load_reference_checkpoint
from tests.policy.rig_policy import rig_policy

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Writes a marker file when unpickled by an ordinary loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {
        "cfg": {"policy": {"_target_": "x"}},
        "state_dicts": {"model": {"w": torch.zeros(3)}},
        "pickles": {"global_step": _Payload(marker)},
    }
    torch.save(payload, path, pickle_protocol=2)
    return path, marker


def test_a_malicious_reduce_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"global posix\.system"):
        load_reference_checkpoint(path)
    assert not marker.exists()
    # the same file through an ordinary unrestricted load does run the command: the test can fail
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_the_cli_names_the_refused_global_in_one_line(tmp_path: Path) -> None:
    path, marker = _malicious_checkpoint(tmp_path)
    done = rig_policy(
        "import-reference",
        str(path),
        "--out",
        str(tmp_path / "run"),
        timeout_s=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "posix.system" in lines[0] and "refused" in lines[0], lines
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="could not be read as a Diffusion Policy checkpoint"):
        load_reference_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a Diffusion Policy workspace checkpoint"):
        load_reference_checkpoint(other)


def test_tensors_are_memory_mapped_not_copied(tmp_path: Path) -> None:
    path = tmp_path / "ws.ckpt"
    big = torch.arange(1_000_000, dtype=torch.float32)
    torch.save({"cfg": {}, "state_dicts": {"model": {"w": big}}, "pickles": {}}, path, pickle_protocol=2)
    ckpt = load_reference_checkpoint(path)
    w = ckpt["state_dicts"]["model"]["w"]
    assert torch.equal(w, big)
    # the tensor's bytes lie in a mapping of the checkpoint file itself, not in a heap copy
    ptr = w.untyped_storage().data_ptr()
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path.resolve()):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            spans.append((lo, hi))
    assert any(lo <= ptr < hi for lo, hi in spans), spans


@pytest.mark.parametrize(
    "policy, expected",
    [
        (
            {
                "_target_": "diffusion_policy.policy.diffusion_transformer_hybrid_image_policy.DiffusionTransformerHybridImagePolicy"
            },
            "policy class DiffusionTransformerHybridImagePolicy is not supported",
        ),
        (
            {
                "_target_": "diffusion_policy.policy.diffusion_unet_image_policy.DiffusionUnetImagePolicy",
                "noise_scheduler": {"_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler"},
            },
            "samples with DDPMScheduler",
        ),
    ],
)
def test_an_unsupported_checkpoint_is_refused_in_one_line_naming_it(tmp_path: Path, policy, expected) -> None:
    path = tmp_path / "other.ckpt"
    torch.save(
        {"cfg": {"policy": policy}, "state_dicts": {"model": {}}, "pickles": {}}, path, pickle_protocol=2
    )
    done = rig_policy("import-reference", str(path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists()
    if "DDPM" in expected:
        debug = rig_policy("import-reference", str(path), "--out", str(tmp_path / "run"), "--debug")
        assert "Traceback" in debug.stderr  # --debug keeps the traceback


def test_the_legacy_torch_format_is_read_with_the_same_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.ckpt"
    torch.save(
        {"cfg": {"a": 1}, "state_dicts": {"model": {"w": torch.ones(3)}}, "pickles": {}},
        path,
        pickle_protocol=2,
        _use_new_zipfile_serialization=False,
    )
    ckpt = load_reference_checkpoint(path)
    assert ckpt["cfg"] == {"a": 1} and torch.equal(ckpt["state_dicts"]["model"]["w"], torch.ones(3))
    evil = tmp_path / "legacy_evil.ckpt"
    torch.save({"cfg": _Payload(marker)}, evil, pickle_protocol=2, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        load_reference_checkpoint(evil)
    assert not marker.exists()
