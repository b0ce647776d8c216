import time

from robot.timing import RateLoop, precise_wait


def test_precise_wait_never_returns_early():
    for delay in (0.0, 0.0005, 0.003):
        deadline = time.monotonic() + delay
        woke = precise_wait(deadline)
        assert woke >= deadline and time.monotonic() >= deadline


def test_rate_loop_skips_missed_periods_instead_of_bursting():
    loop = RateLoop(100.0)  # 10 ms grid
    first = loop.wait()
    time.sleep(0.035)  # overrun by 3+ periods
    late = loop.wait()
    after = loop.wait()
    assert late.overrun and late.skipped >= 2
    assert loop.overruns >= 1
    # Back on the grid: the tick after the late one is the next grid point, not a burst of old ones.
    assert after.index == late.index + 1
    assert abs(after.deadline - (loop.start_time + after.index * loop.period_s)) < 1e-9
    assert after.time >= after.deadline and first.index == 0


def test_rate_loop_does_not_drift():
    loop = RateLoop(200.0)
    ticks = [loop.wait() for _ in range(100)]
    # Deadlines are on the fixed grid whatever the wake-up jitter (no accumulated drift).
    for t in ticks:
        assert abs(t.deadline - (loop.start_time + t.index * loop.period_s)) < 1e-9
        assert t.time >= t.deadline
    assert ticks[-1].index >= 99
