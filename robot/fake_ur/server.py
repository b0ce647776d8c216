"""The fake UR controller server: RTDE (30004), dashboard (29999) and script ports (30001-30003).

One ``FakeURServer`` is one controller. It runs in the calling process on daemon threads:

* one acceptor thread per listening port, one reader thread per client connection;
* one controller thread ticking at the controller rate (125 Hz for a CB3 / major version 3, 500 Hz
  for an e-Series / major version 5): it runs one pass of the control script's main loop
  (``robot.fake_ur.script``), steps the arm model, and sends a data package to every started RTDE
  connection whose requested frequency is due at this tick.

Timing contract: the controller tick is scheduled on a fixed grid with ``robot.timing.RateLoop``
(sleep only, no spinning: the machine has 2 cores); a late tick is run at once and missed ticks are
skipped, never replayed in a burst. ``timestamp`` in data packages is the controller's own clock,
as UR's is time since controller boot: the tick index times the period (s), so it advances by whole
periods and a skipped tick skips its period. A client that requests a frequency above
the controller's rate gets the controller's rate (``state()["connections"]`` shows both).

All controller state sits behind one lock; fault injection methods may be called from any thread.

This module is the controller itself (its state, the tick, the listeners and the logs of what reached
the arm); each port's protocol lives beside it, one module each, composed into ``FakeURServer``:
``rtde_port`` (30004), ``dashboard_port`` (29999), ``script_port`` (30001-30003), the URCap gripper
socket (63352) in ``gripper``, and ``faults`` (fault injection and the RTDE watchdog). A port's module
docstring states its own timing contract.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.fake_ur.arm_model import UR5_HOME_Q, ArmModel, KinematicArm
from robot.fake_ur.connection import Conn
from robot.fake_ur.dashboard_port import DashboardPort
from robot.fake_ur.faults import Faults
from robot.fake_ur.gripper import FakeURCapGripper, GripperPort
from robot.fake_ur.modes import (
    ROBOT_MODE_RUNNING,
    RUNTIME_PLAYING,
    RUNTIME_STOPPED,
    SAFETY_BIT_NORMAL,
    SAFETY_MODE_NORMAL,
)
from robot.fake_ur.rtde_port import RTDEConn, RTDEPort
from robot.fake_ur.script import ControlScript, Registers
from robot.fake_ur.script_port import ScriptPort
from robot.timing import RateLoop

log = logging.getLogger("robot.fake_ur")


_LOG_CAPACITY = 60_000  # servoL packages / ticks kept by servo_log() and arm_log() (2 min at 500 Hz)
DEFAULT_PORTS = {
    "rtde": 30004,
    "dashboard": 29999,
    "primary": 30001,
    "secondary": 30002,
    "realtime": 30003,
    "gripper": 63352,  # the Robotiq URCap's gripper socket (robot/fake_ur/gripper.py)
}


def parse_version(version: str) -> tuple[int, int, int, int]:
    """``"5.11"`` / ``"5.11.6.108"`` -> (major, minor, bugfix, build). Raises ValueError."""
    parts = [int(p) for p in str(version).strip().split(".") if p != ""]
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"controller version {version!r} must look like 5.11 or 3.15.7.106331")
    defaults = [0, 0, 0, 0]
    defaults[: len(parts)] = parts
    return defaults[0], defaults[1], defaults[2], defaults[3]


def controller_rate_hz(major: int) -> float:
    """RTDE/controller rate of a UR generation: CB3 (major 3) 125 Hz, e-Series (5 and later) 500 Hz."""
    return 125.0 if major <= 3 else 500.0


@dataclass
class ServerOptions:
    """Options of one fake controller (see ``robot.fake_ur.config.FakeURConfig`` for the YAML form)."""

    version: str = "5.11"
    host: str | None = None  # None: pick a free loopback address 127.x.y.z
    port_offset: int = 0  # added to every UR port (ur_rtde itself only talks to the standard ports)
    serial_number: str = "20185500001"
    script_start_delay_s: float = 0.05  # upload -> runtime_state PLAYING
    initial_q: tuple[float, ...] = tuple(float(v) for v in UR5_HOME_Q)
    check_registers_in_use: bool = True  # answer IN_USE when another connection owns an input
    # Keyword arguments of the arm model's parameters; for arm_kind "sim" the fields of
    # robot.sim.ur5_model.UR5ModelParams (e.g. {"action_delay_s": 0.03}).
    arm_params: dict[str, Any] = field(default_factory=dict)
    # Keyword arguments of robot.fake_ur.gripper.FakeURCapGripper (e.g. {"closed_count": 230}).
    gripper_params: dict[str, Any] = field(default_factory=dict)
    # Process mode: the fake's scheduling niceness (as the arm controller's ``nice``) and real-time
    # priority (SCHED_RR; 0: none), where permitted (robot.fake_ur.handle._prioritize says why).
    nice: int | None = -10
    rt_priority: int = 10
    # A sim world behind the gripper: {"task": "pick_place", "params": {...}, "seed": 0} (None: none).
    gripper_world: dict[str, Any] | None = None


class FakeURServer(RTDEPort, DashboardPort, ScriptPort, GripperPort, Faults):
    """A fake UR controller on loopback that the real ur_rtde client talks to.

    Args:
        options: version, address and behaviour (``ServerOptions``).
        arm: the arm model; a ``KinematicArm`` at ``options.initial_q`` by default.

    ``start()`` binds the listeners (raising ``OSError`` with the address when a port is taken) and
    starts the threads; ``stop()`` closes every socket and joins the threads (bounded, ~1 s).
    """

    def __init__(self, options: ServerOptions | None = None, arm: ArmModel | None = None):
        self.options = options or ServerOptions()
        self.version = parse_version(self.options.version)
        self.rate_hz = controller_rate_hz(self.version[0])
        self.arm: ArmModel = (
            arm if arm is not None else KinematicArm(self.options.initial_q, **self.options.arm_params)
        )
        self.gripper = FakeURCapGripper(**self.options.gripper_params)
        if self.options.gripper_world is not None:
            from robot.sim.tasks import make_task
            from robot.sim.world import SimWorld

            spec = self.options.gripper_world
            self.gripper.world = SimWorld(make_task(spec["task"], **spec.get("params", {})))
            self.gripper.world.reset(int(spec.get("seed", 0)))
        self.host: str | None = self.options.host
        self.ports = {k: v + self.options.port_offset for k, v in DEFAULT_PORTS.items()}

        self._lock = threading.RLock()
        self.regs = Registers()
        self.runtime_state = RUNTIME_STOPPED
        self.robot_mode = ROBOT_MODE_RUNNING
        self.safety_mode = SAFETY_MODE_NORMAL
        self.safety_status_bits = 1 << SAFETY_BIT_NORMAL
        self.script: ControlScript | None = None
        self.script_uploads = 0
        self.foreign_scripts: deque[str] = deque(maxlen=20)  # uploaded non-rtde_control programs
        self.last_script: str | None = None
        self.dashboard_log: deque[str] = deque(maxlen=200)
        self.tcp_offset = np.zeros(6)
        self.payload_mass_kg = 0.0
        self.payload_cog_m = np.zeros(3)
        self._pending_program: tuple[float, str] | None = None
        self._input_owner: dict[str, int] = {}
        self._input_write_time: dict[str, float] = {}
        self._watchdog: tuple[str, float, float] | None = None  # (input name, min Hz, armed at)
        self.watchdog_trips = 0
        self.register_offset: int | None = None  # of the last program started (0, or 24 upper range)
        self.command_counts: Counter[int] = Counter()  # command id -> times executed, all programs
        self.command_packets: Counter[int] = Counter()  # command id -> data packages received carrying it
        self.unsupported_commands: Counter[int] = Counter()
        # What reached the arm, for benchmarks and tests that measure at the arm's input:
        # every servoL data package as it arrived on the wire, and the arm's TCP at every tick.
        self._servo_log: deque[tuple[float, ...]] = deque(maxlen=_LOG_CAPACITY)
        self._servo_logged = 0
        self._arm_log: deque[tuple[float, ...]] = deque(maxlen=_LOG_CAPACITY)
        self._arm_logged = 0
        self._frozen = False
        self._refusing = False
        self._listeners: dict[str, socket.socket] = {}
        self._conns: list[Conn] = []
        self._threads: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self._next_conn_id = 1
        self._t0 = time.monotonic()
        self._ticks = 0
        self._tick_overruns = 0
        self.errors: deque[str] = deque(maxlen=100)  # protocol errors seen (newest last)

    # ================================================================ lifecycle
    def start(self) -> FakeURServer:
        """Bind the listeners and start the controller. Returns self."""
        self._bind_all()
        self.arm.reset(np.asarray(self.options.initial_q, dtype=np.float64), time.monotonic())
        self._spawn(self._tick_loop, "fake-ur-tick")
        for kind in self._listeners:
            self._spawn(lambda k=kind: self._accept_loop(k), f"fake-ur-accept-{kind}")
        log.info("fake UR %s listening on %s", self.options.version, self.host)
        return self

    def stop(self) -> None:
        """Close every socket and stop the threads. Idempotent."""
        self._stop_event.set()
        self._close_listeners()
        for c in self._snapshot_conns():
            c.close()
        for th in self._threads:
            if th is not threading.current_thread():
                th.join(timeout=2.0)
        self._threads.clear()

    def __enter__(self) -> FakeURServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        th = threading.Thread(target=self._guard(fn, name), name=name, daemon=True)
        self._threads.append(th)
        th.start()

    def _guard(self, fn: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # a crash here would silently kill the fake: record it
                if not self._stop_event.is_set():
                    log.exception("fake UR thread %s crashed", name)
                    self.errors.append(f"{name}: {exc!r}")

        return run

    def _bind_all(self) -> None:
        candidates = [self.host] if self.host else _loopback_candidates()
        last_error: OSError | None = None
        for host in candidates:
            try:
                self._listeners = self._bind_host(host)
                self.host = host
                return
            except OSError as exc:
                last_error = exc
        raise OSError(
            f"fake UR controller: could not listen on {candidates[-1] if self.host else 'any 127.x.y.z'} "
            f"ports {sorted(self.ports.values())}: {last_error}. Is another controller or fake running there?"
        )

    def _bind_host(self, host: str) -> dict[str, socket.socket]:
        socks: dict[str, socket.socket] = {}
        try:
            for kind, port in self.ports.items():
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks[kind] = s
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(8)
                s.settimeout(0.1)
        except OSError:
            for s in socks.values():
                s.close()
            raise
        return socks

    def _close_listeners(self) -> None:
        with self._lock:
            listeners, self._listeners = self._listeners, {}
        for s in listeners.values():
            with contextlib.suppress(OSError):
                s.close()

    def _snapshot_conns(self) -> list[Conn]:
        with self._lock:
            return list(self._conns)

    # ================================================================ accepting
    def _accept_loop(self, kind: str) -> None:
        while not self._stop_event.is_set():
            with self._lock:
                listener = self._listeners.get(kind)
            if listener is None:  # closed by refuse_connections(); reopened later
                time.sleep(0.05)
                continue
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                time.sleep(0.05)
                continue
            sock.settimeout(0.1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if kind == "rtde":
                with self._lock:
                    conn: Conn = RTDEConn(sock, peer, self._next_conn_id)
                    self._next_conn_id += 1
                handler: Callable[[Conn], None] = self._serve_rtde  # type: ignore[assignment]
            elif kind == "dashboard":
                conn = Conn(sock, kind, peer)
                handler = self._serve_dashboard
            elif kind == "gripper":
                conn = Conn(sock, kind, peer)
                handler = self._serve_gripper
            else:
                conn = Conn(sock, kind, peer)
                handler = self._serve_script
            with self._lock:
                self._conns.append(conn)
            self._spawn(lambda c=conn, h=handler: self._serve(c, h), f"fake-ur-{kind}-{peer[1]}")

    def _serve(self, conn: Conn, handler: Callable[[Conn], None]) -> None:
        try:
            handler(conn)
        finally:
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
                if isinstance(conn, RTDEConn):
                    for name in [n for n, cid in self._input_owner.items() if cid == conn.conn_id]:
                        del self._input_owner[name]

    def _recv_chunks(self, conn: Conn, swallow_when_frozen: bool = True):
        """Yield received byte chunks until EOF, error, close or server stop (while frozen, chunks
        are swallowed unless ``swallow_when_frozen`` is False: the caller then drops them itself)."""
        while not self._stop_event.is_set() and not conn.closed:
            try:
                data = conn.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if self._frozen and swallow_when_frozen:  # a hung controller: requests vanish unanswered
                continue
            yield data

    # ================================================================ controller tick
    def _tick_loop(self) -> None:
        loop = RateLoop(self.rate_hz, spin_s=0.0)
        while not self._stop_event.is_set():
            tick = loop.wait()
            if tick.overrun:
                self._tick_overruns += 1
            t = time.monotonic()
            with self._lock:
                self._tick_locked(t)
                # The controller's own clock: whole periods of its tick count (a late tick's skipped
                # periods are skipped, never compressed), as a real controller's ``timestamp``.
                values = self._output_values_locked(t, tick.index * loop.period_s)
                target = self.script.last_servo_target if self.script is not None else None
                target_xyz = target[:3] if target is not None and len(target) == 6 else (np.nan,) * 3
                self._arm_log.append(
                    (t, tick.index * loop.period_s, *self.arm.actual_tcp_pose[:3], *target_xyz)
                )
                self._arm_logged += 1
                conns = [c for c in self._conns if isinstance(c, RTDEConn) and c.started]
                frozen = self._frozen
                self._ticks += 1
                index = self._ticks
            if not frozen:
                self._stream(conns, values, index)

    def _tick_locked(self, t: float) -> None:
        if self._pending_program is not None and t >= self._pending_program[0]:
            self._start_program_locked(self._pending_program[1], t)
            self._pending_program = None
        self._check_watchdog_locked(t)
        if self.script is not None and self.runtime_state == RUNTIME_PLAYING:
            self.script.tick(t)
            self.tcp_offset = self.script.tcp_offset
            self.payload_mass_kg = self.script.payload_mass_kg
            self.payload_cog_m = self.script.payload_cog_m
            if self.script.stopped:
                self.runtime_state = RUNTIME_STOPPED
        self.arm.step(t)
        if self.gripper.world is not None:
            self.gripper.step_world(t, self.arm.actual_tcp_pose)

    # ================================================================ logs and state
    def servo_log(self, since: int | None = None) -> tuple[int, list[tuple[float, ...]]]:
        """servoL data packages received since the ``since``-th one (a count returned earlier; None:
        only the count):
        ``(count, [(host monotonic s on arrival, x, y, z, rx, ry, rz), ...])``, oldest first. Logged
        as they arrive on the wire (even while frozen), before the script reads the registers; the
        newest ``_LOG_CAPACITY`` are kept."""
        with self._lock:
            n = self._servo_logged
            k = min(n - (n if since is None else since), len(self._servo_log))
            return n, list(self._servo_log)[len(self._servo_log) - k :] if k > 0 else []

    def arm_log(self, since: int | None = None) -> tuple[int, list[tuple[float, ...]]]:
        """The arm's TCP position at each controller tick since the ``since``-th: ``(count,
        [(host monotonic s, controller time s, x, y, z, tx, ty, tz), ...])``, oldest first (as
        ``servo_log``); ``t*``: the servoL target the script held at that tick (NaN before any)."""
        with self._lock:
            n = self._arm_logged
            k = min(n - (n if since is None else since), len(self._arm_log))
            return n, list(self._arm_log)[len(self._arm_log) - k :] if k > 0 else []

    def set_joint_positions(self, q: Any) -> None:
        """Teleport the arm to joints ``q`` (rad), at rest (test setup only)."""
        with self._lock:
            self.arm.reset(np.asarray(q, dtype=np.float64), time.monotonic())

    def state(self) -> dict[str, Any]:
        """A JSON-friendly snapshot of the controller (joints, pose, modes, connections, counters)."""
        with self._lock:
            arm = self.arm
            script = self.script
            return {
                "host": self.host,
                "version": ".".join(str(v) for v in self.version),
                "rate_hz": self.rate_hz,
                "time_s": time.monotonic() - self._t0,
                "runtime_state": self.runtime_state,
                "program_running": self.runtime_state == RUNTIME_PLAYING,
                "robot_mode": self.robot_mode,
                "safety_mode": self.safety_mode,
                "safety_status_bits": self.safety_status_bits,
                "frozen": self._frozen,
                "refusing_connections": self._refusing,
                "actual_q": arm.actual_q.tolist(),
                "actual_qd": arm.actual_qd.tolist(),
                "actual_tcp_pose": arm.actual_tcp_pose.tolist(),
                "target_q": arm.target_q.tolist(),
                "target_tcp_pose": arm.target_tcp_pose.tolist(),
                "tcp_offset": self.tcp_offset.tolist(),
                "payload_mass_kg": self.payload_mass_kg,
                "payload_cog_m": self.payload_cog_m.tolist(),
                "script_uploads": self.script_uploads,
                "foreign_scripts": len(self.foreign_scripts),
                "watchdog": list(self._watchdog[:2]) if self._watchdog else None,
                "watchdog_trips": self.watchdog_trips,
                "register_offset": self.register_offset,
                "command_counts": {str(k): v for k, v in self.command_counts.items()},
                "command_packets": {str(k): v for k, v in self.command_packets.items()},
                "unsupported_commands": {str(k): v for k, v in self.unsupported_commands.items()},
                "last_servo_target": (
                    script.last_servo_target.tolist()
                    if script is not None and script.last_servo_target is not None
                    else None
                ),
                "last_servo_args": (
                    dict(
                        zip(
                            ("speed", "acceleration", "time_s", "lookahead_time_s", "gain"),
                            script.last_servo_args.tolist(),
                            strict=True,
                        )
                    )
                    if script is not None and script.last_servo_args is not None
                    else None
                ),
                "dashboard_commands": list(self.dashboard_log),
                "connections": [
                    {
                        "kind": c.kind,
                        "peer_port": c.peer[1],
                        **(
                            {
                                "id": c.conn_id,
                                "started": c.started,
                                "outputs": len(c.output_recipe.names) if c.output_recipe else 0,
                                "input_recipes": len(c.input_recipes),
                                "requested_frequency_hz": c.requested_frequency_hz,
                                "stream_frequency_hz": self.rate_hz / c.decimation,
                                "packets_sent": c.packets_sent,
                                "packets_received": c.packets_received,
                            }
                            if isinstance(c, RTDEConn)
                            else {}
                        ),
                    }
                    for c in self._conns
                ],
                "ticks": self._ticks,
                "tick_overruns": self._tick_overruns,
                "errors": list(self.errors),
            }


def _loopback_candidates(n: int = 64) -> list[str]:
    """Random 127.x.y.z addresses (all of 127/8 is loopback on Linux), avoiding 127.0.0.1."""
    rng = random.Random()
    out = []
    for _ in range(n):
        out.append(f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    return out
