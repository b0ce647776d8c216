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
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.fake_ur import gripper as urcap_gripper
from robot.fake_ur import protocol as P
from robot.fake_ur.arm_model import UR5_HOME_Q, ArmModel, KinematicArm
from robot.fake_ur.script import ControlScript, Registers, register_offset_from_script
from robot.timing import RateLoop

log = logging.getLogger("robot.fake_ur")

# UR enumerations (RTDE guide).
RUNTIME_STOPPING = 0
RUNTIME_STOPPED = 1
RUNTIME_PLAYING = 2
RUNTIME_PAUSING = 3
RUNTIME_PAUSED = 4
RUNTIME_RESUMING = 5
ROBOT_MODE_POWER_OFF = 3
ROBOT_MODE_IDLE = 5
ROBOT_MODE_RUNNING = 7
SAFETY_MODE_NORMAL = 1
SAFETY_MODE_PROTECTIVE_STOP = 3
SAFETY_MODE_ROBOT_EMERGENCY_STOP = 7
JOINT_MODE_RUNNING = 253

# safety_status_bits
SAFETY_BIT_NORMAL = 0
SAFETY_BIT_PROTECTIVE_STOPPED = 2
SAFETY_BIT_ROBOT_EMERGENCY_STOPPED = 6
SAFETY_BIT_EMERGENCY_STOPPED = 7
SAFETY_BIT_STOPPED_DUE_TO_SAFETY = 10
# robot_status_bits
ROBOT_BIT_POWER_ON = 0
ROBOT_BIT_PROGRAM_RUNNING = 1

CONTROL_SCRIPT_END_MARKER = "# NODE_CONTROL_LOOP_ENDS"
SERVOL_COMMAND_ID = 24
_LOG_CAPACITY = 60_000  # servoL packages / ticks kept by servo_log() and arm_log() (2 min at 500 Hz)
RTDE_PROTOCOL_VERSION = 2
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


