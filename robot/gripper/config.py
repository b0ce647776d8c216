"""Gripper configuration (the ``gripper`` section of a rig config; ``configs/gripper/*.yaml``).

Units are in the names: widths in metres (the opening between the finger pads, 0 = closed),
speeds in m/s (of the opening), forces in newtons, times in seconds, rates in Hz.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from robot.config import StrictModel


class GripperModelSpec(StrictModel):
    """What the Robotiq manual gives for one model: stroke, speed and force ranges (SPE/FOR 0..255 map
    linearly onto them)."""

    stroke_m: float
    speed_range_m_s: tuple[float, float]
    force_range_n: tuple[float, float]


# Robotiq 2F-85 / 2F-140 instruction manual, "Technical specifications".
MODELS: dict[str, GripperModelSpec] = {
    "2f85": GripperModelSpec(stroke_m=0.085, speed_range_m_s=(0.020, 0.150), force_range_n=(20.0, 235.0)),
    "2f140": GripperModelSpec(stroke_m=0.140, speed_range_m_s=(0.030, 0.250), force_range_n=(10.0, 125.0)),
}


class SimGripperConfig(StrictModel):
    """Ground truth of the simulated gripper (calibration must find it without being told)."""

    command_delay_s: float = Field(0.04, ge=0)
    """Command sent -> fingers start moving (what ``rig calibrate gripper-latency`` measures)."""
    activation_s: float = Field(0.0, ge=0)
    """How long activation takes (the real 2F-85 opens and closes once, ~1.5 s)."""


class GripperConfig(StrictModel):
    backend: Literal["none", "sim", "robotiq"] = "none"
    """``none``: the rig has no gripper (observations and actions have no width);
    ``sim``: fingers in the simulated world; ``robotiq``: a Robotiq gripper through the URCap socket."""
    model: Literal["2f85", "2f140"] = "2f85"
    host: str = "192.168.1.10"
    """The UR controller that hosts the Robotiq URCap (normally the arm's host)."""
    port: int = Field(63352, ge=1, le=65535)
    """The URCap's gripper socket."""
    connect_timeout_s: float = Field(2.0, gt=0)
    reply_timeout_s: float = Field(0.5, gt=0)
    """A request not answered within this is a lost link (the process fails with a one-line error)."""
    rate_hz: float = Field(50.0, gt=0, le=500)
    """Poll/command rate of the gripper process. Each tick costs three URCap round trips (POS, OBJ,
    FLT); benchmarks/gripper_bench.py measures what a link sustains."""
    speed_m_s: float = Field(0.15, gt=0)
    """Finger speed of width commands (clipped into the model's range)."""
    force_n: float = Field(60.0, gt=0)
    """Grip force of width commands (clipped into the model's range)."""
    activation_timeout_s: float = Field(10.0, gt=0)
    auto_calibrate: bool = True
    """At start, open and close fully once to learn the POS counts of the open and closed fingers
    (they differ per unit: the 2F-85 reports about 3 open and 227-230 closed). Keep the fingers free."""
    state_history_s: float = Field(10.0, gt=0)
    command_queue_capacity: int = Field(256, ge=8)
    heartbeat_timeout_s: float | None = Field(None, gt=0)
    """Hold and exit if the parent has not heartbeated for this long (None: only parent death)."""
    sim: SimGripperConfig = Field(default_factory=SimGripperConfig)

    @model_validator(mode="after")
    def _ranges(self) -> GripperConfig:
        if self.backend == "robotiq" and not 1 <= self.port <= 65535:
            raise ValueError(f"gripper.port {self.port} is not a TCP port")
        return self

    @property
    def spec(self) -> GripperModelSpec:
        return MODELS[self.model]

    @property
    def max_width_m(self) -> float:
        return self.spec.stroke_m

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def enabled(self) -> bool:
        return self.backend != "none"
