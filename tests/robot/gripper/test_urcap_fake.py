"""The Robotiq client path (URCapClient -> RobotiqBackend -> gripper process) against the fake UR
controller's URCap socket (robot/fake_ur/gripper.py), loopback only, with the shipped gripper config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robot.config import config_path, load_config
from robot.fake_ur.handle import FakeURController
from robot.gripper.backend import GripperError
from robot.gripper.config import GripperConfig
from robot.gripper.controller import GripperController, GripperFaultError
from robot.gripper.robotiq import RobotiqBackend
from robot.gripper.urcap import URCapClient, URCapError
from robot.process import DeviceProcessError
from tests.robot.gripper.conftest import UNIT
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STROKE_M = 0.085
RIG_GRIPPER = [sys.executable, "-m", "robot.cli", "gripper"]


def rig_gripper(*args: str) -> subprocess.CompletedProcess:
    """``rig gripper ARGS`` to its end (50 s at most), output captured."""
    return subprocess.run([*RIG_GRIPPER, *args], capture_output=True, text=True, timeout=50)


def shipped(host: str, *overrides: str) -> GripperConfig:
    return load_config(GripperConfig, config_path("gripper/robotiq_2f85.yaml"), [f"host={host}", *overrides])


@pytest.mark.timeout(30)
def test_client_speaks_urcap_and_goto_before_activation_is_a_fault(fake):
    with URCapClient(fake.host, reply_timeout_s=1.0) as c:
        assert c.get("STA") == 0
        c.set(POS=255, SPE=255, FOR=0, GTO=1)
        assert c.get("FLT") == 0x07  # the URCap refuses motion before activation
        assert fake.gripper_state()["gotos"] == 0
        c.set(ACT=1)
        assert c.get("STA") == 1
        wait_until(lambda: c.get("STA") == 3, 5, "activation")
        with pytest.raises(ValueError, match="unknown URCap variable"):
            c.get("XYZ")


@pytest.mark.timeout(30)
def test_backend_activates_calibrates_and_speaks_metres(fake):
    cfg = shipped(fake.host)
    b = RobotiqBackend(cfg)
    try:
        b.connect(time.monotonic())
        assert (b.open_count, b.closed_count) == (UNIT["open_count"], UNIT["closed_count"])
        assert fake.gripper_state()["sta"] == 3
        r = b.read_state(time.monotonic())
        assert r.width_m == pytest.approx(STROKE_M, abs=1e-3)
        # Half closed, at the slowest speed: the fingers take time (finite speed) and report moving.
        b.command(0.0425, 0.02, 20.0, time.monotonic())
        time.sleep(0.3)
        mid = b.read_state(time.monotonic())
        assert mid.moving and 0.0425 + 1e-3 < mid.width_m < STROKE_M - 2e-3
        wait_until(lambda: not b.read_state(time.monotonic()).moving, 5, "stop at the target")
        end = b.read_state(time.monotonic())
        assert end.width_m == pytest.approx(0.0425, abs=0.5e-3) and not end.object_detected
        # The fake's counts agree: POS is the closed count minus half the calibrated span.
        assert fake.gripper_state()["pos"] == pytest.approx((6 + 221) / 2, abs=1)
        # An object 3 cm wide: closing fully stops on it and reports it.
        fake.gripper_set_object(0.03)
        b.command(0.0, 0.15, 100.0, time.monotonic())
        wait_until(lambda: b.read_state(time.monotonic()).object_detected, 5, "object detected")
        assert b.read_state(time.monotonic()).width_m == pytest.approx(0.03, abs=0.5e-3)
    finally:
        b.close()


@pytest.mark.timeout(30)
def test_calibration_refuses_blocked_fingers(fake):
    fake.gripper_set_object(0.07)
    b = RobotiqBackend(shipped(fake.host))
    try:
        with pytest.raises(GripperError, match="stopped on something during calibration"):
            b.connect(time.monotonic())
    finally:
        b.close()


@pytest.mark.timeout(60)
def test_gripper_process_schedules_widths_and_reports_objects(fake):
    with GripperController(shipped(fake.host)) as g:
        st = g.get_state()
        assert st["width_m"] == pytest.approx(STROKE_M, abs=1e-3) and st["fault_code"] == 0
        t_cmd = time.monotonic() + 0.4
        g.schedule_width(0.0, t_cmd)
        time.sleep(0.2)
        assert fake.gripper_state()["target_width_m"] == pytest.approx(STROKE_M)  # not before its time
        fake.gripper_set_object(0.04)
        st = wait_until(
            lambda: (s := g.get_state())["object_detected"] and s, 5, "object detected", each=g.check
        )
        assert st["width_m"] == pytest.approx(0.04, abs=1e-3)
        hist = g.get_state_history(g.state_ring.capacity - 1)
        first_move = hist["capture_time"][hist["width_m"] < STROKE_M - 1e-3][0]
        assert first_move >= t_cmd - 0.5 * g.config.period_s  # sent on its tick, not earlier
        g.set_width(0.085)
        wait_until(lambda: g.get_state()["width_m"] > 0.084, 5, "open again", each=g.check)
        assert g.get_state()["commands_sent"] == 2


@pytest.mark.timeout(60)
def test_major_fault_is_reported_by_check_and_a_minor_one_is_not(fake):
    with GripperController(shipped(fake.host)) as g:
        fake.gripper_inject_fault(0x0E)  # overcurrent: minor per the URCap's driver
        wait_until(lambda: g.get_state()["fault_code"] == 0x0E, 5, "the minor fault published", each=g.check)
        g.set_width(0.04)
        wait_until(lambda: abs(g.get_state()["width_m"] - 0.04) < 1e-3, 5, "moved despite it", each=g.check)
        fake.gripper_inject_fault(0x0F)
        with pytest.raises(GripperFaultError, match="major fault 0x0F: automatic release completed"):
            wait_until(lambda: False, 5, "a fault", each=g.check)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["silent", "closed"])
def test_silent_or_closed_socket_fails_the_process_with_one_line(fake, how):
    with GripperController(shipped(fake.host)) as g:
        if how == "silent":
            fake.freeze()
        else:
            fake.drop_connections(refuse_new=True)
        with pytest.raises(DeviceProcessError) as err:
            wait_until(lambda: False, 10, "a failure", each=g.check)
    msg = str(err.value)
    assert "\n" not in msg and f"{fake.host}:63352" in msg
    assert ("no answer" in msg) if how == "silent" else ("closed the connection" in msg)


@pytest.mark.timeout(30)
def test_unreachable_urcap_is_one_clear_line():
    with pytest.raises(URCapError, match="connection refused: is the Robotiq URCap installed"):
        URCapClient("127.0.0.1", 1).connect()


KILL_PARENT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from robot.config import config_path, load_config
    from robot.gripper.config import GripperConfig
    from robot.gripper.controller import GripperController
    cfg = load_config(GripperConfig, config_path("gripper/robotiq_2f85.yaml"), ["host=" + sys.argv[2]])
    g = GripperController(cfg)
    g.start()
    g.set_width(0.0, speed_m_s=0.02)  # slow: ~4 s to close
    print(g.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.timeout(60)
def test_parent_death_holds_the_fingers_where_they_are(fake):
    parent = subprocess.Popen(
        [sys.executable, "-c", KILL_PARENT, ROOT, fake.host], stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(parent.stdout.readline())
        wait_until(lambda: fake.gripper_state()["moving"], 5, "fingers moving")
        time.sleep(0.3)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not os.path.exists(f"/proc/{child_pid}") or _zombie(child_pid), 10, "child exits")
        st = fake.gripper_state()
        assert not st["moving"] and st["obj"] == 3
        assert 0.01 < st["width_m"] < STROKE_M - 2e-3  # stopped mid-stroke: held, not closed, not opened
        time.sleep(0.3)
        assert fake.gripper_state()["width_m"] == pytest.approx(st["width_m"])
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


@pytest.mark.timeout(60)
def test_rig_gripper_close_reports_the_object_and_unreachable_is_one_line(fake):
    import json

    cfg = ["--config", "gripper/robotiq_2f85.yaml", f"host={fake.host}"]
    proc = subprocess.Popen(
        [*RIG_GRIPPER, "close", *cfg, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # An object between the fingers once calibration (open, close, open) has started its last move.
        wait_until(lambda: fake.gripper_state()["gotos"] >= 3, 30, "calibration")
        fake.gripper_set_object(0.05)
        stdout, stderr = proc.communicate(timeout=50)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, stderr
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info["object_detected"] and info["width_m"] == pytest.approx(0.05, abs=1e-3)
    bad = rig_gripper("status", "--config", "gripper/robotiq_2f85.yaml", "host=127.0.0.1", "port=1")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 2, bad.stderr  # the message, and where the traceback is
    assert "127.0.0.1:1" in lines[0] and "connection refused" in lines[0]
    assert lines[1].startswith("rig gripper: the traceback is in ")


@pytest.mark.timeout(60)
def test_fingers_stop_on_the_sim_worlds_box_which_then_moves_with_the_tool():
    from robot.fake_ur.arm_model import UR5_HOME_Q, ur5_ik_closest

    world = {"task": "pick_place", "seed": 3}
    with FakeURController("5.11", gripper_params=dict(UNIT), gripper_world=world) as fake:
        b = RobotiqBackend(shipped(fake.host))
        try:
            b.connect(time.monotonic())  # calibrates with the tool high above the table
            box = np.array(fake.gripper_state()["world_object_poses"][0])
            grasp = np.array([box[0], box[1], 0.025, np.pi, 0.0, 0.0])
            fake.set_joint_positions(ur5_ik_closest(grasp, UR5_HOME_Q, np.zeros(6)))
            b.command(0.0, 0.15, 60.0, time.monotonic())
            wait_until(lambda: b.read_state(time.monotonic()).object_detected, 5, "object detected")
            assert b.read_state(time.monotonic()).width_m == pytest.approx(0.04, abs=1e-3)  # the 4 cm box
            lifted = grasp + [0, 0, 0.1, 0, 0, 0]
            fake.set_joint_positions(ur5_ik_closest(lifted, UR5_HOME_Q, np.zeros(6)))
            z = wait_until(
                lambda: (p := fake.gripper_state()["world_object_poses"][0])[2] > 0.09 and p[2], 5, "lift"
            )
            assert z == pytest.approx(0.1, abs=0.005)  # carried with the tool
            b.command(0.085, 0.15, 60.0, time.monotonic())  # opening drops it onto the table
            wait_until(lambda: fake.gripper_state()["world_object_poses"][0][2] == 0.0, 5, "dropped")
        finally:
            b.close()


@pytest.mark.timeout(60)
def test_rig_gripper_reports_a_fault_present_at_start(fake):
    fake.gripper_inject_fault(0x0C)  # left by an earlier run; the reset at start clears it
    out = rig_gripper(
        "status", "--config", "gripper/robotiq_2f85.yaml", f"host={fake.host}", "--seconds", "0.2"
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "major fault 0x0C" in lines[0] and "at start" in lines[0], out.stderr
    assert "at start:    fault 0x0c" in out.stdout
    assert fake.gripper_state()["flt"] == 0  # cleared: this report is the only trace of it


def _gripper_child(parent_pid: int) -> int | None:
    """The pid of the gripper device process under ``parent_pid`` (spawned: its command line names
    multiprocess's spawn entry, not the resource tracker)."""
    import glob

    for path in glob.glob(f"/proc/{parent_pid}/task/*/children"):
        with open(path) as f:
            for pid in map(int, f.read().split()):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        cmd = c.read().decode(errors="replace")
                except OSError:
                    continue
                if "spawn" in cmd and "resource_tracker" not in cmd:
                    return pid
    return None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["link dropped", "process killed"])