class _Conn:
    """A client socket with a non-blocking send buffer shared by the reader and the tick thread."""

    MAX_PENDING_BYTES = 4 * 1024 * 1024

    def __init__(self, sock: socket.socket, kind: str, peer: Any):
        self.sock = sock
        self.kind = kind
        self.peer = peer
        self.closed = False
        self._pending = bytearray()
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> bool:
        """Queue and push ``data`` without blocking; False (and closed) when the peer is gone."""
        with self._send_lock:
            if self.closed:
                return False
            self._pending += data
            return self._flush_locked()

    def flush(self) -> bool:
        with self._send_lock:
            if self.closed:
                return False
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        while self._pending:
            try:
                n = self.sock.send(self._pending, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_locked()
                return False
            del self._pending[:n]
        if len(self._pending) > self.MAX_PENDING_BYTES:  # peer stopped reading for seconds
            self._close_locked()
            return False
        return True

    def close(self) -> None:
        with self._send_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class _RTDEConn(_Conn):
    def __init__(self, sock: socket.socket, peer: Any, conn_id: int):
        super().__init__(sock, "rtde", peer)
        self.conn_id = conn_id
        self.protocol_version = 1
        self.output_recipe: P.Recipe | None = None
        self.requested_frequency_hz = 0.0
        self.input_recipes: dict[int, P.Recipe] = {}
        self.started = False
        self.decimation = 1
        self.packets_sent = 0
        self.packets_received = 0


class _Values(dict):
    """Output values of one tick; register names resolve lazily from the register table."""

    def __init__(self, base: dict[str, Any], regs: Registers):
        super().__init__(base)
        self._regs = regs

    def __missing__(self, name: str) -> Any:
        reg = P.register_name(name)
        if reg is None:
            return 0
        direction, kind, index = reg
        table = {
            ("input", "int"): self._regs.input_int,
            ("input", "double"): self._regs.input_double,
            ("input", "bit"): self._regs.input_bits,
            ("output", "int"): self._regs.output_int,
            ("output", "double"): self._regs.output_double,
            ("output", "bit"): self._regs.output_bits,
        }[(direction, kind)]
        return table[index]


class FakeURServer:
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
        self.gripper = urcap_gripper.FakeURCapGripper(**self.options.gripper_params)
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
        self._conns: list[_Conn] = []
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

    def _snapshot_conns(self) -> list[_Conn]:
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
                    conn: _Conn = _RTDEConn(sock, peer, self._next_conn_id)
                    self._next_conn_id += 1
                handler: Callable[[_Conn], None] = self._serve_rtde  # type: ignore[assignment]
            elif kind == "dashboard":
                conn = _Conn(sock, kind, peer)
                handler = self._serve_dashboard
            elif kind == "gripper":
                conn = _Conn(sock, kind, peer)
                handler = self._serve_gripper
            else:
                conn = _Conn(sock, kind, peer)
                handler = self._serve_script
            with self._lock:
                self._conns.append(conn)
            self._spawn(lambda c=conn, h=handler: self._serve(c, h), f"fake-ur-{kind}-{peer[1]}")

    def _serve(self, conn: _Conn, handler: Callable[[_Conn], None]) -> None:
        try:
            handler(conn)
        finally:
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
                if isinstance(conn, _RTDEConn):
                    for name in [n for n, cid in self._input_owner.items() if cid == conn.conn_id]:
                        del self._input_owner[name]

    def _recv_chunks(self, conn: _Conn, swallow_when_frozen: bool = True):
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

    # ================================================================ RTDE
    def _serve_rtde(self, conn: _Conn) -> None:
        assert isinstance(conn, _RTDEConn)
        reader = P.PacketReader()
        for data in self._recv_chunks(conn, swallow_when_frozen=False):
            try:
                packets = list(reader.feed(data))
            except ValueError as exc:
                self.errors.append(f"rtde connection {conn.conn_id}: {exc}")
                return
            for packet_type, payload in packets:
                self._count_command_packet(conn, packet_type, payload)
                if self._frozen:  # a hung controller: requests vanish unanswered
                    continue
                reply = self._handle_rtde(conn, packet_type, payload)
                if reply:
                    conn.send(reply)

    def _count_command_packet(self, conn: _RTDEConn, packet_type: int, payload: bytes) -> None:
        """``command_packets``: every input data package that carries a command id (the first int
        register of the control interface: ``input_int_register_0``, or 24 in upper-range mode),
        counted per id as it arrives on the wire, even while frozen. Unlike ``command_counts`` (what
        the script executed: a streamed servoL counts once per run of packets), this shows whether
        a client is still sending: one servoL call is one package."""
        if packet_type != P.RTDE_DATA_PACKAGE or not payload:
            return
        recipe = conn.input_recipes.get(payload[0])
        if recipe is None:
            return
        try:
            values = recipe.unpack(payload[1:])
        except ValueError:
            return
        offset = 0 if "input_int_register_0" in values else 24
        cmd = values.get(f"input_int_register_{offset}")
        if cmd is not None:
            t = time.monotonic()
            with self._lock:
                self.command_packets[int(cmd)] += 1
                if int(cmd) == SERVOL_COMMAND_ID:
                    pose = [float(values.get(f"input_double_register_{offset + i}", 0.0)) for i in range(6)]
                    self._servo_log.append((t, *pose))
                    self._servo_logged += 1

    def _handle_rtde(self, conn: _RTDEConn, packet_type: int, payload: bytes) -> bytes | None:
        if packet_type == P.RTDE_REQUEST_PROTOCOL_VERSION:
            (requested,) = struct.unpack_from(">H", payload, 0)
            accepted = requested in (1, 2)
            if accepted:
                conn.protocol_version = requested
            return P.encode_version_reply(accepted)
        if packet_type == P.RTDE_GET_URCONTROL_VERSION:
            return P.encode_controller_version(*self.version)
        if packet_type == P.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS:
            if conn.protocol_version >= 2:
                (freq,) = struct.unpack_from(">d", payload, 0)
                names = P.parse_names(payload[8:])
            else:
                freq, names = self.rate_hz, P.parse_names(payload)
            types = [P.output_type(n) or P.NOT_FOUND for n in names]
            recipe = P.Recipe(1, names, types)
            with self._lock:
                conn.output_recipe = recipe if recipe.valid else None
                conn.requested_frequency_hz = float(freq)
                stream_hz = min(max(float(freq), 1.0), self.rate_hz)
                conn.decimation = max(1, round(self.rate_hz / stream_hz))
            return P.encode_setup_reply(packet_type, recipe.recipe_id if recipe.valid else 0, types)
        if packet_type == P.RTDE_CONTROL_PACKAGE_SETUP_INPUTS:
            names = P.parse_names(payload)
            with self._lock:
                types = []
                for n in names:
                    typ = P.input_type(n)
                    owner = self._input_owner.get(n)
                    if typ is None:
                        types.append(P.NOT_FOUND)
                    elif self.options.check_registers_in_use and owner is not None and owner != conn.conn_id:
                        types.append(P.IN_USE)
                    else:
                        types.append(typ)
                recipe_id = len(conn.input_recipes) + 1
                recipe = P.Recipe(recipe_id, names, types)
                if recipe.valid:
                    conn.input_recipes[recipe_id] = recipe
                    for n in names:
                        self._input_owner[n] = conn.conn_id
            return P.encode_setup_reply(packet_type, recipe_id if recipe.valid else 0, types)
        if packet_type == P.RTDE_CONTROL_PACKAGE_START:
            ok = conn.output_recipe is not None or bool(conn.input_recipes)
            with self._lock:
                conn.started = ok
            return P.encode_start_reply(ok)
        if packet_type == P.RTDE_CONTROL_PACKAGE_PAUSE:
            with self._lock:
                conn.started = False
            return P.encode_pause_reply(True)
        if packet_type == P.RTDE_DATA_PACKAGE:
            conn.packets_received += 1
            if not payload:
                return None
            recipe = conn.input_recipes.get(payload[0])
            if recipe is None:
                self.errors.append(f"rtde connection {conn.conn_id}: data for unknown recipe {payload[0]}")
                return None
            try:
                values = recipe.unpack(payload[1:])
            except ValueError as exc:
                self.errors.append(f"rtde connection {conn.conn_id}: {exc}")
                return None
            with self._lock:
                self._write_inputs(values)
            return None
        self.errors.append(f"rtde connection {conn.conn_id}: unexpected packet type {packet_type}")
        return None

    def _write_inputs(self, values: dict[str, Any]) -> None:
        regs = self.regs
        t = time.monotonic()
        for name, v in values.items():
            self._input_write_time[name] = t
            reg = P.register_name(name)
            if reg is None:
                continue  # digital outputs, speed slider, external wrench: accepted, not modelled
            _, kind, index = reg
            if kind == "int":
                regs.input_int[index] = v
            elif kind == "double":
                regs.input_double[index] = v
            else:
                regs.input_bits[index] = bool(v)

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
                conns = [c for c in self._conns if isinstance(c, _RTDEConn) and c.started]
                frozen = self._frozen
                self._ticks += 1
                index = self._ticks
            if frozen:
                continue
            for c in conns:
                if c.output_recipe is None or index % c.decimation:
                    c.flush()
                    continue
                try:
                    packet = P.encode_data_package(c.output_recipe, values)
                except (KeyError, ValueError, struct.error) as exc:
                    self.errors.append(f"rtde connection {c.conn_id}: cannot encode outputs: {exc}")
                    c.close()
                    continue
                if c.send(packet):
                    c.packets_sent += 1

    def _tick_locked(self, t: float) -> None:
        if self._pending_program is not None and t >= self._pending_program[0]:
            self._start_program_locked(self._pending_program[1], t)
            self._pending_program = None
        if self._watchdog is not None and self.runtime_state == RUNTIME_PLAYING:
            name, min_hz, armed_at = self._watchdog
            last = max(self._input_write_time.get(name, armed_at), armed_at)
            if t - last > 1.0 / min_hz:
                log.warning("fake UR: RTDE watchdog on %s expired; stopping the program", name)
                self.watchdog_trips += 1
                self._watchdog = None
                self._stop_program_locked(RUNTIME_STOPPED)
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

    def _output_values_locked(self, t: float, controller_time_s: float) -> _Values:
        arm = self.arm
        robot_bits = 0
        if self.robot_mode >= ROBOT_MODE_IDLE:
            robot_bits |= 1 << ROBOT_BIT_POWER_ON
        if self.runtime_state == RUNTIME_PLAYING:
            robot_bits |= 1 << ROBOT_BIT_PROGRAM_RUNNING
        zeros6 = (0.0,) * 6
        base = {
            "timestamp": controller_time_s,
            "target_q": arm.target_q,
            "target_qd": arm.target_qd,
            "target_qdd": zeros6,
            "target_current": zeros6,
            "target_moment": zeros6,
            "actual_q": arm.actual_q,
            "actual_qd": arm.actual_qd,
            "actual_current": zeros6,
            "actual_current_window": zeros6,
            "actual_current_as_torque": zeros6,
            "joint_control_output": zeros6,
            "actual_TCP_pose": arm.actual_tcp_pose,
            "actual_TCP_speed": arm.actual_tcp_speed,
            "actual_TCP_force": zeros6,
            "target_TCP_pose": arm.target_tcp_pose,
            "target_TCP_speed": arm.target_tcp_speed,
            "joint_temperatures": (30.0,) * 6,
            "actual_execution_time": 0.2,
            "robot_mode": self.robot_mode,
            "joint_mode": (JOINT_MODE_RUNNING,) * 6,
            "safety_mode": self.safety_mode,
            "safety_status": self.safety_mode,
            "actual_tool_accelerometer": (0.0, 0.0, 9.81),
            "speed_scaling": 1.0 if self.runtime_state == RUNTIME_PLAYING else 0.0,
            "target_speed_fraction": 1.0,
            "actual_main_voltage": 48.0,
            "actual_robot_voltage": 48.0,
            "actual_robot_current": 0.5,
            "actual_joint_voltage": (48.0,) * 6,
            "runtime_state": self.runtime_state,
            "elbow_position": (0.0, 0.0, 0.0),
            "elbow_velocity": (0.0, 0.0, 0.0),
            "robot_status_bits": robot_bits,
            "safety_status_bits": self.safety_status_bits,
            "payload": self.payload_mass_kg,
            "payload_cog": self.payload_cog_m,
            "payload_inertia": zeros6,
            "ft_raw_wrench": zeros6,
            "tcp_offset": self.tcp_offset,
            "tool_output_voltage": 24,
        }
        return _Values(base, self.regs)

    # ================================================================ script ports
    def _serve_script(self, conn: _Conn) -> None:
        buffer = ""
        for data in self._recv_chunks(conn):
            buffer += data.decode("utf-8", errors="replace")
            if not buffer.rstrip(" \t").endswith("end\n"):
                continue
            if CONTROL_SCRIPT_END_MARKER in buffer and buffer.lstrip().startswith("def "):
                with self._lock:
                    self.script_uploads += 1
                    self.last_script = buffer
                    # The controller compiles and starts a new program, replacing the running one.
                    self._stop_program_locked(RUNTIME_STOPPED)
                    self._pending_program = (time.monotonic() + self.options.script_start_delay_s, buffer)
                buffer = ""
            elif re.match(r"\s*(def|sec)\s+\w+\(\)\s*:", buffer):
                with self._lock:
                    self.foreign_scripts.append(buffer)
                buffer = ""

    def _start_program_locked(self, text: str, t: float) -> None:
        if self.safety_status_bits & ~(1 << SAFETY_BIT_NORMAL) or self.robot_mode != ROBOT_MODE_RUNNING:
            log.warning("fake UR: program upload ignored, robot not in normal running mode")
            return
        self.script = ControlScript(
            self.regs,
            self.arm,
            register_offset_from_script(text),
            t,
            protective_stop=self.inject_protective_stop,
            set_watchdog=self._set_watchdog_locked,
            command_counts=self.command_counts,
            unsupported=self.unsupported_commands,
        )
        self._watchdog = None
        self.register_offset = self.script.offset
        self.script.tcp_offset = self.tcp_offset.copy()
        self.script.payload_mass_kg = self.payload_mass_kg
        self.script.payload_cog_m = self.payload_cog_m.copy()
        self.runtime_state = RUNTIME_PLAYING

    def _stop_program_locked(self, runtime_state: int) -> None:
        if self.script is not None:
            self.script.abort_motion(time.monotonic())
            self.script.stopped = True
        self.script = None
        self.runtime_state = runtime_state
        self.arm.stop(10.0, time.monotonic())

    def _set_watchdog_locked(self, input_name: str, min_frequency_hz: float) -> None:
        # rtde_set_watchdog(name, min_frequency, "stop"): the program stops when no data package
        # updates ``input_name`` for 1 / min_frequency s.
        if min_frequency_hz > 0:
            self._watchdog = (input_name, min_frequency_hz, time.monotonic())
        else:
            self._watchdog = None

    # ================================================================ dashboard
    def _serve_dashboard(self, conn: _Conn) -> None:
        conn.send(b"Connected: Universal Robots Dashboard Server\n")
        buffer = b""
        for data in self._recv_chunks(conn):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode("utf-8", errors="replace").strip()
                if not command:
                    continue
                reply = self._dashboard_reply(command)
                if self._frozen:
                    continue
                conn.send((reply + "\n").encode())
                if command == "quit":
                    return

    def _serve_gripper(self, conn: _Conn) -> None:
        """URCap gripper socket: one reply per request (none while frozen: a silent socket). A request
        ends at a newline, or without one (as the URCap's own driver sends its GETs): at once when it
        is a complete ``GET XXX``, else once no byte has followed it for ``gripper.QUIET_S``."""
        buffer = b""
        while not self._stop_event.is_set() and not conn.closed:
            try:
                ready = select.select([conn.sock], [], [], urcap_gripper.QUIET_S if buffer else 0.1)[0]
                data = conn.sock.recv(65536) if ready else None
            except (OSError, ValueError):
                return
            if data == b"":
                return
            if data is None:  # quiet: what is buffered is a request without a newline
                if buffer and not self._frozen:
                    conn.send(self.gripper.handle(buffer.decode("ascii", "replace"), terminated=False))
                buffer = b""
                continue
            if self._frozen:  # a hung controller: requests vanish unanswered
                buffer = b""
                continue
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                conn.send(self.gripper.handle(line.decode("ascii", "replace")))
            if urcap_gripper.COMPLETE_GET.match(buffer):
                conn.send(self.gripper.handle(buffer.decode("ascii"), terminated=False))
                buffer = b""

    def gripper_set_object(self, width_m: float | None, inside: bool = False) -> None:
        """Put an object of ``width_m`` (m) between the gripper's fingers (None: none); ``inside``: the
        pads are inside a hollow object of that inner width (opening stops on it, OBJ 1)."""
        self.gripper.set_object(width_m, inside)

    def gripper_inject_fault(self, code: int) -> None:
        """Set the gripper's FLT code (a major fault stops it until a reset; 0x0B, 0x0E are minor)."""
        self.gripper.inject_fault(code)

    def gripper_state(self) -> dict[str, Any]:
        """The fake gripper's state (see FakeURCapGripper.state)."""
        return self.gripper.state()

    def _dashboard_reply(self, command: str) -> str:
        major, minor, bugfix, build = self.version
        lower = command.lower()
        with self._lock:
            self.dashboard_log.append(command)
            if lower == "polyscopeversion":
                return f"URSoftware {major}.{minor}.{bugfix}.{build} (Jan 01 2024)"
            if lower == "get serial number":
                return self.options.serial_number
            if lower == "is in remote control":
                return "true"
            if lower == "stop":
                self._pending_program = None
                self._stop_program_locked(RUNTIME_STOPPED)
                return "Stopped"
            if lower == "pause":
                if self.runtime_state == RUNTIME_PLAYING:
                    self.runtime_state = RUNTIME_PAUSED
                    self.arm.stop(10.0, time.monotonic())
                    return "Pausing program"
                return "Failed to execute: Pause"
            if lower == "play":
                if self.script is not None and self.runtime_state == RUNTIME_PAUSED and self._safety_normal():
                    self.runtime_state = RUNTIME_PLAYING
                    return "Starting program"
                return "Failed to execute: Play"
            if lower == "power on":
                if self.robot_mode < ROBOT_MODE_IDLE:
                    self.robot_mode = ROBOT_MODE_IDLE
                return "Powering on"
            if lower == "power off":
                self._stop_program_locked(RUNTIME_STOPPED)
                self.robot_mode = ROBOT_MODE_POWER_OFF
                return "Powering off"
            if lower == "brake release":
                if self.robot_mode == ROBOT_MODE_IDLE:
                    self.robot_mode = ROBOT_MODE_RUNNING
                return "Brake releasing"
            if lower == "unlock protective stop":
                if self.safety_mode == SAFETY_MODE_PROTECTIVE_STOP:
                    self._set_safety_normal_locked()
                return "Protective stop releasing"
            if lower == "close safety popup":
                return "closing safety popup"
            if lower == "close popup":
                return "closing popup"
            if lower.startswith("popup"):
                return "showing popup"
            if lower == "robotmode":
                names = {3: "POWER_OFF", 5: "IDLE", 7: "RUNNING"}
                return f"Robotmode: {names.get(self.robot_mode, str(self.robot_mode))}"
            if lower in ("safetymode", "safetystatus"):
                names = {1: "NORMAL", 3: "PROTECTIVE_STOP", 7: "ROBOT_EMERGENCY_STOP"}
                label = "Safetymode" if lower == "safetymode" else "Safetystatus"
                return f"{label}: {names.get(self.safety_mode, str(self.safety_mode))}"
            if lower == "get robot model":
                return "UR5"
            if lower.startswith("addtolog"):
                return "Added log message"
            if lower == "isprogramsaved":
                return "true rtde_control"
            if lower == "get loaded program":
                return "No program loaded"
            if lower == "restart safety":
                return "Restarting safety"
            if lower == "shutdown":
                return "Shutting down"
            if lower == "running":
                return f"Program running: {str(self.runtime_state == RUNTIME_PLAYING).lower()}"
            if lower == "programstate":
                names = {RUNTIME_STOPPED: "STOPPED", RUNTIME_PLAYING: "PLAYING", RUNTIME_PAUSED: "PAUSED"}
                return f"{names.get(self.runtime_state, 'STOPPED')} rtde_control"
            if lower == "quit":
                return "Disconnected"
        return f"could not understand: '{command}'"

    # ================================================================ faults and state
    def _safety_normal(self) -> bool:
        return self.safety_mode == SAFETY_MODE_NORMAL

    def _set_safety_normal_locked(self) -> None:
        self.safety_mode = SAFETY_MODE_NORMAL
        self.safety_status_bits = 1 << SAFETY_BIT_NORMAL

    def inject_protective_stop(self) -> None:
        """Protective stop: the arm halts, the program pauses, safety bits 2 and 10 are set.

        ur_rtde then returns False from blocking calls and ``isProtectiveStopped()`` is True.
        ``clear_faults()`` (or dashboard ``unlock protective stop`` + ``play``) recovers.
        """
        with self._lock:
            t = time.monotonic()
            self.safety_mode = SAFETY_MODE_PROTECTIVE_STOP
            self.safety_status_bits = (1 << SAFETY_BIT_PROTECTIVE_STOPPED) | (
                1 << SAFETY_BIT_STOPPED_DUE_TO_SAFETY
            )
            self.arm.halt(t)
            if self.script is not None:
                self.script.abort_motion(t)
            if self.runtime_state == RUNTIME_PLAYING:
                self.runtime_state = RUNTIME_PAUSED

    def inject_emergency_stop(self) -> None:
        """Robot emergency stop: the arm halts and powers off, the program stops, safety bits 6, 7, 10.

        ur_rtde then returns False from blocking calls and ``isEmergencyStopped()`` is True. After
        ``clear_faults()`` the control script must be uploaded again (``reuploadScript()`` or a new
        ``RTDEControlInterface``).
        """
        with self._lock:
            t = time.monotonic()
            self.safety_mode = SAFETY_MODE_ROBOT_EMERGENCY_STOP
            self.safety_status_bits = (
                (1 << SAFETY_BIT_ROBOT_EMERGENCY_STOPPED)
                | (1 << SAFETY_BIT_EMERGENCY_STOPPED)
                | (1 << SAFETY_BIT_STOPPED_DUE_TO_SAFETY)
            )
            self.arm.halt(t)
            self._pending_program = None
            self._stop_program_locked(RUNTIME_STOPPED)
            self.robot_mode = ROBOT_MODE_POWER_OFF

    def clear_faults(self) -> None:
        """Undo every injected fault: safety back to normal, robot powered and running, a paused
        program resumed, connections accepted and answered again."""
        with self._lock:
            self._set_safety_normal_locked()
            self.robot_mode = ROBOT_MODE_RUNNING
            if self.script is not None and self.runtime_state == RUNTIME_PAUSED:
                self.runtime_state = RUNTIME_PLAYING
            self._frozen = False
        self.accept_connections()

    def drop_connections(self, refuse_new: bool = False) -> int:
        """Close every client socket (RTDE, dashboard, script) at once; returns how many.

        With ``refuse_new`` the listeners close too, so reconnects are refused until
        ``accept_connections()`` or ``clear_faults()``. The running program keeps running, as on a
        real controller whose network link dropped.
        """
        if refuse_new:
            with self._lock:
                self._refusing = True
            self._close_listeners()
        conns = self._snapshot_conns()
        for c in conns:
            c.close()
        return len(conns)

    def accept_connections(self) -> None:
        """Reopen the listeners closed by ``drop_connections(refuse_new=True)``."""
        with self._lock:
            if not self._refusing or self._stop_event.is_set():
                return
            self._refusing = False
            assert self.host is not None
            self._listeners = self._bind_host(self.host)

    def freeze(self) -> None:
        """A controller that stops answering: sockets stay open but nothing is sent (no data
        packages, no replies) and requests are swallowed. The arm and program keep running.
        ur_rtde notices after 2.5 s without data. ``unfreeze()``/``clear_faults()`` ends it."""
        with self._lock:
            self._frozen = True

    def unfreeze(self) -> None:
        with self._lock:
            self._frozen = False

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
                            if isinstance(c, _RTDEConn)
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
