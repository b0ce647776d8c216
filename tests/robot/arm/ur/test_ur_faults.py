"""Faults of a UR arm through the arm controller's UR backend and the real ur_rtde client, injected
in the fake UR controller: each reaches the main process as ArmFaultError from ``check()``, the
controller stops commanding (the fake counts every servoL package it receives), nothing hangs
(the controller exits by itself when stopped), and ``reconnect()`` resumes once the cause is gone.
Also: a rate the controller cannot do, and connections that fail.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from robot.arm.backend import StatusFlag
from robot.arm.config import ArmConfig
from robot.arm.controller import ArmController, ArmFaultError
from robot.arm.interpolator import pose_distance
from robot.fake_ur.handle import FakeURController
from robot.fake_ur.observe import ur_client_pids
from robot.process import DeviceProcessError
from tests.robot.arm.ur.helpers import (
    CB3,
    ESERIES,
    SET_TCP,
    arm_on,
    make_fake,
    servo_packets,
    ur_config,
    wait_until,
)

CONNECTION_LOST = "CONNECTION LOST"


def fault_stops_commanding(
    arm: ArmController, fake: FakeURController, inject: Callable[[], object], match: str, detect_s: float
) -> np.ndarray:
    """Move, inject the fault, expect ArmFaultError(match) from check() within ``detect_s``, then
    check that no servoL reaches the controller any more, even when asked to move. Returns the
    controller's start pose."""
    p0 = arm.get_state()["actual_tcp_pose"]
    n0 = servo_packets(fake)
    arm.servo_to(p0 + [0.08, 0.0, 0.0, 0, 0, 0], 1.0)
    wait_until(lambda: servo_packets(fake) > n0 + 30, 5, "servoL packages flowing", arm)
    # Away from p0 before the fault, so that resuming to p0 needs new servoL packages (a loaded
    # machine can get 30 packages out before the arm has moved a millimetre).
    wait_until(
        lambda: pose_distance(fake.state()["actual_tcp_pose"], p0)[0] > 0.005, 5, "the arm moving", arm
    )
    inject()
    with pytest.raises(ArmFaultError, match=match) as err:
        wait_until(lambda: False, detect_s, "the fault to reach check()", arm)
    assert "reconnect()" in str(err.value)
    assert arm.get_state()["status_flags"] & StatusFlag.FAULTED
    time.sleep(0.05)  # a servoL already on its way
    sent = servo_packets(fake)
    arm.servo_to(p0, 0.5)  # ignored while faulted
    time.sleep(0.5)
    assert servo_packets(fake) == sent
    with pytest.raises(ArmFaultError, match=match):
        arm.check()
    return p0


def resumes(arm: ArmController, fake: FakeURController, goal: np.ndarray) -> None:
    """After reconnect(): holding where the arm is, then servoing again to ``goal``."""
    arm.check()
    s = arm.get_state()
    assert not s["status_flags"] & StatusFlag.FAULTED
    assert pose_distance(s["target_tcp_pose"], s["actual_tcp_pose"])[0] < 1e-3  # holds in place
    n = servo_packets(fake)
    arm.servo_to(goal, 1.0)
    wait_until(lambda: pose_distance(fake.state()["actual_tcp_pose"], goal)[0] < 1e-3, 10, "goal", arm)
    assert servo_packets(fake) > n


def stops_cleanly(arm: ArmController) -> None:
    arm.stop()
    assert arm.exitcode == 0  # exited by itself within its stop timeout (not terminated / killed)


def reconnect_resumes_and_stops(arm: ArmController, fake: FakeURController, goal: np.ndarray) -> None:
    """Once the cause is gone: reconnect() within 20 s, servo to ``goal`` again (:func:`resumes`),
    and stop cleanly."""
    arm.reconnect(timeout_s=20)
    resumes(arm, fake, goal)
    stops_cleanly(arm)


@pytest.fixture
def fake_arm(request: pytest.FixtureRequest):
    """``(fake, arm)``: a fake controller of the generation ``request.param`` (an e-Series when the
    test does not parametrize it) and an arm controller streaming to it on its shipped config."""
    version, name = getattr(request, "param", ESERIES)
    with make_fake(version) as fake, arm_on(ur_config(name, fake.host)) as arm:
        yield fake, arm


