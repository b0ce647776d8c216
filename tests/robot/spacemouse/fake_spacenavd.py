"""A fake spacenavd: a UNIX-socket server speaking spacenavd's client protocol, for tests.

It lets the real libspnav (and so the real :mod:`robot.spacemouse.spnav` and SpaceMouse process) be
tested without a device or the daemon. Protocol (libspnav 1.0 / spacenavd 1.x, little-endian int32):

- the client sends ``0x7faa5501`` (REQ_TAG | REQ_CHANGE_PROTO | version 1). A protocol-1 server
  echoes an int32 whose low byte is the version; a protocol-0 server stays silent, and after 300 ms
  the client sends a float32 sensitivity instead.
- protocol 1 requests and responses are 8 int32: ``[type, data0..data6]``, ``data6`` the status;
  strings come in 24-byte chunks with ``data6`` the remaining length (bit 16 set on continuations).
- events are 8 int32: motion ``[0, x, y, z, rx, ry, rz, period_ms]``, button ``[1 press | 2
  release, bnum, 0, ...]``.

Run it by hand to try ``rig spacemouse test`` without a device::

    python tests/robot/spacemouse/fake_spacenavd.py --socket /tmp/spnav.sock --demo
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import struct
import threading
import time

REQ_TAG = 0x7FAA0000
REQ_CHANGE_PROTO = 0x5500
REQ_DEV_NAME = 0x2000
REQ_DEV_PATH = 0x2001
REQ_DEV_NAXES = 0x2002
REQ_DEV_NBUTTONS = 0x2003
UEV_MOTION, UEV_PRESS, UEV_RELEASE = 0, 1, 2
PACKET = struct.Struct("<8i")


class FakeSpacenavd:
    """Serve spacenavd's client protocol at ``socket_path`` from background threads.

    ``protocol=1`` answers the protocol handshake and device queries (name, axes, buttons);
    ``protocol=0`` behaves like spacenavd < 1.0. Events go to every connected client.
    """

    def __init__(
        self,
        socket_path: str,
        protocol: int = 1,
        device_name: str = "Fake SpaceNavigator (tests)",
        num_buttons: int = 2,
    ):
        self.socket_path = str(socket_path)
        self.protocol = protocol
        self.device_name = device_name
        self.num_buttons = num_buttons
        self._clients: list[socket.socket] = []
        self._ready_clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._client_ready = threading.Condition(self._lock)
        self._closing = False
        self.requests: list[int] = []
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.socket_path)
        self._server.listen(4)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fake-spacenavd", daemon=True)
        self._accept_thread.start()

    # ------------------------------------------------------------------------------ server side
    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv_exact(self, conn: socket.socket, n: int, timeout_s: float | None) -> bytes | None:
        buf = b""
        try:
            conn.settimeout(timeout_s)
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
        except (TimeoutError, OSError):
            return None
        return buf

    def _serve(self, conn: socket.socket) -> None:
        first = self._recv_exact(conn, 4, 5.0)
        if first is None:
            return
        (cmd,) = struct.unpack("<i", first)
        if self.protocol >= 1 and cmd == REQ_TAG | REQ_CHANGE_PROTO | 1:
            self._send(conn, struct.pack("<i", REQ_TAG | REQ_CHANGE_PROTO | 1))
        elif self.protocol == 0:
            # the client times out (300 ms) and sends its float32 sensitivity
            if self._recv_exact(conn, 4, 2.0) is None:
                return
        with self._lock:
            self._ready_clients.append(conn)
            self._client_ready.notify_all()
        while not self._closing:
            if self.protocol == 0:
                data = self._recv_exact(conn, 4, None)  # sensitivity updates; nothing to answer
                if data is None:
                    return
                continue
            data = self._recv_exact(conn, PACKET.size, None)
            if data is None:
                return
            req, *_ = PACKET.unpack(data)
            self.requests.append(req & 0xFFFF)
            self._answer(conn, req)

    def _answer(self, conn: socket.socket, req: int) -> None:
        code = req & 0xFFFF
        if code in (REQ_DEV_NAME, REQ_DEV_PATH):
            text = (self.device_name if code == REQ_DEV_NAME else "/dev/input/fake").encode()
            remaining, first = len(text), True
            while True:
                chunk = text[:24].ljust(24, b"\0")
                text = text[24:]
                status = remaining | (0 if first else 0x10000)
                self._send(conn, PACKET.pack(req, *struct.unpack("<6i", chunk), status))
                remaining -= 24
                first = False
                if remaining <= 0:
                    break
        elif code == REQ_DEV_NAXES:
            self._send(conn, PACKET.pack(req, 6, 0, 0, 0, 0, 0, 0))
        elif code == REQ_DEV_NBUTTONS:
            self._send(conn, PACKET.pack(req, self.num_buttons, 0, 0, 0, 0, 0, 0))
        else:
            self._send(conn, PACKET.pack(req, 0, 0, 0, 0, 0, 0, -1))  # unsupported: failure status

    def _send(self, conn: socket.socket, data: bytes) -> None:
        with self._lock:
            try:
                conn.sendall(data)
            except OSError:
                pass

    # ------------------------------------------------------------------------------ test side
    def wait_for_client(self, timeout_s: float = 10.0, count: int = 1) -> None:
        """Block until ``count`` clients finished the handshake; TimeoutError otherwise."""
        with self._lock:
            if not self._client_ready.wait_for(lambda: len(self._ready_clients) >= count, timeout_s):
                raise TimeoutError(f"no libspnav client connected to {self.socket_path} within {timeout_s} s")

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._ready_clients)

    def _broadcast(self, data: bytes) -> None:
        with self._lock:
            clients = list(self._ready_clients)
            for c in clients:
                try:
                    c.sendall(data)
                except OSError:
                    pass

    def send_motion(self, x: int, y: int, z: int, rx: int, ry: int, rz: int, period_ms: int = 16) -> None:
        """Send one motion event (raw device units, spacenavd's frame) to every client."""
        self._broadcast(PACKET.pack(UEV_MOTION, x, y, z, rx, ry, rz, period_ms))

    def send_button(self, bnum: int, pressed: bool) -> None:
        self._broadcast(PACKET.pack(UEV_PRESS if pressed else UEV_RELEASE, bnum, 0, 0, 0, 0, 0, 0))

    def drop_clients(self) -> None:
        """Close every client connection (what clients see when spacenavd stops)."""
        with self._lock:
            clients, self._clients, self._ready_clients = self._clients, [], []
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def close(self) -> None:
        """Stop serving, drop clients and remove the socket file."""
        self._closing = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self.drop_clients()
        self._accept_thread.join(2.0)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> FakeSpacenavd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", default="/tmp/spnav.sock")
    parser.add_argument("--protocol", type=int, default=1, choices=(0, 1))
    parser.add_argument("--demo", action="store_true", help="emit a slow sine on every axis, toggle button 0")
    args = parser.parse_args()
    with FakeSpacenavd(args.socket, protocol=args.protocol) as daemon:
        print(f"fake spacenavd on {args.socket}; run: rig spacemouse test socket_path={args.socket}")
        t0 = time.monotonic()
        pressed = False
        try:
            while True:
                time.sleep(0.016)
                if args.demo and daemon.client_count:
                    t = time.monotonic() - t0
                    daemon.send_motion(*(int(350 * math.sin(t + i)) for i in range(6)))
                    if int(t) % 2 != pressed:
                        pressed = not pressed
                        daemon.send_button(0, pressed)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
