"""Simulated UR5 backend: the arm controller's loop drives :class:`robot.sim.ur5_model.SimUR5` and
the simulated world, and publishes the world state for the simulated cameras.

Timing contract: the model is stepped to the tick's host monotonic time ``t`` in ``read_state``, so the
published ``capture_time`` is the physical time of the state (exact, or ``sim.state_latency_s`` older
when that ground-truth latency is configured). A servo target sent at ``t`` moves the arm from
``t + sim.action_delay_s`` on (smoothed as the UR's servoL with ``sim.servo_lookahead_time_s`` and
``sim.servo_gain``; ``sim.action_delay_change`` changes the delay mid-run, a drill). The world-state
ring gets one record every ``sim.world_every_n_ticks`` ticks with ``time`` = the physical time of the arm pose it shows.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
from numpy.typing import NDArray

from robot.arm.backend import ArmReading, StatusFlag
from robot.arm.config import ArmConfig
from robot.shm.ring_buffer import RingBuffer
from robot.sim.ur5_model import SimUR5, UR5ModelParams
from robot.sim.world import SimWorld, Task
from robot.sim.world_state import WORLD_STATE_LAYOUT
from robot.timing import now

log = logging.getLogger("robot.arm")

FloatArray = NDArray[np.float64]


__all__ = ["SimArmBackend", "Task", "create_world_ring", "model_params"]


def create_world_ring(config: ArmConfig) -> RingBuffer:
    """The world-state ring the simulated arm hosts (``WORLD_STATE_LAYOUT``, ``sim.world_ring_capacity``
    records): created by the controller's parent side, written by this backend, read by sim cameras."""
    return RingBuffer.create(WORLD_STATE_LAYOUT, config.sim.world_ring_capacity, label="world")


def model_params(config: ArmConfig) -> UR5ModelParams:
    s = config.sim
    return UR5ModelParams(
        action_delay_s=s.action_delay_s,
        tracking_time_constant_s=s.tracking_time_constant_s,
        tracking_order=s.tracking_order,
        damping_ratio=s.damping_ratio,
        max_linear_speed_m_s=s.max_linear_speed_m_s,
        max_linear_accel_m_s2=s.max_linear_accel_m_s2,
        max_angular_speed_rad_s=s.max_angular_speed_rad_s,
        max_angular_accel_rad_s2=s.max_angular_accel_rad_s2,
        tcp_offset_pose=tuple(s.tcp_offset_pose),
    )


class SimArmBackend:
    """Implements :class:`robot.arm.backend.ArmBackend` on the simulated UR5 and world.

    Args:
        config: the arm config (``sim`` section, ``start_pose``).
        world_ring: ring with WORLD_STATE_LAYOUT to publish the world into (None: not published).
        task: the task hook of the simulated world (None: empty table).
        gripper_ring: the gripper process's state ring on a rig with a gripper (None: a bare tool);
            its newest ``width_m`` is the fingers' opening the world grasps with each tick.
    """

    description = "simulated UR5"

    def __init__(
        self,
        config: ArmConfig,
        world_ring: RingBuffer | None,
        task: Task | None,
        gripper_ring: RingBuffer | None = None,
    ):
        self.config = config
        self.gripper_ring = gripper_ring
        self.world_ring = world_ring
        self.world = SimWorld(task)
        self.tcp_offset_pose = np.asarray(config.sim.tcp_offset_pose, dtype=np.float64)
        self.model: SimUR5 | None = None
        self._fault = StatusFlag(0)
        self._history: deque[ArmReading] = deque()
        self._ticks = 0
        self._last_world_t: float | None = None
        self._delay_change_at: float | None = None

    def connect(self, t: float) -> None:
        initial = self.config.sim.initial_pose
        self.model = SimUR5(model_params(self.config), initial if initial else self.config.start_pose, t0=t)
        self.world.reset(self.config.sim.seed)
        self._last_world_t = t
        change = self.config.sim.action_delay_change
        self._delay_change_at = None if change is None else t + change[0]
        self._publish_world(t)

    def _reading(self) -> ArmReading:
        m = self.model
        return ArmReading(
            tcp_pose=m.tcp_pose,
            tcp_speed=m.tcp_speed,
            q=m.q,
            qd=m.qd,
            robot_time=m.time,
            capture_time=m.time,
            receive_time=0.0,
            flags=StatusFlag.UNREACHABLE if m.unreachable else StatusFlag(0),
        )

    def read_state(self, t: float) -> ArmReading:
        self.model.step(t)
        reading = self._reading()
        latency = self.config.sim.state_latency_s
        if latency > 0:
            # Publish the state of ``latency`` ago: keep a short history, take the newest old-enough one.
            self._history.append(reading)
            while len(self._history) > 1 and self._history[1].capture_time <= t - latency:
                self._history.popleft()
            reading = self._history[0]
        reading.receive_time = now()
        reading.flags |= self._fault
        return reading

    def servo(self, pose: FloatArray, t: float) -> bool:
        if self._fault:
            return True  # like a real arm in a protective stop: commands are ignored, not refused
        if self._delay_change_at is not None and t >= self._delay_change_at:
            self._delay_change_at = None
            self.model.set_action_delay(self.config.sim.action_delay_change[1])
            log.info("sim arm: action delay now %.1f ms (drill)", self.model.params.action_delay_s * 1e3)
        s = self.config.sim
        return self.model.command_pose(pose, t, s.servo_lookahead_time_s, s.servo_gain)

    def stop(self, t: float) -> None:
        self.model.stop(t)

    def reconnect(self, t: float) -> None:
        self._fault = StatusFlag(0)
        self._history.clear()

    def reset_world(self, seed: int) -> None:
        self.world.reset(seed)

    def inject_fault(self, flags: int) -> None:
        self._fault = StatusFlag(flags)
        if self._fault:
            self.model.halt(self.model.time)

    def after_tick(self, t: float) -> None:
        m = self.model
        dt = t - self._last_world_t
        self._last_world_t = t
        self.world.step(m.tcp_pose, dt, self._gripper_width())
        self._ticks += 1
        if self._ticks % self.config.sim.world_every_n_ticks == 0:
            self._publish_world(m.time)

    def _gripper_width(self) -> float | None:
        if self.gripper_ring is None:
            return None
        if self.gripper_ring.count == 0:
            return float("nan")
        return float(self.gripper_ring.latest()["width_m"])

    def _publish_world(self, t: float) -> None:
        if self.world_ring is not None:
            m = self.model
            self.world_ring.put(self.world.record(t, m.tcp_pose, m.q))

    def world_success(self) -> bool:
        return self.world.success

    def close(self) -> None:
        pass
