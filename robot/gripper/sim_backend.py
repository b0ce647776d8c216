"""Simulated gripper: the finger model (robot/gripper/finger_model.py) in the gripper process, closing
onto the object the simulated world has between the pads.

Timing contract: ``read_state(t)`` steps the fingers to the tick's host time ``t`` (capture time = t).
A command sent at ``t`` moves the fingers from ``t + sim.command_delay_s`` (the ground truth that
``rig calibrate gripper-latency`` must find). The obstacle comes from the newest world-state record
(the arm process writes it at its rate), so it is at most one arm tick old. The world in turn reads
this process's state ring to decide what the fingers hold (robot/sim/grasp.py).
"""

from __future__ import annotations

import time

import numpy as np

from robot.gripper.backend import GripperReading
from robot.gripper.config import GripperConfig
from robot.gripper.finger_model import FingerModel
from robot.shm.ring_buffer import RingBuffer
from robot.timing import now


class SimGripperBackend:
    description = "simulated gripper"

    def __init__(self, config: GripperConfig, world_ring: RingBuffer | None):
        self.config = config
        self.world_ring = world_ring
        self.model: FingerModel | None = None

    def connect(self, t: float) -> None:
        if self.config.sim.activation_s > 0:
            time.sleep(self.config.sim.activation_s)
        self.model = FingerModel(self.config.max_width_m, None, self.config.sim.command_delay_s, now())

    def _obstacle(self) -> float | None:
        if self.world_ring is None or self.world_ring.count == 0:
            return None
        from robot.sim.grasp import obstacle_width

        rec = self.world_ring.latest()
        return obstacle_width(rec, float(self.model.width_m))

    def read_state(self, t: float) -> GripperReading:
        m = self.model
        m.step(t, self._obstacle())
        return GripperReading(
            width_m=m.width_m,
            moving=m.moving,
            object_detected=m.object_detected,
            fault_code=0,
            capture_time=t,
            receive_time=now(),
        )

    def command(self, width_m: float, speed_m_s: float, force_n: float, t: float) -> None:
        lo, hi = self.config.spec.speed_range_m_s
        self.model.command(width_m, float(np.clip(speed_m_s, lo, hi)), t)

    def hold(self, t: float) -> None:
        self.model.step(t, self._obstacle())
        if self.model.moving:
            self.model.stop()

    def close(self) -> None:
        pass
