"""Base class for device processes (arm controller, cameras, SpaceMouse, recorders).

Shape (as in the Diffusion Policy real-world stack, plus what it lacks): configuration in
``__init__``, shared memory created by the parent and handed over as constructor attributes,
``start(wait)`` / ``stop(wait)`` / context manager in the parent, and in the child ``setup()`` ->
ready handshake -> ``run_loop()`` -> ``teardown()`` (always).

Contract:
- ``start(wait=True)`` returns once the child's ``setup()`` finished; if it raised, or the child
  died, or ``ready_timeout_s`` passed, it raises :class:`DeviceProcessError` with the child's traceback.
- ``check()`` raises :class:`DeviceProcessError` (with the traceback) if the child failed or died
  while running; call it from the main loop.
- ``stop()`` asks the child to finish its loop and run ``teardown()``, waits ``stop_timeout_s``,
  then terminates (SIGTERM, handled gracefully) and finally kills. ``close()`` then releases the
  shared memory the parent created for it (the segments in ``_owned``); leaving the context does
  both, the close even when the stop raised.
- Watchdog: the child's ``should_stop()`` turns true when the parent process is gone or, if
  ``heartbeat_timeout_s`` is set, when the parent has not called ``heartbeat()`` for that long. The
  deadline starts once the parent has seen the child ready: ``wait_ready()`` beats while it waits.
  SIGINT/SIGTERM in the child also end the loop gracefully (teardown runs), so Ctrl-C in a terminal,
  which reaches every process of the foreground group, stops devices safely.
"""

from __future__ import annotations

import os
import re
import signal
import traceback
from typing import Any, Self

import multiprocess
import numpy as np

from robot.timing import now

DEFAULT_START_METHOD = os.environ.get("RIG_START_METHOD", "spawn")


class ClosedOnFailedStart:
    """Context-manager entry/exit of a device whose ``close()`` stops it and frees what it owns
    (its rings): ``__enter__`` starts it (``start(wait=True)``, blocking until ready) and, when that
    raises, closes it before re-raising, so a failed start leaves no shared memory behind;
    ``__exit__`` closes it. Put it before ``DeviceProcess`` among the bases."""

    def __enter__(self) -> Self:
        try:
            self.start(wait=True)  # type: ignore[attr-defined]
        except BaseException:
            self.close()  # type: ignore[attr-defined]
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


class StateReader:
    """The main process's reads of a controller's state ring (``state_ring``: one record per tick)."""

    state_ring: Any  # robot.shm.ring_buffer.RingBuffer

    def get_state(self) -> dict[str, Any]:
        """The newest state record: arrays for vector fields, Python scalars for scalar fields, plus
        ``counter``. Non-blocking."""
        rec = self.state_ring.latest()
        return {k: (v.item() if np.ndim(v) == 0 else v) for k, v in rec.items()}

    def get_state_history(self, k: int) -> dict[str, np.ndarray]:
        """The ``k`` newest state records, oldest first, as stacked arrays (see RingBuffer.get_last)."""
        return self.state_ring.get_last(k)


class DeviceProcessError(RuntimeError):
    """A device process failed. ``str()`` is one line for the person at the rig (the device and the
    child's own message); ``detail`` keeps the child's traceback (``rig --debug`` prints it)."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


# A module-qualified exception type (the project's own, e.g. robot.arm.backend.ArmConnectionError):
# its message is written for the person at the rig; builtin types (ValueError: ...) are kept.
_EXC_PREFIX = re.compile(r"^(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*: ")


def _last_message(text: str) -> str:
    """The child's own message: the last line of its traceback, without the exception's type."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return text.strip()
    return _EXC_PREFIX.sub("", lines[-1])


class DeviceInterrupted(KeyboardInterrupt):
    """A device process ended because it got SIGINT (Ctrl-C in a terminal reaches every process of
    the foreground group): an interrupt, not a device failure. A KeyboardInterrupt, so that it ends a
    command the way Ctrl-C in the main process does (``rig``: one line, exit code 130)."""


