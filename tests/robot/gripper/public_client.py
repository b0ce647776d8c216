"""A client of the Robotiq URCap socket written from the public protocol, not from our client.

Two styles, the two public ways of talking to the socket (written here from what they send and
read, not copied):

* :class:`LineClient`, as the ``robotiq_gripper.py`` example that ur_rtde's documentation points to
  talks: every request ends in a newline; a SET is one line of ``NAME VALUE`` pairs and succeeds when
  the one ``recv`` that follows is exactly ``b"ack"``; a GET's one ``recv`` splits into ``NAME VALUE``.
  ``move_and_wait_for_pos`` sends ``POS SPE FOR GTO 1`` in one SET, waits for ``PRE`` to echo the
  position, then polls ``OBJ`` while it is 0 and returns the final ``POS`` and ``OBJ``.
* :class:`DriverClient`, as the URCap's own URScript driver talks: ``socket_set_var`` (``SET NAME
  VALUE`` with a newline, then read 3 bytes of ack), and GETs sent with ``socket_send_string`` (no
  newline) followed by a read of a fixed number of bytes (STA/OBJ 1, FLT 2, PRE 3) that hold the bare
  value's digits. ``set_pos`` is ``rq_set_pos``: GTO 0, POS, then POS again until PRE echoes it.

Both block on the socket with a timeout (a test must be able to fail, not hang).
"""

from __future__ import annotations

import socket
import time


class LineClient:
    def __init__(self, host: str, port: int = 63352, timeout_s: float = 2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)

    def close(self) -> None:
        self.sock.close()

    def set_vars(self, **values: int) -> bool:
        self.sock.sendall(("SET " + " ".join(f"{k} {v}" for k, v in values.items()) + "\n").encode())
        return self.sock.recv(1024) == b"ack"

    def raw(self, request: str) -> bytes:
        self.sock.sendall((request + "\n").encode())
        return self.sock.recv(1024)

    def get_var(self, name: str) -> int:
        echoed, value = self.raw(f"GET {name}").decode().split()
        if echoed != name:
            raise ValueError(f"GET {name} answered for {echoed}")
        return int(value)

    def activate(self, timeout_s: float = 5.0) -> None:
        """Reset (ACT 0, ATR 0 until STA and ACT read 0), then ACT 1 until STA reads 3."""
        deadline = time.monotonic() + timeout_s
        self.set_vars(ACT=0)
        self.set_vars(ATR=0)
        while self.get_var("ACT") != 0 or self.get_var("STA") != 0:
            assert time.monotonic() < deadline, "reset"
            self.set_vars(ACT=0)
            self.set_vars(ATR=0)
        self.set_vars(ACT=1)
        while self.get_var("ACT") != 1 or self.get_var("STA") != 3:
            assert time.monotonic() < deadline, "activation"
            time.sleep(0.01)

    def move_and_wait_for_pos(
        self, pos: int, speed: int, force: int, timeout_s: float = 10.0
    ) -> tuple[int, int]:
        assert self.set_vars(POS=pos, SPE=speed, FOR=force, GTO=1)
        deadline = time.monotonic() + timeout_s
        while self.get_var("PRE") != pos:
            assert time.monotonic() < deadline, "PRE never echoed the position"
            time.sleep(0.001)
        obj = self.get_var("OBJ")
        while obj == 0:
            assert time.monotonic() < deadline, "still moving"
            obj = self.get_var("OBJ")
        return self.get_var("POS"), obj


class DriverClient:
    LENGTHS = {"STA": 1, "OBJ": 1, "FLT": 2, "PRE": 3}

    def __init__(self, host: str, port: int = 63352, timeout_s: float = 2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)

    def close(self) -> None:
        self.sock.close()

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def set_var(self, name: str, value: int) -> bytes:
        self.sock.sendall(f"SET {name} {value}\n".encode())
        return self._read(3)

    def get_bytes(self, name: str) -> bytes:
        """``socket_send_string("GET NAME")`` (no newline), then ``socket_read_byte_list(n)``."""
        self.sock.sendall(f"GET {name}".encode())
        return self._read(self.LENGTHS[name])

    def get_var(self, name: str) -> int:
        return int(self.get_bytes(name).decode())

    def init_connection(self, sid: int = 9) -> bytes:
        return self.set_var("SID", sid)

    def activate_and_wait(self, timeout_s: float = 5.0) -> None:
        if self.get_bytes("STA") != b"3":
            self.set_var("ACT", 0)
            self.set_var("ATR", 0)
        self.set_var("ACT", 1)
        deadline = time.monotonic() + timeout_s
        while self.get_bytes("STA") != b"3":
            assert time.monotonic() < deadline, "activation"
            time.sleep(0.01)

    def set_pos(self, pos: int, timeout_s: float = 2.0) -> None:
        self.set_var("GTO", 0)
        self.set_var("POS", pos)
        deadline = time.monotonic() + timeout_s
        while self.get_var("PRE") != pos:
            assert time.monotonic() < deadline, "rq_set_pos would loop for ever: PRE never echoed POS"
            self.set_var("POS", pos)

    def move_and_wait(self, pos: int, timeout_s: float = 10.0) -> int:
        self.set_pos(pos)
        self.set_var("GTO", 1)
        deadline = time.monotonic() + timeout_s
        while (obj := self.get_bytes("OBJ")) not in (b"1", b"2", b"3"):
            assert time.monotonic() < deadline, "motion never completed"
            time.sleep(0.01)
        return int(obj)