def start_refused(config: ArmConfig) -> str:
    """Start an arm controller on ``config``, expecting DeviceProcessError; its message. The
    controller is stopped and closed either way."""
    arm = ArmController(config)
    try:
        with pytest.raises(DeviceProcessError) as err:
            arm.start()
    finally:
        arm.stop()
        arm.close()
    return str(err.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fake_arm", [CB3, ESERIES], ids=["cb3-125Hz", "eseries-500Hz"], indirect=True)
def test_protective_stop_then_reconnect_resumes(fake_arm):
    fake, arm = fake_arm
    p0 = fault_stops_commanding(arm, fake, fake.inject_protective_stop, "PROTECTIVE STOP", 5)
    s = arm.get_state()
    assert s["status_flags"] & StatusFlag.PROTECTIVE_STOP
    assert not s["status_flags"] & StatusFlag.DISCONNECTED  # a safety stop, not a lost link
    with pytest.raises(ArmFaultError, match="reconnect did not clear.*PROTECTIVE STOP"):
        arm.reconnect(timeout_s=1.0)  # not cleared yet: refused, still faulted
    fake.clear_faults()  # the operator unlocks it
    reconnect_resumes_and_stops(arm, fake, p0)


@pytest.mark.timeout(60)
def test_emergency_stop_then_reconnect_uploads_the_script_again(fake_arm):
    fake, arm = fake_arm
    p0 = fault_stops_commanding(arm, fake, fake.inject_emergency_stop, "EMERGENCY STOP", 5)
    st = fake.state()
    assert max(abs(v) for v in st["actual_qd"]) < 1e-9  # the arm halted
    assert not st["program_running"]
    fake.clear_faults()  # e-stop released, arm powered on again; the program is gone
    arm.reconnect(timeout_s=20)
    st = fake.state()
    assert st["script_uploads"] == 2 and st["program_running"]
    assert st["command_counts"].get(SET_TCP) == 2  # the new program got the TCP offset again
    resumes(arm, fake, p0)
    stops_cleanly(arm)


@pytest.mark.timeout(60)
def test_dropped_connection_then_reconnect_builds_new_interfaces(fake_arm):
    fake, arm = fake_arm
    # The controller's ports stay open: ur_rtde's control interface reconnects on its own, the
    # receive interface does not; the link is lost either way, and the client that held it
    # (where ur_rtde may crash afterwards) ends.
    p0 = fault_stops_commanding(arm, fake, fake.drop_connections, CONNECTION_LOST, 5)
    assert arm.get_state()["status_flags"] & StatusFlag.DISCONNECTED
    arm.reconnect(timeout_s=20)
    conns = fake.state()["connections"]
    assert len([c for c in conns if c["kind"] == "rtde"]) == 2  # the old ones are gone
    resumes(arm, fake, p0)
    stops_cleanly(arm)


@pytest.mark.timeout(60)
def test_ur_rtde_crash_is_a_reported_fault_and_reconnect_starts_a_fresh_client(fake_arm):
    fake, arm = fake_arm
    (client,) = ur_client_pids(arm.pid)

    def crash() -> None:  # what ur_rtde 1.6.5 does to its process after a dropped link
        os.kill(client, signal.SIGSEGV)

    p0 = fault_stops_commanding(arm, fake, crash, CONNECTION_LOST, 5)
    assert arm.is_alive  # the controller outlived the client
    arm.reconnect(timeout_s=20)
    (fresh,) = ur_client_pids(arm.pid)
    assert fresh != client
    resumes(arm, fake, p0)
    stops_cleanly(arm)


@pytest.mark.timeout(60)
def test_refused_connection_reconnect_waits_for_the_controller(fake_arm):
    fake, arm = fake_arm
    p0 = fault_stops_commanding(arm, fake, lambda: fake.drop_connections(refuse_new=True), CONNECTION_LOST, 5)
    with pytest.raises(ArmFaultError, match="reconnect did not clear.*CONNECTION LOST"):
        arm.reconnect(timeout_s=2.0)  # the controller refuses connections: still faulted
    fake.accept_connections()
    reconnect_resumes_and_stops(arm, fake, p0)


@pytest.mark.timeout(60)
def test_frozen_controller_is_a_lost_connection_and_exit_does_not_hang(fake_arm):
    fake, arm = fake_arm
    # Sockets stay open, nothing answers: found by the stalled RTDE timestamp (ur.state_timeout_s),
    # before ur_rtde's own 2.5 s.
    fault_stops_commanding(arm, fake, fake.freeze, CONNECTION_LOST, 0.5 + 3.0)
    assert fake.state()["frozen"]
    stops_cleanly(arm)  # no servoStop/stopScript waiting for answers that never come


@pytest.mark.timeout(60)
def test_500hz_refused_on_a_cb3_with_a_clear_message():
    version, _ = CB3
    with make_fake(version) as fake:
        msg = start_refused(ur_config("ur5e", fake.host))  # the e-Series config: 500 Hz
        st = fake.state()
    assert f"UR at {fake.host}" in msg
    assert "PolyScope 3.15 (CB3)" in msg and "runs at 125 Hz" in msg and "rate_hz is 500" in msg
    assert "Set rate_hz: 125" in msg and "ur5_cb3.yaml" in msg
    # Refused before touching the arm: version read on the dashboard, no RTDE session, no script.
    assert "PolyscopeVersion" in st["dashboard_commands"]
    assert st["script_uploads"] == 0
    assert not [c for c in st["connections"] if c["kind"] == "rtde"]


@pytest.mark.timeout(60)
def test_no_controller_at_host_names_host_port_and_what_to_check():
    host = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"  # nobody
    msg = start_refused(ur_config("ur5_cb3", host))
    assert f"UR at {host}:29999" in msg
    assert "Check: the arm is powered on" in msg and f"ping {host}" in msg and "Remote Control" in msg


@pytest.mark.timeout(60)
def test_controller_that_never_answers_at_connect_is_bounded_and_named():
    with make_fake(ESERIES[0]) as fake:
        fake.freeze()  # accepts TCP, answers nothing: ur_rtde's constructors would wait forever
        msg = start_refused(ur_config("ur5e", fake.host))
    assert f"UR at {fake.host}:29999: the dashboard server accepted the connection but did not answer" in msg
    assert "Check:" in msg


@pytest.mark.timeout(60)
def test_frozen_controller_answers_again_then_reconnect_resumes(fake_arm):
    fake, arm = fake_arm
    p0 = fault_stops_commanding(arm, fake, fake.freeze, CONNECTION_LOST, 0.5 + 3.0)
    fake.unfreeze()
    # The old interfaces (ur_rtde's control one may be stuck reconnecting) are dropped, new ones built.
    reconnect_resumes_and_stops(arm, fake, p0)


class _SilentRTDE:
    """A dashboard that answers PolyscopeVersion, and an RTDE port that accepts and says nothing: the
    ur_rtde receive constructor blocks holding the GIL there."""

    def __init__(self, host: str):
        self.host = host
        self._socks = []
        self._conns = []
        self._stop = threading.Event()
        for port in (29999, 30004):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(4)
            s.settimeout(0.2)
            self._socks.append(s)
        threading.Thread(target=self._dashboard, daemon=True).start()
        threading.Thread(target=self._silent, daemon=True).start()

    def _accept(self, s):
        while not self._stop.is_set():
            try:
                c, _ = s.accept()
                self._conns.append(c)
                return c
            except OSError:
                continue
        return None

    def _dashboard(self):
        while (c := self._accept(self._socks[0])) is not None:
            c.sendall(b"Connected: Universal Robots Dashboard Server\n")
            c.settimeout(5)
            try:
                while data := c.recv(1024):
                    if b"PolyscopeVersion" in data:
                        c.sendall(b"URSoftware 5.11.6.108 (Jul 13 2022)\n")
            except OSError:
                pass

    def _silent(self):
        while self._accept(self._socks[1]) is not None:
            pass

    def close(self):
        self._stop.set()
        for s in self._conns + self._socks:
            s.close()


@pytest.mark.timeout(90)
def test_silent_rtde_port_is_bounded_by_connect_timeout_and_named():
    host = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    peer = _SilentRTDE(host)
    config = ur_config("ur5e", host)
    limit_s = config.ur.connect_timeout_s + 1.0
    try:
        msg = start_refused(config)
    finally:
        peer.close()
    assert f"UR at {host}:30004: RTDE receive interface got no answer within {limit_s:.0f} s" in msg
    assert "Check: the arm is powered on" in msg  # the step's bound fired, not the ready timeout
