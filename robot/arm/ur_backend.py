"""Real UR arm backend: the arm controller's side of the ur_rtde client process.

The controller process never loads ur_rtde. ``connect()`` starts :mod:`robot.arm.ur_client` as a
child process (``python -m robot.arm.ur_client``, in a session of its own) that owns the two ur_rtde
interfaces; this backend talks to it through a command queue (servo targets, stop, reconnect,
close) and a state ring, both shared memory owned here, and reads its progress and replies as JSON
lines on a pipe. So a ur_rtde crash (SIGSEGV after a dropped link, a known 1.6.5 defect) or hang
ends the client, not the controller: it is reported as ``DISCONNECTED`` and ``reconnect()`` starts a
fresh client.

Timing contract: ``read_state`` copies the newest published state (no waiting); ``servo`` enqueues
the tick's target (no waiting). The client sends at most one servoL per RTDE package, bounded
relative to the last one it sent (robot/arm/servo_ramp.py): a target waits at most one controller
period (plus the client's poll, an eighth of one) when the client keeps up, and a stalled client
ramps back to the trajectory instead of jumping to it. A queue that stays full (the client stalled)
gives one warning per stall, and one when it drains. ``connect``,
``reconnect`` and ``stop`` block, each step bounded: a connect step (dashboard 29999, RTDE receive
30004, RTDE control + script upload, first packages) may take ``ur.connect_timeout_s`` + 1 s, then
the client is killed and the error names the host, the port and what to check. This holds even when
ur_rtde blocks holding the GIL: the bound is kept from another process.

Faults: the client's flags (protective stop, e-stop, lost link, stopped script) pass through; the
client's exit (a lost link, a crash) and a client that stops publishing for ``ur.state_timeout_s``
are ``DISCONNECTED``, latched until ``reconnect()``. A client silent that long (paused, starved) is
killed at once (SIGKILL ends a stopped process too), so nothing it queued before the link was
declared lost reaches the arm after it; the client itself sends nothing after a gap of its own of
0.8 x ``ur.state_timeout_s``. The time spent waiting for a request's reply (a reconnect may take
seconds) is not silence: the client publishes a state before each reply. ``StatusFlag.CLIENT_STALLED``
/ ``CONTROLLER_SILENT`` say which side went silent; the controller names it in the error.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robot.arm.backend import ArmConnectionError, ArmReading, StatusFlag, stale_reading
from robot.arm.config import ArmConfig
from robot.arm.ur_client import (
    CMD_CLOSE,
    CMD_RECONNECT,
    CMD_SERVO,
    CMD_STOP,
    COMMAND_LAYOUT,
    DASHBOARD_PORT,
    STATE_LAYOUT,
    _checklist,
)
from robot.shm.command_queue import CommandQueue, QueueFull
from robot.shm.ring_buffer import RingBuffer
from robot.timing import now

log = logging.getLogger("robot.arm")

FloatArray = NDArray[np.float64]

_STEP_SLACK_S = 1.0  # a connect step may take connect_timeout_s + this
_EXIT_CALL_TIMEOUT_S = 2.0  # servoStop / close: the client bounds each call by this itself
_FIRST_STATE_TIMEOUT_S = 2.0


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Client:
    """One ur_rtde client process and the reader of its message pipe."""

    def __init__(self, config: ArmConfig, commands: CommandQueue, states: RingBuffer):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robot.arm.ur_client"],
            stdin=subprocess.PIPE,
            stdout=sys.stderr.fileno(),  # ur_rtde chats on stdout; keep a CLI's stdout for its output
            pass_fds=(write_fd,),
            start_new_session=True,
            close_fds=True,
        )
        os.close(write_fd)
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            pickle.dumps((config.model_dump_json(), commands, states, os.getpid(), write_fd))
        )
        self.proc.stdin.close()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, args=(read_fd,), name="ur-client-pipe", daemon=True
        )
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r") as pipe:
            for line in pipe:
                try:
                    self.messages.put(json.loads(line))
                except ValueError:
                    log.error("ur_rtde client: unreadable message %r", line[:200])
        self.messages.put({"eof": True})

    def next_message(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            return self.messages.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def end(self, timeout_s: float) -> None:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
        self._reader.join(1.0)


class URArmBackend:
    """Implements :class:`robot.arm.backend.ArmBackend` through a ur_rtde client process."""

    def __init__(self, config: ArmConfig):
        self.config = config
        self.host = config.host
        self.description = f"UR at {config.host}"
        self.tcp_offset_pose = np.asarray(config.ur.tcp_offset_pose, dtype=np.float64)
        self.version: tuple[int, int] | None = None
        self._commands = CommandQueue.create(COMMAND_LAYOUT, 64, label="ur_cmd")
        self._states = RingBuffer.create(STATE_LAYOUT, 64, label="ur_state")
        self._client: _Client | None = None
        self._lost: str | None = "not connected"  # latched until a (re)connect succeeds
        self._last: ArmReading | None = None
        self._next_request = 1
        self._request_done = -float("inf")  # host monotonic s the last request's reply came
        self._lost_flags = StatusFlag.DISCONNECTED  # the flags a lost link reads with
        self._queue_full_since: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ client lifecycle
    def _start_client(self) -> None:
        self._end_client()
        self._commands.get_all()  # nothing queued for an old client may reach the new one
        first = self._states.count
        client = self._client = _Client(self.config, self._commands, self._states)
        limit_s = self.config.ur.connect_timeout_s + _STEP_SLACK_S
        step, port, deadline = "starting the ur_rtde client", DASHBOARD_PORT, now() + limit_s + 10.0
        while True:
            msg = client.next_message(min(0.1, deadline - now()))
            if msg is not None and "step" in msg:
                step, port, deadline = msg["step"], int(msg["port"]), now() + limit_s
            elif msg is not None and "ready" in msg:
                self.version = tuple(msg["ready"])  # type: ignore[assignment]
                break
            elif msg is not None and "error" in msg:
                self._end_client()
                raise ArmConnectionError(msg["error"])
            elif msg is not None and "eof" in msg:
                self._end_client()
                raise ArmConnectionError(
                    f"UR at {self.host}:{port}: the ur_rtde client died during {step} "
                    f"({_exit_text(client.proc.poll())}). {_checklist(self.host)}"
                )
            if now() > deadline:
                self._end_client(kill=True)
                raise ArmConnectionError(
                    f"UR at {self.host}:{port}: {step} got no answer within {limit_s:.0f} s (something "
                    f"accepts TCP there but does not speak the UR protocol?). {_checklist(self.host)}"
                )
        self._lost_flags = StatusFlag.DISCONNECTED
        self._queue_full_since = None
        deadline = now() + _FIRST_STATE_TIMEOUT_S
        while self._states.count <= first:
            if now() > deadline or not client.alive:
                self._end_client(kill=True)
                raise ArmConnectionError(f"{self.description}: the ur_rtde client published no state")
            self._wait(0.001)
        self._lost = None

    def _end_client(self, kill: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if kill:
            client.proc.kill()
        elif client.alive:
            self._send(CMD_CLOSE)
        client.end(2 * _EXIT_CALL_TIMEOUT_S + 1.0)

    @staticmethod
    def _wait(seconds: float) -> None:
        threading.Event().wait(seconds)

    def _send(self, kind: int, pose: Any = None) -> int:
        request_id = self._next_request
        self._next_request += 1
        self._commands.put(
            {"kind": kind, "request_id": request_id, "pose": np.zeros(6) if pose is None else pose}
        )
        return request_id

    def _request(self, kind: int, what: str, timeout_s: float) -> None:
        """Send a request and wait for the client's reply; ArmConnectionError on error or timeout."""
        client = self._client
        if client is None or not client.alive:
            raise ArmConnectionError(f"{self.description}: the ur_rtde client is not running")
        request_id = self._send(kind)
        deadline = now() + timeout_s
        while now() < deadline:
            msg = client.next_message(min(0.1, deadline - now()))
            if msg is None:
                continue
            if msg.get("reply") == request_id:
                self._request_done = now()
                if "error" in msg:
                    raise ArmConnectionError(msg["error"])
                return
            if "lost" in msg or "eof" in msg:
                self._mark_lost(
                    msg.get("lost") or f"the ur_rtde client exited ({_exit_text(client.proc.poll())})"
                )
                raise ArmConnectionError(f"{self.description}: {what} failed: {self._lost}")
        self._end_client(kill=True)
        self._mark_lost(f"the ur_rtde client did not answer {what} within {timeout_s:.0f} s")
        raise ArmConnectionError(f"{self.description}: {self._lost}")

    def _mark_lost(self, reason: str) -> None:
        if self._lost is None:
            log.error(
                "%s: link lost (%s); reconnect() starts a fresh ur_rtde client", self.description, reason
            )
            self._lost = reason

    # ------------------------------------------------------------------ ArmBackend
    def connect(self, t: float) -> None:
        self._start_client()
        log.info("%s: connected (PolyScope %s, %g Hz)", self.description, self.version, self.config.rate_hz)

    def read_state(self, t: float) -> ArmReading:
        receive_time = now()
        client = self._client
        if self._lost is None and (client is None or not client.alive):
            code = None if client is None else client.proc.poll()
            reason = None
            if client is not None:
                while (msg := client.next_message(0.0)) is not None:
                    reason = msg.get("lost", reason)
            if self._states.count:  # the client's last word: why it lost the link
                last_flags = StatusFlag(int(self._states.latest()["flags"]))
                if last_flags & StatusFlag.DISCONNECTED:
                    self._lost_flags = last_flags
            self._mark_lost(reason or f"the ur_rtde client process ended ({_exit_text(code)})")
        if self._lost is None and self._states.count:
            rec = self._states.latest()
            reading = ArmReading(
                tcp_pose=rec["tcp_pose"].copy(),
                tcp_speed=rec["tcp_speed"].copy(),
                q=rec["q"].copy(),
                qd=rec["qd"].copy(),
                robot_time=float(rec["robot_time"]),
                capture_time=float(rec["capture_time"]),
                receive_time=float(rec["receive_time"]),
                flags=StatusFlag(int(rec["flags"])),
                received_target=rec["sent_pose"].copy() if np.all(np.isfinite(rec["sent_pose"])) else None,
            )
            # Time spent waiting on a request's reply is not silence: the client publishes before
            # it replies, and a reconnect may take seconds. A client that reported a lost link
            # is ending: that report stands.
            silent_s = receive_time - max(reading.receive_time, self._request_done)
            if silent_s > self.config.ur.state_timeout_s and not reading.flags & StatusFlag.DISCONNECTED:
                # Paused or starved: end it now, so that nothing it has queued reaches the arm
                # after this (SIGKILL ends a stopped process too).
                self._kill_client()
                self._lost_flags = StatusFlag.DISCONNECTED | StatusFlag.CLIENT_STALLED
                self._mark_lost(
                    f"the ur_rtde client published nothing for {silent_s:.2f} s (ur.state_timeout_s "
                    f"{self.config.ur.state_timeout_s:g} s: paused or starved of CPU); it was ended"
                )
            else:
                if not reading.flags & StatusFlag.DISCONNECTED:
                    self._last = reading
                else:
                    self._lost_flags = reading.flags
                return reading
        reading = stale_reading(self._last, receive_time)
        reading.flags = self._lost_flags
        return reading

    def _kill_client(self) -> None:
        client = self._client
        if client is not None and client.alive:
            client.proc.kill()

    def servo(self, pose: FloatArray, t: float) -> bool:
        if self._lost is not None:
            return True
        try:
            self._send(CMD_SERVO, pose)
        except QueueFull:  # the client stalled; it is declared lost once its states go stale
            if self._queue_full_since is None:  # one warning per stall, not one per tick
                self._queue_full_since = t
                log.warning(
                    "%s: the ur_rtde client is not taking servo targets (stalled?); it is declared "
                    "lost if it publishes nothing for %g s",
                    self.description,
                    self.config.ur.state_timeout_s,
                )
        else:
            if self._queue_full_since is not None:
                log.warning(
                    "%s: the ur_rtde client takes servo targets again after %.2f s",
                    self.description,
                    t - self._queue_full_since,
                )
                self._queue_full_since = None
        return True

    def stop(self, t: float) -> None:
        """servoStop (decelerating) in the client; skipped when the link is lost."""
        if self._lost is not None:
            log.warning(
                "%s: link lost, no servoStop sent (the arm holds its last servo target)", self.description
            )
            return
        try:
            self._request(CMD_STOP, "servoStop", _EXIT_CALL_TIMEOUT_S + 1.0)
        except ArmConnectionError as exc:
            log.error("%s: %s", self.description, exc)

    def reconnect(self, t: float) -> None:
        """After a fault: a fresh client if the link was lost, else re-upload a stopped script in the
        running one. Raises ArmConnectionError (saying what to do) while the arm is still
        safety-stopped or cannot be reached."""
        ur = self.config.ur
        for attempt in range(2):
            if self._lost is not None or self._client is None or not self._client.alive:
                log.warning("%s: starting a fresh ur_rtde client", self.description)
                self._start_client()
            try:
                # Fresh packages, the safety check, a script re-upload and its start, the tool settings.
                self._request(CMD_RECONNECT, "reconnect", 4 * (ur.connect_timeout_s + _STEP_SLACK_S))
                return
            except ArmConnectionError:
                # The client had just lost the link (it reports that and ends): a fresh one, once.
                if attempt or self._lost is None:
                    raise

    def reset_world(self, seed: int) -> None:
        pass

    def inject_fault(self, flags: int) -> None:
        raise RuntimeError(f"{self.description}: fault injection is only for the simulated arm")

    def after_tick(self, t: float) -> None:
        pass

    def world_success(self) -> bool:
        return False

    def close(self) -> None:
        """Close the client (stopScript unless the link is lost, then disconnect), free the shared
        memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._end_client()
        self._commands.close()
        self._states.close()
