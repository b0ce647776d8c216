"""One client connection of the fake UR controller: a socket with a non-blocking send buffer.

Timing contract: ``send()`` never blocks the caller (the controller's tick thread sends data packages
to every started RTDE connection): what the kernel does not take at once waits in the connection's
buffer and goes out with the next ``send()``/``flush()``; a peer that stops reading until
``MAX_PENDING_BYTES`` (4 MiB, seconds of data packages) wait is closed. ``close()`` is idempotent and
safe from any thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class Conn:
    """A client socket with a non-blocking send buffer shared by the reader and the tick thread."""

    MAX_PENDING_BYTES = 4 * 1024 * 1024

    def __init__(self, sock: socket.socket, kind: str, peer: Any):
        self.sock = sock
        self.kind = kind
        self.peer = peer
        self.closed = False
        self._pending = bytearray()
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> bool:
        """Queue and push ``data`` without blocking; False (and closed) when the peer is gone."""
        with self._send_lock:
            if self.closed:
                return False
            self._pending += data
            return self._flush_locked()

    def flush(self) -> bool:
        with self._send_lock:
            if self.closed:
                return False
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        while self._pending:
            try:
                n = self.sock.send(self._pending, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_locked()
                return False
            del self._pending[:n]
        if len(self._pending) > self.MAX_PENDING_BYTES:  # peer stopped reading for seconds
            self._close_locked()
            return False
        return True

    def close(self) -> None:
        with self._send_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
