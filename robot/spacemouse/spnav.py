"""A small ctypes binding of libspnav (the client library of the ``spacenavd`` SpaceMouse daemon).

Why not the PyPI ``spnav`` package: version 0.9 does not import on Python 3 (it calls
``PyCObject_AsVoidPtr``, removed in Python 3.2), and its blocking ``wait_event`` ignores Ctrl-C.
This binding loads the Debian ``libspnav0`` library (``libspnav.so.0``) directly and never blocks
inside C: readiness is checked with ``select()`` on the daemon socket, with a timeout, so Ctrl-C and
process stop requests are always served.

libspnav (1.0) connects to the UNIX socket named by ``$SPNAV_SOCKET``, then the ``socket =`` line of
``/etc/spnavrc``, then ``/var/run/spnav.sock``. :class:`SpnavConnection` sets ``$SPNAV_SOCKET`` for the
duration of ``spnav_open`` when a path is given, and refuses to fall back to another socket when that
path does not exist (a test's fake daemon must never be mistaken for the real one, nor the reverse).

libspnav keeps one connection per process in C globals: only one :class:`SpnavConnection` may be
open in a process at a time.

Daemon loss: libspnav's ``spnav_poll_event`` returns 0 both for "no event" and after the daemon closed
the socket. :meth:`SpnavConnection.poll` tells them apart by peeking at the socket and raises
:class:`SpnavDisconnected`, so a stopped daemon is reported instead of read as zero motion forever.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOCKET_PATH = "/var/run/spnav.sock"
SPNAVRC_PATH = "/etc/spnavrc"

START_HINT = (
    "start the daemon with `sudo systemctl start spacenavd` (install it with `sudo apt install spacenavd`)"
)

# spnav.h event types
SPNAV_EVENT_MOTION = 1
SPNAV_EVENT_BUTTON = 2


class SpnavError(RuntimeError):
    """libspnav or the spacenavd connection failed; the message says what to check."""


class SpnavNotRunning(SpnavError):
    """No spacenavd answers on the socket (missing socket file, or nothing listening)."""


class SpnavDisconnected(SpnavError):
    """spacenavd closed the connection (daemon stopped, restarted or crashed)."""


# ---------------------------------------------------------------------------------------------- C types
class _Motion(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("z", ctypes.c_int),
        ("rx", ctypes.c_int),
        ("ry", ctypes.c_int),
        ("rz", ctypes.c_int),
        ("period", ctypes.c_uint),
        ("data", ctypes.POINTER(ctypes.c_int)),
    ]


class _Button(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("press", ctypes.c_int), ("bnum", ctypes.c_int)]


class _Cfg(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("cfg", ctypes.c_int), ("data", ctypes.c_int * 6)]


class _Event(ctypes.Union):
    _fields_ = [("type", ctypes.c_int), ("motion", _Motion), ("button", _Button), ("cfg", _Cfg)]


@dataclass(frozen=True)
class MotionEvent:
    """Raw 6-DoF displacement in spacenavd's device frame (integers, about +-350 at full deflection
    with the daemon's default sensitivity) and the device report period in ms."""

    x: int
    y: int
    z: int
    rx: int
    ry: int
    rz: int
    period_ms: int

    @property
    def axes(self) -> tuple[int, int, int, int, int, int]:
        return (self.x, self.y, self.z, self.rx, self.ry, self.rz)


@dataclass(frozen=True)
class ButtonEvent:
    bnum: int
    pressed: bool


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_open_lock = threading.Lock()
_open_in_pid: int | None = None


def load_libspnav() -> ctypes.CDLL:
    """Load libspnav once per process and declare the prototypes used here.

    Raises SpnavError naming the Debian package when the library is not installed.
    """
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        candidates = ["libspnav.so.0", "libspnav.so"]
        found = ctypes.util.find_library("spnav")
        if found:
            candidates.append(found)
        lib = None
        errors = []
        for name in candidates:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                break
            except OSError as exc:
                errors.append(str(exc))
        if lib is None:
            raise SpnavError(
                "libspnav (the spacenavd client library) is not installed: run `sudo apt install libspnav0` "
                f"(or `make setup`); tried {', '.join(candidates)}: {'; '.join(errors)}"
            )
        for fn in ("spnav_open", "spnav_close", "spnav_fd", "spnav_protocol", "spnav_dev_buttons"):
            getattr(lib, fn).restype = ctypes.c_int
            getattr(lib, fn).argtypes = []
        lib.spnav_poll_event.restype = ctypes.c_int
        lib.spnav_poll_event.argtypes = [ctypes.POINTER(_Event)]
        lib.spnav_dev_name.restype = ctypes.c_int
        lib.spnav_dev_name.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _lib = lib
        return lib


def default_socket_path() -> str:
    """The socket libspnav would use: ``$SPNAV_SOCKET``, ``socket =`` in /etc/spnavrc, or the default."""
    env = os.environ.get("SPNAV_SOCKET")
    if env:
        return env
    try:
        for line in Path(SPNAVRC_PATH).read_text().splitlines():
            line = line.strip()
            if line.startswith("socket") and "=" in line:
                value = line.split("=", 1)[1].strip()
                if value:
                    return value
    except OSError:
        pass
    return DEFAULT_SOCKET_PATH