def test_rig_gripper_status_notices_a_failed_gripper_process_within_its_window(fake, how):
    proc = subprocess.Popen(
        [
            *RIG_GRIPPER,
            "status",
            "--config",
            "gripper/robotiq_2f85.yaml",
            f"host={fake.host}",
            "--seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Once the process runs (activated and calibrated: it polls the socket), it fails.
        done = wait_until(
            lambda: (s := fake.gripper_state())["gotos"] >= 3 and not s["moving"] and s, 30, "calib"
        )
        # ... and the process polls on its own (ready: its status window runs).
        wait_until(lambda: fake.gripper_state()["requests"] > done["requests"] + 50, 10, "polling")
        assert proc.poll() is None
        if how == "link dropped":
            fake.drop_connections(refuse_new=True)
        else:
            child = wait_until(lambda: _gripper_child(proc.pid), 10, "the gripper process")
            os.kill(child, signal.SIGKILL)
        t_fail = time.monotonic()
        _, stderr = proc.communicate(timeout=30)  # long before its 60 s window ends
        took_s = time.monotonic() - t_fail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 1, stderr
    assert took_s < 30
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and ("closed the connection" if how == "link dropped" else "died") in lines[0], (
        stderr
    )
    assert lines[1].startswith("rig gripper: the traceback is in ")
