"""The arm controller process: trajectory interpolation, safety filter, servoing, state publishing.

One OS process per arm (:class:`ArmController`, a :class:`robot.process.DeviceProcess`). It runs at
``config.rate_hz`` on the host monotonic grid (:class:`robot.timing.RateLoop`). Each tick at host
time ``t``:

1. read the arm state (sim: step the simulated UR5 to ``t``);
2. drain the command queue (waypoints, servo_to, stop_motion, home, reset_world, reconnect);
3. evaluate the pose trajectory at ``t`` (it holds its last pose when it runs out, never extrapolates);
4. safety filter: workspace box, max speed and max step per tick (robot/arm/safety.py);
5. send the target (``servoL`` / sim model command), unless faulted;
6. publish one state record to :attr:`ArmController.state_ring` (layout :data:`STATE_LAYOUT`);
7. sim: step the world and write the world-state ring.

Parent-side API (all non-blocking unless stated; poses ``[x, y, z, rx, ry, rz]`` in m and rotation
vector rad, TCP in the base frame; times host monotonic ``time.monotonic()`` s):

- ``schedule_waypoint(pose, target_time)``: reach ``pose`` at ``target_time``. Waypoints in the past
  are dropped (counted in ``dropped_waypoints``). Segments are stretched so that the configured max
  linear/angular speeds are not exceeded (then the pose is reached late).
- ``servo_to(pose, duration_s)``: replace the future trajectory by one move reaching ``pose`` in
  ``duration_s`` (stretched likewise).
- ``stop_motion()``: decelerate at ``limits.stop_decel_m_s2`` from the arm's measured TCP speed
  (never a speed estimated from commanded steps), starting at the last target the arm received,
  and hold; later commands move again. The arm comes to rest within v^2 / (2 a) of that target.
- ``home(wait=True)``: slow move (``home_speed_m_s``) to ``start_pose`` / ``start_joints_rad``.
- ``reset_world(seed, wait=True)``: sim: new episode of the task with ``seed``; ur: no-op.
- ``reconnect(wait=True)``: after a fault (protective stop, e-stop, lost link), reconnect/clear and
  hold the current pose.
- ``get_state()`` / ``get_state_history(k)``, ``check()`` (raises :class:`ArmFaultError` on a fault and
  :class:`robot.process.DeviceProcessError` if the process failed), ``heartbeat()``.

Safety: rejected commands (NaN/inf, absurd rotation vector) are logged, counted and flagged; the arm
keeps its trajectory. Watchdog: when the parent dies, stops heartbeating (``heartbeat_timeout_s``),
or SIGINT/SIGTERM arrives, the controller brings the arm to rest with a decelerating stop and exits.
A fault (protective stop, e-stop, disconnect) makes the controller stop commanding and publish the
fault; ``check()`` in the parent raises a clear error; ``reconnect()`` resumes without a restart.

Limits hold at the arm: step 4 bounds consecutive *commanded* targets; the UR backend's client
bounds each target *the arm receives* relative to the previous one it received
(robot/arm/servo_ramp.py), which is what holds when this process, the ur_rtde client or the UR
controller stalls. A controller that stops answering is a fault within ``ur.controller_timeout_s``.
"""

from __future__ import annotations

import logging
import math
import os
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from robot.arm.backend import (
    FAULT_FLAGS,
    ArmBackend,
    ArmReading,
    StatusFlag,
    describe_flags,
)
from robot.arm.config import ArmConfig
from robot.arm.interpolator import PoseTrajectoryInterpolator, pose_distance
from robot.arm.safety import SafetyFilter
from robot.process import DeviceProcess, DeviceProcessError, StateReader
from robot.shm.command_queue import CommandQueue, QueueFull
from robot.shm.ring_buffer import RingBuffer
from robot.timing import RateLoop, now

if TYPE_CHECKING:
    from robot.arm.sim_backend import Task

log = logging.getLogger("robot.arm")

