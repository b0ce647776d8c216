"""Ctrl-C as a terminal sends it: the deploy parent never blocks on a child that is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from collection.episode_store import EpisodeStore
from deploy.inference_process import InferenceProcess
from deploy.policy_client import PolicySpec
from robot.process import DeviceProcessError
from tests.sigint import RIG, interrupt_command

STANDIN = "py:deploy.standin:ReferencePolicy"


@pytest.mark.timeout(60)
def test_request_to_a_dead_inference_child_fails_instead_of_blocking():
    proc = InferenceProcess(PolicySpec(STANDIN))
    with proc:
        os.kill(proc.pid, signal.SIGKILL)  # as a terminal's SIGINT ends it before the parent
        proc._proc.join(5)
        # An observation far larger than a pipe's buffer (64 kB): a blocking write would never return.
        obs = {"camera_0": np.zeros((2, 480, 640, 3), np.uint8), "timestamp": np.zeros(2)}
        proc.request(obs)
        with pytest.raises(DeviceProcessError):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                proc.poll()
                time.sleep(0.01)


@pytest.mark.timeout(60)
def test_closing_under_a_pending_request_write_is_a_failed_send(monkeypatch):
    """Ctrl-C closes the pipe while the writer thread is part-way through a request (seen beside three
    busy loops: multiprocess then wrote to a handle of None, a TypeError in the thread). The pending
    write ends as a failed send, not as an exception in the thread."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    proc = InferenceProcess(PolicySpec(STANDIN))  # not started: nobody reads the request pipe
    # Far larger than a pipe's buffer: the writer fills the pipe and blocks part-way.
    proc._write(("predict", 0, np.zeros(4_000_000, np.uint8), None, 0))
    time.sleep(0.2)
    assert proc._writer.is_alive()
    proc.close()  # closes our end of the request pipe, then the read end: the blocked write breaks
    proc._writer.join(5)
    assert not proc._writer.is_alive()
    assert errors == []
    assert proc._send_error is not None


@pytest.fixture
def policy_server(tmp_path):
    """`python -m deploy.serving` of the stand-in on a free loopback port (its own group: the
    deploy's Ctrl-C does not reach it, as with a server in another terminal or machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "server.txt", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.serving", "--checkpoint", STANDIN, "--bind", endpoint],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (tmp_path / "server.txt").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.txt").read_text()
            time.sleep(0.1)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["async", "sync", "server"])
def test_one_sigint_to_the_group_ends_deploy_within_5_s(tmp_path, mode, request):
    store = tmp_path / "eval.zarr"
    extra = [f"server={request.getfixturevalue('policy_server')}"] if mode == "server" else []
    cmd = [*RIG, "deploy", "--checkpoint", STANDIN, "--mode", "sync" if mode == "sync" else "async",
           "--episodes", "5", f"store={store}", "spacemouse=false", "policy_kwargs={latency_s: 0.12}",
           *extra]  # fmt: skip
    result = interrupt_command(cmd, tmp_path, ready="chunks")  # a chunk ran
    result.assert_clean_interrupt(
        kept=f"{store} holds 1 saved episode; episode 0 is partial, marked interrupted"
    )
    assert result.took_s < 5.0, f"took {result.took_s:.1f} s to end after SIGINT"
    # The partial episode is kept, marked in its attributes and in `rig episodes list`, never a failure.
    attrs = EpisodeStore.open(store, "r").episode_attrs(0)
    assert attrs["interrupted"] is True and attrs["end_reason"] == "interrupted", attrs
    listed = subprocess.run(
        [*RIG, "episodes", "list", str(store)], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.split()[:1] == ["0"]]
    assert row[-1] == "interrupted", listed.stdout
    assert listed.stdout.splitlines()[-1].split()[-1] == "-", listed.stdout  # no episode judged


class SevenDimPolicy:
    """A stand-in trained for another rig: a 7-dim action (e.g. a gripper column)."""

    def __new__(cls, **kwargs):
        from deploy.standin import ReferencePolicy

        policy = ReferencePolicy(**kwargs)
        policy.shape_meta = {**policy.shape_meta, "action": {"shape": [7]}}
        return policy


def _deploy(tmp_path, checkpoint: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", "deploy", "--checkpoint", checkpoint, "--mode", mode,
         "--episodes", "1", f"store={tmp_path / 'eval.zarr'}", "spacemouse=false"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_file_that_is_no_checkpoint_is_one_line_and_exit_2(tmp_path, mode):
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "notes.pt").write_text("these are my notes\n")
    (tmp_path / "empty").mkdir()
    for path, words in (
        ("random.pt", "is not a rig diffusion-policy checkpoint"),
        ("notes.pt", "is not a rig diffusion-policy checkpoint"),
        ("empty", "has no 'latest' checkpoint"),
    ):
        out = _deploy(tmp_path, str(tmp_path / path), mode)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "Traceback" not in out.stderr and words in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "eval.zarr").exists()  # refused before anything started


@pytest.mark.timeout(120)
def test_a_checkpoint_for_another_action_shape_is_refused_before_the_rig_starts(tmp_path):
    out = _deploy(tmp_path, "py:tests.deploy.test_interrupts:SevenDimPolicy", "async")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "action: checkpoint 7, rig 6" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "eval.zarr").exists()
