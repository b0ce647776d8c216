"""The gripper process: width commands on a schedule, state published to a ring buffer.

One OS process per gripper (:class:`GripperController`, a :class:`robot.process.DeviceProcess`), at
``config.rate_hz`` on the host monotonic grid. Each tick at host time ``t``:

1. read the gripper (Robotiq: ``POS``, ``OBJ``, ``FLT`` over the URCap socket; sim: step the fingers);
2. drain the command queue into the pending schedule (kept sorted by target time); commands that
   arrive together replace the pending ones from their earliest target time on (a newer plan wins);
3. send the newest pending width whose target time is at most half a period away (older ones are
   superseded, never replayed); a width already sent is not sent again;
4. publish one record to :attr:`GripperController.state_ring` (:data:`STATE_LAYOUT`).

Parent-side API (non-blocking; widths in m, times host monotonic s): ``schedule_width(width_m,
target_time)``, ``set_width(width_m)`` (now), ``get_state()``, ``get_state_history(k)``, ``check()``
(raises :class:`GripperFaultError` on a major Robotiq fault (robot/gripper/urcap.py: 0x0B and 0x0E
are minor), DeviceProcessError if the process failed
or died; a lost URCap link ends the process with a one-line error), ``heartbeat()``.

Watchdog: when the parent dies (or stops heartbeating, or SIGINT/SIGTERM arrives), the process holds:
moving fingers stop where they are, a grip on an object keeps its force (nothing is dropped), and it
exits.
"""

from __future__ import annotations

import logging
import math
from enum import IntEnum
from typing import Any

import numpy as np

from robot.gripper.backend import GripperBackend, GripperError
from robot.gripper.config import GripperConfig
from robot.gripper.urcap import is_major_fault
from robot.process import DeviceProcess, DeviceProcessError, StateReader
from robot.shm.command_queue import CommandQueue, QueueFull
from robot.shm.ring_buffer import RingBuffer
from robot.timing import RateLoop, now

log = logging.getLogger("robot.gripper")

STATE_LAYOUT = {
    "width_m": ((), "float64"),  # opening between the pads (m), 0 = closed
    "target_width_m": ((), "float64"),  # the width last sent to the gripper (m)
    "moving": ((), "bool"),
    "object_detected": ((), "bool"),  # the fingers stopped on an object (Robotiq OBJ 1/2)
    "fault_code": ((), "int32"),  # Robotiq FLT (0: none)
    "start_fault_code": ((), "int32"),  # FLT found at connect, before the reset cleared it (0: none)
    "capture_time": ((), "float64"),  # host monotonic s the width describes
    "receive_time": ((), "float64"),  # host monotonic s the host had it
    "tick_time": ((), "float64"),
    "commands_sent": ((), "int64"),
}


class Cmd(IntEnum):
    WIDTH = 1


COMMAND_LAYOUT = {
    "cmd": ((), "int32"),
    "width_m": ((), "float64"),
    "speed_m_s": ((), "float64"),
    "force_n": ((), "float64"),
    "target_time": ((), "float64"),
}


class GripperFaultError(DeviceProcessError):
    """The gripper reports a major fault; it does not move until it is reset (restart the process)."""


