"""The fake URCap socket (robot/fake_ur/gripper.py) driven by clients written from the public protocol
(tests/robot/gripper/public_client.py: the ur_rtde example's style and the URCap driver's style), and
our own client (robot/gripper/urcap.py) against both reply styles. Loopback only."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from robot.gripper.urcap import URCapClient, URCapError
from tests.robot.gripper.conftest import UNIT
from tests.robot.gripper.public_client import DriverClient, LineClient


@pytest.fixture
def line(fake):
    """A client in the ur_rtde example's style, connected to ``fake``; closed after the test."""
    c = LineClient(fake.host)
    yield c
    c.close()


@pytest.fixture
def driver(fake):
    """A client in the URCap driver's style, connected to ``fake``; closed after the test."""
    d = DriverClient(fake.host)
    yield d
    d.close()


@pytest.mark.timeout(60)
def test_move_and_wait_for_pos_returns_after_the_fingers_moved(line):
    line.activate()
    # Alternate between two positions: each call must come back with the fingers there. A fake
    # whose OBJ keeps the last motion's 3 for a few ms after the go-to returns before they move.
    for i in range(10):
        target = 200 if i % 2 == 0 else 20
        pos, obj = line.move_and_wait_for_pos(target, 255, 0)
        assert obj == 3 and pos == pytest.approx(target, abs=1), (i, pos, obj)
    # The same position again: OBJ 0 for the new go-to, then 3 (never a stale "done").
    pos, obj = line.move_and_wait_for_pos(20, 255, 0)
    assert obj == 3 and pos == pytest.approx(20, abs=1)
    # Beyond the unit's stroke: the fingers stop at its closed count, PRE keeps the request.
    pos, obj = line.move_and_wait_for_pos(255, 255, 0)
    assert obj == 3 and pos == UNIT["closed_count"] and line.get_var("PRE") == 255


@pytest.mark.timeout(60)
def test_the_urcap_drivers_requests_without_newline_and_its_set_pos_loop(fake, driver):
    assert driver.init_connection(9) == b"ack"  # socket_set_var("SID", ...) then 3 bytes of ack
    driver.activate_and_wait()
    assert driver.get_bytes("FLT") == b"00" and driver.get_bytes("STA") == b"3"
    width0 = fake.gripper_state()["width_m"]
    # rq_set_pos: GTO 0, POS, then PRE must echo it while GTO is 0 (else its loop never ends) ...
    driver.set_pos(77)
    assert driver.get_bytes("PRE") == b"077"
    time.sleep(0.2)
    st = fake.gripper_state()
    assert st["width_m"] == width0 and st["gotos"] == 0  # ... and nothing moves before GTO 1
    assert driver.move_and_wait(77) == 3
    assert fake.gripper_state()["pos"] == pytest.approx(77, abs=1)
    # rq_stop (GTO 0) stops moving fingers where they are (slowly: 2.8 s for this stroke).
    driver.set_var("SPE", 0)
    driver.set_pos(220)
    driver.set_var("GTO", 1)
    time.sleep(0.3)
    assert driver.set_var("GTO", 0) == b"ack"
    stopped = fake.gripper_state()
    assert 77 < stopped["pos"] < 215 and not stopped["moving"]
    time.sleep(0.2)
    assert fake.gripper_state()["pos"] == stopped["pos"]


@pytest.mark.timeout(60)
def test_fault_codes_are_two_digits_and_0x0b_0x0e_are_minor(fake, line, driver):
    line.activate()
    assert line.raw("GET FLT") == b"FLT 00\n"
    fake.gripper_inject_fault(0x0E)  # overcurrent: "Minor Fault" in the URCap driver
    assert line.raw("GET FLT") == b"FLT 14\n" and driver.get_bytes("FLT") == b"14"
    pos, obj = line.move_and_wait_for_pos(150, 255, 0)  # a minor fault does not stop the gripper
    assert obj == 3 and pos == pytest.approx(150, abs=1)
    fake.gripper_inject_fault(0x0B)
    assert driver.get_bytes("FLT") == b"11"
    fake.gripper_inject_fault(0x0F)  # automatic release completed: "Major Fault"
    assert driver.get_bytes("FLT") == b"15"
    assert line.set_vars(POS=20, GTO=1)
    time.sleep(0.2)
    assert fake.gripper_state()["pos"] == pytest.approx(150, abs=1)  # ignored until a reset
    line.activate()  # the reset clears it
    assert line.get_var("FLT") == 0


@pytest.mark.timeout(30)
def test_variables_the_public_clients_use_are_answered(line):
    assert line.set_vars(SID=1)  # the URCap driver's rq_set_sid
    assert line.set_vars(ADR=1) and line.get_var("ARD") == 1  # ur_rtde's name for ARD
    assert line.raw("GET COU").startswith(b"COU ")
    assert line.get_var("COU") == 0  # not activated: no motor current
    assert line.raw("GET XYZ") == b"?" and line.raw("SET XYZ 1") == b"?"


@pytest.mark.timeout(30)
def test_opening_onto_an_object_reports_obj_1(fake, line):
    line.activate()
    line.move_and_wait_for_pos(200, 255, 0)
    # The pads inside a ring of 5 cm inner width (an internal grip): opening stops on it.
    fake.gripper_set_object(0.05, inside=True)
    pos, obj = line.move_and_wait_for_pos(0, 255, 50)
    assert obj == 1
    st = fake.gripper_state()
    assert st["width_m"] == pytest.approx(0.05, abs=1e-3)
    # Our client reads it as an object detected, at that width.
    with URCapClient(fake.host) as ours:
        assert ours.get("OBJ") == 1 and ours.get("POS") == pos
    fake.gripper_set_object(None)  # the ring taken away: the fingers go on to the target
    assert line.move_and_wait_for_pos(0, 255, 50)[1] == 3


class _ReplyStyleServer:
    """A loopback stand-in that answers GETs in a given style, to check our client against it."""

    def __init__(self, style: str):
        self.style = style
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            buf = b""
            while True:
                data = conn.recv(256)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    verb, rest = line.decode().split(" ", 1)
                    if verb == "SET":
                        conn.sendall(b"ack\n" if self.style == "newline" else b"ack")
                        continue
                    value = {"FLT": "05", "PRE": "077", "POS": "12"}.get(rest, "3")
                    reply = {
                        "bare": value,
                        "newline": f"{rest} {value}\n",
                        "no-newline": f"{rest} {value}",
                        "other-name": f"XYZ {value}\n",
                    }
                    conn.sendall(reply[self.style].encode())

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["newline", "no-newline", "bare"])
def test_our_client_reads_either_reply_style(style):
    server = _ReplyStyleServer(style)
    try:
        with URCapClient("127.0.0.1", server.port, reply_timeout_s=1.0) as c:
            c.set(POS=77, GTO=1)
            assert (c.get("FLT"), c.get("PRE"), c.get("POS"), c.get("STA")) == (5, 77, 12, 3)
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_our_client_refuses_a_reply_for_another_variable():
    server = _ReplyStyleServer("other-name")
    try:
        with URCapClient("127.0.0.1", server.port, reply_timeout_s=1.0) as c:
            with pytest.raises(URCapError, match="GET OBJ answered b'XYZ 3\\\\n'"):
                c.get("OBJ")
    finally:
        server.close()
