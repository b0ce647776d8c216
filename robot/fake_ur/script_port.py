"""The fake UR controller's script ports (primary 30001, secondary 30002, realtime 30003): programs.

``ScriptPort`` is the part of ``robot.fake_ur.server.FakeURServer`` that takes URScript programs. A
complete ``rtde_control`` program (one that carries ur_rtde's end-of-control-loop marker) replaces the
running one: the running program stops at once and the new one starts ``options.script_start_delay_s``
later, at the first controller tick past that time (``runtime_state`` PLAYING from then on); its main
loop is emulated on the registers by ``robot.fake_ur.script.ControlScript``, one pass per tick. Any
other ``def``/``sec`` program is recorded (``foreign_scripts``), never run. A program upload is ignored
while a safety fault stands or the robot is not running. Stopping a program halts the arm's motion at
once (the kinematic arm; the sim arm decelerates at its limits). Nothing is sent back on these ports.
"""

from __future__ import annotations

import logging
import re
import time

from robot.fake_ur.connection import Conn
from robot.fake_ur.modes import (
    ROBOT_MODE_RUNNING,
    RUNTIME_PLAYING,
    RUNTIME_STOPPED,
    SAFETY_BIT_NORMAL,
)
from robot.fake_ur.script import ControlScript, register_offset_from_script

log = logging.getLogger("robot.fake_ur")

CONTROL_SCRIPT_END_MARKER = "# NODE_CONTROL_LOOP_ENDS"


class ScriptPort:
    """The script ports of ``FakeURServer`` (a mixin on the server's state: ``_lock``, ``regs``, the
    arm, the program's state and ``_pending_program``)."""

    def _serve_script(self, conn: Conn) -> None:
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