class GripperController(StateReader, DeviceProcess):
    """The gripper process (see the module docstring).

    Args:
        config: the gripper config.
        world_ring: sim only: the world-state ring, for the object between the fingers. May be set
            as an attribute before ``start()`` (the arm creates the ring after this object exists).
    """

    def __init__(self, config: GripperConfig, world_ring: RingBuffer | None = None):
        desc = (
            "simulated gripper"
            if config.backend == "sim"
            else f"Robotiq {config.model.upper()} at {config.host}:{config.port}"
        )
        super().__init__(
            f"gripper ({desc})",
            ready_timeout_s=3 * config.activation_timeout_s + config.connect_timeout_s + 10.0,
            stop_timeout_s=5.0,
            heartbeat_timeout_s=config.heartbeat_timeout_s,
        )
        if config.backend == "none":
            raise ValueError("gripper backend is 'none': this rig has no gripper")
        self.config = config
        self.description = desc
        self.world_ring = world_ring
        capacity = max(16, int(math.ceil(config.rate_hz * config.state_history_s)))
        self.state_ring = RingBuffer.create(STATE_LAYOUT, capacity, label="gripstate")
        self.command_queue = CommandQueue.create(
            COMMAND_LAYOUT, config.command_queue_capacity, label="gripcmd"
        )
        self._owned += [self.state_ring, self.command_queue]

    # ================================================================== parent side
    def schedule_width(
        self,
        width_m: float,
        target_time: float,
        speed_m_s: float | None = None,
        force_n: float | None = None,
    ) -> None:
        """Send ``width_m`` (m) to the gripper at host monotonic ``target_time`` (s); the config's speed
        and force unless given. Applied within one tick of ``target_time`` (at once if past)."""
        if not math.isfinite(width_m):
            raise ValueError(f"{self.name}: width {width_m} is not finite")
        rec = {
            "cmd": int(Cmd.WIDTH),
            "width_m": float(width_m),
            "speed_m_s": float(self.config.speed_m_s if speed_m_s is None else speed_m_s),
            "force_n": float(self.config.force_n if force_n is None else force_n),
            "target_time": float(target_time),
        }
        try:
            self.command_queue.put(rec)
        except QueueFull:
            raise QueueFull(
                f"{self.name}: command queue full ({self.command_queue.capacity} pending): the gripper "
                "process is not draining it (stalled or dead?); call check()"
            ) from None
        self.heartbeat()

    def set_width(self, width_m: float, speed_m_s: float | None = None, force_n: float | None = None) -> None:
        """Send ``width_m`` now."""
        self.schedule_width(width_m, now(), speed_m_s, force_n)

    def check(self) -> None:
        super().check()
        if self.state_ring.count:
            code = int(self.state_ring.latest()["fault_code"])
            if is_major_fault(code):
                from robot.gripper.robotiq import describe_fault

                raise GripperFaultError(
                    f"gripper ({self.description}): {describe_fault(code)}; it stays stopped until it is "
                    "reset: restart the run"
                )

    # ================================================================== child side
    def _make_backend(self) -> GripperBackend:
        if self.config.backend == "sim":
            from robot.gripper.sim_backend import SimGripperBackend

            return SimGripperBackend(self.config, self.world_ring)
        from robot.gripper.robotiq import RobotiqBackend

        return RobotiqBackend(self.config)

    def setup(self) -> None:
        self.backend = self._make_backend()
        self.backend.connect(now())
        self._start_fault_code = int(getattr(self.backend, "start_fault_code", 0))
        self._pending: list[tuple[float, float, float, float]] = []  # (target_time, width, speed, force)
        self._sent: tuple[float, float, float] | None = None
        self._commands_sent = 0
        self._target_width = float("nan")
        t = now()
        self._publish(self.backend.read_state(t), t)

    def run_loop(self) -> None:
        loop = RateLoop(self.config.rate_hz, spin_s=0.0)
        while not self.should_stop():
            tick = loop.wait()
            self._tick(tick.time)
        self.backend.hold(now())
        reason = self.stop_reason or "stop requested"
        if reason != "stop requested":
            self._report(f"{self.name}: held the fingers and exited: {reason}")
            if reason != "signal SIGINT":
                log.warning("%s: held the fingers and exited: %s", self.name, reason)

    def teardown(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()

    def _tick(self, t: float) -> None:
        reading = self.backend.read_state(t)
        cmds = self.command_queue.get_all()
        if cmds["cmd"].size:
            first = float(np.min(cmds["target_time"]))
            self._pending = [c for c in self._pending if c[0] < first]
        for i in range(len(cmds["cmd"])):
            self._pending.append(
                (
                    float(cmds["target_time"][i]),
                    float(cmds["width_m"][i]),
                    float(cmds["speed_m_s"][i]),
                    float(cmds["force_n"][i]),
                )
            )
        if cmds["cmd"].size:
            self._pending.sort(key=lambda c: c[0])
        horizon = t + 0.5 * self.config.period_s
        due = [c for c in self._pending if c[0] <= horizon]
        if due:
            self._pending = self._pending[len(due) :]
            _, width, speed, force = due[-1]
            if (width, speed, force) != self._sent and not is_major_fault(reading.fault_code):
                self.backend.command(width, speed, force, now())
                self._sent = (width, speed, force)
                self._target_width = width
                self._commands_sent += 1
        self._publish(reading, t)

    def _publish(self, r: Any, t: float) -> None:
        self.state_ring.put(
            {
                "width_m": r.width_m,
                "target_width_m": self._target_width,
                "moving": r.moving,
                "object_detected": r.object_detected,
                "fault_code": r.fault_code,
                "start_fault_code": self._start_fault_code,
                "capture_time": r.capture_time,
                "receive_time": r.receive_time,
                "tick_time": t,
                "commands_sent": self._commands_sent,
            }
        )


__all__ = ["STATE_LAYOUT", "GripperController", "GripperError", "GripperFaultError"]
