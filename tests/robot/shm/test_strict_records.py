"""Issue 19: strict records, failure-safe puts, validated create/attach, fences in the protocol."""

from __future__ import annotations

import os

import numpy as np
import pytest

import robot.shm.layout as layout_mod
import robot.shm.ring_buffer as ring_mod
from robot.shm.command_queue import CommandQueue
from robot.shm.ring_buffer import RingBuffer
from robot.shm.segments import list_segments

FRAME = {
    "color": ((480, 640, 3), "uint8"),
    "k": ((), "int64"),
    "t": ((), "float64"),
    "pose": ((6,), "float32"),
}


def good_record() -> dict:
    return {"color": np.zeros((480, 640, 3), np.uint8), "k": 3, "t": 1.5, "pose": np.zeros(6, np.float32)}


@pytest.mark.parametrize("kind", [RingBuffer, CommandQueue])
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("color", 7, "expects shape (480, 640, 3) uint8, got shape ()"),
        ("color", np.zeros((640, 3), np.uint8), "got shape (640, 3)"),
        ("color", np.zeros((1, 640, 3), np.uint8), "got shape (1, 640, 3)"),
        ("color", np.full((480, 640, 3), 300.0), "expects dtype uint8"),
        ("k", 3.7, "does not fit"),
        ("t", None, "got None"),
        ("pose", 5.0, "expects shape (6,) float32, got shape ()"),
        ("pose", np.zeros(6), "expects dtype float32"),  # float64 -> float32 is not a safe cast
        ("k", 2**70, "does not fit"),
    ],
)
def test_put_refuses_wrong_shapes_and_unsafe_dtypes_naming_buffer_and_field(kind, field, value, words):
    with kind.create(FRAME, 4) as buf:
        rec = good_record()
        rec[field] = value
        with pytest.raises((TypeError, ValueError)) as err:
            buf.put(rec)
        msg = str(err.value)
        assert buf.name in msg and repr(field) in msg and words in msg
        assert (buf.count if kind is RingBuffer else len(buf)) == 0  # nothing was written


@pytest.mark.parametrize("kind", [RingBuffer, CommandQueue])
def test_put_accepts_exact_and_safe_values(kind):
    with kind.create(FRAME, 4) as buf:
        rec = good_record()
        rec.update(k=np.int32(-5), t=np.float32(0.25), pose=[1, 2, 3, 4, 5, 6])  # safe casts, ints by value
        buf.put(rec)
        got = buf.latest() if kind is RingBuffer else {k: v[0] for k, v in buf.get_all().items()}
        assert got["k"] == -5 and got["t"] == 0.25 and got["pose"].tolist() == [1, 2, 3, 4, 5, 6]


def test_failed_put_leaves_no_busy_slot_and_readers_are_not_blocked(monkeypatch):
    with RingBuffer.create({"v": ((4,), "int64"), "w": ((2,), "int64")}, 3) as ring:
        for i in range(3):
            ring.put({"v": np.full(4, i), "w": np.full(2, i)})

        class Exploding:
            def __array__(self, *a, **k):
                raise KeyboardInterrupt  # an interrupt between the field copies

        # Validation passed (monkeypatched); the copy of the second field fails after the first.
        bad = Exploding()
        monkeypatch.setattr(ring_mod, "checked_values", lambda fields, rec, what: [rec["v"], bad])
        with pytest.raises(KeyboardInterrupt):
            ring.put({"v": np.full(4, 9), "w": bad})
        monkeypatch.undo()
        assert ring.count == 3
        # The damaged oldest record is left out; no retries, no "the writer overwrote" error.
        out = ring.get_last(3)
        assert out["counter"].tolist() == [1, 2] and out["v"][:, 0].tolist() == [1, 2]
        assert ring.read_retries == 0
        assert ring.get_since(1)["counter"].tolist() == [1, 2]
        # The next good put reuses the slot.
        ring.put({"v": np.full(4, 3), "w": np.full(2, 3)})
        assert ring.get_last(3)["counter"].tolist() == [1, 2, 3]


