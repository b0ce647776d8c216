"""RTDE wire format for the fake UR controller: packet framing, variable types, recipes.

Facts follow ``/work/shared/UR_PROTOCOL.md`` (ur_rtde 1.6.5 seen on the wire) and UR's RTDE guide.
Every number on the wire is big-endian. A packet is ``uint16 size`` (including the 3 header bytes),
``uint8 type``, then the payload.

This module is pure (no sockets, no threads) so that it can be unit-tested on bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Packet types (ASCII letters on the wire).
RTDE_REQUEST_PROTOCOL_VERSION = ord("V")
RTDE_GET_URCONTROL_VERSION = ord("v")
RTDE_TEXT_MESSAGE = ord("M")
RTDE_DATA_PACKAGE = ord("U")
RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS = ord("O")
RTDE_CONTROL_PACKAGE_SETUP_INPUTS = ord("I")
RTDE_CONTROL_PACKAGE_START = ord("S")
RTDE_CONTROL_PACKAGE_PAUSE = ord("P")

HEADER = struct.Struct(">HB")
MAX_PACKET_BYTES = 65535

# RTDE type name -> struct format of one value.
TYPE_FORMATS: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT32": "I",
    "UINT64": "Q",
    "INT32": "i",
    "DOUBLE": "d",
    "VECTOR3D": "3d",
    "VECTOR6D": "6d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
}
TYPE_WIDTH: dict[str, int] = {
    "VECTOR3D": 3,
    "VECTOR6D": 6,
    "VECTOR6INT32": 6,
    "VECTOR6UINT32": 6,
}

# Controller outputs (what a client may subscribe to), by the types UR documents.
_OUTPUT_TYPES: dict[str, str] = {
    "timestamp": "DOUBLE",
    "target_q": "VECTOR6D",
    "target_qd": "VECTOR6D",
    "target_qdd": "VECTOR6D",
    "target_current": "VECTOR6D",
    "target_moment": "VECTOR6D",
    "actual_q": "VECTOR6D",
    "actual_qd": "VECTOR6D",
    "actual_current": "VECTOR6D",
    "actual_current_window": "VECTOR6D",
    "actual_current_as_torque": "VECTOR6D",
    "joint_control_output": "VECTOR6D",
    "actual_TCP_pose": "VECTOR6D",
    "actual_TCP_speed": "VECTOR6D",
    "actual_TCP_force": "VECTOR6D",
    "target_TCP_pose": "VECTOR6D",
    "target_TCP_speed": "VECTOR6D",
    "actual_digital_input_bits": "UINT64",
    "joint_temperatures": "VECTOR6D",
    "actual_execution_time": "DOUBLE",
    "robot_mode": "INT32",
    "joint_mode": "VECTOR6INT32",
    "safety_mode": "INT32",
    "safety_status": "INT32",
    "actual_tool_accelerometer": "VECTOR3D",
    "speed_scaling": "DOUBLE",
    "target_speed_fraction": "DOUBLE",
    "actual_momentum": "DOUBLE",
    "actual_main_voltage": "DOUBLE",
    "actual_robot_voltage": "DOUBLE",
    "actual_robot_current": "DOUBLE",
    "actual_joint_voltage": "VECTOR6D",
    "actual_digital_output_bits": "UINT64",
    "runtime_state": "UINT32",
    "elbow_position": "VECTOR3D",
    "elbow_velocity": "VECTOR3D",
    "robot_status_bits": "UINT32",
    "safety_status_bits": "UINT32",
    "analog_io_types": "UINT32",
    "standard_analog_input0": "DOUBLE",
    "standard_analog_input1": "DOUBLE",
    "standard_analog_output0": "DOUBLE",
    "standard_analog_output1": "DOUBLE",
    "io_current": "DOUBLE",
    "tool_mode": "UINT32",
    "tool_analog_input_types": "UINT32",
    "tool_analog_input0": "DOUBLE",
    "tool_analog_input1": "DOUBLE",
    "tool_output_voltage": "INT32",
    "tool_output_current": "DOUBLE",
    "tool_temperature": "DOUBLE",
    "tcp_force_scalar": "DOUBLE",
    "output_bit_registers0_to_31": "UINT32",
    "output_bit_registers32_to_63": "UINT32",
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    "payload": "DOUBLE",
    "payload_cog": "VECTOR3D",
    "payload_inertia": "VECTOR6D",
    "script_control_line": "UINT32",
    "ft_raw_wrench": "VECTOR6D",
    "tcp_offset": "VECTOR6D",
}

# Controller inputs (what a client may write).
_INPUT_TYPES: dict[str, str] = {
    "speed_slider_mask": "UINT32",
    "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8",
    "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8",
    "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8",
    "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8",
    "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE",
    "standard_analog_output_1": "DOUBLE",
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    "external_force_torque": "VECTOR6D",
}

N_REGISTERS = 48  # int and double registers 0..47 (24..47 are the "upper range")
_REGISTER_RE = re.compile(r"^(input|output)_(int|double|bit)_register_(\d+)$")
_REGISTER_TYPES = {"int": "INT32", "double": "DOUBLE", "bit": "BOOL"}

NOT_FOUND = "NOT_FOUND"
IN_USE = "IN_USE"


def register_name(name: str) -> tuple[str, str, int] | None:
    """Split ``input_int_register_3`` into ``("input", "int", 3)``; None for other names."""
    m = _REGISTER_RE.match(name)
    if m is None:
        return None
    direction, kind, index = m.group(1), m.group(2), int(m.group(3))
    if kind == "bit":
        if not 64 <= index <= 127:
            return None
    elif not 0 <= index < N_REGISTERS:
        return None
    return direction, kind, index


def output_type(name: str) -> str | None:
    """RTDE type of an output variable, or None if the controller has no such output."""
    if name in _OUTPUT_TYPES:
        return _OUTPUT_TYPES[name]
    reg = register_name(name)
    if reg is not None:
        # Both input and output registers can be read back as outputs.
        return _REGISTER_TYPES[reg[1]]
    return None


def input_type(name: str) -> str | None:
    """RTDE type of an input variable, or None if the controller accepts no such input."""
    if name in _INPUT_TYPES:
        return _INPUT_TYPES[name]
    reg = register_name(name)
    if reg is not None and reg[0] == "input":
        return _REGISTER_TYPES[reg[1]]
    return None


def encode_packet(packet_type: int, payload: bytes = b"") -> bytes:
    """Frame ``payload`` as one RTDE packet of ``packet_type``."""
    size = HEADER.size + len(payload)
    if size > MAX_PACKET_BYTES:
        raise ValueError(f"RTDE packet of {size} bytes exceeds the 16-bit size field")
    return HEADER.pack(size, packet_type) + payload


@dataclass
class PacketReader:
    """Reassembles RTDE packets from a byte stream (TCP gives arbitrary splits)."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Add received bytes; yield every complete ``(type, payload)`` now available."""
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            size, packet_type = HEADER.unpack_from(self._buffer, 0)
            if size < HEADER.size:
                raise ValueError(f"malformed RTDE header: size {size} < 3")
            if len(self._buffer) < size:
                return
            payload = bytes(self._buffer[HEADER.size : size])
            del self._buffer[:size]
            yield packet_type, payload