class DeviceProcess:
    """Subclass and override ``setup``, ``loop_once`` (or ``run_loop``) and ``teardown``."""

    def __init__(
        self,
        name: str,
        *,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        heartbeat_timeout_s: float | None = None,
        start_method: str | None = None,
    ):
        self.name = name
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        ctx = multiprocess.get_context(start_method or DEFAULT_START_METHOD)
        self._ready = ctx.Event()
        self._stop_event = ctx.Event()
        self._err_recv, self._err_send = ctx.Pipe(duplex=False)
        self._heartbeat = ctx.Value("d", now(), lock=False)
        self._got_sigint = ctx.Value("b", 0, lock=False)
        self._ctx = ctx
        self._proc: Any = None
        self._parent_pid = os.getpid()
        self._error: str | None = None
        self._stop_requested = False
        self.stop_reason: str | None = None
        # Shared memory this object created (rings, queues) for its child: closed by ``close()``.
        self._owned: list[Any] = []

    # ------------------------------------------------------------------ child-side hooks
    def setup(self) -> None:
        """Open the device (runs in the child before the ready handshake)."""

    def loop_once(self) -> None:
        """One iteration of the device loop; the default run_loop calls it until should_stop()."""
        raise NotImplementedError

    def run_loop(self) -> None:
        while not self.should_stop():
            self.loop_once()

    def teardown(self) -> None:
        """Release the device; always runs in the child, after errors too."""

    def should_stop(self) -> bool:
        """True when the parent asked to stop, the parent died, or its heartbeat expired."""
        if self.stop_reason is not None:
            return True
        if self._stop_event.is_set():
            self.stop_reason = "stop requested"
        elif os.getppid() != self._parent_pid:
            self.stop_reason = "parent process died"
        elif (
            self.heartbeat_timeout_s is not None and now() - self._heartbeat.value > self.heartbeat_timeout_s
        ):
            self.stop_reason = f"no heartbeat from the parent for {self.heartbeat_timeout_s:.2f} s"
        return self.stop_reason is not None

    # ------------------------------------------------------------------ child entry
    def _child_main(self) -> None:
        def _graceful(signum: int, frame: object) -> None:
            self.stop_reason = self.stop_reason or f"signal {signal.Signals(signum).name}"
            if signum == signal.SIGINT:
                self._got_sigint.value = 1

        signal.signal(signal.SIGINT, _graceful)
        signal.signal(signal.SIGTERM, _graceful)
        failed = False
        try:
            self.setup()
            self._ready.set()
            self.run_loop()
        except BaseException:
            failed = True
            self._report(traceback.format_exc())
        finally:
            try:
                self.teardown()
            except BaseException:
                failed = True
                self._report("during teardown:\n" + traceback.format_exc())
        if failed:
            os._exit(1)

    def _report(self, text: str) -> None:
        try:
            self._err_send.send(text)
        except (OSError, ValueError):
            pass

    # ------------------------------------------------------------------ parent side
    def start(self, wait: bool = True) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._heartbeat.value = now()
        self._proc = self._ctx.Process(target=self._child_main, name=self.name, daemon=True)
        self._proc.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the child is ready; raise DeviceProcessError if it fails or times out."""
        deadline = now() + (self.ready_timeout_s if timeout_s is None else timeout_s)
        # The parent beats while it waits: opening a device (a UR connect takes 0.8-3.6 s) must not
        # use up the heartbeat deadline the child checks right after it signals ready.
        self.heartbeat()
        while not self._ready.wait(0.02):
            self.heartbeat()
            if self._poll_error() or not self._proc.is_alive():
                self._proc.join(1.0)
                self._raise_failure("failed to start")
            if now() > deadline:
                self._kill()
                raise DeviceProcessError(
                    f"{self.name}: not ready after {self.ready_timeout_s:.1f} s (device slow to open or hung "
                    "in setup); the process was killed"
                )
        self.heartbeat()

    def _poll_error(self) -> bool:
        try:
            while self._err_recv.poll():
                msg = self._err_recv.recv()
                self._error = msg if self._error is None else self._error + "\n" + msg
        except (EOFError, OSError):
            pass
        return self._error is not None

    def _raise_failure(self, what: str) -> None:
        if self._got_sigint.value:
            raise DeviceInterrupted(f"{self.name}: interrupted (SIGINT)")
        code = self._proc.exitcode
        detail = self._error or (
            f"no traceback: exit code {code}"
            + (f" (killed by {signal.Signals(-code).name})" if code and code < 0 else "")
        )
        raise DeviceProcessError(f"{self.name} {what}: {_last_message(detail)}", detail=detail)

    def check(self) -> None:
        """Raise DeviceProcessError if the child reported an error or died while it should run."""
        if self._proc is None:
            raise DeviceProcessError(f"{self.name}: not started")
        if self._poll_error():
            self._raise_failure("failed")
        if not self._proc.is_alive() and not self._stop_requested:
            self._proc.join(0.1)
            self._poll_error()
            self._raise_failure("died")

    def heartbeat(self) -> None:
        """Tell the child the parent is alive (needed only when heartbeat_timeout_s is set)."""
        self._heartbeat.value = now()

    def stop(self, wait: bool = True) -> None:
        """Ask the child to stop; with ``wait``, join it (terminate/kill after stop_timeout_s)."""
        self._stop_requested = True
        self._stop_event.set()
        if wait and self._proc is not None:
            self.join(self.stop_timeout_s)

    def join(self, timeout_s: float | None = None) -> None:
        if self._proc is None:
            return
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(1.0)
        if self._proc.is_alive():
            self._kill()
        self._poll_error()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2.0)

    @property
    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    @property
    def error(self) -> str | None:
        """The child's traceback text, if it reported one."""
        if self._proc is not None:
            self._poll_error()
        return self._error

    def close(self) -> None:
        """Release the shared memory this object created (``_owned``; call after stop()). Idempotent."""
        for seg in self._owned:
            seg.close()
        self._owned = []

    def __enter__(self) -> DeviceProcess:
        try:
            self.start(wait=True)
        except BaseException:
            # A failed start (the device never became ready) must not leave the child running or
            # its rings behind: ``with`` does not call __exit__ when __enter__ raises.
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop(wait=True)
        finally:
            self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_proc"] = None  # the child never needs the parent's Process handle
        state["_ctx"] = None
        return state
