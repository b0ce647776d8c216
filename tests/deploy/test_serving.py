"""Policy serving over ZeroMQ + msgpack: a real server process, the client the runner uses."""

import subprocess
import sys
import time

import numpy as np
import pytest

from deploy.serving import RemotePolicyClient, pack, unpack
from deploy.standin import ReferencePolicy


def start_server(*args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.serving", "--bind", "tcp://127.0.0.1:*", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("serving"), proc.stderr.read()
    return proc, line.split(" on ")[-1].strip()


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def predict_served(checkpoint, obs, committed, seed: int, timeout_s: float):
    """One chunk from a policy server process on ``checkpoint`` with one torch thread (as a test's
    in-process reference runs): the server's PolicyMeta and its ChunkResult (None: not within
    ``timeout_s``)."""
    proc, address = start_server("--checkpoint", str(checkpoint), "--torch-threads", "1")
    try:
        client = RemotePolicyClient(address, timeout_s=timeout_s)
        try:
            client.request(obs, committed, seed=seed)
            return client.meta, client.wait(timeout_s)
        finally:
            client.close()
    finally:
        stop_server(proc)


def test_arrays_round_trip_without_pickle():
    msg = {"a": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "b": np.eye(3), "c": None, "d": 3}
    out = unpack(pack(msg))
    assert out["a"].dtype == np.uint8 and np.array_equal(out["a"], msg["a"])
    assert np.array_equal(out["b"], msg["b"]) and out["c"] is None and out["d"] == 3


@pytest.mark.timeout(60)
def test_remote_policy_predicts_like_local_and_reports_the_added_latency():
    proc, address = start_server(
        "--checkpoint",
        "py:deploy.standin:ReferencePolicy",
        "--policy-kwargs",
        '{"latency_s": 0.05, "t0_s": 0.0}',
    )
    try:
        client = RemotePolicyClient(address, timeout_s=10)
        try:
            assert client.meta.n_action_steps == 8 and client.meta.obs_keys == ("timestamp",)
            local = ReferencePolicy(latency_s=0.0, t0_s=0.0)
            overheads = []
            frames = np.random.default_rng(0).integers(0, 255, (2, 240, 320, 3), dtype=np.uint8)
            for i in range(8):
                t_obs = 10.0 + i
                committed = local.reference(t_obs + np.arange(3) * 0.1) + 0.001
                obs = {"timestamp": np.array([t_obs - 0.1, t_obs]), "camera_0": frames}
                client.request(obs, committed, seed=i)
                assert client.busy
                res = client.wait(5.0)
                assert res is not None and res.error is None
                want = local.predict({"timestamp": obs["timestamp"]}, committed).actions
                assert np.allclose(res.actions, want)
                assert np.array_equal(res.actions[:3], committed)  # inpainting contract over the wire
                assert res.latency_s >= res.compute_s >= 0.05
                overheads.append(res.latency_s - res.compute_s)
            print(f"serving overhead p50 {np.median(overheads) * 1e3:.2f} ms (2 x 240x320 frames)")
            assert np.median(overheads) < 0.1
        finally:
            client.close()
    finally:
        stop_server(proc)


@pytest.mark.timeout(60)
def test_client_says_when_the_server_is_gone():
    proc, address = start_server(
        "--checkpoint", "py:deploy.standin:ReferencePolicy", "--policy-kwargs", '{"latency_s": 0.0}'
    )
    client = RemotePolicyClient(address, timeout_s=0.5)
    stop_server(proc)
    client.request({"timestamp": np.array([0.0, 0.1])})
    time.sleep(0.7)
    with pytest.raises(ConnectionError, match="did not answer"):
        client.check()
    client.close()
    with pytest.raises(ConnectionError, match="is `python -m deploy.serving"):
        RemotePolicyClient(address, timeout_s=0.3)


@pytest.mark.timeout(60)
def test_malformed_oversized_and_mismatched_requests_get_errors_and_the_server_keeps_serving():
    import os

    import zmq

    proc, address = start_server(
        "--checkpoint", "py:deploy.standin:ReferencePolicy", "--policy-kwargs", '{"latency_s": 0.0}',
        "--max-message-mb", "1",
    )  # fmt: skip
    ctx = zmq.Context.instance()

    def ask(data: bytes, timeout_ms: int = 5000):
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        try:
            sock.send(data)
            return unpack(sock.recv()) if sock.poll(timeout_ms) else None
        finally:
            sock.close(0)

    try:
        garbage = ask(os.urandom(200))
        assert "bad request" in garbage["error"]
        wrong = ask(pack({"op": "predict", "id": 1, "obs": {"timestamp": np.zeros((2, 3))}}))
        assert "'timestamp'" in wrong["error"] and "shape" in wrong["error"]
        missing = ask(pack({"op": "predict", "id": 2, "obs": {}}))
        assert "'timestamp'" in missing["error"]
        assert ask(b"x" * (2 << 20), timeout_ms=1000) is None  # over the bound: dropped unread
        client = RemotePolicyClient(address, timeout_s=10)
        try:
            client.request({"timestamp": np.array([0.0, 0.1])})
            res = client.wait(5.0)
            assert res is not None and res.error is None and res.actions.shape[1] == 6
        finally:
            client.close()
        assert proc.poll() is None
    finally:
        stop_server(proc)


@pytest.mark.timeout(60)
def test_the_server_binds_loopback_unless_told_otherwise():
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.serving", "--checkpoint", "py:deploy.standin:ReferencePolicy"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving") and " on tcp://127.0.0.1:" in line, proc.stderr.read()
    finally:
        stop_server(proc)


@pytest.mark.timeout(90)
def test_with_curve_keys_only_the_authorized_client_is_answered(tmp_path):
    keys = tmp_path / "keys"
    made = subprocess.run(
        [sys.executable, "-m", "deploy.serving", "keygen", str(keys)], capture_output=True, text=True
    )
    assert made.returncode == 0 and (keys / "clients" / "client.key").exists(), made.stderr
    again = subprocess.run(
        [sys.executable, "-m", "deploy.serving", "keygen", str(keys)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "already holds keys" in again.stderr  # keys in use are never replaced
    other = tmp_path / "other"  # a pair the server never authorized
    subprocess.run(
        [sys.executable, "-m", "deploy.serving", "keygen", str(other)], check=True, capture_output=True
    )
    proc, address = start_server(
        "--checkpoint", "py:deploy.standin:ReferencePolicy", "--policy-kwargs", '{"latency_s": 0.0}',
        "--keys", str(keys),
    )  # fmt: skip
    try:
        client = RemotePolicyClient(address, timeout_s=10, keys=keys)
        try:
            client.request({"timestamp": np.array([0.0, 0.1])})
            res = client.wait(5.0)
            assert res is not None and res.error is None and res.actions.shape == (15, 6)
        finally:
            client.close()
        for bad in (None, other):  # no keys at all, or a client key the server does not know
            with pytest.raises(ConnectionError, match="did not answer"):
                RemotePolicyClient(address, timeout_s=1.0, keys=bad)
        # The mixed case: the right server key but this client's key is not authorized.
        (tmp_path / "mixed").mkdir()
        for name, src in (("server.key", keys), ("client.key_secret", other), ("client.key", other)):
            (tmp_path / "mixed" / name).write_bytes((src / name).read_bytes())
        with pytest.raises(ConnectionError, match="client key"):
            RemotePolicyClient(address, timeout_s=1.0, keys=tmp_path / "mixed")
        assert proc.poll() is None  # refused handshakes never end the server
    finally:
        stop_server(proc)
