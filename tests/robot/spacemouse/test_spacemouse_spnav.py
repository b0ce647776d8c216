"""Fake spacenavd -> real libspnav -> SpaceMouse process -> state ring."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest

from robot.process import DeviceProcessError
from robot.spacemouse.config import SpaceMouseConfig
from robot.spacemouse.device import SpaceMouse, normalize_axes
from robot.spacemouse.spnav import SpnavConnection, SpnavDisconnected, SpnavNotRunning
from tests.robot.spacemouse.fake_spacenavd import FakeSpacenavd
from tests.waiting import wait_until

IDENTITY = {"axis_map": [0, 1, 2, 3, 4, 5], "sign": [1] * 6, "scale": [1.0] * 6}

pytestmark = pytest.mark.timeout(30)


@contextmanager
def spacemouse(daemon: FakeSpacenavd, **cfg):
    config = SpaceMouseConfig(backend="spnav", socket_path=daemon.socket_path, **cfg)
    with SpaceMouse(config) as sm:
        daemon.wait_for_client()
        yield sm


def first_record(sm: SpaceMouse, predicate, what: str) -> dict:
    """The first newest-record seen for which ``predicate(record)`` holds."""

    def probe():
        rec = sm.latest()
        return rec if predicate(rec) else None

    return wait_until(probe, what=what)


def newest_with_raw(sm: SpaceMouse, raw: list[int]) -> dict:
    """The first record published after the motion event ``raw`` was read."""
    return first_record(sm, lambda r: np.array_equal(r["raw_axes"], raw), f"the motion event {raw}")


def test_motion_arrives_normalized_with_axis_map_signs_and_scale(fake_daemon):
    cfg = dict(axis_map=[1, 0, 2, 3, 5, 4], sign=[1, -1, 1, 1, 1, -1], scale=[1, 1, 0.5, 1, 1, 2])
    with spacemouse(fake_daemon, deadzone=0.0, max_raw=350.0, **cfg) as sm:
        first = sm.latest()
        assert np.all(first["axes"] == 0) and first["connected"] and first["event_time"] == 0.0
        raw = [70, -175, 350, 35, 700, -105]
        fake_daemon.send_motion(*raw)
        rec = newest_with_raw(sm, raw)
        # out[i] = sign[i] * scale[i] * raw[axis_map[i]] / 350, clipped to [-1, 1]
        expected = [-175 / 350, -70 / 350, 0.5 * 350 / 350, 35 / 350, -105 / 350, -1.0]
        np.testing.assert_allclose(rec["axes"], expected, atol=1e-12)
        assert rec["connected"] and rec["event_time"] > 0
        assert rec["event_time"] <= rec["publish_time"]


def test_default_mapping_turns_device_y_up_frame_into_z_up():
    cfg = SpaceMouseConfig(deadzone=0.0)
    # Puck pushed away from the user (device -z) -> +x; to the right (device +x) -> +y; up -> +z.
    np.testing.assert_allclose(normalize_axes([0, 0, -350, 0, 0, 0], cfg), [1, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(normalize_axes([175, 0, 0, 0, 0, 0], cfg), [0, 0.5, 0, 0, 0, 0])
    np.testing.assert_allclose(normalize_axes([0, 350, 0, 0, 0, 0], cfg), [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(normalize_axes([0, 0, 0, 0, 0, 350], cfg), [0, 0, 0, -1, 0, 0])


def test_deadzone_zeroes_small_deflection_and_rises_continuously_above_it(fake_daemon):
    with spacemouse(fake_daemon, deadzone=0.1, **IDENTITY) as sm:
        raw = [30, -175, 35, 350, -36, 0]  # 0.086, -0.5, exactly 0.1, 1.0, -0.103, 0
        fake_daemon.send_motion(*raw)
        rec = newest_with_raw(sm, raw)
        dz = 0.1
        expected = [0.0, -(0.5 - dz) / (1 - dz), 0.0, 1.0, -(36 / 350 - dz) / (1 - dz), 0.0]
        np.testing.assert_allclose(rec["axes"], expected, atol=1e-12)
        assert 0 < -rec["axes"][4] < 0.01  # just past the edge: small, not a jump


def test_axes_decay_to_zero_when_no_motion_event_arrives_for_the_timeout(fake_daemon):
    timeout_s = 0.25
    with spacemouse(fake_daemon, deadzone=0.0, decay_timeout_s=timeout_s, **IDENTITY) as sm:
        start = sm.ring.count
        fake_daemon.send_motion(175, 0, 0, 0, 0, 0)
        event_time = newest_with_raw(sm, [175, 0, 0, 0, 0, 0])["event_time"]
        wait_until(
            lambda: sm.latest()["publish_time"] > event_time + timeout_s + 0.1,
            what="the decay timeout to pass",
        )
        recs = sm.ring.get_since(start)
        after = recs["event_time"] == event_time
        age = recs["publish_time"][after] - event_time
        x = recs["axes"][after][:, 0]
        assert np.all(x[age <= timeout_s] == 0.5), "motion must hold until the timeout"
        assert np.all(recs["axes"][after][age > timeout_s] == 0.0), "motion must decay after the timeout"
        assert (age <= timeout_s).sum() >= 3 and (age > timeout_s).sum() >= 3
        assert sm.latest()["connected"]

        # A new event after the decay moves the axes again.
        fake_daemon.send_motion(0, 350, 0, 0, 0, 0)
        rec = newest_with_raw(sm, [0, 350, 0, 0, 0, 0])
        np.testing.assert_allclose(rec["axes"], [0, 1, 0, 0, 0, 0])


def test_buttons_toggle_and_every_press_is_counted(fake_daemon):
    with spacemouse(fake_daemon, num_buttons=2) as sm:
        fake_daemon.send_button(1, True)
        rec = first_record(sm, lambda r: r["buttons"][1], "button 1 down")
        assert rec["buttons"].tolist() == [False, True] and rec["button_presses"].tolist() == [0, 1]
        fake_daemon.send_button(1, False)
        rec = first_record(sm, lambda r: not r["buttons"][1], "button 1 up")
        assert rec["button_presses"].tolist() == [0, 1]
        # A click shorter than one publish period still counts (press and release in one packet burst).
        fake_daemon.send_button(0, True)
        fake_daemon.send_button(0, False)
        fake_daemon.send_button(5, True)  # beyond num_buttons: ignored, not an error
        rec = first_record(sm, lambda r: r["button_presses"][0] == 1, "button 0 click")
        assert rec["buttons"].tolist() == [False, False]
        sm.check()

        # Ctrl-C reaches every process of a terminal's foreground group: the process ends cleanly.
        os.kill(sm.pid, signal.SIGINT)
        wait_until(lambda: not sm.is_alive, what="the process to end on SIGINT")
        assert sm.exitcode == 0


def test_daemon_going_away_is_reported_not_read_as_zero_motion(fake_daemon):
    with spacemouse(fake_daemon, deadzone=0.0, **IDENTITY) as sm:
        fake_daemon.send_motion(350, 0, 0, 0, 0, 0)
        fake_daemon.send_button(0, True)
        newest_with_raw(sm, [350, 0, 0, 0, 0, 0])
        fake_daemon.drop_clients()

        def failed():
            try:
                sm.check()
            except DeviceProcessError as exc:
                return exc
            return None

        exc = wait_until(failed, what="check() to report the lost daemon")
        assert "closed the connection" in str(exc) and fake_daemon.socket_path in str(exc)
        assert "spacenavd" in str(exc)
        with pytest.raises(DeviceProcessError):
            sm.latest()
        last = sm.latest(check=False)
        assert not last["connected"]
        assert np.all(last["axes"] == 0) and not last["buttons"].any()
        status = sm.status()
        assert status["connected"] is False and "closed the connection" in status["error"]


def test_start_without_daemon_names_socket_and_how_to_start_it(spnav_socket):
    with pytest.raises(DeviceProcessError) as e:
        with SpaceMouse(SpaceMouseConfig(backend="spnav", socket_path=spnav_socket)):
            pass  # never reached; the failed start also unlinks the ring (checked by the conftest guard)
    assert spnav_socket in str(e.value) and "sudo systemctl start spacenavd" in str(e.value)


@pytest.mark.parametrize("protocol", [0, 1])
def test_binding_reads_events_with_both_daemon_protocols(spnav_socket, protocol):
    with FakeSpacenavd(spnav_socket, protocol=protocol, device_name="SpaceMouse Compact") as daemon:
        with SpnavConnection(spnav_socket) as conn:
            assert conn.protocol == protocol
            if protocol == 1:
                assert conn.device_name() == "SpaceMouse Compact"
            daemon.wait_for_client()
            daemon.send_motion(1, -2, 3, -4, 5, -6, period_ms=8)
            daemon.send_button(1, True)
            events = []
            while len(events) < 2:
                assert conn.wait_readable(5.0), "no event within 5 s"
                while (ev := conn.poll()) is not None:
                    events.append(ev)
            assert events[0].axes == (1, -2, 3, -4, 5, -6) and events[0].period_ms == 8
            assert (events[1].bnum, events[1].pressed) == (1, True)
            assert conn.poll() is None
            daemon.drop_clients()
            assert conn.wait_readable(5.0)
            with pytest.raises(SpnavDisconnected):
                conn.poll()


def test_binding_refuses_a_missing_socket_instead_of_falling_back(spnav_socket):
    with pytest.raises(SpnavNotRunning, match="does not exist"):
        SpnavConnection(spnav_socket)
    open(spnav_socket, "w").close()  # a stale socket file with nothing behind it
    with pytest.raises(SpnavNotRunning, match="nothing accepts connections"):
        SpnavConnection(spnav_socket)
