"""How the ur_rtde client tells a silent UR controller from its own lag (robot/arm/ur_client.py).

No new RTDE package for ``ur.controller_timeout_s`` is a controller that stopped answering, unless
bytes the controller sent wait unread in this process's RTDE sockets: then the controller answers
and the client's receive thread is behind (starved), and the link stands up to
``ur.state_timeout_s`` since the last new package. ur_rtde is replaced by stubs whose timestamp
never advances; the RTDE socket is a real loopback connection to port 30004 of this process.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest

from robot.arm.backend import StatusFlag
from robot.arm.ur_client import RTDE_PORT, URLink, unread_rtde_bytes
from robot.timing import now
from tests.robot.arm.ur.helpers import ur_config


class _Receive:
    """ur_rtde's receive interface with one package that never changes."""

    def isConnected(self) -> bool:  # noqa: N802 (ur_rtde's names)
        return True

    def getTimestamp(self) -> float:  # noqa: N802
        return 12.0

    def getActualTCPPose(self) -> list[float]:  # noqa: N802
        return [0.45, 0.0, 0.2, 3.14, 0.0, 0.0]

    def getActualTCPSpeed(self) -> list[float]:  # noqa: N802
        return [0.0] * 6

    def getActualQ(self) -> list[float]:  # noqa: N802
        return [0.0] * 6

    def getActualQd(self) -> list[float]:  # noqa: N802
        return [0.0] * 6

    def isProtectiveStopped(self) -> bool:  # noqa: N802
        return False

    def isEmergencyStopped(self) -> bool:  # noqa: N802
        return False


class _Control:
    def isConnected(self) -> bool:  # noqa: N802
        return True

    def isProgramRunning(self) -> bool:  # noqa: N802
        return True


@pytest.fixture
def rtde_link() -> Iterator[tuple[socket.socket, socket.socket, str]]:
    """(controller side, client side, host) of a loopback TCP connection to port 30004."""
    for _ in range(20):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        listener = socket.socket()
        try:
            listener.bind((host, RTDE_PORT))
            break
        except OSError:
            listener.close()
    else:
        pytest.skip("no free loopback address for port 30004")
    listener.listen(1)
    client = socket.create_connection((host, RTDE_PORT), timeout=5)
    controller, _ = listener.accept()
    listener.close()
    try:
        yield controller, client, host
    finally:
        client.close()
        controller.close()


def _link(host: str) -> URLink:
    link = URLink(ur_config("ur5e", host))
    link._r, link._c = _Receive(), _Control()
    link._last_change = link._last_new = link._last_poll = now()
    return link


def _poll_until_lost(link: URLink, limit_s: float) -> tuple[float, StatusFlag]:
    """Read states every millisecond (as the client's loop does) until the link is lost."""
    t0 = now()
    while now() - t0 < limit_s:
        flags = link.read_state(now()).flags
        if flags & StatusFlag.DISCONNECTED:
            return now() - t0, flags
        time.sleep(0.001)
    raise AssertionError(f"the link was not declared lost within {limit_s} s")


def test_unread_bytes_are_counted_on_this_process_rtde_sockets_only(rtde_link):
    controller, client, host = rtde_link
    assert unread_rtde_bytes(host) == 0
    controller.sendall(b"\x00\x05U" + b"x" * 120)
    deadline = time.monotonic() + 5
    while unread_rtde_bytes(host) != 123 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unread_rtde_bytes(host) == 123
    assert unread_rtde_bytes("127.0.0.254") is None  # no connection there
    assert len(client.recv(1000)) == 123
    assert unread_rtde_bytes(host) == 0


def test_no_new_package_and_nothing_unread_is_a_silent_controller(rtde_link):
    _, _, host = rtde_link
    link = _link(host)
    cfg = link.config.ur
    _, flags = _poll_until_lost(link, 10)
    assert flags & StatusFlag.CONTROLLER_SILENT
    assert link.lost_reason is not None and "stopped answering" in link.lost_reason
    assert f"ur.controller_timeout_s {cfg.controller_timeout_s:g} s" in link.lost_reason


def test_packages_waiting_unread_are_this_process_lag_not_a_silent_controller(rtde_link, caplog):
    controller, _, host = rtde_link
    link = _link(host)
    cfg = link.config.ur
    assert cfg.controller_timeout_s < cfg.state_timeout_s
    controller.sendall(b"x" * 64)  # sent, never read: the receive thread is starved
    silent_s, flags = _poll_until_lost(link, 10)
    # Held past the controller timeout while the bytes waited, declared after the state timeout.
    assert silent_s >= cfg.state_timeout_s
    assert flags & StatusFlag.CONTROLLER_SILENT
    assert "64 bytes of it wait unread" in (link.lost_reason or "")
    assert "this process is behind, not the controller" in caplog.text
