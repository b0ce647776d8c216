"""``python -m robot.fake_ur``: run a fake UR controller in the foreground (TEST UTILITY).

Prints the address to give ur_rtde, then serves until Ctrl-C / SIGTERM. Example::

    python -m robot.fake_ur --version 3.15 --host 127.0.0.5
    python -m robot.fake_ur --config configs/fake_ur.yaml arm=sim
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from robot.config import ConfigError, StrictModel, add_config_arguments, config_from_args


class FakeURConfig(StrictModel):
    """YAML form of the fake controller's options (configs/fake_ur.yaml)."""

    version: str = "5.11"
    host: str | None = None
    port_offset: int = 0
    arm: str = "kinematic"
    initial_q: list[float] | None = None
    serial_number: str = "20185500001"
    script_start_delay_s: float = 0.05
    check_registers_in_use: bool = True
    arm_params: dict[str, Any] = {}
    gripper_params: dict[str, Any] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot.fake_ur", description=__doc__.splitlines()[0])
    add_config_arguments(parser, default=None)
    parser.add_argument("--version", dest="ur_version", help="controller version, e.g. 3.15 (CB3) or 5.11")
    parser.add_argument("--host", help="loopback address to listen on (default: a free 127.x.y.z)")
    parser.add_argument("--port-offset", type=int, help="added to every UR port (ur_rtde needs 0)")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(FakeURConfig, args)
    except ConfigError as exc:
        print(f"fake UR controller: config error: {exc}", file=sys.stderr)
        return 2
    if args.ur_version is not None:
        cfg.version = args.ur_version
    if args.host is not None:
        cfg.host = args.host
    if args.port_offset is not None:
        cfg.port_offset = args.port_offset

    from robot.fake_ur.handle import FakeURController

    options = cfg.model_dump(exclude={"version", "host", "arm", "initial_q"})
    if cfg.initial_q is not None:
        options["initial_q"] = tuple(cfg.initial_q)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fake = FakeURController(cfg.version, cfg.host, arm_kind=cfg.arm, **options).start()
    except (OSError, ValueError) as exc:
        print(f"fake UR controller: {exc}", file=sys.stderr)
        return 1
    try:
        st = fake.state()
        print(
            f"fake UR controller {st['version']} ({st['rate_hz']:.0f} Hz) at {fake.host}: "
            f"RTDE {30004 + cfg.port_offset}, dashboard {29999 + cfg.port_offset}, "
            f"script {30003 + cfg.port_offset}. Ctrl-C to stop.",
            flush=True,
        )
        print(json.dumps({"host": fake.host, "version": st["version"], "rate_hz": st["rate_hz"]}), flush=True)
        stop.wait()
    finally:
        fake.stop()
    print("fake UR controller stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
