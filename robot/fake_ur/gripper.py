"""The Robotiq URCap's gripper socket (port 63352) of the fake UR controller (TEST UTILITY).

What it reproduces of a 2F-85 behind the URCap, and the public source for each point. "Driver": the
URCap's own URScript driver (the ``rq_*`` functions a URCap program carries: ``rq_set_var``,
``rq_get_var``, ``rq_set_pos``, ``rq_is_motion_complete``, ``rq_print_gripper_fault_code``...);
"ur_rtde": the ``robotiq_gripper.py`` example that ur_rtde's documentation points to; "manual": the
Robotiq 2F-85/140 manual's register tables.

* Requests. ``SET NAME VALUE [NAME VALUE ...]`` -> ``ack`` (three bytes, no newline: the driver's
  ``is_ack`` reads exactly three bytes, ur_rtde compares the reply with ``b"ack"``). ``GET NAME``
  ending in a newline (ur_rtde; URScript's ``socket_get_var``) -> ``NAME VALUE\\n``. A request with no
  newline (the driver sends its GETs with ``socket_send_string``, which adds none) is answered too,
  with the bare value (the driver reads 1 byte for STA/OBJ, 2 for FLT, 3 for PRE and compares digits):
  at once for a complete ``GET XXX``, otherwise once no byte has arrived for ``QUIET_S``. Unknown
  variables -> ``?``.
* Formats: ``FLT`` is two decimal digits (the driver's ``is_FLT_*`` compare ``'0','0'``, ``'0','5'``,
  ``'0','7'``, ``'1','1'`` (0x0B), ``'1','4'`` (0x0E), ``'1','5'`` (0x0F)); ``PRE`` three digits (the
  driver's ``rq_set_pos`` decodes ``gPRE[1..3]`` as hundreds, tens, units); STA/OBJ one digit.
* Variables: ``SID`` (the driver's ``rq_init_connection``/``rq_set_sid``: ``socket_set_var("SID",
  ...)``, then reads the ack), ``ARD`` (the driver) and ``ADR`` (ur_rtde's name for the same auto-release
  direction), ``COU`` (motor current, manual's gCU, ``GET COU`` in public clients; reported as 0 at rest,
  not measured), ``NCY``/``PCO``/``DST`` (the driver's cycle count, connection-problem and driver-state
  prints).
* Activation: ``ACT 0`` resets (STA 0, faults cleared); ``ACT 1`` from reset -> STA 1 for
  ``activation_s`` -> STA 3. A go-to before activation sets FLT 07 and is ignored (manual; the driver's
  "The activation must be set prior to action (0x07)").
* ``PRE`` echoes the requested position on every ``SET POS``, whatever ``GTO`` (manual: gPR is the echo
  of rPR; the driver's ``rq_set_pos`` sets GTO 0, then POS, and loops until PRE equals it).
* Motion: ``GTO 1`` with ``POS``/``SPE``/``FOR`` changed is a go-to: ``OBJ`` reads 0 from that request
  on (ur_rtde's ``move_and_wait_for_pos`` waits for PRE, then for OBJ != 0: an OBJ still at the last
  motion's 3 would end it before the fingers move); the fingers move at SPE's speed (20-150 mm/s) from
  ``command_delay_s`` later (:class:`robot.gripper.finger_model.FingerModel`); OBJ 2 when they stop on
  the object between them closing (:meth:`FakeURCapGripper.set_object`), 1 when they stop on one opening
  (``inside=True``: pads inside a hollow part; manual and ur_rtde's ``STOPPED_OUTER_OBJECT``), 3 at the
  target. ``GTO 0`` stops the fingers (manual: rGTO 0 is stop; the driver's ``rq_stop``). ``POS`` on GET
  is the actual position in counts; this unit stops at ``open_count`` / ``closed_count`` (not 0/255),
  which is what the client's calibration must find.
* Faults: :meth:`inject_fault` sets FLT. 0x0B (automatic release in progress) and 0x0E (overcurrent)
  are minor (the driver's fault texts: "Minor Fault"): reported, the fingers go on. Other codes from
  0x08 up are major (0x0F: "Major Fault" in the driver; the rest as the manual's reset-required
  faults): the fingers stop and commands are ignored until a reset (``ACT 0``). A silent or closed
  socket comes from the server's ``freeze`` and ``drop_connections``.
* The sim world (``ServerOptions.gripper_world``): a :class:`robot.sim.world.SimWorld` with a task
  (e.g. ``pick_place``) stepped by the controller tick with the arm's TCP pose and the finger width;
  the fingers stop on the box between them (``OBJ 2``), which the world then holds and carries, as on
  the sim rig (robot/sim/grasp.py). An object set with :meth:`set_object` takes precedence.

Times are host monotonic seconds; the state advances lazily to the time of each request.
``GripperPort`` (below) is the socket's server side within ``robot.fake_ur.server.FakeURServer``.
"""

