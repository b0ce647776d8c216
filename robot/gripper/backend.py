"""The small interface between the gripper process loop and a gripper (Robotiq via URCap, or simulated).

The gripper process (robot/gripper/controller.py) owns timing: once per tick it calls
``read_state(t)``, then ``command(...)`` when a new width is due, where ``t`` is the tick's host
monotonic time (s). Backends never sleep in these calls (the Robotiq backend blocks only for its
network round trips). Widths are the opening between the pads in metres (0 = closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class GripperError(RuntimeError):
    """The gripper reports a fault or cannot be reached; the message says which gripper and what to do."""


@dataclass
class GripperReading:
    """One state of the gripper.

    ``capture_time``: host monotonic time the width describes; ``receive_time``: when the host had it.
    ``fault_code``: the Robotiq FLT code (0: none). ``object_detected``: the fingers stopped on an
    object (Robotiq OBJ 1 or 2). ``moving``: OBJ 0.
    """

    width_m: float
    moving: bool
    object_detected: bool
    fault_code: int
    capture_time: float
    receive_time: float


class GripperBackend(Protocol):
    description: str

    def connect(self, t: float) -> None:
        """Open, activate and (if configured) calibrate; blocks until the gripper is ready."""

    def read_state(self, t: float) -> GripperReading: ...

    def command(self, width_m: float, speed_m_s: float, force_n: float, t: float) -> None:
        """Go to ``width_m`` (clipped to the stroke) at ``speed_m_s`` with ``force_n``. Non-blocking."""

    def hold(self, t: float) -> None:
        """Stop moving fingers where they are; a grip on an object is kept (the process exits after it)."""

    def close(self) -> None: ...
