"""Camera pipeline throughput: 2 and 4 simulated 640x480@30 fps cameras with episode recording on.

For each setup it runs the real processes (camera processes rendering a moving scene from a sim world
ring written at 100 Hz, one H.264 writer process per camera) for ``--seconds`` and reports per camera:
delivered fps, capture drops (frame_index gaps), writer drops (frames the encoder lost) and its
largest backlog, and the CPU share of every process (from /proc, % of one core). Baseline, same run:
the 2 cameras without recording.

    python benchmarks/camera_bench.py [--seconds 30]

The last line is one JSON object: fps_2cam, drops_2cam, fps_4cam, drops_4cam (mean fps per camera,
total drops = capture + writer), plus the baseline, backlog figures and the machine's load average
(other work on a shared 2-core machine starves the pipeline; read the figures with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.cameras.config import MultiCameraConfig  # noqa: E402
from robot.cameras.multi_camera import MultiCamera  # noqa: E402
from robot.config import config_path, load_config  # noqa: E402
from robot.shm.ring_buffer import RingBuffer  # noqa: E402
from robot.sim.world_state import WORLD_STATE_LAYOUT, ObjectKind  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return float("nan")


def world_writer(ring: RingBuffer, stop: threading.Event) -> None:
    rec = {k: np.zeros(shape, dtype) for k, (shape, dtype) in WORLD_STATE_LAYOUT.items()}
    for i, (kind, pose, size) in enumerate(
        [
            (ObjectKind.MARKER, [0.6, -0.15, 0, 0, 0, 0], [0.05, 0.05, 0.002]),
            (ObjectKind.T_BLOCK, [0.45, 0.15, 0, 0, 0, 0.6], [0.12, 0.03, 0.03]),
            (ObjectKind.BOX, [0.65, 0.2, 0, 0, 0, 0.3], [0.05, 0.05, 0.05]),
        ]
    ):
        rec["object_kind"][i], rec["object_pose"][i], rec["object_size"][i] = kind, pose, size
    t0 = time.monotonic()
    while not stop.is_set():
        t = time.monotonic()
        a = 0.8 * (t - t0)
        rec["time"] = t
        rec["tcp_pose"] = np.array([0.5 + 0.15 * np.cos(a), 0.2 * np.sin(a), 0.15, np.pi, 0, 0])
        ring.put(rec)
        time.sleep(0.01)


def camera_setup(n: int) -> MultiCameraConfig:
    base = load_config(MultiCameraConfig, config_path("cameras/sim_2cam.yaml"))
    cams = dict(base.cameras)
    extra_poses = [[0.5, -0.85, 0.6, -2.1451, 0.0, 0.0], [0.5, 0.85, 0.6, 2.1451, 0.0, 0.0]]
    for i in range(n - len(cams)):
        cfg = cams["scene"].model_copy(deep=True)
        cfg.name = f"side{i}"
        cfg.sim.pose = extra_poses[i % 2]
        cfg.sim.look_at = [0.5, 0.0, 0.05]
        cams[cfg.name] = cfg
    for cfg in cams.values():
        cfg.ring_capacity = 60  # 2 s at 30 fps: the writer may fall that far behind before it drops
    return MultiCameraConfig(cameras=dict(list(cams.items())[:n]), video=base.video)


def run(n: int, seconds: float, record: bool, out_dir: Path) -> dict:
    world = RingBuffer.create(WORLD_STATE_LAYOUT, 256, label="benchworld")
    stop = threading.Event()
    th = threading.Thread(target=world_writer, args=(world, stop), daemon=True)
    th.start()
    try:
        with MultiCamera(camera_setup(n), world_ring=world, preload_video=record) as mc:
            time.sleep(2.0)  # let start-up (process spawns) settle
            if record:
                mc.start_recording(out_dir, episode=n)
            counts0 = {k: c.ring.count for k, c in mc.cameras.items()}
            s0 = {k: c.stats() for k, c in mc.cameras.items()}
            procs = {f"camera {k}": c.pid for k, c in mc.cameras.items()}
            procs.update({f"writer {k}": r.pid for k, r in mc._recorders.items()})
            procs["main"] = os.getpid()
            cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
            t0 = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - t0
            cpu1 = {k: cpu_seconds(p) for k, p in procs.items()}
            load = os.getloadavg()[0]
            counts1 = {k: c.ring.count for k, c in mc.cameras.items()}
            s1 = mc.stats()
            results = mc.stop_recording() and mc.last_recording if record else {}
            mc.check()
    finally:
        stop.set()
        th.join()
        world.close()
    per_cam = {}
    for k in counts0:
        per_cam[k] = {
            "fps": (counts1[k] - counts0[k]) / wall,
            "capture_drops": s1[k]["dropped"] - s0[k]["dropped"],
            "writer_drops": results[k]["dropped"] if record else 0,
            "max_backlog": results[k]["max_backlog"] if record else 0,
            "encode_ms": s1[k].get("video_encode_ms", float("nan")),
        }
    cpu = {k: 100 * (cpu1[k] - cpu0[k]) / wall for k in procs}
    return {"cams": per_cam, "cpu": cpu, "load": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="camera_bench_") as tmp:
        for label, n, record in (
            ("2 cams, no recording (baseline)", 2, False),
            ("2 cams + recording", 2, True),
            ("4 cams + recording", 4, True),
        ):
            print(f"running {label} for {args.seconds:g} s ...", flush=True)
            runs[label] = run(n, args.seconds, record, Path(tmp))
    print()
    print(
        f"{'setup':<34} {'camera':<8} {'fps':>6} {'cap drops':>9} {'wr drops':>8} {'backlog':>7} {'enc ms':>6}"
    )
    summary = {}
    for label, r in runs.items():
        for k, c in r["cams"].items():
            print(
                f"{label:<34} {k:<8} {c['fps']:6.2f} {c['capture_drops']:9d} {c['writer_drops']:8d} "
                f"{c['max_backlog']:7d} {c['encode_ms']:6.2f}"
            )
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in r["cpu"].items())
        print(f"{'':<34} CPU (% of one core): {cpu}")
        print(f"{'':<34} machine load average (1 min) at the end: {r['load']:.1f} on {os.cpu_count()} cores")
        summary[label] = {
            "fps": float(np.mean([c["fps"] for c in r["cams"].values()])),
            "drops": int(sum(c["capture_drops"] + c["writer_drops"] for c in r["cams"].values())),
            "max_backlog": int(max(c["max_backlog"] for c in r["cams"].values())),
        }
    base, two, four = (summary[k] for k in runs)
    print(
        json.dumps(
            {
                "fps_2cam": round(two["fps"], 2),
                "drops_2cam": two["drops"],
                "fps_4cam": round(four["fps"], 2),
                "drops_4cam": four["drops"],
                "fps_2cam_baseline_no_recording": round(base["fps"], 2),
                "drops_2cam_baseline_no_recording": base["drops"],
                "max_backlog_2cam": two["max_backlog"],
                "max_backlog_4cam": four["max_backlog"],
                "seconds": args.seconds,
                "load_avg_2cam": round(runs[list(runs)[1]]["load"], 1),
                "load_avg_4cam": round(runs[list(runs)[2]]["load"], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
