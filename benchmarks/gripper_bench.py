"""Gripper link rate: URCap round trips and the gripper process's tick rate, against the fake.

    python benchmarks/gripper_bench.py [--seconds 3]

The real client path (robot/gripper/urcap.py) against the fake UR controller's URCap socket
(robot/fake_ur/gripper.py, its own process, loopback): ``GET POS`` round trips per second, one
``SET POS SPE FOR GTO`` round trip, and the gripper process (the shipped configs/gripper/robotiq_2f85.yaml,
only ``host`` set) at its configured rate: records per second in its state ring and the spread of
its tick times. Baseline, same run: a bare TCP echo on loopback (the floor under any request/reply
protocol on this host). The real URCap answers over the controller's network stack and the gripper's
RS-485 link (Robotiq documents the 2F-85's Modbus RTU at 115200 baud, ~200 Hz of register
exchanges); expect a real link to be slower than these loopback figures: each gripper tick costs
three round trips (POS, OBJ, FLT), which is why the shipped rate is 50 Hz.

Last line: ``{"get_rtt_p50_ms", "get_rtt_p99_ms", "gets_per_s", "echo_rtt_p50_ms", "set_rtt_p50_ms",
"process_rate_hz", "configured_rate_hz", "tick_gap_p99_ms"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robot.config import config_path, load_config  # noqa: E402
from robot.fake_ur.handle import FakeURController  # noqa: E402
from robot.gripper.config import GripperConfig  # noqa: E402
from robot.gripper.controller import GripperController  # noqa: E402
from robot.gripper.urcap import URCapClient  # noqa: E402


def echo_rtts(seconds: float) -> np.ndarray:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(256):
                conn.sendall(data)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    c = socket.create_connection(srv.getsockname())
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        c.sendall(b"GET POS\n")
        c.recv(256)
        out.append(time.perf_counter() - t0)
    c.close()
    srv.close()
    return np.asarray(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    echo = echo_rtts(args.seconds)
    with FakeURController("5.11", process=True, gripper_params={"activation_s": 0.1}) as fake:
        with URCapClient(fake.host) as c:
            gets = []
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end:
                t0 = time.perf_counter()
                c.get("POS")
                gets.append(time.perf_counter() - t0)
            sets = []
            for _ in range(200):
                t0 = time.perf_counter()
                c.set(POS=0, SPE=255, FOR=0, GTO=1)
                sets.append(time.perf_counter() - t0)
        gets, sets = np.asarray(gets), np.asarray(sets)
        cfg = load_config(GripperConfig, config_path("gripper/robotiq_2f85.yaml"), [f"host={fake.host}"])
        with GripperController(cfg) as g:
            c0 = g.state_ring.count
            time.sleep(args.seconds)
            recs = g.state_ring.get_since(c0)
        ticks = recs["tick_time"]
        rate = (len(ticks) - 1) / (ticks[-1] - ticks[0])
        gaps = np.diff(ticks)
    ms = 1e3
    res = {
        "get_rtt_p50_ms": round(float(np.median(gets)) * ms, 3),
        "get_rtt_p99_ms": round(float(np.percentile(gets, 99)) * ms, 3),
        "gets_per_s": round(len(gets) / args.seconds, 1),
        "echo_rtt_p50_ms": round(float(np.median(echo)) * ms, 3),
        "set_rtt_p50_ms": round(float(np.median(sets)) * ms, 3),
        "process_rate_hz": round(float(rate), 2),
        "configured_rate_hz": cfg.rate_hz,
        "tick_gap_p99_ms": round(float(np.percentile(gaps, 99)) * ms, 2),
    }
    print(f"{'what':<44} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
    print(
        f"{'baseline: TCP echo on loopback':<44} {np.median(echo) * ms:8.3f} {np.percentile(echo, 99) * ms:8.3f} {len(echo) / args.seconds:8.0f}"
    )
    print(
        f"{'URCap GET POS (fake, client path)':<44} {res['get_rtt_p50_ms']:8.3f} {res['get_rtt_p99_ms']:8.3f} {res['gets_per_s']:8.0f}"
    )
    print(
        f"{'URCap SET POS SPE FOR GTO':<44} {res['set_rtt_p50_ms']:8.3f} {np.percentile(sets, 99) * ms:8.3f} {'':>8}"
    )
    print(
        f"{'gripper process tick (3 GETs), gap':<44} {np.median(gaps) * ms:8.3f} {res['tick_gap_p99_ms']:8.2f} {rate:8.1f}"
    )
    print(f"gripper process: {rate:.1f} Hz achieved of {cfg.rate_hz:.0f} Hz configured")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
