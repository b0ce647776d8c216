"""Segments are unlinked on every exit path of their owner; stale ones are cleaned by `rig shm clean`."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from robot.shm.segments import clean_stale, list_segments
from tests.sigint import as_from_a_terminal

OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from robot.shm.segments import install_termination_handlers
    from robot.shm.ring_buffer import RingBuffer
    install_termination_handlers()
    ring = RingBuffer.create({"x": ((1000,), "uint8")}, 4, label="lifecycle")
    ring.put({"x": np.zeros(1000, np.uint8)})
    print(ring.name, flush=True)
    mode = sys.argv[1]
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "exit":
        sys.exit(0)
    time.sleep(60)
    """
)


def _start_owner(mode: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,  # as a terminal starts it
    )
    name = proc.stdout.readline().strip()
    assert name.startswith("rig_"), proc.stderr.read()
    return proc, name


def _exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("mode", ["exit", "raise", "sigterm", "sigint"])
@pytest.mark.timeout(60)
def test_owner_unlinks_on_every_exit_path(mode):
    proc, name = _start_owner(mode)
    assert _exists(name) or mode in ("exit", "raise")
    if mode == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif mode == "sigint":
        proc.send_signal(signal.SIGINT)
    proc.wait(20)
    assert not _exists(name), f"{mode}: segment {name} left behind"


@pytest.mark.timeout(60)
def test_sigkilled_owner_segment_is_removed_by_rig_shm_clean(shm_clean_exclusive):
    proc, name = _start_owner("sleep")
    assert _exists(name)
    proc.kill()
    proc.wait(10)
    out = subprocess.run(
        [sys.executable, "-m", "robot.cli", "shm", "clean"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    # Either the resource tracker of the dead run got there first or `rig shm clean` did.
    assert not _exists(name)
    assert not [s for s in list_segments() if s.owner_pid == proc.pid]


def test_clean_stale_removes_only_segments_of_dead_owners(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"rig_{dead.pid}_deadbeef_cam").write_bytes(b"x" * 10)
    (tmp_path / f"rig_{os.getpid()}_cafecafe_cam").write_bytes(b"x")
    (tmp_path / "other_segment").write_bytes(b"x")
    removed = clean_stale(shm_dir=tmp_path)
    assert removed == [f"rig_{dead.pid}_deadbeef_cam"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"rig_{os.getpid()}_cafecafe_cam", "other_segment"]
    )
    assert clean_stale(all_segments=True, shm_dir=tmp_path) == [f"rig_{os.getpid()}_cafecafe_cam"]


@pytest.mark.timeout(60)
def test_sigkilled_child_writer_leaves_nothing_once_owner_closes():
    from robot.shm.ring_buffer import RingBuffer
    from robot.shm.stress import stress_layout
    from tests.robot.shm.test_ring_buffer import _Writer

    ring = RingBuffer.create(stress_layout((10, 10, 3)), 4)
    name = ring.name
    w = _Writer(ring, duration_s=30)
    w.start()
    deadline = time.monotonic() + 10
    while ring.count == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ring.count > 0
    os.kill(w.pid, signal.SIGKILL)
    with pytest.raises(Exception, match="SIGKILL"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            w.check()
            time.sleep(0.02)
    w.stop()
    assert _exists(name)  # the owner still holds it: a dead child loses nothing
    ring.close()
    assert not _exists(name)