FloatArray = NDArray[np.float64]

STATE_LAYOUT = {
    "actual_tcp_pose": ((6,), "float64"),  # m, rotvec rad, base frame
    "actual_tcp_speed": ((6,), "float64"),  # m/s, rad/s, base frame
    "actual_q": ((6,), "float64"),  # rad
    "actual_qd": ((6,), "float64"),  # rad/s
    "target_tcp_pose": ((6,), "float64"),  # the pose commanded this tick (after the safety filter)
    "robot_time": ((), "float64"),  # the arm controller's clock (s): RTDE timestamp / sim model time
    "receive_time": ((), "float64"),  # host monotonic s when the state was read
    "capture_time": ((), "float64"),  # host monotonic s the state describes
    "tick_time": ((), "float64"),  # host monotonic s the tick started (wake-up)
    "tick_error_s": ((), "float64"),  # wake-up minus scheduled deadline (s)
    "tick_overrun": ((), "bool"),  # the previous tick ran past this tick's deadline
    "status_flags": ((), "uint32"),  # robot.arm.backend.StatusFlag bits
    "rejected_count": ((), "int64"),  # commands rejected by the safety filter so far
    "dropped_waypoints": ((), "int64"),  # waypoints that arrived after their target_time
    "world_resets": ((), "int64"),  # reset_world commands applied so far
    "task_success": ((), "bool"),  # sim: the task hook's success(); real: False
}


class Cmd(IntEnum):
    WAYPOINT = 1
    SERVO = 2
    STOP_MOTION = 3
    HOME = 4
    RESET_WORLD = 5
    RECONNECT = 6
    INJECT_FAULT = 7


COMMAND_LAYOUT = {
    "cmd": ((), "int32"),
    "pose": ((6,), "float64"),
    "target_time": ((), "float64"),
    "duration_s": ((), "float64"),
    "value": ((), "int64"),
}

_EXIT_STOP_MAX_S = 3.0  # the watchdog/shutdown stop gives up waiting for rest after this long
_REST_SPEED_M_S = 1e-4
_REST_SPEED_RAD_S = 1e-3


class ArmFaultError(DeviceProcessError):
    """The arm reported a fault (protective stop, e-stop, lost connection); the controller stopped
    commanding it. Clear the cause, then call ``ArmController.reconnect()``."""


def _fault_message(description: str, flags: int) -> str:
    parts = []
    if flags & StatusFlag.EMERGENCY_STOP:
        parts.append("EMERGENCY STOP is active: release the e-stop button and unlock the arm on the pendant")
    if flags & StatusFlag.PROTECTIVE_STOP:
        parts.append(
            "PROTECTIVE STOP: the arm hit something or exceeded a safety limit; check the workspace, "
            "then unlock the protective stop on the pendant"
        )
    if flags & StatusFlag.DISCONNECTED and flags & StatusFlag.CONTROLLER_SILENT:
        parts.append(
            "CONNECTION LOST: the UR controller stopped answering (no new RTDE state package for "
            "ur.controller_timeout_s); the arm holds its last servo target. Check the network cable and "
            "switch, and that the controller is not overloaded or rebooting"
        )
    elif flags & StatusFlag.DISCONNECTED and flags & StatusFlag.CLIENT_STALLED:
        parts.append(
            "CONNECTION LOST: the ur_rtde client process on this PC stalled (published nothing for "
            "ur.state_timeout_s: paused, or starved of CPU) and was ended, so none of its queued targets "
            "reach the arm; the arm holds its last servo target. Check the load on this PC"
        )
    elif flags & StatusFlag.DISCONNECTED:
        parts.append(
            "CONNECTION LOST (or the control script stopped): check the network cable, that the arm is "
            "powered on and in remote control, and that no other program took control"
        )
    return f"arm ({description}): " + "; ".join(parts) + ". Then call reconnect() to resume."


