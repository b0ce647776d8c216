"""Fixed-rate loop benchmark: RateLoop (sleep + spin, on a fixed grid) vs a plain time.sleep loop.

Both run at 500 Hz for --seconds each, one after the other, while another process keeps the other
core busy. Period error = |interval between consecutive wake-ups - nominal period|. Overruns: ticks
RateLoop flagged late (plain loop: intervals longer than 1.5 periods).

Usage: python benchmarks/timing_bench.py [--seconds S] [--rate-hz R]
"""

from __future__ import annotations

import argparse
import json
import time

import multiprocess
import numpy as np

from robot.timing import RateLoop


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def run_rate_loop(rate_hz: float, seconds: float) -> tuple[np.ndarray, int]:
    loop = RateLoop(rate_hz)
    n = int(seconds * rate_hz)
    times = np.empty(n)
    for i in range(n):
        times[i] = loop.wait().time
    return np.diff(times), loop.overruns


def run_sleep_loop(rate_hz: float, seconds: float) -> np.ndarray:
    period = 1.0 / rate_hz
    n = int(seconds * rate_hz)
    times = np.empty(n)
    last = time.monotonic()
    for i in range(n):
        # The common naive loop: sleep for what is left of the period since the last wake-up.
        time.sleep(max(0.0, period - (time.monotonic() - last)))
        last = time.monotonic()
        times[i] = last
    return np.diff(times)


def stats_ms(intervals: np.ndarray, period: float) -> dict:
    err = np.abs(intervals - period) * 1e3
    return {"p50": float(np.median(err)), "p99": float(np.percentile(err, 99)), "max": float(err.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate-hz", type=float, default=500.0)
    args = ap.parse_args()
    period = 1.0 / args.rate_hz
    ctx = multiprocess.get_context("spawn")
    burner = ctx.Process(target=_burn, args=(2 * args.seconds + 5,), daemon=True)
    burner.start()
    time.sleep(1.0)
    try:
        rl_int, overruns = run_rate_loop(args.rate_hz, args.seconds)
        sl_int = run_sleep_loop(args.rate_hz, args.seconds)
    finally:
        burner.terminate()
        burner.join(5)
    rl, sl = stats_ms(rl_int, period), stats_ms(sl_int, period)
    sl_over = int(np.sum(sl_int > 1.5 * period))
    rl_rate = 1.0 / rl_int.mean()
    sl_rate = 1.0 / sl_int.mean()
    print(f"timing_bench: {args.rate_hz:.0f} Hz for {args.seconds:.0f} s each, other core busy")
    print(f"  {'loop':<22}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'overruns':>10}{'mean Hz':>10}")
    print(
        f"  {'RateLoop (project)':<22}{rl['p50']:>9.3f}{rl['p99']:>9.3f}{rl['max']:>9.3f}{overruns:>10}{rl_rate:>10.1f}"
    )
    print(
        f"  {'time.sleep loop':<22}{sl['p50']:>9.3f}{sl['p99']:>9.3f}{sl['max']:>9.3f}{sl_over:>10}{sl_rate:>10.1f}"
    )
    print(f"  p99 ratio project/plain: {rl['p99'] / sl['p99']:.2f} (target <= 0.5, and p99 < 0.5 ms)")
    print(
        json.dumps(
            {
                "period_err_p50_ms": round(rl["p50"], 4),
                "period_err_p99_ms": round(rl["p99"], 4),
                "period_err_max_ms": round(rl["max"], 3),
                "overruns": overruns,
                "sleep_period_err_p99_ms": round(sl["p99"], 4),
                "sleep_period_err_max_ms": round(sl["max"], 3),
                "mean_rate_hz": round(rl_rate, 2),
                "sleep_mean_rate_hz": round(sl_rate, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
