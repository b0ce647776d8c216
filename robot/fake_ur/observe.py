"""Reading what reached the arm in a rig driven against the fake UR controller (TEST UTILITY, for
tests and benchmarks): the ur_rtde client processes of an arm controller, and the fake's wire log
of servoL targets (``FakeURController.servo_log``) against the controller's state history; and
:func:`hold`, the wait that keeps the controller's heartbeat meanwhile.

Rows of the servo log: ``(host monotonic s on arrival, x, y, z, rx, ry, rz)``, oldest first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot.arm.backend import StatusFlag


def hold(arm: Any, seconds: float, beat_s: float = 0.05) -> None:
    """Sleep ``seconds`` while beating ``arm``'s heartbeat (an ``ArmController``) every ``beat_s``,
    as a user's main loop does."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        arm.heartbeat()
        time.sleep(min(beat_s, left))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def ur_client_pids(controller_pid: int) -> list[int]:
    """The live ur_rtde client processes (``python -m robot.arm.ur_client``) the arm controller
    process ``controller_pid`` started, from /proc (an ended one, not yet reaped, is left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == controller_pid and b"robot.arm.ur_client" in cmd and not _zombie(int(entry)):
            pids.append(int(entry))
    return pids


def servo_rows(rows: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    """The servo log's rows as an (n, 7) array (n may be 0)."""
    return np.asarray(rows, dtype=np.float64).reshape(-1, 7)


@dataclass(frozen=True)
class StopOvershoot:
    """How far the arm ran past the last target it had received when its controller took a stop."""

    overshoot_m: float  # the arm at rest minus that target, along the move's direction
    speed_m_s: float  # the arm's measured TCP speed at the stop (the controller's first STOPPING state)
    stop_time: float  # host monotonic s of that state


def stop_overshoot(
    history: Mapping[str, NDArray],
    servo: Sequence[Sequence[float]],
    rest_xyz: ArrayLike,
    direction: ArrayLike,
) -> StopOvershoot | None:
    """Measure a stop: ``history`` is the arm controller's state history since before the stop
    (``state_ring.get_since``), ``servo`` the fake's servo log over the same span, ``rest_xyz`` where
    the arm came to rest, ``direction`` the move's. None when the history has no STOPPING state or
    no servoL target had arrived before it."""
    flags = history["status_flags"]
    i = int(np.argmax(flags & StatusFlag.STOPPING)) if len(flags) else 0
    if not len(flags) or not flags[i] & StatusFlag.STOPPING:
        return None
    t_stop = float(history["tick_time"][i])
    rows = servo_rows(servo)
    k = int(np.searchsorted(rows[:, 0], t_stop)) - 1
    if k < 0:
        return None
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    overshoot = float(np.dot(np.asarray(rest_xyz, dtype=np.float64) - rows[k, 1:4], d))
    return StopOvershoot(overshoot, float(np.linalg.norm(history["actual_tcp_speed"][i, :3])), t_stop)
