import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from robot.process import DeviceProcess, DeviceProcessError


class _Dev(DeviceProcess):
    def __init__(self, mode="ok", **kw):
        super().__init__(f"test-device-{mode}", **kw)
        self.mode = mode

    def setup(self):
        if self.mode == "fail_setup":
            raise RuntimeError("camera 123456 (D435) not found; check the USB3 cable")

    def loop_once(self):
        if self.mode == "fail_loop":
            raise ValueError("lost connection to 127.0.0.2")
        time.sleep(0.005)


def test_setup_failure_raises_with_child_traceback():
    dev = _Dev("fail_setup")
    with pytest.raises(DeviceProcessError) as e:
        dev.start()
    msg = str(e.value)
    assert "test-device-fail_setup failed to start" in msg
    assert "camera 123456 (D435) not found" in msg and len(msg.splitlines()) == 1  # one line for the user
    assert "Traceback" in e.value.detail  # the child's traceback, for --debug
    dev.join(5)
    assert not dev.is_alive


def test_runtime_failure_is_reported_by_check():
    with _Dev("fail_loop") as dev:
        deadline = time.monotonic() + 10
        with pytest.raises(DeviceProcessError, match="lost connection to 127.0.0.2"):
            while time.monotonic() < deadline:
                dev.check()
                time.sleep(0.01)


def test_stop_ends_child_and_check_passes_while_running():
    dev = _Dev("ok")
    dev.start()
    dev.check()
    assert dev.is_alive and dev.is_ready
    dev.stop()
    assert not dev.is_alive and dev.exitcode == 0


def test_missing_heartbeat_stops_child():
    dev = _Dev("ok", heartbeat_timeout_s=0.3)
    dev.start()
    deadline = time.monotonic() + 10
    while dev.is_alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not dev.is_alive and dev.exitcode == 0
    dev.stop()


PARENT = textwrap.dedent(
    """
    import time, sys
    sys.path.insert(0, sys.argv[1])
    from tests.robot.test_process import _Dev
    dev = _Dev("ok")
    dev.start()
    print(dev.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.timeout(60)
def test_child_exits_when_parent_is_sigkilled():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, root], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("device process outlived its SIGKILLed parent")


class _Owning(_Dev):
    """A device that created a ring for its child (as the arm and gripper controllers do)."""

    def __init__(self, stop_raises: bool = False, mode: str = "ok"):
        super().__init__(mode)
        from robot.shm.ring_buffer import RingBuffer

        self.ring = RingBuffer.create({"v": ((), "float64")}, capacity=4, label="owned")
        self._owned.append(self.ring)
        self.stop_raises = stop_raises

    def stop(self, wait: bool = True) -> None:
        super().stop(wait)
        if self.stop_raises:
            raise RuntimeError("the stop failed after the child ended")


@pytest.mark.parametrize("stop_raises", [False, True])
def test_leaving_the_context_stops_the_child_and_unlinks_its_shared_memory(stop_raises):
    dev = _Owning(stop_raises)
    name = dev.ring.name
    assert os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(RuntimeError) if stop_raises else contextlib.nullcontext():
        with dev:
            assert dev.is_alive
    assert not dev.is_alive
    assert not os.path.exists(f"/dev/shm/{name}")  # unlinked even when the stop raised
    dev.close()  # idempotent


def test_a_failed_start_in_the_context_unlinks_its_shared_memory():
    # `with` skips __exit__ when __enter__ raises: a device that never became ready (a gripper that
    # did not answer in time) must still free its rings and leave no child behind.
    dev = _Owning(mode="fail_setup")
    name = dev.ring.name
    with pytest.raises(DeviceProcessError, match="not found"):
        with dev:
            pytest.fail("entered a device that failed to start")
    assert not dev.is_alive
    assert not os.path.exists(f"/dev/shm/{name}")
