import numpy as np
import pytest

from robot.process import DeviceProcess
from robot.shm.ring_buffer import BufferOverrun, RingBuffer
from robot.shm.stress import reader, stress_layout, writer


def test_get_last_returns_newest_oldest_first_with_counters():
    with RingBuffer.create({"x": ((2,), "float32"), "t": ((), "float64")}, capacity=4) as ring:
        assert len(ring.get_last(3)["counter"]) == 0
        for i in range(7):
            assert ring.put({"x": [i, -i], "t": i * 0.5}) == i
        recs = ring.get_last(3)
        assert recs["counter"].tolist() == [4, 5, 6]
        assert recs["t"].tolist() == [2.0, 2.5, 3.0]
        assert recs["x"][:, 1].tolist() == [-4, -5, -6]
        assert ring.count == 7
        assert ring.latest()["t"] == 3.0


def test_get_since_reports_overwritten_records():
    with RingBuffer.create({"v": ((), "int64")}, capacity=4) as ring:
        for i in range(3):
            ring.put({"v": i})
        assert ring.get_since(1)["v"].tolist() == [1, 2]
        assert len(ring.get_since(3)["v"]) == 0
        for i in range(3, 10):
            ring.put({"v": i})
        with pytest.raises(BufferOverrun, match="overwritten"):
            ring.get_since(2)
        recs = ring.get_since(2, skip_overwritten=True)
        assert recs["counter"].tolist() == recs["v"].tolist() == [7, 8, 9]


def test_put_rejects_records_that_do_not_match_layout():
    with RingBuffer.create({"a": ((3,), "uint8"), "b": ((), "float64")}, capacity=2) as ring:
        with pytest.raises(KeyError, match=r"missing \['b'\]"):
            ring.put({"a": [1, 2, 3]})
        with pytest.raises(KeyError, match=r"unexpected \['c'\]"):
            ring.put({"a": [1, 2, 3], "b": 1.0, "c": 2})
        with pytest.raises(ValueError):
            ring.put({"a": [1, 2], "b": 1.0})
    with pytest.raises(ValueError, match="reserved"):
        RingBuffer.create({"counter": ((), "int64")}, capacity=2)


class _Writer(DeviceProcess):
    def __init__(self, ring, duration_s):
        super().__init__("stress-writer")
        self.ring, self.duration_s = ring, duration_s

    def run_loop(self):
        writer(self.ring, self.duration_s)


class _Reader(DeviceProcess):
    def __init__(self, ring, duration_s, conn):
        super().__init__("stress-reader")
        self.ring, self.duration_s, self.conn = ring, duration_s, conn

    def run_loop(self):
        reader(self.ring, self.duration_s, 2, self.conn)


@pytest.mark.timeout(60)
def test_reader_never_sees_torn_frame_under_aggressive_writer():
    import multiprocess

    duration_s = 3.0
    ring = RingBuffer.create(stress_layout(), capacity=4, label="stress")
    pipes = [multiprocess.get_context("spawn").Pipe(duplex=False) for _ in range(2)]
    procs = [_Reader(ring, duration_s, send) for _, send in pipes] + [_Writer(ring, duration_s)]
    try:
        for p in procs:
            p.start()
        stats = [recv.recv() if recv.poll(duration_s + 20) else None for recv, _ in pipes]
        for p in procs:
            p.stop()
            p.check()
    finally:
        for p in procs:
            p.stop()
        ring.close()
    assert all(s is not None for s in stats), "a reader never reported"
    for s in stats:
        assert s["records"] > 50, s  # the readers really read frames while the writer ran
        assert s["torn"] == 0, s
        assert s["non_increasing"] == 0, s


def test_overwritten_record_detected_not_returned():
    # Simulate a writer lapping a reader mid-copy: the slot's sequence number no longer matches.
    with RingBuffer.create({"v": ((4,), "int64")}, capacity=3) as ring:
        for i in range(3):
            ring.put({"v": np.full(4, i)})
        counters = np.arange(1, 3)
        ring._seq[1].store(2 * 4 + 1)  # writer now busy rewriting slot 1 (counter 1 -> 4)
        out, ok, _lost = ring._copy(counters)
        assert ok.tolist() == [False, True]
        ring.max_retries = 3
        with pytest.raises(BufferOverrun):
            ring.get_last(2)
