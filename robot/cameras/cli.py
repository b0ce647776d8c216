"""``rig cameras``: list connected RealSense cameras, live preview of a camera config.

    rig cameras list
    rig cameras preview [--config cameras/sim_2cam.yaml] [key=value ...] [--seconds N] [--animate]

``preview`` starts every camera of the config, shows the tiled preview window (if there is a
display) and prints per-camera fps, drops and latency once a second until Ctrl-C, ``q`` in the
window, ``--seconds``, or the end of every replayed recording (``backend: playback``; each camera's end
is reported once). ``--animate`` moves a simulated tool around so sim cameras show motion.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from robot.cameras.config import MultiCameraConfig
from robot.config import add_config_arguments, config_from_args

DEFAULT_CONFIG = "cameras/sim_2cam.yaml"


def _list() -> int:
    from robot.cameras.realsense import list_devices

    try:
        devices = list_devices()
    except RuntimeError as exc:
        print(f"rig cameras list: {exc}", file=sys.stderr)
        return 1
    if not devices:
        print(
            "No RealSense camera found. Check the USB3 cable and power, that no other program holds the "
            "camera, and (in a container) that /dev/bus/usb is passed through. Sim cameras need no hardware: "
            f"`rig cameras preview --config {DEFAULT_CONFIG}`."
        )
        return 0
    print(f"{'serial':<16} {'name':<34} {'firmware':<14} {'usb':<5}")
    for d in devices:
        warn = "  <- USB2: use a USB3 port/cable" if d["usb"].startswith("2") else ""
        print(f"{d['serial']:<16} {d['name']:<34} {d['firmware']:<14} {d['usb']:<5}{warn}")
    return 0


def _animate(ring, stop: threading.Event) -> None:
    from robot.sim.world_state import MAX_OBJECTS, WORLD_STATE_LAYOUT, ObjectKind

    rec = {k: np.zeros(shape, dtype) for k, (shape, dtype) in WORLD_STATE_LAYOUT.items()}
    rec["object_kind"][0] = ObjectKind.MARKER
    rec["object_pose"][0] = [0.6, -0.15, 0, 0, 0, 0]
    rec["object_size"][0] = [0.05, 0.05, 0.002]
    rec["object_kind"][1] = ObjectKind.T_BLOCK
    rec["object_pose"][1] = [0.45, 0.15, 0, 0, 0, 0.6]
    rec["object_size"][1] = [0.12, 0.03, 0.03]
    assert MAX_OBJECTS >= 2
    t0 = time.monotonic()
    while not stop.is_set():
        t = time.monotonic()
        a = 0.8 * (t - t0)
        rec["time"] = t
        rec["tcp_pose"] = np.array(
            [0.5 + 0.15 * np.cos(a), 0.2 * np.sin(a), 0.15 + 0.05 * np.sin(2 * a), np.pi, 0, 0]
        )
        ring.put(rec)
        time.sleep(0.01)


def _preview(args: argparse.Namespace) -> int:
    from robot.cameras.multi_camera import MultiCamera
    from robot.cameras.preview import Preview

    cfg = config_from_args(MultiCameraConfig, args)
    if not cfg.cameras:
        print(f"rig cameras preview: no cameras in {args.config}", file=sys.stderr)
        return 2
    world = None
    stop = threading.Event()
    thread = None
    if args.animate:
        from robot.shm.ring_buffer import RingBuffer
        from robot.sim.world_state import WORLD_STATE_LAYOUT

        world = RingBuffer.create(WORLD_STATE_LAYOUT, 256, label="world")
        thread = threading.Thread(target=_animate, args=(world, stop), daemon=True)
        thread.start()
    try:
        with MultiCamera(cfg, world_ring=world) as mc:
            preview = Preview({n: c.ring for n, c in mc.cameras.items()})
            with preview:
                if not preview.enabled:
                    print("no display: printing statistics only")
                t_end = time.monotonic() + args.seconds if args.seconds else float("inf")
                while time.monotonic() < t_end and not preview.quit_requested:
                    time.sleep(min(1.0, max(t_end - time.monotonic(), 0.0)))
                    mc.check()  # says when a replayed recording has ended
                    preview.check()
                    parts = []
                    for name, st in mc.stats().items():
                        if st["ended"]:
                            continue  # no stale figures of a finished recording
                        parts.append(
                            f"{name}: {st['fps']:5.1f} fps, {st['dropped']} dropped, "
                            f"latency {1000 * st['latency_mean_s']:.1f} ms"
                        )
                    if not parts:  # every camera replayed a recording to its end
                        break
                    print(" | ".join(parts), flush=True)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        if world is not None:
            world.close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig cameras", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list connected RealSense cameras (serial, model, firmware, USB)")
    p = sub.add_parser("preview", help="live tiled preview of a camera config with fps/drop counters")
    add_config_arguments(p, DEFAULT_CONFIG)
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--animate", action="store_true", help="sim: move a tool and objects around")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        return _list()
    import logging

    from robot.process import DeviceProcessError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return _preview(args)
    except (RuntimeError, DeviceProcessError) as exc:
        print(f"rig cameras preview: {exc}", file=sys.stderr)
        return 1