def diagnose_socket(path: str) -> str | None:
    """Why no spacenavd answers at ``path`` (a message for the person at the rig), or None if one does.

    Connects with a plain UNIX socket and closes it at once; this does not use libspnav.
    """
    if not os.path.exists(path):
        return f"spacenavd socket {path} does not exist: spacenavd is not running; {START_HINT}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
    except OSError as exc:
        return (
            f"spacenavd socket {path} exists but nothing accepts connections ({exc.strerror or exc}): "
            f"the daemon is not running or crashed; {START_HINT}"
        )
    finally:
        s.close()
    return None


class SpnavConnection:
    """One open connection to spacenavd through libspnav.

    ``SpnavConnection(socket_path)`` connects (``socket_path=None``: libspnav's own search, see
    :func:`default_socket_path`) and negotiates the protocol; it takes up to ~0.3 s with a daemon
    older than spacenavd 1.0. Raises :class:`SpnavNotRunning` when nothing answers.
    """

    def __init__(self, socket_path: str | None = None):
        global _open_in_pid
        self._lib = load_libspnav()
        self.socket_path = socket_path or default_socket_path()
        problem = diagnose_socket(self.socket_path)
        if problem:
            raise SpnavNotRunning(problem)
        with _open_lock:
            if _open_in_pid == os.getpid():
                raise SpnavError("libspnav supports one connection per process and one is already open")
            previous = os.environ.get("SPNAV_SOCKET")
            os.environ["SPNAV_SOCKET"] = self.socket_path  # putenv: libspnav's getenv sees it
            try:
                rc = self._lib.spnav_open()
            finally:
                if previous is None:
                    os.environ.pop("SPNAV_SOCKET", None)
                else:
                    os.environ["SPNAV_SOCKET"] = previous
            if rc == -1:
                raise SpnavNotRunning(
                    f"libspnav could not connect to spacenavd at {self.socket_path}; {START_HINT}"
                )
            _open_in_pid = os.getpid()
        self._fd = self._lib.spnav_fd()
        # A duplicate of the daemon socket, used only to peek for end-of-stream (daemon gone).
        self._peek = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(self._fd))
        self._event = _Event()
        self.protocol = int(self._lib.spnav_protocol())
        self._closed = False

    # ------------------------------------------------------------------------------------ queries
    def device_name(self) -> str | None:
        """The device name reported by spacenavd (protocol >= 1), else None. Blocks up to 0.4 s.

        Call before reading events: libspnav discards pending events when it sends a request.
        libspnav 1.0 spins for ever if the daemon closes the socket while a request is pending (its
        response flush loops on end-of-stream), so this first checks that the daemon is still
        connected (raising SpnavDisconnected otherwise); what remains is a window of one round trip.
        """
        self._check_not_closed_by_daemon()
        buf = ctypes.create_string_buffer(256)
        n = self._lib.spnav_dev_name(buf, len(buf))
        return buf.value.decode(errors="replace") if n >= 0 else None

    def num_buttons(self) -> int:
        """Buttons on the device as reported by spacenavd (libspnav answers 2 when it cannot ask)."""
        return int(self._lib.spnav_dev_buttons())

    def fileno(self) -> int:
        return self._fd

    # ------------------------------------------------------------------------------------ events
    def wait_readable(self, timeout_s: float) -> bool:
        """Block at most ``timeout_s`` until the daemon socket has data (or end-of-stream).

        Returns True when :meth:`poll` has something to report. Interrupted by signals (Python
        retries select() after running the handler, so a handler that sets a stop flag is served
        within ``timeout_s``).
        """
        r, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
        return bool(r)

    def poll(self) -> MotionEvent | ButtonEvent | None:
        """Return the next pending event, or None when none is pending. Never blocks.

        Raises SpnavDisconnected when spacenavd closed the connection (after every event it sent
        before closing was returned).
        """
        while True:
            if not self._check_not_closed_by_daemon():
                return None
            etype = self._lib.spnav_poll_event(ctypes.byref(self._event))
            if etype == SPNAV_EVENT_MOTION:
                m = self._event.motion
                return MotionEvent(m.x, m.y, m.z, m.rx, m.ry, m.rz, int(m.period))
            if etype == SPNAV_EVENT_BUTTON:
                b = self._event.button
                return ButtonEvent(int(b.bnum), bool(b.press))
            if etype == 0:
                return None
            # device/config events: not needed here, read the next one

    def _check_not_closed_by_daemon(self) -> bool:
        """Peek at the socket: True if data is pending, False if none; SpnavDisconnected at end-of-stream."""
        if self._closed:
            raise SpnavError("spacenavd connection is closed")
        try:
            peeked = self._peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise SpnavDisconnected(
                f"lost the connection to spacenavd at {self.socket_path} ({exc}); check "
                "`systemctl status spacenavd` and the SpaceMouse USB cable"
            ) from None
        if not peeked:
            raise SpnavDisconnected(
                f"spacenavd at {self.socket_path} closed the connection (daemon stopped, restarted or "
                "crashed); check `systemctl status spacenavd`, then restart the teleop"
            )
        return True

    # ------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection. Idempotent."""
        global _open_in_pid
        if self._closed:
            return
        self._closed = True
        self._peek.close()
        with _open_lock:
            self._lib.spnav_close()
            _open_in_pid = None

    def __enter__(self) -> SpnavConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