class ArmController(StateReader, DeviceProcess):
    """The arm controller process (see the module docstring for the tick and the API).

    Args:
        config: the arm config (``configs/arm/*.yaml``).
        world_ring: sim only: the world-state ring (WORLD_STATE_LAYOUT) the simulated arm writes and
            the sim cameras read. Created (and owned, i.e. unlinked by :meth:`close`) here if None;
            available as :attr:`world_ring`. Ignored (None) for the ur backend.
        task: sim only: the task hook placed in the world (picklable; see robot/sim/world.py).
        gripper_ring: sim only: the gripper process's state ring, whose width the world grasps with.

    Shared memory is created in the constructor; :meth:`close` (or leaving the ``with`` block)
    releases it. ``start()`` returns when the arm is connected and the first state is published.
    """

    def __init__(
        self,
        config: ArmConfig,
        world_ring: RingBuffer | None = None,
        task: Task | None = None,
        gripper_ring: RingBuffer | None = None,
    ):
        desc = "simulated UR5" if config.backend == "sim" else f"UR at {config.host}"
        super().__init__(
            f"arm controller ({desc})",
            ready_timeout_s=30.0 if config.backend == "sim" else config.ur.connect_timeout_s + 20.0,
            stop_timeout_s=_EXIT_STOP_MAX_S + 5.0,
            heartbeat_timeout_s=config.heartbeat_timeout_s,
        )
        self.config = config
        self.description = desc
        self.task = task
        self.gripper_ring = gripper_ring
        capacity = max(16, int(math.ceil(config.rate_hz * config.state_history_s)))
        self.state_ring = RingBuffer.create(STATE_LAYOUT, capacity, label="armstate")
        self._owned.append(self.state_ring)
        self.command_queue = CommandQueue.create(
            COMMAND_LAYOUT, config.command_queue_capacity, label="armcmd"
        )
        self._owned.append(self.command_queue)
        if config.backend == "sim" and world_ring is None:
            from robot.arm.sim_backend import create_world_ring  # the world is hosted by the sim backend

            world_ring = create_world_ring(config)
            self._owned.append(world_ring)
        self.world_ring: RingBuffer | None = world_ring if config.backend == "sim" else None

    # ================================================================== parent side
    def _send(self, cmd: Cmd, pose: ArrayLike | None = None, target_time: float = 0.0, **kw: Any) -> None:
        rec = {
            "cmd": int(cmd),
            "pose": np.zeros(6) if pose is None else np.asarray(pose, dtype=np.float64).reshape(6),
            "target_time": float(target_time),
            "duration_s": float(kw.get("duration_s", 0.0)),
            "value": int(kw.get("value", 0)),
        }
        try:
            self.command_queue.put(rec)
        except QueueFull:
            raise QueueFull(
                f"{self.name}: command queue full ({self.command_queue.capacity} pending): the controller "
                "process is not draining it (stalled or dead?); call check()"
            ) from None
        self.heartbeat()

    def schedule_waypoint(self, pose: ArrayLike, target_time: float) -> None:
        """Reach TCP ``pose`` at host monotonic ``target_time`` (s). Non-blocking.

        Applied by the controller within one tick. Past times are dropped; segments are stretched to
        the speed limits; the trajectory holds the last waypoint once reached.
        """
        self._send(Cmd.WAYPOINT, pose, target_time)

    def servo_to(self, pose: ArrayLike, duration_s: float) -> None:
        """Replace the future trajectory by a move to ``pose`` lasting ``duration_s`` (s, at least the
        speed limits' minimum) from the tick that receives it. Non-blocking."""
        self._send(Cmd.SERVO, pose, duration_s=duration_s)

    def stop_motion(self) -> None:
        """Decelerating stop (``limits.stop_decel_m_s2``), then hold. Non-blocking; later commands
        move the arm again."""
        self._send(Cmd.STOP_MOTION)

    def home(self, wait: bool = True, timeout_s: float | None = None) -> None:
        """Slow, speed-limited move to the configured start (``start_joints_rad`` if set, else
        ``start_pose``). With ``wait``, blocks until the TCP is within ``home_tolerance_m`` and at rest
        (raises TimeoutError after ``timeout_s``, default: distance / home speed + 10 s)."""
        self._send(Cmd.HOME)
        if not wait:
            return
        state = self.get_state()
        goal = self.home_pose()
        lin, ang = pose_distance(state["actual_tcp_pose"], goal)
        if timeout_s is None:
            timeout_s = lin / self.config.home_speed_m_s + ang / self.config.home_angular_speed_rad_s + 10.0
        self._wait_for(lambda s: self._at_pose(s, goal), timeout_s, "reach the home pose")

    def home_pose(self) -> FloatArray:
        """The TCP pose ``home()`` goes to (base frame)."""
        if self.config.start_joints_rad is None:
            return np.asarray(self.config.start_pose, dtype=np.float64)
        from robot.geometry.ur_kinematics import ur5_forward_kinematics

        if self.config.backend == "sim":
            return ur5_forward_kinematics(
                self.config.start_joints_rad, self.config.sim.tcp_offset_pose, "ur5"
            )
        return ur5_forward_kinematics(
            self.config.start_joints_rad, self.config.ur.tcp_offset_pose, self.config.kinematics
        )

    def _at_pose(self, state: dict[str, Any], goal: FloatArray) -> bool:
        lin, ang = pose_distance(state["actual_tcp_pose"], goal)
        speed = float(np.linalg.norm(state["actual_tcp_speed"][:3]))
        return lin <= self.config.home_tolerance_m and ang <= 0.01 and speed < 1e-3

    def reset_world(self, seed: int, wait: bool = True, timeout_s: float = 5.0) -> None:
        """Sim: reset the task objects for a new episode with ``seed`` (applied within one tick; with
        ``wait``, returns once a state record shows it). Real arm: does nothing."""
        if self.config.backend != "sim":
            return
        before = int(self.get_state()["world_resets"])
        self._send(Cmd.RESET_WORLD, value=int(seed))
        if wait:
            self._wait_for(lambda s: s["world_resets"] > before, timeout_s, "reset the world")

    def reconnect(self, wait: bool = True, timeout_s: float = 30.0) -> None:
        """After a fault: reconnect to the arm / clear the fault and hold the current pose.

        With ``wait``, retries every ~2 s (a cleared protective stop takes a moment to show in the
        arm's state) until the fault is gone; raises ArmFaultError after ``timeout_s``.
        """
        deadline = now() + timeout_s
        while True:
            before = self.state_ring.count
            self._send(Cmd.RECONNECT)
            if not wait:
                return
            retry_at = min(deadline, now() + 2.0)
            while now() < retry_at:
                DeviceProcess.check(self)
                self.heartbeat()
                recs = self.state_ring.get_since(before, skip_overwritten=True)
                if len(recs["counter"]) > 1 and not recs["status_flags"][-1] & (
                    FAULT_FLAGS | StatusFlag.FAULTED
                ):
                    return
                self._sleep_tick()
            if now() >= deadline:
                flags = int(self.get_state()["status_flags"])
                raise ArmFaultError(
                    f"arm ({self.description}): reconnect did not clear the fault within {timeout_s:.0f} s "
                    f"(status {describe_flags(flags)}). "
                    + (
                        _fault_message(self.description, flags)
                        if flags & FAULT_FLAGS
                        else "See the controller log."
                    )
                )

    def inject_fault(self, flags: int) -> None:
        """Sim only, for tests and drills: make the simulated arm raise these StatusFlag fault bits
        (e.g. ``StatusFlag.PROTECTIVE_STOP``); cleared by ``reconnect()``."""
        if self.config.backend != "sim":
            raise RuntimeError(f"{self.name}: inject_fault is only for the simulated arm")
        self._send(Cmd.INJECT_FAULT, value=int(flags))

    def check(self) -> None:
        """Raise DeviceProcessError if the process failed or died, ArmFaultError if the arm is faulted."""
        super().check()
        if self.state_ring.count:
            flags = int(self.state_ring.latest()["status_flags"])
            if flags & FAULT_FLAGS:
                raise ArmFaultError(_fault_message(self.description, flags))

    def _sleep_tick(self) -> None:
        import time

        time.sleep(min(0.01, self.config.period_s))

    def _wait_for(self, cond: Any, timeout_s: float, what: str) -> None:
        deadline = now() + timeout_s
        while now() < deadline:
            self.check()
            self.heartbeat()
            if cond(self.get_state()):
                return
            self._sleep_tick()
        raise TimeoutError(
            f"{self.name}: did not {what} within {timeout_s:.1f} s (state: {self.get_state()})"
        )

    # ================================================================== child side
    def _make_backend(self) -> ArmBackend:
        if self.config.backend == "sim":
            from robot.arm.sim_backend import SimArmBackend

            return SimArmBackend(self.config, self.world_ring, self.task, self.gripper_ring)
        from robot.arm.ur_backend import URArmBackend

        return URArmBackend(self.config)

    def setup(self) -> None:
        cfg = self.config
        if cfg.nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, cfg.nice)
            except OSError as exc:
                log.warning(
                    "%s: cannot set niceness %d (%s); late ticks are more likely", self.name, cfg.nice, exc
                )
        self.backend = self._make_backend()
        self.safety = SafetyFilter(cfg.limits, cfg.period_s)
        t = now()
        self.backend.connect(t)
        t = now()
        reading = self._reading = self.backend.read_state(t)
        self._faulted = bool(reading.flags & FAULT_FLAGS)
        self._hold(reading.tcp_pose, t)
        self._rejected = 0
        self._rejected_flag = False
        self._dropped = 0
        self._world_resets = 0
        self._stopping_until: float | None = None
        self._exiting = False
        self._publish(reading, t, 0.0, False, StatusFlag(0))

    def _hold(self, pose: FloatArray, t: float) -> None:
        self._last_cmd = np.asarray(pose, dtype=np.float64).copy()
        self._last_cmd_time = t
        self._interp = PoseTrajectoryInterpolator([t], [self._last_cmd])
        self._last_waypoint_time: float | None = None

    def run_loop(self) -> None:
        loop = RateLoop(self.config.rate_hz, spin_s=self.config.spin_s)
        exit_deadline: float | None = None
        while True:
            if exit_deadline is None and self.should_stop():
                exit_deadline = now() + _EXIT_STOP_MAX_S
                self._exiting = True
                if not self._faulted:
                    self._begin_stop(now())
            tick = loop.wait()
            reading = self._tick(tick.time, tick.error_s, tick.overrun)
            if exit_deadline is not None and (
                self._faulted or self._at_rest(reading) or now() > exit_deadline
            ):
                break
        self.backend.stop(now())
        reason = self.stop_reason or "stop requested"
        if reason != "stop requested":
            # The parent (if alive) learns why through check().
            self._report(f"{self.name}: brought the arm to rest and exited: {reason}")
            if reason != "signal SIGINT":  # Ctrl-C: the main process says it once for the whole run
                log.warning("%s: brought the arm to rest and exited: %s", self.name, reason)

    def _at_rest(self, reading: ArmReading) -> bool:
        """The exit stop is over: the stop profile has ended and the arm no longer moves."""
        if self._stopping_until is None:
            return True
        return (
            now() >= self._stopping_until
            and float(np.linalg.norm(reading.tcp_speed[:3])) < _REST_SPEED_M_S
            and float(np.linalg.norm(reading.tcp_speed[3:])) < _REST_SPEED_RAD_S
        )

    def teardown(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()

    # ------------------------------------------------------------------ one tick
    def _tick(self, t: float, tick_error_s: float, overrun: bool) -> ArmReading:
        reading = self._reading = self.backend.read_state(t)
        flags = StatusFlag(0)
        if reading.flags & FAULT_FLAGS and not self._faulted:
            self._faulted = True
            log.error("%s", _fault_message(self.description, int(reading.flags)))
        if not self._exiting:
            self._handle_commands(t, reading)
        if self._faulted:
            # Not commanding: the trajectory follows the arm so that resuming starts where it is.
            self._hold(reading.tcp_pose, t)
            flags |= StatusFlag.FAULTED
        else:
            target = self._interp(t)
            target, clipped, limited = self.safety.limit_step(target, self._last_cmd)
            if clipped:
                flags |= StatusFlag.WORKSPACE_CLIPPED
            if limited:
                flags |= StatusFlag.SPEED_LIMITED
            if not self.backend.servo(target, t):
                flags |= StatusFlag.UNREACHABLE
            self._last_cmd = target
            self._last_cmd_time = t
        if self._stopping_until is not None and t < self._stopping_until + 0.5:
            flags |= StatusFlag.STOPPING
        if self._exiting:
            flags |= StatusFlag.WATCHDOG | StatusFlag.STOPPING
        if self._rejected_flag:
            flags |= StatusFlag.REJECTED_TARGET
        self._publish(reading, t, tick_error_s, overrun, flags)
        self.backend.after_tick(t)
        return reading

    def _publish(
        self, r: ArmReading, t: float, tick_error_s: float, overrun: bool, flags: StatusFlag
    ) -> None:
        self.state_ring.put(
            {
                "actual_tcp_pose": r.tcp_pose,
                "actual_tcp_speed": r.tcp_speed,
                "actual_q": r.q,
                "actual_qd": r.qd,
                "target_tcp_pose": self._last_cmd,
                "robot_time": r.robot_time,
                "receive_time": r.receive_time,
                "capture_time": r.capture_time,
                "tick_time": t,
                "tick_error_s": tick_error_s,
                "tick_overrun": overrun,
                "status_flags": int(flags | r.flags),
                "rejected_count": self._rejected,
                "dropped_waypoints": self._dropped,
                "world_resets": self._world_resets,
                "task_success": self.backend.world_success(),
            }
        )

    def _handle_commands(self, t: float, reading: ArmReading) -> None:
        cmds = self.command_queue.get_all()
        n = len(cmds["cmd"])
        lim = self.config.limits
        for i in range(n):
            kind = int(cmds["cmd"][i])
            pose = cmds["pose"][i]
            if kind in (Cmd.WAYPOINT, Cmd.SERVO):
                checked, reason, _ = self.safety.validate(pose)
                if checked is None:
                    self._rejected += 1
                    self._rejected_flag = True
                    log.warning("%s: rejected a target, holding: %s", self.name, reason)
                    continue
                self._rejected_flag = False
                if self._faulted:
                    continue
                if kind == Cmd.WAYPOINT:
                    target_time = float(cmds["target_time"][i])
                    if target_time <= t:
                        self._dropped += 1
                        continue
                    self._interp = self._interp.schedule_waypoint(
                        checked,
                        target_time,
                        max_linear_speed_m_s=lim.max_linear_speed_m_s,
                        max_angular_speed_rad_s=lim.max_angular_speed_rad_s,
                        curr_time=t,
                        last_waypoint_time=self._last_waypoint_time,
                    )
                    self._last_waypoint_time = target_time
                else:
                    self._interp = self._interp.drive_to_waypoint(
                        checked,
                        t + max(float(cmds["duration_s"][i]), 0.0),
                        max_linear_speed_m_s=lim.max_linear_speed_m_s,
                        max_angular_speed_rad_s=lim.max_angular_speed_rad_s,
                        curr_time=t,
                    )
                    self._last_waypoint_time = self._interp.end_time
                self._stopping_until = None
            elif kind == Cmd.STOP_MOTION:
                if not self._faulted:
                    self._begin_stop(t, reading)
            elif kind == Cmd.HOME:
                if not self._faulted:
                    self._interp = self._interp.drive_to_waypoint(
                        self.home_pose(),
                        t,
                        max_linear_speed_m_s=min(self.config.home_speed_m_s, lim.max_linear_speed_m_s),
                        max_angular_speed_rad_s=min(
                            self.config.home_angular_speed_rad_s, lim.max_angular_speed_rad_s
                        ),
                        curr_time=t,
                    )
                    self._last_waypoint_time = self._interp.end_time
                    self._stopping_until = None
            elif kind == Cmd.RESET_WORLD:
                self.backend.reset_world(int(cmds["value"][i]))
                self._world_resets += 1
            elif kind == Cmd.RECONNECT:
                self._reconnect(t)
            elif kind == Cmd.INJECT_FAULT:
                self.backend.inject_fault(int(cmds["value"][i]))
            else:
                log.warning("%s: unknown command id %d ignored", self.name, kind)

    def _reconnect(self, t: float) -> None:
        try:
            self.backend.reconnect(t)
        except Exception as exc:  # the arm is still unavailable: stay faulted, tell the operator
            log.error("%s: reconnect failed: %s", self.name, exc)
            return
        reading = self.backend.read_state(now())
        if reading.flags & FAULT_FLAGS:
            log.error("%s: still faulted after reconnect: %s", self.name, describe_flags(int(reading.flags)))
            return
        self._faulted = False
        self._hold(reading.tcp_pose, t)
        log.warning("%s: reconnected; holding the current pose", self.name)

    def _begin_stop(self, t: float, reading: ArmReading | None = None) -> None:
        """Replace the trajectory by a constant-deceleration stop from the arm's measured speed.

        The profile starts at the last target the arm received (the backend's
        ``received_target``; else the last commanded pose) with the TCP velocity the arm reports
        (``reading``; the last tick's if None), never with a speed estimated from the
        commanded steps: a late tick makes one capped step look like the speed limit (a stop from
        0.05 m/s then ran 31 mm on)."""
        lim = self.config.limits
        dt = self.config.period_s
        if reading is None:
            reading = self._reading
        v = np.asarray(reading.tcp_speed[:3], dtype=np.float64)
        w = np.asarray(reading.tcp_speed[3:], dtype=np.float64)
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
            v, w = np.zeros(3), np.zeros(3)
        if reading.received_target is not None:
            # From what the arm received: a client that trails the trajectory (after a stall)
            # would otherwise carry the arm on to the controller's newer target, then stop.
            self._last_cmd = np.asarray(reading.received_target, dtype=np.float64).copy()
        r_last = Rotation.from_rotvec(self._last_cmd[3:])
        ang_decel = lim.stop_decel_m_s2 * lim.max_angular_speed_rad_s / lim.max_linear_speed_m_s
        stop_s = max(float(np.linalg.norm(v)) / lim.stop_decel_m_s2, float(np.linalg.norm(w)) / ang_decel)
        if stop_s < dt:
            self._hold(self._last_cmd, t)
            self._stopping_until = t
            return
        # Sampled constant-deceleration profile: s(tau) = tau - tau^2 / (2 T) (times the speed),
        # starting from the last command at its time so that this tick continues the motion.
        t = min(t, self._last_cmd_time)
        taus = np.linspace(0.0, stop_s, 9)
        frac = taus - taus**2 / (2 * stop_s)
        poses = np.empty((len(taus), 6))
        poses[:, :3] = self._last_cmd[:3] + np.outer(frac, v)
        poses[:, 3:] = (Rotation.from_rotvec(np.outer(frac, w)) * r_last).as_rotvec()
        self._interp = PoseTrajectoryInterpolator(t + taus, poses)
        self._last_waypoint_time = self._interp.end_time
        self._stopping_until = t + stop_s