def test_latest_on_an_empty_ring_raises_lookup_error_as_documented():
    with RingBuffer.create({"v": ((), "int64")}, 2) as ring:
        with pytest.raises(LookupError):
            ring.latest()
        assert "LookupError" in RingBuffer.latest.__doc__


@pytest.mark.parametrize(
    ("kind", "layout", "capacity", "words"),
    [
        (RingBuffer, {"v": ((4,), "int64")}, 1, "capacity must be an integer >= 2"),
        (RingBuffer, {"v": ((4,), "int64")}, 0, "capacity must be an integer >= 2"),
        (CommandQueue, {"v": ((4,), "int64")}, 0, "capacity must be an integer >= 1"),
        (RingBuffer, {"v": ((480, -640, 3), "uint8")}, 4, "field 'v': negative dimension"),
    ],
)
def test_bad_create_is_refused_before_any_segment_exists(kind, layout, capacity, words):
    def mine() -> set[str]:  # other test workers create and remove their own segments meanwhile
        return {s.name for s in list_segments() if s.owner_pid == os.getpid()}

    before = mine()
    with pytest.raises(ValueError, match=words):
        kind.create(layout, capacity)
    assert mine() == before


def test_attach_refuses_another_layout_or_capacity_of_the_same_size():
    with RingBuffer.create({"a": ((4,), "float64")}, 8) as ring:
        same = RingBuffer.attach(ring.name, {"a": ((4,), "float64")}, 8)
        same.close()
        with pytest.raises(ValueError, match="holds layout .* with capacity 8, the caller expects layout"):
            RingBuffer.attach(ring.name, {"b": ((4,), "int64")}, 8)  # same bytes, other layout
        with pytest.raises(ValueError, match="capacity"):
            RingBuffer.attach(ring.name, {"a": ((4,), "float64")}, 4)
        with pytest.raises(ValueError, match="holds another structure|holds layout"):
            CommandQueue.attach(ring.name, {"a": ((4,), "float64")}, 8)


def test_writer_and_reader_issue_the_seqlock_fences(monkeypatch):
    calls = []
    monkeypatch.setattr(ring_mod, "fence_release", lambda: calls.append("release"))
    monkeypatch.setattr(ring_mod, "fence_acquire", lambda: calls.append("acquire"))
    with RingBuffer.create({"v": ((), "int64")}, 4) as ring:
        ring.put({"v": 1})
        assert calls == ["release"]
        ring.get_last(1)
        assert calls == ["release", "acquire"]
    # The real fences exist in the C extension and are callable.
    layout_mod.fence_acquire()
    layout_mod.fence_release()


def test_shm_clean_removes_semaphores_of_a_killed_process_group_and_keeps_live_ones(shm_clean_exclusive):
    import multiprocessing
    import os
    import signal
    import subprocess
    import sys

    # A run that holds multiprocessing semaphores, SIGKILLed with its whole group (the resource
    # tracker included, as a terminal's kill of a process group does): its semaphores stay behind.
    code = (
        "import multiprocessing as mp, sys, time\n"
        "ctx = mp.get_context('spawn')\n"
        "locks = [ctx.Lock(), ctx.Event()]\n"
        "print(locks[0]._semlock.name, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        dead = "sem." + proc.stdout.readline().strip().lstrip("/")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc.stdout.close()
    live = multiprocessing.get_context("spawn").Lock()  # mapped by this (running) process
    live_name = "sem." + live._semlock.name.lstrip("/")
    assert os.path.exists(f"/dev/shm/{dead}") and os.path.exists(f"/dev/shm/{live_name}")
    listed = subprocess.run(
        [sys.executable, "-m", "robot.cli", "shm", "list"], capture_output=True, text=True
    )
    assert any(dead in line and "STALE" in line for line in listed.stdout.splitlines())
    assert any(live_name in line and "in use" in line for line in listed.stdout.splitlines())
    out = subprocess.run([sys.executable, "-m", "robot.cli", "shm", "clean"], capture_output=True, text=True)
    assert out.returncode == 0 and dead in out.stdout
    assert not os.path.exists(f"/dev/shm/{dead}")
    assert os.path.exists(f"/dev/shm/{live_name}")  # still in use: left alone
    del live
