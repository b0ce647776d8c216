"""Faults on demand and the RTDE watchdog of the fake UR controller.

``Faults`` is the part of ``robot.fake_ur.server.FakeURServer`` that breaks it on purpose: protective
stop, emergency stop, dropped (and refused) connections, a frozen controller, and ``clear_faults()``
that undoes them all. Each acts at once under the controller's lock and may be called from any thread;
what the client sees follows at the next controller tick (the modes and safety bits in the next data
package) or at once (a closed socket).

The RTDE watchdog (URScript ``rtde_set_watchdog(name, min_frequency, "stop")``, which ur_rtde's control
script arms on its first input register): checked at every controller tick while a program plays, it
stops the program once no data package has written that input for ``1 / min_frequency`` s since it
was armed, so it trips at most one tick period late.
"""

from __future__ import annotations

import logging
import time

from robot.fake_ur.modes import (
    ROBOT_MODE_POWER_OFF,
    ROBOT_MODE_RUNNING,
    RUNTIME_PAUSED,
    RUNTIME_PLAYING,
    RUNTIME_STOPPED,
    SAFETY_BIT_EMERGENCY_STOPPED,
    SAFETY_BIT_NORMAL,
    SAFETY_BIT_PROTECTIVE_STOPPED,
    SAFETY_BIT_ROBOT_EMERGENCY_STOPPED,
    SAFETY_BIT_STOPPED_DUE_TO_SAFETY,
    SAFETY_MODE_NORMAL,
    SAFETY_MODE_PROTECTIVE_STOP,
    SAFETY_MODE_ROBOT_EMERGENCY_STOP,
)

log = logging.getLogger("robot.fake_ur")


class Faults:
    """Fault injection and the RTDE watchdog of ``FakeURServer`` (a mixin on the server's state:
    ``_lock``, the modes, the arm, the program, the listeners and connections)."""

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

    def _set_watchdog_locked(self, input_name: str, min_frequency_hz: float) -> None:
        # rtde_set_watchdog(name, min_frequency, "stop"): the program stops when no data package
        # updates ``input_name`` for 1 / min_frequency s.
        if min_frequency_hz > 0:
            self._watchdog = (input_name, min_frequency_hz, time.monotonic())
        else:
            self._watchdog = None

    def _check_watchdog_locked(self, t: float) -> None:
        """At each controller tick (host monotonic ``t``, s): stop the program when the watchdog expired."""
        if self._watchdog is not None and self.runtime_state == RUNTIME_PLAYING:
            name, min_hz, armed_at = self._watchdog
            last = max(self._input_write_time.get(name, armed_at), armed_at)
            if t - last > 1.0 / min_hz:
                log.warning("fake UR: RTDE watchdog on %s expired; stopping the program", name)
                self.watchdog_trips += 1
                self._watchdog = None
                self._stop_program_locked(RUNTIME_STOPPED)
