"""Arm controller configuration (``configs/arm/*.yaml``): backend, rate, limits, sim model, ur_rtde.

Units are in the key names: metres, radians, seconds, Hz. Poses are ``[x, y, z, rx, ry, rz]`` in
the arm's base frame (= the world frame of the simulated rig), rotation vector in radians.

The ``sim`` section is the simulated arm's *ground truth* (delay, tracking response). Calibration
overrides these keys from the command line (``sim.action_delay_s=0.05``) and checks that it measures
them back.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from robot.config import StrictModel

Vec3 = tuple[float, float, float]
Pose6 = tuple[float, float, float, float, float, float]


class ArmLimits(StrictModel):
    """Safety filter limits, applied on every tick to the commanded TCP pose (see robot/arm/safety.py)."""

    workspace_min_m: Vec3 = (0.25, -0.35, 0.02)
    """Lower corner of the allowed TCP box, base frame (m). Targets outside are clipped onto it."""
    workspace_max_m: Vec3 = (0.65, 0.35, 0.40)
    max_linear_speed_m_s: float = Field(0.25, gt=0)
    """TCP speed limit: waypoint segments are stretched to respect it and every tick is clipped to it."""
    max_angular_speed_rad_s: float = Field(0.8, gt=0)
    max_step_m: float = Field(0.01, gt=0)
    """Hard cap on the TCP translation between two consecutive ticks (m), on top of the speed limit."""
    max_step_rad: float = Field(0.05, gt=0)
    max_rotvec_norm_rad: float = Field(2 * math.pi, gt=0)
    """A target whose rotation vector is longer than this is absurd and rejected (arm holds)."""
    max_linear_accel_m_s2: float = Field(1.0, gt=0)
    """Acceleration of the ramp that brings the arm back onto its trajectory after a stall (m/s^2;
    the angular one scales like ``stop_decel_m_s2``'s): robot/arm/servo_ramp.py."""
    stop_decel_m_s2: float = Field(1.0, gt=0)
    """Deceleration of ``stop_motion`` and of the watchdog stop (m/s^2); the angular one uses
    ``stop_decel_m_s2 * max_angular_speed_rad_s / max_linear_speed_m_s``."""

    @model_validator(mode="after")
    def _box_ordered(self) -> ArmLimits:
        for axis, lo, hi in zip("xyz", self.workspace_min_m, self.workspace_max_m, strict=True):
            if not lo < hi:
                raise ValueError(f"workspace {axis}: min {lo} must be < max {hi}")
        return self


class SimArmConfig(StrictModel):
    """Simulated UR5 (robot/sim/ur5_model.py): the ground truth the calibration must recover."""

    action_delay_s: float = Field(0.03, ge=0)
    """Pure delay between a command reaching the (simulated) arm and the arm starting to follow it."""
    tracking_time_constant_s: float = Field(0.02, gt=0)
    """Time constant of the tracking response (first order) or 1/natural frequency (second order)."""
    tracking_order: Literal[1, 2] = 1
    damping_ratio: float = Field(1.0, gt=0)
    """Second-order tracking only."""
    servo_lookahead_time_s: float = Field(0.0, ge=0, le=0.2)
    """The UR's servoL smoothing as the sim models it (robot/sim/ur5_model.py), applied to every
    target the controller sends: 0 = none; a real UR takes 0.03-0.2 s (``ur.servo_lookahead_time_s``)."""
    servo_gain: float = Field(300.0, ge=100, le=2000)
    """servoL gain of that smoothing (UR range 100-2000)."""
    action_delay_change: tuple[float, float] | None = None
    """Drill: ``[after_s, action_delay_s]`` changes the ground-truth delay ``after_s`` seconds after the
    controller started (the arm's latency drifting mid-run, for the online latency watch); None: never."""
    max_linear_speed_m_s: float = Field(1.0, gt=0)
    """The arm's own limits (UR5: ~1 m/s TCP); the safety filter's limits are normally lower."""
    max_linear_accel_m_s2: float = Field(5.0, gt=0)
    max_angular_speed_rad_s: float = Field(3.0, gt=0)
    max_angular_accel_rad_s2: float = Field(15.0, gt=0)
    state_latency_s: float = Field(0.0, ge=0)
    """The published state describes the arm this long before it is published (0: exact)."""
    tcp_offset_pose: Pose6 = (0.0, 0.0, 0.10, 0.0, 0.0, 0.0)
    """TCP relative to the flange (m, rad): the simulated tool."""
    initial_pose: Pose6 | None = None
    """Where the simulated arm is when the controller starts (None: at ``start_pose``)."""
    world_every_n_ticks: int = Field(1, ge=1)
    """Write the world-state ring every n controller ticks (1 = every tick)."""
    world_ring_capacity: int = Field(256, ge=4)
    seed: int = 0
    """Seed of the first task reset (``reset_world(seed)`` sets later ones)."""


class URArmConfig(StrictModel):
    """Real UR arm through ur_rtde (robot/arm/ur_backend.py, robot/arm/ur_client.py)."""

    servo_lookahead_time_s: float = Field(0.1, ge=0.03, le=0.2)
    """servoL lookahead time: smooths the trajectory, adds lag (UR range 0.03-0.2 s)."""
    servo_gain: float = Field(300.0, ge=100, le=2000)
    """servoL proportional gain (UR range 100-2000)."""
    tcp_offset_pose: Pose6 = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    """TCP relative to the flange (m, rad), sent with setTcp at connect."""
    payload_kg: float | None = None
    payload_cog_m: Vec3 | None = None
    rt_priority: int = Field(0, ge=0, le=99)
    """SCHED_FIFO priority of the controller process and of ur_rtde's threads (0 = don't ask)."""
    state_latency_s: float = Field(0.0, ge=0)
    """Age of a received state when it arrives (calibrated); capture_time = receive_time - this."""
    state_timeout_s: float = Field(0.5, gt=0)
    """The ur_rtde client process publishing no state for this long counts as a lost connection: the
    controller ends the client (nothing it queued before is sent after) and reports DISCONNECTED."""
    controller_timeout_s: float = Field(0.15, gt=0)
    """No new RTDE package from the UR controller for this long (while the client runs, and with no
    package of the controller's waiting unread in the client's sockets) is a controller that stopped
    answering: DISCONNECTED, named in the error. From the first missing package on, the client sends
    no new target (the arm holds the last one). 0.15 s: 75 periods at 500 Hz, 19 at 125 Hz; a real
    controller misses none. The fake controller, real-time scheduled like a real one, skips at most
    28 ms of its ticks at load 20-25 (robot/fake_ur/handle.py; it skipped up to 1 s at the default
    priority, which once made 0.25 s declare a live fake lost)."""
    servo_ramp: bool = True
    """Bound every servoL target relative to the last one sent (robot/arm/servo_ramp.py). False
    only for the stall benchmark's baseline (the old behaviour: the newest target, as it comes)."""
    stop_accel_m_s2: float = Field(1.0, gt=0)
    """servoStop deceleration on exit (m/s^2)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """Each connect step (dashboard, RTDE receive, RTDE control with the script upload, first state
    packages) may take this long (+1 s) before the ur_rtde client process is killed and the connect
    fails with a message naming the host and port (robot/arm/ur_backend.py)."""
    upload_script: bool = True


class ArmConfig(StrictModel):
    """The arm controller process (robot/arm/controller.py)."""

    backend: Literal["sim", "ur"] = "sim"
    rate_hz: float = Field(125.0, gt=0, le=1000)
    """Control rate: 125 Hz for CB3, 500 Hz for e-Series. The UR backend refuses 500 Hz on a CB3."""
    spin_s: float = Field(0.0005, ge=0, le=0.005)
    """Each tick sleeps until this long before its deadline, then busy-waits (robot/timing.py): more
    spin = less wake-up jitter but more CPU (at 500 Hz, 0.5 ms spin is 25% of a core)."""
    nice: int | None = Field(-10, ge=-20, le=19)
    """Scheduling niceness of the controller process (lower = more CPU when contended, fewer late
    ticks); applied when permitted (root / CAP_SYS_NICE), else a warning. None: leave it."""
    host: str = "127.0.0.1"
    """Robot controller address (ur backend)."""
    start_pose: Pose6 = (0.45, 0.0, 0.20, math.pi, 0.0, 0.0)
    """Home / start TCP pose (base frame, m and rotation vector rad): tool pointing down."""
    kinematics: Literal["ur5", "ur5e"] = "ur5"
    """Arm model for forward kinematics of ``start_joints_rad`` (the simulated arm is always a UR5)."""
    start_joints_rad: tuple[float, float, float, float, float, float] | None = None
    """If set, home goes to the TCP pose these joints give (forward kinematics), instead of start_pose."""
    home_speed_m_s: float = Field(0.05, gt=0)
    home_angular_speed_rad_s: float = Field(0.3, gt=0)
    home_tolerance_m: float = Field(0.002, gt=0)
    limits: ArmLimits = ArmLimits()
    heartbeat_timeout_s: float | None = Field(None, gt=0)
    """Stop the arm and exit if the parent has not called heartbeat() (or sent a command) for this
    long. None: only the parent-death watchdog (always on)."""
    state_history_s: float = Field(10.0, gt=0)
    """Length of the state ring (s of records at rate_hz)."""
    command_queue_capacity: int = Field(256, ge=8)
    sim: SimArmConfig = SimArmConfig()
    ur: URArmConfig = URArmConfig()

    @model_validator(mode="after")
    def _start_inside_workspace(self) -> ArmConfig:
        p = self.start_pose
        lo, hi = self.limits.workspace_min_m, self.limits.workspace_max_m
        for i, axis in enumerate("xyz"):
            if not lo[i] <= p[i] <= hi[i]:
                raise ValueError(
                    f"start_pose {axis}={p[i]} is outside the workspace [{lo[i]}, {hi[i]}] (limits.workspace_*)"
                )
        return self

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz
