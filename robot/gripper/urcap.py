"""Client of the Robotiq URCap's gripper socket (TCP 63352 on the UR controller).

Protocol (what the URCap's own URScript driver and ur_rtde's Robotiq helper speak): ASCII requests
ending in ``\\n``; ``SET NAME VALUE [NAME VALUE ...]`` is answered ``ack`` (three bytes, no newline),
``GET NAME`` is answered ``NAME VALUE`` (``FLT`` two digits, ``PRE`` three). Two reply styles exist: a
request ending in a newline gets ``NAME VALUE\\n``; one without a newline (the URCap's own driver sends
its GETs so) gets the bare value (``05``), and this client accepts either, with or without the
newline. Variables (integers): ``ACT`` activate 0/1, ``GTO`` go-to 0/1,
``ATR`` automatic release, ``POS`` requested position 0 (open) .. 255 (closed) on SET and actual
position on GET, ``SPE`` speed 0..255, ``FOR`` force 0..255, ``STA`` status (0 reset, 1 activating,
3 active), ``OBJ`` object status (0 moving, 1 contact while opening, 2 contact while closing, 3 at the
requested position), ``FLT`` fault code (0 none; see :data:`FAULTS`), ``PRE`` echo of the requested
position.

Why our own client and not ``pyrobotiqur`` (the maintained library that speaks this protocol): it
takes one ``recv(1024)`` as one reply (no framing), waits for activation and motion without a
deadline, and has no calibration of the open/closed counts; all three matter for a process that must
fail in bounded time with a clear message. This client is the framing and the timeouts; the gripper
logic is in :mod:`robot.gripper.robotiq`.

Timing contract: every call sends one request and blocks until its reply, at most
``reply_timeout_s``; a silent peer, a closed socket or a garbled reply raises
:class:`URCapError` naming the host and what to check. One request is in flight at a time.
"""

from __future__ import annotations

import re
import select
import socket
import time

VARIABLES = ("ACT", "GTO", "ATR", "ARD", "POS", "SPE", "FOR", "STA", "OBJ", "FLT", "PRE")

FAULTS = {
    0x00: "no fault",
    0x05: "action delayed: activation (or reactivation) must complete first",
    0x06: "action delayed: activation must complete first",
    0x07: "the activation bit must be set before any action",
    0x08: "maximum operating temperature exceeded: let the gripper cool down",
    0x09: "no communication for at least 1 s with the controller",
    0x0A: "under minimum operating voltage",
    0x0B: "automatic release in progress",
    0x0C: "internal fault: contact Robotiq support",
    0x0D: "activation fault: check that nothing blocks the fingers, then reset",
    0x0E: "overcurrent triggered",
    0x0F: "automatic release completed",
}
MAJOR_FAULT_MIN = 0x08
"""FLT codes from 0x08 up are faults (below: none, or a priority fault that only delays an action)."""
MINOR_FAULTS = frozenset({0x0B, 0x0E})
"""Minor faults, as the URCap's URScript driver names them ("Minor Fault: Automatic release in
progress (0x0B)", "Minor Fault: Overcurrent protection triggered (0x0E)"): reported, the gripper goes on."""


def is_major_fault(code: int) -> bool:
    """A fault that stops the gripper until it is reset (``ACT 0``) and reactivated."""
    return int(code) >= MAJOR_FAULT_MIN and int(code) not in MINOR_FAULTS


_GET_REPLY = re.compile(rb"^(?:([A-Z]{3}) )?(-?\d+)\s*$")  # "POS 12\n", "POS 12", "012"
_QUIET_S = 0.002  # a GET reply without a newline is complete when nothing more arrives this long


class URCapError(RuntimeError):
    """The URCap socket failed (refused, silent, closed, garbled); the message says what to check."""


class URCapClient:
    """One connection to the URCap gripper socket. ``with URCapClient(host) as c: c.get("POS")``."""

    def __init__(
        self, host: str, port: int = 63352, connect_timeout_s: float = 2.0, reply_timeout_s: float = 0.5
    ):
        self.host, self.port = host, int(port)
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._sock: socket.socket | None = None
        self.requests = 0

    @property
    def where(self) -> str:
        return f"Robotiq URCap at {self.host}:{self.port}"

    def connect(self) -> None:
        """Open the socket (blocks at most ``connect_timeout_s``)."""
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except ConnectionRefusedError:
            raise URCapError(
                f"{self.where}: connection refused: is the Robotiq URCap installed and the gripper "
                "enabled in the installation tab (Installation > URCaps > Gripper)?"
            ) from None
        except OSError as exc:
            raise URCapError(
                f"{self.where}: cannot connect within {self.connect_timeout_s:.1f} s ({exc}): check the "
                "network cable, the controller's IP address and that it is powered on"
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> URCapClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def set(self, **values: int) -> None:
        """``SET`` the variables in one request (in the given order); raises URCapError unless ``ack``."""
        for name in values:
            if name not in VARIABLES:
                raise ValueError(f"unknown URCap variable {name!r}; known: {', '.join(VARIABLES)}")
        body = " ".join(f"{k} {int(v)}" for k, v in values.items())
        reply = self._request(f"SET {body}", lambda buf: buf.strip() == b"ack" or buf.endswith(b"\n"))
        if reply.strip() != b"ack":
            raise URCapError(f"{self.where}: SET {body} answered {reply!r}, not 'ack'")

    def get(self, name: str) -> int:
        """``GET`` one variable's integer value."""
        if name not in VARIABLES:
            raise ValueError(f"unknown URCap variable {name!r}; known: {', '.join(VARIABLES)}")
        reply = self._request(f"GET {name}", lambda buf: buf.endswith(b"\n"), _GET_REPLY)
        m = _GET_REPLY.match(reply)
        if m is None or (m.group(1) is not None and m.group(1).decode() != name):
            raise URCapError(f"{self.where}: GET {name} answered {reply!r}")
        return int(m.group(2))

    def _request(self, line: str, complete, maybe_complete: re.Pattern | None = None) -> bytes:
        if self._sock is None:
            raise URCapError(f"{self.where}: not connected")
        self.requests += 1
        deadline = time.monotonic() + self.reply_timeout_s
        try:
            self._sock.sendall((line + "\n").encode("ascii"))
        except OSError as exc:
            raise URCapError(f"{self.where}: connection lost while sending {line!r} ({exc})") from None
        buf = b""
        while True:
            wait = deadline - time.monotonic()
            if maybe_complete is not None and maybe_complete.match(buf):
                wait = min(wait, _QUIET_S)  # a complete reply without a newline: a short quiet check
            ready = select.select([self._sock], [], [], max(wait, 0.0))[0] if wait > 0 else []
            if not ready:
                if maybe_complete is not None and maybe_complete.match(buf):
                    return buf
                raise URCapError(
                    f"{self.where}: no answer to {line!r} within {self.reply_timeout_s:.2f} s: the "
                    "controller or the URCap hangs, or the link is down"
                )
            try:
                chunk = self._sock.recv(256)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise URCapError(f"{self.where}: connection lost ({exc})") from None
            if not chunk:
                raise URCapError(
                    f"{self.where}: the controller closed the connection (another client took the "
                    "gripper socket, the URCap restarted, or the controller rebooted)"
                )
            buf += chunk
            if complete(buf):
                return buf
