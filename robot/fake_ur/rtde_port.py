"""The fake UR controller's RTDE port (30004): recipes, inputs into the registers, data packages out.

``RTDEPort`` is the part of ``robot.fake_ur.server.FakeURServer`` that speaks RTDE (protocol versions
1 and 2): protocol version (V), controller version (v), output/input recipe setup (O, I, with
NOT_FOUND / IN_USE like the controller), start/pause (S, P) and data packages (U) both ways.

Timing contract: one reader thread per connection decodes what arrives and writes input data packages
into the register table at once (under the controller's lock), stamping each input name's write time
for the RTDE watchdog (``robot.fake_ur.faults``); the controller script reads them at its next tick.
Every input data package carrying a command id is counted (``command_packets``) and every servoL one
logged (``servo_log``) as it arrives on the wire, even while the controller is frozen. Outputs go out
from the controller's tick thread (``_stream``), one data package per started connection at each tick
where its requested frequency is due (the controller's rate at most: a connection asking for more gets
a package every tick); sending never blocks the tick (``robot.fake_ur.connection``). ``timestamp`` in
outputs is the controller's own clock (whole tick periods), never the host's.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from robot.fake_ur import protocol as P
from robot.fake_ur.connection import Conn
from robot.fake_ur.modes import (
    JOINT_MODE_RUNNING,
    ROBOT_BIT_POWER_ON,
    ROBOT_BIT_PROGRAM_RUNNING,
    ROBOT_MODE_IDLE,
    RUNTIME_PLAYING,
)
from robot.fake_ur.script import Registers

SERVOL_COMMAND_ID = 24
RTDE_PROTOCOL_VERSION = 2


class RTDEConn(Conn):
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


class RTDEPort:
    """The RTDE port of ``FakeURServer`` (a mixin on the server's state: ``_lock``, ``regs``,
    ``_input_owner``, ``_input_write_time``, ``_frozen``, ``errors``, the arm and the modes)."""

    def _serve_rtde(self, conn: Conn) -> None:
        assert isinstance(conn, RTDEConn)
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

    def _count_command_packet(self, conn: RTDEConn, packet_type: int, payload: bytes) -> None:
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

    def _handle_rtde(self, conn: RTDEConn, packet_type: int, payload: bytes) -> bytes | None:
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

    def _stream(self, conns: list[RTDEConn], values: _Values, index: int) -> None:
        """Send tick ``index``'s outputs to each started connection whose frequency is due (tick thread)."""
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
