"""Stream rates by controller generation, process mode, the CLI, and RTDE setup rules of the fake."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import rtde_control

from robot.fake_ur import FakeURController
from tests.robot.fake_ur.helpers import fk_pose, pose_distance, run_client

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("version", "period_s"),
    [("3.15", 1 / 125), ("5.11", 1 / 500)],
    ids=["cb3-125hz", "e-series-500hz"],
)
def test_stream_timestamps_are_whole_controller_periods(version, period_s):
    with FakeURController(version=version) as fake:
        out = run_client("stream_rate", fake.host, {"window_s": 1.0}, timeout_s=20)
        st = fake.state()
    assert st["rate_hz"] == 1 / period_s
    # The controller's clock counts its own ticks: every step the client sees is a whole number of
    # periods (one, or several where the client kept only the newest of queued packets or the
    # controller skipped a late tick), never a fraction of one, however loaded the machine is.
    steps = np.array(out["timestamp_steps_s"]) / period_s
    assert len(steps) > 10
    assert np.all(np.abs(steps - np.round(steps)) < 1e-6), steps[np.abs(steps - np.round(steps)) >= 1e-6]
    assert np.all(np.round(steps) >= 1)


def test_client_asking_more_than_the_controller_rate_gets_the_controller_rate():
    with FakeURController(version="3.15") as fake:
        code = (
            "import rtde_receive, sys, time\n"
            "r = rtde_receive.RTDEReceiveInterface(sys.argv[1], 500.0)\n"
            "time.sleep(0.3)\n"
            "print('OK', flush=True)\n"
            "time.sleep(0.5)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, fake.host], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "OK"
            conn = next(c for c in fake.state()["connections"] if c["kind"] == "rtde")
        finally:
            proc.kill()
            proc.wait(5)
            proc.stdout.close()
    assert conn["requested_frequency_hz"] == 500.0
    assert conn["stream_frequency_hz"] == 125.0


def test_process_mode_serves_the_client_and_takes_faults_over_the_pipe():
    q0 = [0.3, -1.4, 1.5, -1.7, -1.5, 0.2]
    with FakeURController(version="5.11", process=True, initial_q=q0) as fake:
        assert fake.host and fake.host.startswith("127.")
        out = run_client("receive", fake.host, timeout_s=20)
        dp, dr = pose_distance(out["actual_tcp_pose"], fk_pose(q0))
        assert dp < 1e-9 and dr < 1e-9
        fake.inject_protective_stop()
        faulted = run_client("receive", fake.host, timeout_s=20)
        fake.clear_faults()
        assert fake.state()["safety_status_bits"] == 1
    assert faulted["protective_stopped"] is True
    assert faulted["safety_mode"] == 3


def _may_use_real_time(priority: int) -> bool:
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= priority


def test_process_mode_schedules_the_server_threads_as_a_real_time_controller():
    """A real controller ticks on real-time hardware of its own. A fake at niceness -10 alone sat in
    the run queue for up to 1 s under load (sessions share the CPU as groups, a niceness counts only
    inside its own): its RTDE stream stopped and read as a frozen controller. The fake's process
    leads a session of its own, and where permitted its main thread and every thread the server
    starts (tick, acceptors, one per connection) are SCHED_RR at ``rt_priority``. (numpy's idle
    BLAS workers, started at import, keep the default policy.)"""
    with FakeURController(version="5.11", process=True) as fake:
        pid = fake.pid
        assert pid is not None
        assert os.getsid(pid) == pid
        before = set(os.listdir(f"/proc/{pid}/task"))
        with socket.create_connection((fake.host, 29999), timeout=10) as dashboard:
            assert dashboard.recv(100).startswith(b"Connected")
            fresh = set(os.listdir(f"/proc/{pid}/task")) - before  # the connection's reader
            rr = [t for t in before | fresh if os.sched_getscheduler(int(t)) == os.SCHED_RR]
            priorities = {os.sched_getparam(int(t)).sched_priority for t in rr}
        assert len(fresh) == 1
        if _may_use_real_time(10):
            assert fresh <= set(rr) and str(pid) in rr
            assert len(rr) >= 8  # main, tick, 6 acceptors, the reader
            assert priorities == {10}
    with FakeURController(version="5.11", process=True, rt_priority=0) as fake:
        assert fake.pid is not None
        assert os.sched_getscheduler(fake.pid) == os.SCHED_OTHER


def test_cli_serves_until_interrupted(tmp_path):
    host = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot.fake_ur", "--version", "3.15", "--host", host, "arm=sim"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    )
    try:
        banner = proc.stdout.readline()
        assert "fake UR controller 3.15" in banner
        info = json.loads(proc.stdout.readline())
        assert info["host"] == host
        out = run_client("receive", info["host"], timeout_s=20)
        assert out["connected"] is True and out["robot_mode"] == 7
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_second_control_interface_is_refused_with_in_use():
    with FakeURController(version="5.11") as fake:
        out = run_client("second_control_refused", fake.host, timeout_s=30)
    assert out["second_error"] is not None and "already in use" in out["second_error"]
    assert out["first_still_running"] is True


def test_upper_range_registers_flag_moves_the_command_registers():
    flags = (
        rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT
        | rtde_control.RTDEControlInterface.FLAG_UPPER_RANGE_REGISTERS
    )
    with FakeURController(version="5.11", arm_kind="sim") as fake:
        out = run_client("control_basics", fake.host, {"flags": flags}, timeout_s=40)
        st = fake.state()
        regs = fake.server.regs
        assert not regs.input_int[:24].any()  # nothing touched the lower range
    assert st["register_offset"] == 24
    assert out["moveL_ok"] and out["moveJ_ok"] and out["servo_ok"] and out["setTcp_ok"]
    dp, _ = pose_distance(out["pose_after_moveL"], out["moveL_goal"])
    assert dp < 1e-3
    np.testing.assert_allclose(out["q_after_moveJ"], out["moveJ_goal"], atol=1e-3)
