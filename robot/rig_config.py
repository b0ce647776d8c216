"""The rig configuration (``configs/rig/*.yaml``): arm + cameras + SpaceMouse + task + observation timing.

One file describes one physical (or simulated) rig; collection, deployment and calibration all load
it, so the three always agree on the same hardware, the same clocks and the same latencies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from robot.arm.config import ArmConfig
from robot.cameras.config import MultiCameraConfig
from robot.config import StrictModel
from robot.gripper.config import GripperConfig
from robot.spacemouse.config import SpaceMouseConfig


class TaskConfig(StrictModel):
    """The simulated task (robot/sim/tasks): ignored on a real rig."""

    name: str = "none"
    """``none``, ``touch``, ``reach`` or ``pusht``."""
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    """Seed of the first episode; each later episode uses the next seed."""


class ObsConfig(StrictModel):
    """How ``Env.get_obs`` samples the streams."""

    n_obs_steps: int = Field(2, ge=1)
    dt_s: float = Field(0.1, gt=0)
    """Spacing of the returned observations and the control/recording period (s)."""
    camera_time_source: Literal["device", "receive"] = "device"
    """``device``: use each frame's capture_time (device clock mapped to the host). ``receive``: use
    receive_time minus the calibrated camera latency (for cameras that do not stamp exposures)."""


class LatencyDefaults(StrictModel):
    """Used when the calibration file has no value (a warning says so)."""

    action_latency_s: float = Field(0.0, ge=0)
    """Command target time -> arm there (the ramp lag: dead time + tracking lag; README, "Latency").
    Waypoints are scheduled this much earlier. A calibration file's ``robot.action_latency`` wins."""
    camera_latency_s: dict[str, float] = Field(default_factory=dict)
    """Per camera name; only used with obs.camera_time_source = receive."""
    gripper_latency_s: float = Field(0.0, ge=0)
    """Width command target time -> fingers start moving. Width commands are sent this much earlier."""


class RigConfig(StrictModel):
    name: str = "sim"
    """Rig name: selects configs/calibration/<name>.yaml unless calibration_file is set."""
    arm: ArmConfig = Field(default_factory=ArmConfig)
    cameras: MultiCameraConfig = Field(default_factory=MultiCameraConfig)
    spacemouse: SpaceMouseConfig = Field(default_factory=SpaceMouseConfig)
    gripper: GripperConfig = Field(default_factory=GripperConfig)
    """``backend: none`` (default): no gripper; observations and actions have no width."""
    task: TaskConfig = Field(default_factory=TaskConfig)
    obs: ObsConfig = Field(default_factory=ObsConfig)
    latency: LatencyDefaults = Field(default_factory=LatencyDefaults)
    calibration_file: str | None = None
    """Path of the calibration file; default configs/calibration/<name>.yaml."""

    @property
    def is_sim(self) -> bool:
        return self.arm.backend == "sim"
