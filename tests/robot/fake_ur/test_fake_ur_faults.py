"""Faults injected into the fake UR controller, as the real ur_rtde 1.6.5 client sees them.

Every wait is bounded: the client runs in a child killed at its timeout (see ur_client.py).
"""

from __future__ import annotations

import json

import pytest

from robot.fake_ur import FakeURController
from tests.robot.fake_ur.helpers import ClientRun, run_client

pytestmark = pytest.mark.timeout(60)


def _moving(st: dict) -> bool:
    return st["command_counts"].get("1", 0) >= 1 and max(abs(v) for v in st["actual_qd"]) > 0.05


def test_protective_stop_fails_blocking_calls_and_clears():
    with (
        FakeURController(version="5.11") as fake,
        ClientRun("fault_and_recover", fake.host, timeout_s=40) as run,
    ):
        run.wait_ready()
        fake.wait_until(_moving, timeout_s=5)
        fake.inject_protective_stop()
        during = json.loads(run.wait_line("FAULT", timeout_s=10))
        st = fake.state()
        assert st["runtime_state"] == 4  # program paused, as on a real controller
        assert max(abs(v) for v in st["actual_qd"]) == 0.0  # the arm halted
        fake.clear_faults()
        run.send_line()
        out = run.result()
    assert during["move_ok"] is False  # the blocking moveJ was aborted, not completed
    assert during["move_s"] < 5.0  # (the full move takes ~5.5 s)
    assert during["protective_stopped"] is True
    assert during["emergency_stopped"] is False
    assert during["safety_status_bits"] & (1 << 2)
    assert during["call_during_fault_ok"] is False
    # After clearing, the paused program resumes and commands work again.
    assert out["protective_stopped_after_clear"] is False
    assert out["move_after_clear_ok"] is True


def test_emergency_stop_fails_blocking_calls_and_needs_a_new_script():
    with (
        FakeURController(version="5.11") as fake,
        ClientRun("fault_and_recover", fake.host, {"reupload": True}, timeout_s=40) as run,
    ):
        run.wait_ready()
        fake.wait_until(_moving, timeout_s=5)
        fake.inject_emergency_stop()
        during = json.loads(run.wait_line("FAULT", timeout_s=10))
        st = fake.state()
        assert st["runtime_state"] == 1  # program stopped
        assert st["robot_mode"] == 3  # powered off
        fake.clear_faults()
        run.send_line()
        out = run.result()
        uploads = fake.state()["script_uploads"]
    assert during["move_ok"] is False
    assert during["emergency_stopped"] is True
    assert during["protective_stopped"] is False
    assert during["safety_status_bits"] & (1 << 7)
    assert during["program_running"] is False
    assert during["call_during_fault_ok"] is False
    assert out["first_call_after_clear_ok"] is False  # the program is gone until re-uploaded
    assert out["reupload_ok"] is True
    assert out["running_after_reupload_s"] is not None
    assert uploads == 2
    assert out["emergency_stopped_after_clear"] is False
    assert out["move_after_clear_ok"] is True


def test_dropped_connection_is_noticed_in_bounded_time():
    with (
        FakeURController(version="5.11") as fake,
        ClientRun("disconnect_detected", fake.host, {"limit_s": 8.0, "cleanup": True}, timeout_s=30) as run,
    ):
        run.wait_ready()
        dropped = fake.drop_connections(refuse_new=True)
        out = run.result()
        assert fake.state()["connections"] == []
    assert dropped >= 4  # 2 RTDE + dashboard + script
    assert out["receive_lost_after_s"] is not None
    assert out["control_lost_after_s"] is not None
    assert out["cleanup_s"] < 5.0  # disconnect() returns (it sleeps 0.5 s per interface)


def test_frozen_controller_is_noticed_in_bounded_time():
    with (
        FakeURController(version="5.11") as fake,
        ClientRun("disconnect_detected", fake.host, {"limit_s": 8.0, "cleanup": True}, timeout_s=30) as run,
    ):
        run.wait_ready()
        fake.freeze()
        out = run.result()
        st = fake.state()
    # The receive interface gives up on a silent socket after 2.5 s without data.
    assert out["receive_lost_after_s"] is not None and out["receive_lost_after_s"] > 2.0
    assert out["control_lost_after_s"] is not None
    assert out["cleanup_s"] < 8.0
    assert st["frozen"] is True


def test_dashboard_client_reports_and_unlocks_a_protective_stop():
    with FakeURController(version="5.11") as fake:
        fake.inject_protective_stop()
        out = run_client("dashboard", fake.host, timeout_s=20)
        st = fake.state()
    errors = {k: v for k, v in out.items() if isinstance(v, str) and v.startswith("ERROR")}
    assert not errors
    assert out["polyscopeVersion"].startswith("5.11")
    assert out["isInRemoteControl"] is True
    assert out["safetystatus"] == "Safetystatus: PROTECTIVE_STOP"  # read before the unlock
    assert st["safety_status_bits"] == 1  # unlockProtectiveStop cleared it
    assert "unlock protective stop" in st["dashboard_commands"]
