"""Policy inference in its own process, overlapping with execution (async deployment).

:class:`InferenceProcess` is a :class:`robot.process.DeviceProcess`: the child loads the policy in
``setup()`` (a checkpoint: torch and the weights live only there) and answers one request at a time.
The parent side is a policy client (see :mod:`deploy.policy_client`): ``request`` hands the
observation and the committed actions over a pipe and returns at once; ``poll`` returns the result
when it is there. Observations are small (a few frames of at most 640x480), so a pickle over a pipe
costs about a millisecond; ``ChunkResult.latency_s - compute_s`` shows it.

Timing contract: ``request`` never blocks: the pickled request is written to the pipe by a writer
thread (an observation is larger than a pipe's buffer, and a child that died or stopped reading
must not hang the parent: Ctrl-C in a terminal ends the child first). ``poll`` never blocks. The
parent keeps no copy of the child's pipe ends, so a write to a dead child fails instead of waiting. ``start()`` returns once the policy is loaded (a failing load raises DeviceProcessError with
the child's traceback: wrong checkpoint path, a missing key...). A policy that raises in ``predict``
does not kill the process: the error comes back in ``ChunkResult.error``.
"""

from __future__ import annotations

import pickle
import threading

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
from robot.process import DeviceProcess, DeviceProcessError
from robot.timing import now


class InferenceProcess(OneRequestInFlight, DeviceProcess):
    """Runs ``predict`` of the policy in ``spec`` in a child process (see module docstring).

    Args:
        spec: where the policy comes from (checkpoint path and device, or a ``py:`` factory).
        ready_timeout_s: how long loading the policy may take (s).
    """

    def __init__(self, spec: PolicySpec, ready_timeout_s: float = 120.0) -> None:
        super().__init__(
            f"inference process ({spec.describe()})", ready_timeout_s=ready_timeout_s, stop_timeout_s=5.0
        )
        self.spec = spec
        ctx = self._ctx
        self._req_recv, self._req_send = ctx.Pipe(duplex=False)
        self._res_recv, self._res_send = ctx.Pipe(duplex=False)
        self.meta: PolicyMeta | None = None
        self._writer: threading.Thread | None = None
        self._send_error: BaseException | None = None
        self._init_requests()
        self.transport = "inference process"

    # ================================================================== parent side
    def start(self, wait: bool = True) -> None:
        super().start(wait=False)
        # The child has its own copies now; with ours closed, the pipes break when it dies.
        self._req_recv.close()
        self._res_send.close()
        if wait:
            self.wait_ready()
            self._read_meta()

    def _read_meta(self) -> None:
        deadline = now() + 10.0
        while not self._res_recv.poll(0.05):
            self.check()
            if now() > deadline:
                raise DeviceProcessError(f"{self.name}: loaded but sent no policy description")
        try:
            kind, payload = self._res_recv.recv()
        except (EOFError, OSError):
            self._proc.join(1.0)
            self.check()
            raise DeviceProcessError(f"{self.name}: the inference process closed its pipe") from None
        if kind != "meta":
            raise DeviceProcessError(f"{self.name}: protocol error, expected meta, got {kind}")
        self.meta = PolicyMeta.from_dict(payload)

    def _request(self, req: PredictRequest) -> int:
        if self._writer is not None and self._writer.is_alive():
            # The previous request is still being written: the child is not reading.
            self.check()
            raise DeviceProcessError(f"{self.name}: the inference process is not reading requests")
        kind = "warm_up" if req.warm_up else "predict"
        return self._send_request(
            lambda rid: self._write((kind, rid, req.obs, req.committed_actions, req.seed))
        )

    def _write(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)

        def write() -> None:
            try:
                self._req_send.send_bytes(data)
            except (OSError, ValueError, TypeError) as exc:
                # The child is gone (broken pipe) or we closed the pipe (between two partial writes of
                # a large request multiprocess reads the closed handle as None: TypeError).
                self._send_error = exc

        self._writer = threading.Thread(target=write, name="inference-request", daemon=True)
        self._writer.start()

    def poll(self) -> ChunkResult | None:
        """The finished request, or None (non-blocking). Raises DeviceProcessError if the child died."""
        if self._send_error is not None:
            self.check()
            raise DeviceProcessError(f"{self.name}: the request could not be sent: {self._send_error}")
        while self._res_recv.poll():
            try:
                kind, payload = self._res_recv.recv()
            except (EOFError, OSError):  # the child closed its end: it is gone
                self._proc.join(1.0)
                self.check()
                raise DeviceProcessError(f"{self.name}: the inference process closed its pipe") from None
            if kind != "result" or self._in_flight is None:
                continue
            rid, actions, first, err, compute_s = payload
            if rid != self._in_flight[0]:
                continue
            rid, t0, cancelled = self._take_in_flight()
            if cancelled:
                continue
            return ChunkResult(rid, actions, first, t0, now(), err, compute_s)
        if self._in_flight is not None:
            self.check()
        return None

    def wait(self, timeout_s: float | None = None) -> ChunkResult | None:
        """Block until the in-flight request finishes (or ``timeout_s`` passes: None)."""
        deadline = None if timeout_s is None else now() + timeout_s
        while self._in_flight is not None:
            res = self.poll()
            if res is not None:
                return res
            if deadline is not None and now() > deadline:
                return None
            self._res_recv.poll(0.002)
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.join(0.5)  # after stop() the child is gone: a pending write breaks at once
        for conn in (self._req_send, self._res_recv, self._req_recv, self._res_send):
            try:
                conn.close()
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop(wait=True)
        finally:
            self.close()

    # ================================================================== child side
    def setup(self) -> None:
        self.policy = load_policy(self.spec)
        self._res_send.send(("meta", policy_meta(self.policy, self.spec.describe()).to_dict()))

    def run_loop(self) -> None:
        while not self.should_stop():
            if not self._req_recv.poll(0.05):
                continue
            try:
                msg = self._req_recv.recv()
            except EOFError:
                return
            kind, rid, obs, committed, seed = msg
            if kind not in ("predict", "warm_up"):
                continue
            actions, first, err, compute_s = run_predict(self.policy, obs, committed, seed, kind == "warm_up")
            self._res_send.send(("result", (rid, actions, first, err, compute_s)))
