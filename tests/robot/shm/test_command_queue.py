import numpy as np
import pytest

from robot.process import DeviceProcess
from robot.shm.command_queue import CommandQueue, QueueFull


def test_queue_full_at_capacity_and_get_all_drains():
    with CommandQueue.create({"pose": ((6,), "float64"), "cmd": ((), "int8")}, capacity=3) as q:
        for i in range(3):
            q.put({"pose": np.full(6, i), "cmd": i})
        with pytest.raises(QueueFull, match="full"):
            q.put({"pose": np.zeros(6), "cmd": 9})
        out = q.get_all()
        assert out["cmd"].tolist() == [0, 1, 2]
        assert len(q) == 0 and len(q.get_all()["cmd"]) == 0
        q.put({"pose": np.ones(6), "cmd": 5})  # space again after draining
        assert q.get_all()["cmd"].tolist() == [5]


class _Consumer(DeviceProcess):
    """Drains the queue and echoes what it got, in order, into a ring (the child's only output)."""

    def __init__(self, queue, conn, n_expected):
        super().__init__("queue-consumer")
        self.queue, self.conn, self.n_expected = queue, conn, n_expected

    def run_loop(self):
        got = []
        while len(got) < self.n_expected and not self.should_stop():
            got.extend(self.queue.get_all()["value"].tolist())
        self.conn.send(got)


@pytest.mark.timeout(60)
def test_queue_preserves_order_across_processes():
    import multiprocess

    n = 2000
    recv, send = multiprocess.get_context("spawn").Pipe(duplex=False)
    with CommandQueue.create({"value": ((), "int64"), "pad": ((16,), "float64")}, capacity=8) as q:
        with _Consumer(q, send, n) as consumer:
            i = full = 0
            while i < n:
                try:
                    q.put({"value": i, "pad": np.full(16, i)})
                    i += 1
                except QueueFull:
                    full += 1
                    consumer.check()
            assert recv.poll(30)
            got = recv.recv()
    assert got == list(range(n))