def parse_names(payload: bytes) -> list[str]:
    """Variable names of a setup request (``a,b,c,``; the client sends a trailing comma)."""
    text = payload.decode("ascii", errors="replace")
    return [n.strip() for n in text.split(",") if n.strip()]


class Recipe:
    """An ordered list of typed variables, packable to / unpackable from a data package body."""

    def __init__(self, recipe_id: int, names: Sequence[str], types: Sequence[str]):
        if len(names) != len(types):
            raise ValueError("names and types differ in length")
        self.recipe_id = recipe_id
        self.names = list(names)
        self.types = list(types)
        self.valid = all(t in TYPE_FORMATS for t in self.types)
        fmt = ">" + "".join(TYPE_FORMATS.get(t, "") for t in self.types)
        self._struct = struct.Struct(fmt)
        self._codes = _format_codes(fmt)

    @property
    def size_bytes(self) -> int:
        return self._struct.size

    def pack(self, values: dict[str, Any]) -> bytes:
        """Pack ``values[name]`` for every name (vectors as sequences) into a data package body."""
        flat: list[Any] = []
        for name, typ in zip(self.names, self.types, strict=True):
            v = values[name]
            width = TYPE_WIDTH.get(typ)
            if width is None:
                flat.append(v)
            else:
                seq = list(np.asarray(v).ravel())
                if len(seq) != width:
                    raise ValueError(f"{name}: expected {width} values, got {len(seq)}")
                flat.extend(seq)
        return self._struct.pack(*_cast(flat, self._codes))

    def unpack(self, body: bytes) -> dict[str, Any]:
        """Unpack a data package body (without the recipe id byte) into ``{name: value}``."""
        if len(body) != self._struct.size:
            raise ValueError(
                f"data package for recipe {self.recipe_id} has {len(body)} bytes, expected {self._struct.size}"
            )
        flat = self._struct.unpack(body)
        out: dict[str, Any] = {}
        i = 0
        for name, typ in zip(self.names, self.types, strict=True):
            width = TYPE_WIDTH.get(typ)
            if width is None:
                out[name] = flat[i]
                i += 1
            else:
                out[name] = list(flat[i : i + width])
                i += width
        return out


_INT_CODES = set("BIQi")


def _format_codes(fmt: str) -> list[str]:
    codes: list[str] = []
    num = ""
    for ch in fmt.lstrip("<>!=@"):
        if ch.isdigit():
            num += ch
            continue
        codes.extend(ch * int(num or "1"))
        num = ""
    return codes


def _cast(flat: list[Any], codes: list[str]) -> list[Any]:
    # struct refuses numpy floats for integer codes; cast by format code.
    out = []
    for code, v in zip(codes, flat, strict=True):
        if code in _INT_CODES:
            out.append(int(v))
        elif code == "?":
            out.append(bool(v))
        else:
            out.append(float(v))
    return out


def encode_version_reply(accepted: bool) -> bytes:
    return encode_packet(RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">B", 1 if accepted else 0))


def encode_controller_version(major: int, minor: int, bugfix: int, build: int) -> bytes:
    return encode_packet(RTDE_GET_URCONTROL_VERSION, struct.pack(">IIII", major, minor, bugfix, build))


def encode_setup_reply(packet_type: int, recipe_id: int, types: Sequence[str]) -> bytes:
    return encode_packet(packet_type, struct.pack(">B", recipe_id) + ",".join(types).encode("ascii"))


def encode_start_reply(accepted: bool) -> bytes:
    return encode_packet(RTDE_CONTROL_PACKAGE_START, struct.pack(">B", 1 if accepted else 0))


def encode_pause_reply(accepted: bool) -> bytes:
    return encode_packet(RTDE_CONTROL_PACKAGE_PAUSE, struct.pack(">B", 1 if accepted else 0))


def encode_data_package(recipe: Recipe, values: dict[str, Any]) -> bytes:
    return encode_packet(RTDE_DATA_PACKAGE, struct.pack(">B", recipe.recipe_id) + recipe.pack(values))
