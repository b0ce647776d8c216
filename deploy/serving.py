"""Policy serving over the network: the policy on a GPU machine, the rig on the robot PC.

Transport: ZeroMQ request/reply (``pyzmq``) with msgpack messages; numpy arrays travel as raw bytes
with dtype and shape (no pickle: a server never unpickles what the network sends). The same policy
client API as in-process and the inference process (see deploy/policy_client.py), so the runner's
scheduling is unchanged: the latency it measures and compensates (``ChunkResult.latency_s``) is the
round trip, i.e. inference plus the added network latency; ``ChunkResult.compute_s`` is the server's
own ``predict`` time, so ``latency_s - compute_s`` is what serving adds.

Server (on the GPU machine)::

    python -m deploy.serving --checkpoint runs/x/train --bind tcp://*:5555 --device cuda

It binds the loopback interface (``tcp://127.0.0.1:5555``) unless ``--bind`` says otherwise, and
then prints what it exposes. Without keys anyone who reaches the port is answered: serve on a network
only one you trust (or tunnel the port over ssh), or use CurveZMQ keys, with which only the rig's
client is answered and the traffic is encrypted::

    python -m deploy.serving keygen keys/          # once: server and client key pairs
    python -m deploy.serving --checkpoint ... --bind tcp://*:5555 --keys keys/
    rig deploy ... server=tcp://gpu-host:5555 server_keys=keys/   # the rig needs server.key and
                                                                  # client.key_secret of keys/

The server answers only the clients whose public keys are in ``keys/clients/`` (``keygen`` puts the
one it makes there; add more ``*.key`` files for more rigs); others get no answer at all (ZeroMQ drops
their handshake), so their ``rig deploy`` says the server did not answer. A message larger than ``--max-message-mb`` is dropped by ZeroMQ
before it is read; a request that does not decode, or whose arrays do not match the policy's
shape_meta, gets an error reply naming what is wrong, and the server keeps serving.

Rig side: ``rig deploy --checkpoint runs/x/train server=tcp://gpu-host:5555`` (the checkpoint path
is only shown in the log then; the server's policy is used).

Messages: ``{"op": "meta"}`` -> PolicyMeta as a dict; ``{"op": "predict", "id", "obs", "committed",
"seed", "warm_up"}`` -> ``{"id", "actions", "first_index", "error", "compute_s"}`` (``warm_up``: the
call before the first episode, see ``run_predict``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from deploy.policy_client import (
    ChunkResult,
    OneRequestInFlight,
    PolicyMeta,
    PolicySpec,
    PredictRequest,
    load_policy,
    policy_meta,
    run_predict,
)
from robot.timing import now

log = logging.getLogger("deploy.serving")

DEFAULT_BIND = "tcp://127.0.0.1:5555"


# ------------------------------------------------------------------ CurveZMQ keys
def make_keys(folder: str | Path) -> Path:
    """Create the server's and one client's key pairs in ``folder`` (``server.key``,
    ``server.key_secret``, ``client.key``, ``client.key_secret``) and authorize that client
    (``clients/client.key``). Existing keys are an error: they may already be in use."""
    import shutil

    import zmq.auth

    folder = Path(folder)
    if (folder / "server.key_secret").exists():
        raise FileExistsError(
            f"{folder} already holds keys (server.key_secret); remove them to make new ones"
        )
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(str(folder), "server")
    public, _ = zmq.auth.create_certificates(str(folder), "client")
    shutil.copy(public, folder / "clients" / "client.key")
    return folder


def _load_keys(folder: str | Path, name: str, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    path = Path(folder) / (f"{name}.key_secret" if secret else f"{name}.key")
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: make keys with `python -m deploy.serving keygen {folder}` on the server and "
            "copy server.key and client.key_secret to the rig"
        )
    return zmq.auth.load_certificate(str(path))


# ------------------------------------------------------------------ encoding
def _enc(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__nd__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__} to/from the policy server")


def _dec(obj: dict) -> Any:
    if obj.get("__nd__"):
        return np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    return obj


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, default=_enc, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_dec, raw=False)


# ------------------------------------------------------------------ server
class PolicyServer:
    """Answers meta and predict requests on ``bind`` (one at a time, in order).

    ``serve_forever`` returns when ``stop()`` is called (from a signal handler or another thread).
    """

    def __init__(
        self,
        spec: PolicySpec,
        bind: str = DEFAULT_BIND,
        max_message_bytes: int = 64 << 20,
        keys: str | Path | None = None,
    ) -> None:
        self.spec = spec
        self.policy = load_policy(spec)
        self.meta = policy_meta(self.policy, spec.describe())
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, int(max_message_bytes))
        self.auth = None
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = _load_keys(keys, "server", secret=True)
            clients = Path(keys) / "clients"
            if not any(clients.glob("*.key")):
                raise FileNotFoundError(f"{clients} holds no client public key (*.key): no rig could connect")
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(clients))
            self.sock.curve_secretkey, self.sock.curve_publickey = secret, public
            self.sock.curve_server = True
        self.sock.bind(bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._running = True
        self.served = 0

    def stop(self) -> None:
        self._running = False

    def serve_forever(self, poll_ms: int = 100) -> None:
        try:
            while self._running:
                if not self.sock.poll(poll_ms):
                    continue
                data = self.sock.recv()
                try:
                    reply = self.handle(unpack(data))
                except Exception as exc:  # a malformed request must never end the server
                    log.warning("bad request (%d bytes): %s", len(data), exc)
                    reply = {"error": f"bad request: {exc}"}
                self.sock.send(pack(reply))
        finally:
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()

    def _check_obs(self, obs: Any) -> None:
        """ValueError naming the key whose array does not match the policy's shape_meta."""
        if not isinstance(obs, dict):
            raise ValueError(f"obs must be a mapping of arrays, got {type(obs).__name__}")
        shapes = self.meta.obs_shapes or {}
        for key in self.meta.obs_keys:
            if key not in obs:
                raise ValueError(f"obs has no {key!r} (the policy needs {list(self.meta.obs_keys)})")
            value = obs[key]
            if not isinstance(value, np.ndarray):
                raise ValueError(f"obs {key!r}: expected an array, got {type(value).__name__}")
            want = shapes.get(key)
            if want is None:
                continue
            if value.ndim != len(want) + 1 or (len(want) == 1 and list(value.shape[1:]) != list(want)):
                raise ValueError(
                    f"obs {key!r}: shape {list(value.shape)} does not match the policy's (steps, {', '.join(map(str, want))})"
                )

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(msg, dict):
            raise ValueError(f"a request is a mapping, got {type(msg).__name__}")
        op = msg.get("op")
        if op == "meta":
            return self.meta.to_dict()
        if op == "predict":
            self._check_obs(msg.get("obs"))
            actions, first, err, compute_s = run_predict(
                self.policy, msg["obs"], msg.get("committed"), msg.get("seed"), bool(msg.get("warm_up"))
            )
            self.served += 1
            return {
                "id": msg["id"],
                "actions": actions,
                "first_index": first,
                "error": err,
                "compute_s": compute_s,
            }
        return {"error": f"unknown op {op!r}"}


