"""The ur_rtde control script's main loop, emulated on the fake controller's registers.

ur_rtde 1.6.5 uploads a URScript program (``def rtde_control(): ... end``) to port 30003 and then
drives it through RTDE registers (offset 0, or 24 with the upper-range flag):

* ``input_int_register_0``: the command id written by the client; the arguments follow in the
  input int/double registers of the command's recipe.
* ``output_int_register_0``: the script's answer, 1 = ready for a command, 2 = command done.
* ``output_int_register_2``: async operation status (bit 15 running, bits 0-14 progress, bits 16-23
  a write counter, bits 24-30 operation id); 65536 at script start.

Every controller tick (2 ms on e-Series, 8 ms on CB3) ``ControlScript.tick`` does what one pass of
the real script's ``while keep_running`` loop does:

* streaming commands (servoJ/servoL/speedJ/speedL and the other ids the client does not wait for)
  update the arm's target and keep the answer at 1;
* command 0 ("clear") ends the previous command: answer 1;
* any other command is executed the first time it is seen; a blocking move keeps the answer at 1
  until the arm reaches its goal, then writes 2; other commands write 2 at once;
* command 255 (stopScript) ends the program (runtime state STOPPED) without writing the answer.

Commands the fake does not model are answered "done" at once and counted in ``unsupported``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robot.fake_ur.arm_model import ArmModel, ur5_fk, ur5_ik_closest

# Command ids of ur_rtde 1.6.5 (RTDE::RobotCommand::Type) that the fake understands.
CMD_NONE = 0
CMD_MOVEJ = 1
CMD_MOVEJ_IK = 2
CMD_MOVEL = 3
CMD_MOVEL_FK = 4
CMD_SPEEDJ = 9
CMD_SPEEDL = 10
CMD_SERVOJ = 11
CMD_SPEED_STOP = 15
CMD_SERVO_STOP = 16
CMD_SET_PAYLOAD = 17
CMD_SERVOL = 24
CMD_SET_TCP = 29
CMD_GET_INVERSE_KINEMATICS_ARGS = 30
CMD_PROTECTIVE_STOP = 31
CMD_STOPL = 33
CMD_STOPJ = 34
CMD_SET_WATCHDOG = 35
CMD_GET_TCP_OFFSET = 40
CMD_GET_FORWARD_KINEMATICS_DEFAULT = 43
CMD_GET_FORWARD_KINEMATICS_ARGS = 44
CMD_MOVE_PATH = 45
CMD_GET_INVERSE_KINEMATICS_DEFAULT = 46
CMD_IS_STEADY = 47
CMD_STOP_SCRIPT = 255

# The client returns from these without waiting for "done"; the script keeps answering 1.
STREAMING_COMMANDS = frozenset({6, 9, 10, 11, 24, 25, 26, 27, 38, 58, 66, 67, 68, 69, 70, 71})

ANSWER_READY = 1
ANSWER_DONE = 2


def register_offset_from_script(script: str) -> int:
    """Read the register offset ur_rtde injected after ``# int register offset`` (0 or 24)."""
    # The client writes the value on the line after the comment:
    # "global reg_offset_int = # int register offset\n24    global ..."
    m = re.search(r"#\s*int register offset\s*\n\s*(\d+)", script)
    return int(m.group(1)) if m else 0


@dataclass
class Registers:
    """RTDE general-purpose registers 0..47 shared by all clients (the controller's I/O table)."""

    input_int: np.ndarray = field(default_factory=lambda: np.zeros(48, dtype=np.int64))
    input_double: np.ndarray = field(default_factory=lambda: np.zeros(48, dtype=np.float64))
    output_int: np.ndarray = field(default_factory=lambda: np.zeros(48, dtype=np.int64))
    output_double: np.ndarray = field(default_factory=lambda: np.zeros(48, dtype=np.float64))
    input_bits: np.ndarray = field(default_factory=lambda: np.zeros(128, dtype=bool))
    output_bits: np.ndarray = field(default_factory=lambda: np.zeros(128, dtype=bool))


