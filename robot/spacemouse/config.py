"""Configuration of the SpaceMouse process (``configs/spacemouse/*.yaml``).

Axis convention of the published state: ``axes = [x, y, z, rx, ry, rz]``, each in [-1, 1]. Output
axis ``i`` is raw device axis ``axis_map[i]`` (spacenavd's frame: x right, y up, z towards the user),
normalized by ``max_raw``, passed through the deadzone, multiplied by ``sign[i] * scale[i]`` and
clipped to [-1, 1]. The defaults turn spacenavd's y-up frame into a z-up frame as the Diffusion Policy
reference does (``x = -z_dev, y = x_dev, z = y_dev``, same for rotations).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robot.config import StrictModel

Six = list[float]


class ScriptedKeyframe(StrictModel):
    """One sample of a scripted trajectory: output axes (already normalized) and button states."""

    time_s: float = Field(ge=0.0, description="seconds since the process started publishing")
    axes: list[float] = Field(min_length=6, max_length=6)
    buttons: list[bool] = Field(default_factory=list, description="pressed state per button; [] = none")


class ExpertSpec(StrictModel):
    """An expert built by import path, e.g. ``target: robot.spacemouse.scripted:WaypointExpert``."""

    target: str = Field(description="'package.module:Callable' returning the expert")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _has_colon(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("expected 'package.module:attribute'")
        return v


class ScriptedConfig(StrictModel):
    """The scripted backend: an expert (if given) or a trajectory replay.

    The trajectory comes from ``trajectory`` (inline keyframes) or ``trajectory_file`` (``.npz`` with
    ``time_s`` (T,), ``axes`` (T, 6) and optionally ``buttons`` (T, n)). Axes are linearly
    interpolated between keyframes when ``interpolate`` (else held), buttons are held; after the last
    keyframe the axes are zero and buttons released, unless ``loop``.
    """

    trajectory: list[ScriptedKeyframe] = Field(default_factory=list)
    trajectory_file: str | None = None
    loop: bool = False
    interpolate: bool = True
    expert: ExpertSpec | None = None


class SpaceMouseConfig(StrictModel):
    backend: Literal["spnav", "scripted"] = "spnav"
    rate_hz: float = Field(default=100.0, gt=0.0, le=2000.0, description="publish rate of the state ring")
    num_buttons: int = Field(
        default=2, ge=1, le=32, description="buttons published; higher bnums are ignored"
    )
    max_raw: float = Field(
        default=350.0, gt=0.0, description="raw spacenavd value mapped to 1.0 (full deflection ~350)"
    )
    deadzone: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="normalized |value| at or below which an axis reads 0; above it the axis is rescaled "
        "so that it rises continuously from 0 at the deadzone edge to 1 at full deflection",
    )
    scale: Six = Field(default_factory=lambda: [1.0] * 6, min_length=6, max_length=6)
    sign: list[int] = Field(default_factory=lambda: [-1, 1, 1, -1, 1, 1], min_length=6, max_length=6)
    axis_map: list[int] = Field(default_factory=lambda: [2, 0, 1, 5, 3, 4], min_length=6, max_length=6)
    decay_timeout_s: float = Field(
        default=0.5,
        gt=0.0,
        description="axes read 0 once no motion event arrived for this long (spacenavd may not send a "
        "final zero event when the puck is released)",
    )
    socket_path: str | None = Field(
        default=None,
        description="spacenavd socket; None = $SPNAV_SOCKET, /etc/spnavrc, /var/run/spnav.sock",
    )
    ring_capacity: int = Field(default=256, ge=8, description="records kept in the state ring")
    scripted: ScriptedConfig = Field(default_factory=ScriptedConfig)

    @field_validator("sign")
    @classmethod
    def _signs(cls, v: list[int]) -> list[int]:
        if any(s not in (-1, 1) for s in v):
            raise ValueError(f"each sign must be -1 or 1, got {v}")
        return v

    @field_validator("axis_map")
    @classmethod
    def _permutation(cls, v: list[int]) -> list[int]:
        if sorted(v) != list(range(6)):
            raise ValueError(
                f"axis_map must be a permutation of 0..5 (output axis i <- raw axis v[i]), got {v}"
            )
        return v

    @model_validator(mode="after")
    def _trajectory_buttons(self) -> SpaceMouseConfig:
        for kf in self.scripted.trajectory:
            if kf.buttons and len(kf.buttons) != self.num_buttons:
                raise ValueError(
                    f"scripted keyframe at {kf.time_s} s has {len(kf.buttons)} buttons, num_buttons is "
                    f"{self.num_buttons}"
                )
        return self
