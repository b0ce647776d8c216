"""The small interface between the arm controller loop and an arm (real UR or simulated UR5).

The controller (robot/arm/controller.py) owns timing: once per tick it calls, in this order,
``read_state(t)`` -> ``servo(pose, t)`` (unless faulted) -> ``after_tick(t)``, where ``t`` is the
tick's host monotonic time (s). Backends never sleep inside these calls (a real backend blocks only
for the network round trip). All poses are ``[x, y, z, rx, ry, rz]`` (m, rotation vector rad) of the
TCP in the base frame; speeds ``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class StatusFlag(IntFlag):
    """Bits of the ``status_flags`` field of the arm state ring."""

    PROTECTIVE_STOP = 1 << 0
    """The arm is protective-stopped (real: safety status bit 2). Fault."""
    EMERGENCY_STOP = 1 << 1
    """The e-stop is pressed (real: safety status bit 7). Fault."""
    DISCONNECTED = 1 << 2
    """The connection to the arm is lost, or its control script stopped. Fault."""
    UNREACHABLE = 1 << 3
    """The last servo target has no inverse kinematics solution; the arm held its previous target."""
    REJECTED_TARGET = 1 << 4
    """The last command's pose was rejected (NaN/inf, absurd rotation); set until one is accepted."""
    WORKSPACE_CLIPPED = 1 << 5
    """This tick's target was clipped onto the workspace box."""
    SPEED_LIMITED = 1 << 6
    """This tick's step was shortened to the speed / max-step limit."""
    STOPPING = 1 << 7
    """A decelerating stop (stop_motion, watchdog, shutdown) is in progress."""
    WATCHDOG = 1 << 8
    """The controller is stopping the arm because the parent died, its heartbeat expired, or a
    signal arrived; it exits once the arm is at rest."""
    FAULTED = 1 << 9
    """The controller is not commanding the arm because of a fault (see the fault bits); call
    ``ArmController.reconnect()`` once the cause is cleared."""
    CONTROLLER_SILENT = 1 << 10
    """With DISCONNECTED: the UR controller stopped sending state packages (``ur.controller_timeout_s``)."""
    CLIENT_STALLED = 1 << 11
    """With DISCONNECTED: the ur_rtde client process published nothing for ``ur.state_timeout_s``
    (paused, starved); it was ended so that nothing it had queued reaches the arm."""


FAULT_FLAGS = StatusFlag.PROTECTIVE_STOP | StatusFlag.EMERGENCY_STOP | StatusFlag.DISCONNECTED


def describe_flags(flags: int) -> str:
    """Human-readable list of the set bits, e.g. ``"PROTECTIVE_STOP|FAULTED"`` (``"OK"`` if none)."""
    names = [f.name for f in StatusFlag if flags & f and f.name]
    return "|".join(names) if names else "OK"


class ArmConnectionError(RuntimeError):
    """Could not connect (or reconnect) to the arm; the message says which host/port and what to check."""


@dataclass
class ArmReading:
    """One state of the arm as read by a backend.

    ``robot_time``: the controller's own clock (s; real: RTDE ``timestamp``; sim: model time).
    ``capture_time``: host monotonic time the state describes. ``receive_time``: host monotonic time
    the host had it. ``flags``: only the fault and ``UNREACHABLE`` bits are set by backends.
    ``received_target``: the last servo target the arm itself received (real: the ur_rtde client's
    last servoL, which may trail the controller's targets after a stall); None where the backend
    does not know it (sim: the controller's own target is what the model received).
    """

    tcp_pose: FloatArray
    tcp_speed: FloatArray
    q: FloatArray
    qd: FloatArray
    robot_time: float
    capture_time: float
    receive_time: float
    flags: StatusFlag = StatusFlag(0)
    received_target: FloatArray | None = None


class ArmBackend(Protocol):
    """What the controller needs from an arm (see the module docstring for the call order)."""

    description: str
    """For messages, e.g. ``"UR5 at 192.168.1.10"`` or ``"simulated UR5"``."""
    tcp_offset_pose: FloatArray
    """TCP relative to the flange (m, rad), used to turn a joint start into a TCP pose."""

    def connect(self, t: float) -> None:
        """Open the arm; raise ArmConnectionError (saying what to check) if it cannot."""

    def read_state(self, t: float) -> ArmReading:
        """The newest state at tick time ``t`` (host monotonic s). Never raises for a lost connection:
        it returns a reading with ``DISCONNECTED`` set (and the last known values)."""

    def servo(self, pose: FloatArray, t: float) -> bool:
        """Send one servo target for this tick. False if the arm refused it (e.g. unreachable)."""

    def stop(self, t: float) -> None:
        """Decelerating stop on the arm's side (servoStop); the arm holds where it comes to rest."""

    def reconnect(self, t: float) -> None:
        """Re-establish the connection / clear a fault where possible; raise ArmConnectionError if not."""

    def reset_world(self, seed: int) -> None:
        """Reset the task objects (sim); a real arm ignores it."""

    def inject_fault(self, flags: int) -> None:
        """Testing aid (sim): behave as if these fault bits were raised by the arm. Real: not allowed."""

    def after_tick(self, t: float) -> None:
        """Work after the command was sent (sim: step the world and publish it)."""

    def world_success(self) -> bool:
        """Sim: the task's success(); real: False."""

    def close(self) -> None:
        """Release the arm (stop the control script, disconnect). Idempotent."""


def stale_reading(last: ArmReading | None, receive_time: float) -> ArmReading:
    """What a backend reports when it has no fresh state: the last known pose and joints at rest (zero
    speeds), stamped ``receive_time``; all zeros before any state arrived."""
    if last is None:
        z = np.zeros(6)
        return ArmReading(z, z, z, z, -1.0, receive_time, receive_time)
    return ArmReading(
        last.tcp_pose, np.zeros(6), last.q, np.zeros(6), last.robot_time, last.capture_time, receive_time
    )


def as_pose(pose: ArrayLike) -> FloatArray:
    return np.asarray(pose, dtype=np.float64).reshape(6)