class ControlScript:
    """One running instance of the uploaded ``rtde_control`` program (see module docstring).

    Args:
        registers: the controller's register table.
        arm: the arm model the commands drive.
        offset: register offset (0, or 24 in upper-range mode) read from the uploaded script.
        t: host time (s) the program starts.
        protective_stop: called for triggerProtectiveStop (the controller's protective_stop()).
        set_watchdog: called as ``set_watchdog(input_name, min_frequency_hz)`` for setWatchdog
            (the controller's rtde_set_watchdog(..., "stop")).
    """

    def __init__(
        self,
        registers: Registers,
        arm: ArmModel,
        offset: int,
        t: float,
        *,
        protective_stop: Callable[[], None] | None = None,
        set_watchdog: Callable[[str, float], None] | None = None,
        command_counts: Counter[int] | None = None,
        unsupported: Counter[int] | None = None,
    ):
        self._protective_stop = protective_stop
        self._set_watchdog = set_watchdog
        self.regs = registers
        self.arm = arm
        self.offset = offset
        self.executing = False
        self.current_cmd = CMD_NONE
        self.blocking_move = False
        self.async_move = False
        self.async_op_id = 0
        self.async_writes = 0
        self.stopped = False
        self.tcp_offset = np.zeros(6)
        self.payload_mass_kg = 0.0
        self.payload_cog_m = np.zeros(3)
        # Counters may be shared with the controller so they outlive this program instance.
        self.command_counts: Counter[int] = Counter() if command_counts is None else command_counts
        self.unsupported: Counter[int] = Counter() if unsupported is None else unsupported
        self.last_servo_target: np.ndarray | None = None
        # servoJ/servoL's other arguments as last received: speed, acceleration, time (s),
        # lookahead time (s), gain (the last two go to the arm model, which may smooth with them).
        self.last_servo_args: np.ndarray | None = None
        self.failed_moves = 0
        self._write_async_status(-1)  # reset_async_progress(): 65536
        self._answer(ANSWER_READY)

    # --- register helpers ---------------------------------------------------------------------
    def _cmd(self) -> int:
        return int(self.regs.input_int[self.offset])

    def _int(self, i: int) -> int:
        return int(self.regs.input_int[self.offset + i])

    def _doubles(self, start: int, n: int) -> np.ndarray:
        return self.regs.input_double[self.offset + start : self.offset + start + n].copy()

    def _answer(self, value: int) -> None:
        self.regs.output_int[self.offset] = value

    def _write_async_status(self, value: int) -> None:
        """The script's write_async_progress_register: 0 = operation started, <0 = finished."""
        self.async_writes = self.async_writes + 1 if self.async_writes < 127 else 0
        if value == 0:
            self.async_op_id = self.async_op_id + 1 if self.async_op_id < 127 else 0
        reg = self.async_writes * 65536 + self.async_op_id * 16777216
        if value >= 0:
            reg += min(value, 32767) + 32768
        self.regs.output_int[2 + self.offset] = reg

    # --- main loop ----------------------------------------------------------------------------
    def abort_motion(self, t: float) -> None:
        """A safety stop ended whatever the script was doing (program paused or stopped)."""
        self.blocking_move = False
        self._finish_async()

    def _finish_async(self) -> None:
        if self.async_move:
            self.async_move = False
            self._write_async_status(-1)

    def tick(self, t: float) -> None:
        """One pass of the script's main loop at host time ``t`` (s); call before ``arm.step``."""
        if self.stopped:
            return
        if self.async_move and self.arm.motion_done():
            self._finish_async()

        cmd = self._cmd()
        if cmd in STREAMING_COMMANDS:
            self.executing = False
            self.blocking_move = False
            self._streaming(cmd, t)
            self._answer(ANSWER_READY)
            return
        if cmd == CMD_NONE:
            self.executing = False
            self.blocking_move = False
            self.current_cmd = CMD_NONE
            self._answer(ANSWER_READY)
            return
        if self.executing:
            if self.blocking_move and self.arm.motion_done():
                self.blocking_move = False
                self._answer(ANSWER_DONE)
            return
        # A new command, seen for the first time.
        self.executing = True
        self.current_cmd = cmd
        self.command_counts[cmd] += 1
        self._execute(cmd, t)

    def _streaming(self, cmd: int, t: float) -> None:
        first = cmd != self.current_cmd
        if first:
            self.command_counts[cmd] += 1
            self.current_cmd = cmd
        if cmd in (CMD_SERVOJ, CMD_SERVOL):
            self.last_servo_args = self._doubles(6, 5)
            lookahead_time_s, gain = float(self.last_servo_args[3]), float(self.last_servo_args[4])
        if cmd == CMD_SERVOJ:
            q = self._doubles(0, 6)
            self.last_servo_target = q
            self.arm.servo_joints(q, t, lookahead_time_s, gain)
        elif cmd == CMD_SERVOL:
            pose = self._doubles(0, 6)
            # IK costs ~0.3 ms: solve only when the client wrote a new target.
            if first or self.last_servo_target is None or not np.array_equal(pose, self.last_servo_target):
                self.last_servo_target = pose
                if not self.arm.servo_pose(pose, t, lookahead_time_s, gain):
                    self.failed_moves += 1
        elif cmd == CMD_SPEEDJ:
            self.arm.speed_joints(self._doubles(0, 6), float(self._doubles(6, 1)[0]), t)
        elif cmd == CMD_SPEEDL:
            self.arm.speed_pose(self._doubles(0, 6), float(self._doubles(6, 1)[0]), t)
        else:
            self.unsupported[cmd] += 1

    def _start_move(self, ok: bool, asynchronous: bool) -> None:
        if not ok:
            self.failed_moves += 1
            self._answer(ANSWER_DONE)
            return
        if asynchronous:
            self.async_move = True
            self._write_async_status(0)
            self._answer(ANSWER_DONE)
        else:
            self.blocking_move = True
            self._answer(ANSWER_READY)

    def _execute(self, cmd: int, t: float) -> None:
        arm = self.arm
        if cmd in (CMD_MOVEJ, CMD_MOVEL, CMD_MOVEJ_IK, CMD_MOVEL_FK):
            target = self._doubles(0, 6)
            speed, accel = (float(v) for v in self._doubles(6, 2))
            asynchronous = self._int(1) == 1
            self._finish_async()  # stop_async_move(): a new move replaces a running async one
            if cmd == CMD_MOVEJ:
                ok = arm.move_joints(target, speed, accel, t)
            elif cmd == CMD_MOVEL:
                ok = arm.move_pose(target, speed, accel, t)
            elif cmd == CMD_MOVEJ_IK:  # moveJ to a pose: joints from IK
                q = ur5_ik_closest(target, arm.target_q, self.tcp_offset)
                ok = q is not None and arm.move_joints(q, speed, accel, t)
            else:  # moveL to joints: pose from FK
                ok = arm.move_pose(ur5_fk(target, self.tcp_offset), speed, accel, t)
            self._start_move(ok, asynchronous)
        elif cmd in (CMD_SERVO_STOP, CMD_SPEED_STOP):
            arm.stop(float(self._doubles(0, 1)[0]), t)
            self._answer(ANSWER_DONE)
        elif cmd in (CMD_STOPL, CMD_STOPJ):
            arm.stop(float(self._doubles(0, 1)[0]), t)
            self._finish_async()
            self._answer(ANSWER_DONE)
        elif cmd == CMD_SET_TCP:
            self.tcp_offset = self._doubles(0, 6)
            arm.set_tcp_offset(self.tcp_offset)
            self._answer(ANSWER_DONE)
        elif cmd == CMD_SET_PAYLOAD:
            d = self._doubles(0, 4)
            self.payload_mass_kg = float(d[0])
            self.payload_cog_m = d[1:4].copy()
            self._answer(ANSWER_DONE)
        elif cmd == CMD_GET_TCP_OFFSET:
            self.regs.output_double[self.offset : self.offset + 6] = self.tcp_offset
            self._answer(ANSWER_DONE)
        elif cmd in (CMD_GET_FORWARD_KINEMATICS_DEFAULT, CMD_GET_FORWARD_KINEMATICS_ARGS):
            if cmd == CMD_GET_FORWARD_KINEMATICS_DEFAULT:
                pose = ur5_fk(arm.actual_q, self.tcp_offset)
            else:
                pose = ur5_fk(self._doubles(0, 6), self._doubles(6, 6))
            self.regs.output_double[self.offset : self.offset + 6] = pose
            self._answer(ANSWER_DONE)
        elif cmd == CMD_IS_STEADY:
            steady = float(np.max(np.abs(arm.actual_qd))) < 1e-3 and arm.motion_done()
            self.regs.output_int[self.offset + 1] = 1 if steady else 0
            self._answer(ANSWER_DONE)
        elif cmd == CMD_SET_WATCHDOG:
            if self._set_watchdog is not None:
                self._set_watchdog(f"input_int_register_{self.offset}", float(self._doubles(0, 1)[0]))
            self._answer(ANSWER_DONE)
        elif cmd == CMD_PROTECTIVE_STOP:
            if self._protective_stop is not None:
                self._protective_stop()  # pauses the program: the answer is never written
            else:
                self._answer(ANSWER_DONE)
        elif cmd == CMD_STOP_SCRIPT:
            arm.stop(10.0, t)
            self.stopped = True
        else:
            self.unsupported[cmd] += 1
            self._answer(ANSWER_DONE)