# ------------------------------------------------------------------ client
class RemotePolicyClient(OneRequestInFlight):
    """Policy client talking to a :class:`PolicyServer` (same API as the inference process).

    Args:
        address: ``tcp://host:port`` of the server.
        timeout_s: a request not answered within this long makes :meth:`check` raise (the runner then
            stops the arm and says so); also the connect/meta timeout.
    """

    def __init__(self, address: str, timeout_s: float = 10.0, keys: str | Path | None = None) -> None:
        self.address = address
        self.timeout_s = float(timeout_s)
        self.keys = keys
        self.transport = f"policy server {address}"
        self.ctx = zmq.Context.instance()
        self.sock = self._connect()
        self._init_requests()
        self.sock.send(pack({"op": "meta"}))
        if not self.sock.poll(int(self.timeout_s * 1000)):
            self.close()
            keys_hint = (
                f" With keys: is this rig's client key ({keys}/client.key) in the server's keys/clients/?"
                if keys is not None
                else " A server started with --keys answers only rigs with server_keys set."
            )
            raise ConnectionError(
                f"policy server at {address} did not answer within {self.timeout_s:.0f} s: is "
                "`python -m deploy.serving --checkpoint ... --bind tcp://*:PORT` running there, and the port open?"
                + keys_hint
            )
        self.meta = PolicyMeta.from_dict(unpack(self.sock.recv()))

    def _connect(self) -> Any:
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            public, secret = _load_keys(self.keys, "client", secret=True)
            sock.curve_secretkey, sock.curve_publickey = secret, public
            sock.curve_serverkey, _ = _load_keys(self.keys, "server", secret=False)
        sock.connect(self.address)
        return sock

    def _request(self, req: PredictRequest) -> int:
        obs = {k: np.asarray(v) for k, v in req.obs.items()}
        msg = {
            "op": "predict",
            "obs": obs,
            "committed": req.committed_actions,
            "seed": req.seed,
            "warm_up": req.warm_up,
        }
        return self._send_request(lambda rid: self.sock.send(pack({**msg, "id": rid})))

    def poll(self) -> ChunkResult | None:
        if self._in_flight is None or not self.sock.poll(0):
            return None
        msg = unpack(self.sock.recv())
        rid, t0, cancelled = self._take_in_flight()
        if cancelled:
            return None
        return ChunkResult(
            rid,
            msg.get("actions"),
            int(msg.get("first_index", 0)),
            t0,
            now(),
            msg.get("error"),
            msg.get("compute_s", np.nan),
        )

    def wait(self, timeout_s: float | None = None) -> ChunkResult | None:
        if self._in_flight is None:
            return None
        ms = -1 if timeout_s is None else int(timeout_s * 1000)
        if not self.sock.poll(ms):
            return None
        return self.poll()

    def check(self) -> None:
        """Raise ConnectionError if the in-flight request is older than ``timeout_s``."""
        if self._in_flight is not None and now() - self._in_flight[1] > self.timeout_s:
            raise ConnectionError(
                f"{self.transport} did not answer a request within {self.timeout_s:.0f} s: server down or "
                "network lost. The arm holds; restart the server and deploy again."
            )

    def close(self) -> None:
        self.sock.close(0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keygen"]:
        if len(argv) != 2:
            print("usage: python -m deploy.serving keygen DIR", file=sys.stderr)
            return 2
        try:
            folder = make_keys(argv[1])
        except FileExistsError as exc:
            print(f"keygen: {exc}", file=sys.stderr)
            return 2
        print(
            f"keys in {folder}: start the server with --keys {folder}; copy {folder}/server.key and "
            f"{folder}/client.key_secret to the rig and set server_keys= to their folder"
        )
        return 0
    ap = argparse.ArgumentParser(prog="python -m deploy.serving", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint .pt / run dir, or py:module:Factory")
    ap.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        help="ZeroMQ endpoint (default: loopback only; e.g. tcp://*:5555 serves every interface)",
    )
    ap.add_argument("--max-message-mb", type=float, default=64.0, help="larger requests are dropped unread")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--fast-inference", action="store_true")
    ap.add_argument("--policy-kwargs", default="{}", help="JSON object for py: policies")
    ap.add_argument(
        "--keys",
        default=None,
        help="CurveZMQ key folder (from `keygen DIR`): encrypt, and answer only the clients in DIR/clients/",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = PolicySpec(
        args.checkpoint,
        args.device,
        tuple(sorted(json.loads(args.policy_kwargs).items())),
        torch_threads=args.torch_threads,
        fast_inference=args.fast_inference,
    )
    try:
        server = PolicyServer(spec, args.bind, int(args.max_message_mb * (1 << 20)), keys=args.keys)
    except FileNotFoundError as exc:
        print(f"python -m deploy.serving: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    print(f"serving {spec.describe()} on {server.address}", flush=True)
    host = server.address.split("://", 1)[-1].rsplit(":", 1)[0]
    if not host.startswith("127.") and host not in ("localhost", "[::1]"):
        if args.keys is None:
            print(
                f"exposed: {server.address} answers anyone who can reach this port (no authentication); "
                "serve only on a trusted network, or use --keys",
                flush=True,
            )
        else:
            print(
                f"exposed: {server.address}, encrypted; answers only the clients in {Path(args.keys) / 'clients'}",
                flush=True,
            )
    server.serve_forever()
    print(f"served {server.served} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
