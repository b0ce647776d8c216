"""The Robotiq URCap's gripper socket (port 63352) of the fake UR controller (TEST UTILITY).

What it reproduces of a 2F-85 behind the URCap (Robotiq manual, the URCap's URScript driver):

* ``SET NAME VALUE [NAME VALUE ...]`` -> ``ack`` (three bytes, no newline), ``GET NAME`` ->
  ``NAME VALUE\\n``; unknown variables -> ``?``.
* Activation: ``ACT 0`` resets (STA 0, faults cleared); ``ACT 1`` from reset -> STA 1 for
  ``activation_s`` -> STA 3. A go-to before activation sets FLT 0x07 and is ignored.
* Motion: ``GTO 1`` with ``POS``/``SPE``/``FOR``: the fingers move at SPE's speed (20-150 mm/s)
  from ``command_delay_s`` later (:class:`robot.gripper.finger_model.FingerModel`), ``OBJ`` 0 while
  moving, 2 when they stop on the object between them (:meth:`FakeURCapGripper.set_object`), 3 at the
  target. ``POS`` on GET is the actual position in counts; this unit stops at ``open_count`` /
  ``closed_count`` (not 0/255), which is what the client's calibration must find. ``PRE`` echoes the
  accepted target.
* Faults: :meth:`inject_fault` sets FLT; a major fault (>= 0x08) stops the fingers and ignores
  commands until a reset (``ACT 0``). A silent or closed socket comes from the server's ``freeze``
  and ``drop_connections``.
* The sim world (``ServerOptions.gripper_world``): a :class:`robot.sim.world.SimWorld` with a task
  (e.g. ``pick_place``) stepped by the controller tick with the arm's TCP pose and the finger width;
  the fingers stop on the box between them (``OBJ 2``), which the world then holds and carries, as on
  the sim rig (robot/sim/grasp.py). An object set with :meth:`set_object` takes precedence.

Times are host monotonic seconds; the state advances lazily to the time of each request.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import numpy as np

from robot.gripper.finger_model import FingerModel, ObjectStatus

_SET_PAIR = re.compile(r"([A-Z]{3})\s+(-?\d+)")
_SETTABLE = ("ACT", "GTO", "ATR", "ARD", "POS", "SPE", "FOR")
_READABLE = ("ACT", "GTO", "ATR", "ARD", "POS", "SPE", "FOR", "STA", "OBJ", "FLT", "PRE")


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
    def handle(self, line: str) -> bytes:
        """The reply to one request line (without its newline)."""
        with self._lock:
            t = self._clock()
            self.requests += 1
            self._advance(t)
            words = line.strip().split(None, 1)
            if len(words) == 2 and words[0] == "GET" and words[1] in _READABLE:
                return f"{words[1]} {self._read(words[1])}\n".encode()
            if len(words) == 2 and words[0] == "SET":
                pairs = _SET_PAIR.findall(words[1])
                if not pairs or any(name not in _SETTABLE for name, _ in pairs):
                    return b"?"
                for name, value in pairs:
                    self.regs[name] = int(value)
                self._apply(t, {name for name, _ in pairs})
                return b"ack"
            return b"?"

    def _read(self, name: str) -> int:
        if name == "POS":
            return self._counts(self.model.width_m)
        if name == "STA":
            return self.sta
        if name == "FLT":
            return self.flt
        if name == "PRE":
            return self.pre
        if name == "OBJ":
            return int(self.model.status)
        return self.regs[name]

    def _apply(self, t: float, changed: set[str]) -> None:
        if "ACT" in changed:
            if self.regs["ACT"] == 0:
                self.sta, self.flt, self._activating_until = 0, 0, None
                self.model.stop()
            elif self.sta == 0 and self.flt < 0x08:
                self.sta = 1
                self._activating_until = t + self.activation_s
        if self.regs["GTO"] == 1 and changed & {"GTO", "POS", "SPE", "FOR"}:
            if self.sta != 3:
                self.flt = 0x07  # the activation bit must be set (and completed) before any action
                return
            if self.flt >= 0x08:
                return
            lo, hi = self.speed_range_m_s
            speed = lo + (hi - lo) * min(max(self.regs["SPE"], 0), 255) / 255.0
            self.pre = min(max(self.regs["POS"], 0), 255)
            self.model.command(self._width(self.pre), speed, t)
            self.gotos += 1

    def _advance(self, t: float) -> None:
        if self._activating_until is not None and t >= self._activating_until:
            self.sta, self._activating_until = 3, None
            self.flt = 0 if self.flt < 0x08 else self.flt
        if self.flt >= 0x08:
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
    def set_object(self, width_m: float | None) -> None:
        """Put an object of ``width_m`` between the fingers (None: take it away)."""
        with self._lock:
            self._advance(self._clock())
            self.object_width_m = None if width_m is None else float(width_m)

    def inject_fault(self, code: int) -> None:
        """Set FLT to ``code``; a major fault (>= 0x08) stops the fingers until a reset (ACT 0)."""
        with self._lock:
            self._advance(self._clock())
            self.flt = int(code)
            if self.flt >= 0x08:
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