from __future__ import annotations

import re
import select
import threading
import time
from typing import Any

import numpy as np

from robot.fake_ur.connection import Conn
from robot.gripper.finger_model import FingerModel, ObjectStatus
from robot.gripper.urcap import is_major_fault

QUIET_S = 0.005
"""A request without a newline is complete when no byte follows it for this long (s)."""
COMPLETE_GET = re.compile(rb"^GET [A-Z]{3}$")
"""A request without a newline that cannot grow: answered at once."""

_SET_PAIR = re.compile(r"([A-Z]{3})\s+(-?\d+)")
_SETTABLE = ("ACT", "GTO", "ATR", "ARD", "POS", "SPE", "FOR", "SID")
_ALIASES = {"ADR": "ARD"}  # ur_rtde's name for the auto-release direction
_READABLE = ("STA", "OBJ", "FLT", "PRE", "COU", "NCY", "PCO", "DST")
_DIGITS = {"FLT": 2, "PRE": 3}


class FakeURCapGripper:
    """Args: stroke_m, speed_range_m_s: of the model (2F-85 defaults); open_count, closed_count: where
    this unit's fingers stop; activation_s: STA 1 -> 3; command_delay_s: go-to -> motion starts."""

    def __init__(
        self,
        stroke_m: float = 0.085,
        speed_range_m_s: tuple[float, float] = (0.020, 0.150),
        open_count: int = 3,
        closed_count: int = 228,
        activation_s: float = 0.3,
        command_delay_s: float = 0.01,
        clock: Any = time.monotonic,
    ):
        self.stroke_m = stroke_m
        self.speed_range_m_s = speed_range_m_s
        self.open_count, self.closed_count = int(open_count), int(closed_count)
        self.activation_s = activation_s
        self._clock = clock
        self._lock = threading.Lock()
        self.model = FingerModel(stroke_m, stroke_m, command_delay_s, clock())
        self.regs = dict.fromkeys(_SETTABLE, 0)
        self.sta = 0
        self.flt = 0
        self.pre = 0
        self._activating_until: float | None = None
        self.object_width_m: float | None = None
        self.object_inside = False  # the pads are inside the object (opening stops on it: OBJ 1)
        self.world: Any = None  # a robot.sim.world.SimWorld, stepped by step_world()
        self._tcp_pose = np.zeros(6)
        self._world_t = clock()
        self.requests = 0
        self.gotos = 0

    # ------------------------------------------------------------------ conversions
    def _width(self, counts: int) -> float:
        c = min(max(counts, self.open_count), self.closed_count)
        return self.stroke_m * (self.closed_count - c) / (self.closed_count - self.open_count)

    def _counts(self, width_m: float) -> int:
        return int(round(self.closed_count - width_m / self.stroke_m * (self.closed_count - self.open_count)))

    # ------------------------------------------------------------------ protocol
    def handle(self, line: str, terminated: bool = True) -> bytes:
        """The reply to one request (without its newline). ``terminated``: the request ended in a
        newline (GET answers ``NAME VALUE\\n``); False: it did not (GET answers the bare value)."""
        with self._lock:
            t = self._clock()
            self.requests += 1
            self._advance(t)
            words = line.strip().split(None, 1)
            if len(words) == 2 and words[0] == "GET":
                name = _ALIASES.get(words[1], words[1])
                if name not in _READABLE and name not in _SETTABLE:
                    return b"?"
                value = f"{self._read(name):0{_DIGITS.get(name, 1)}d}"
                return f"{words[1]} {value}\n".encode() if terminated else value.encode()
            if len(words) == 2 and words[0] == "SET":
                pairs = [(_ALIASES.get(n, n), int(v)) for n, v in _SET_PAIR.findall(words[1])]
                if not pairs or any(name not in _SETTABLE for name, _ in pairs):
                    return b"?"
                for name, value in pairs:
                    self.regs[name] = value
                self._apply(t, {name for name, _ in pairs})
                return b"ack"
            return b"?"

    def _read(self, name: str) -> int:
        status = self.model.status
        if name == "POS":
            return self._counts(self.model.width_m)
        if name == "STA":
            return self.sta
        if name == "FLT":
            return self.flt
        if name == "PRE":
            return self.pre
        if name == "OBJ":
            return int(status)
        if name == "COU":  # gCU (x 10 mA): not modelled beyond "draws current while moving or gripping"
            return 0 if status == ObjectStatus.AT_TARGET or self.sta != 3 else 5 + self.regs["FOR"] // 8
        if name == "NCY":
            return self.gotos
        if name == "PCO":
            return 0  # no connection problem
        if name == "DST":
            return 4 if self.sta == 3 else 3  # the driver's RQ_STATE_RUN / RQ_STATE_ACTIVATION
        return self.regs[name]

    def _apply(self, t: float, changed: set[str]) -> None:
        if "ACT" in changed:
            if self.regs["ACT"] == 0:
                self.sta, self.flt, self._activating_until = 0, 0, None
                self.model.stop()
            elif self.sta == 0 and not is_major_fault(self.flt):
                self.sta = 1
                self._activating_until = t + self.activation_s
        if "POS" in changed:
            self.pre = min(max(self.regs["POS"], 0), 255)  # the echo does not wait for GTO
        if "GTO" in changed and self.regs["GTO"] == 0:
            self.model.stop()
            return
        if self.regs["GTO"] == 1 and changed & {"GTO", "POS", "SPE", "FOR"}:
            if self.sta != 3:
                self.flt = 0x07  # the activation bit must be set (and completed) before any action
                return
            if is_major_fault(self.flt):
                return
            lo, hi = self.speed_range_m_s
            speed = lo + (hi - lo) * min(max(self.regs["SPE"], 0), 255) / 255.0
            self.model.command(self._width(self.pre), speed, t, report_at_once=True)
            self.gotos += 1

    def _advance(self, t: float) -> None:
        if self._activating_until is not None and t >= self._activating_until:
            self.sta, self._activating_until = 3, None
            self.flt = self.flt if self.flt >= 0x08 else 0
        if is_major_fault(self.flt):
            return
        if self.object_inside:
            self.model.step(t, None, self.object_width_m)
            return
        obstacle = self.object_width_m
        if obstacle is None and self.world is not None:
            from robot.sim.grasp import obstacle_width

            obstacle = obstacle_width(self.world.record(t, self._tcp_pose, np.zeros(6)), self.model.width_m)
        self.model.step(t, obstacle)

    def step_world(self, t: float, tcp_pose: Any) -> None:
        """Controller tick: advance the fingers and the sim world to ``t`` with the TCP at ``tcp_pose``."""
        with self._lock:
            self._tcp_pose = np.asarray(tcp_pose, dtype=np.float64).copy()
            self._advance(t)
            dt, self._world_t = t - self._world_t, t
            self.world.step(self._tcp_pose, max(dt, 0.0), self.model.width_m)

    # ------------------------------------------------------------------ test controls
    def set_object(self, width_m: float | None, inside: bool = False) -> None:
        """Put an object of ``width_m`` between the fingers: closing stops on it (OBJ 2). ``inside``:
        the pads are inside a hollow object of inner width ``width_m``: opening stops on it (OBJ 1).
        None: take it away."""
        with self._lock:
            self._advance(self._clock())
            self.object_width_m = None if width_m is None else float(width_m)
            self.object_inside = bool(inside) and width_m is not None

    def inject_fault(self, code: int) -> None:
        """Set FLT to ``code``; a major fault stops the fingers until a reset (ACT 0), a minor one
        (0x0B, 0x0E) does not."""
        with self._lock:
            self._advance(self._clock())
            self.flt = int(code)
            if is_major_fault(self.flt):
                self.model.stop()

    def state(self) -> dict[str, Any]:
        with self._lock:
            self._advance(self._clock())
            return {
                "width_m": self.model.width_m,
                "target_width_m": self.model.target_width_m,
                "pos": self._counts(self.model.width_m),
                "moving": self.model.status == ObjectStatus.MOVING,
                "obj": int(self.model.status),
                "sta": self.sta,
                "flt": self.flt,
                "pre": self.pre,
                "requests": self.requests,
                "gotos": self.gotos,
                "object_width_m": self.object_width_m,
                "world_object_poses": [o.pose.tolist() for o in self.world.task.objects()]
                if self.world
                else [],
            }


class GripperPort:
    """The URCap gripper socket (63352) of ``FakeURServer`` (a mixin on the server's state:
    ``gripper``, ``_frozen``, ``_stop_event``). Replies leave on the connection's reader thread as soon
    as a request is complete (see ``_serve_gripper``); the fingers move on the controller's clock."""

    def _serve_gripper(self, conn: Conn) -> None:
        """URCap gripper socket: one reply per request (none while frozen: a silent socket). A request
        ends at a newline, or without one (as the URCap's own driver sends its GETs): at once when it
        is a complete ``GET XXX``, else once no byte has followed it for ``gripper.QUIET_S``."""
        buffer = b""
        while not self._stop_event.is_set() and not conn.closed:
            try:
                ready = select.select([conn.sock], [], [], QUIET_S if buffer else 0.1)[0]
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
            if COMPLETE_GET.match(buffer):
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
