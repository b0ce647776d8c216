"""Safety layer between the policy and the arm: what a chunk may ask for before anything is sent.

The arm controller has its own last-line filter (robot/arm/safety.py: it rejects NaN targets one by one,
clips every tick to the box and the speed). This layer judges a *whole chunk* first, so that a bad
policy output is stopped as a unit and explained to the person at the rig:

- **non-finite** (NaN/inf anywhere in the chunk) or a wrong shape: :class:`PolicySafetyStop`. The
  runner then calls ``arm.stop_motion()`` (decelerating stop, hold), saves the episode so far and
  exits with the message. Nothing of that chunk is sent.
- **workspace box** (``DeploySafetyConfig.workspace_*``, default the arm's limits): positions are
  clipped onto the box (a safety event, logged with the amount).
- **per-step limit**: consecutive actions (``dt_s`` apart) may differ by at most
  ``max_linear_speed_m_s * dt_s`` (and the angular equivalent); a faster chunk is slowed down by
  shortening each step along its direction (a safety event), starting from the pose the arm is
  committed to, so the arm is never asked to jump.

Pure functions of their inputs: unit-testable without a rig.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from robot.arm.config import ArmLimits

log = logging.getLogger("deploy.safety")

FloatArray = NDArray[np.float64]


class PolicySafetyStop(RuntimeError):
    """The policy produced something that must not reach the arm; the message says what and what
    to check. The runner stops the arm and holds before re-raising/exiting."""


@dataclass
class ChunkCheck:
    """Result of :meth:`ChunkSafety.check`: the (possibly clipped/slowed) poses and the events."""

    poses: FloatArray
    events: list[str]


class ChunkSafety:
    """Chunk-level safety checks (see module docstring).

    Args:
        limits: the arm limits (speed limits; the box unless overridden).
        dt_s: spacing of the chunk's actions (s).
        workspace_min_m / workspace_max_m: optional tighter box for deployment (base frame, m).
        speed_factor: per-step limit as a fraction of the arm's speed limits (1.0 = the limits).
    """

    def __init__(
        self,
        limits: ArmLimits,
        dt_s: float,
        workspace_min_m: ArrayLike | None = None,
        workspace_max_m: ArrayLike | None = None,
        speed_factor: float = 1.0,
    ) -> None:
        self.dt_s = float(dt_s)
        self.box_min = np.asarray(
            workspace_min_m if workspace_min_m is not None else limits.workspace_min_m, float
        )
        self.box_max = np.asarray(
            workspace_max_m if workspace_max_m is not None else limits.workspace_max_m, float
        )
        self.max_step_m = limits.max_linear_speed_m_s * speed_factor * self.dt_s
        self.max_step_rad = limits.max_angular_speed_rad_s * speed_factor * self.dt_s
        self.max_rotvec_norm_rad = limits.max_rotvec_norm_rad

    def check(self, actions: ArrayLike, chunk_index: int, start_row: int | None = None) -> ChunkCheck:
        """Validate a chunk of TCP poses ``(n, 6)``. ``start_row``: rows up to and including it are
        already committed (inpainted copies of what the arm executes): the per-step limit applies to
        the rows after it, starting from it (None: from row 0). Raises :class:`PolicySafetyStop` on
        non-finite values or a wrong shape."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 6 or len(a) == 0:
            raise PolicySafetyStop(
                f"policy chunk {chunk_index} has shape {a.shape}, expected (n, 6) TCP poses "
                "[x, y, z, rx, ry, rz]: the checkpoint's action space does not match this arm"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise PolicySafetyStop(
                f"SAFETY STOP: the policy produced non-finite actions (NaN/inf) in chunk {chunk_index} "
                f"(rows {rows.tolist()[:8]}{'...' if len(rows) > 8 else ''} of {len(a)}). The arm was stopped and "
                "holds its pose; nothing of this chunk was sent. Check the checkpoint (training diverged?) "
                "and that the observations match what the policy was trained on (normalizer, cameras)."
            )
        norms = np.linalg.norm(a[:, 3:], axis=1)
        if np.any(norms > self.max_rotvec_norm_rad):
            raise PolicySafetyStop(
                f"SAFETY STOP: policy chunk {chunk_index} has a rotation vector of norm {norms.max():.2f} rad "
                f"(> {self.max_rotvec_norm_rad:.2f}): not a sane orientation. The arm was stopped and holds; "
                "check the action representation of the checkpoint (rotation vectors expected)."
            )
        events: list[str] = []
        out = a.copy()
        clipped = np.clip(out[:, :3], self.box_min, self.box_max)
        excess = float(np.abs(clipped - out[:, :3]).max())
        if excess > 0:
            events.append(
                f"chunk {chunk_index}: positions clipped to the workspace box (by up to {excess * 1e3:.1f} mm)"
            )
            out[:, :3] = clipped
        limited = False
        first = 0 if start_row is None else int(start_row)
        prev = None
        for i in range(first, len(out)):
            if prev is not None:
                d = out[i, :3] - prev[:3]
                dist = float(np.linalg.norm(d))
                if dist > self.max_step_m * (1 + 1e-6):
                    out[i, :3] = prev[:3] + d * (self.max_step_m / dist)
                    limited = True
                r_prev = Rotation.from_rotvec(prev[3:])
                delta = Rotation.from_rotvec(out[i, 3:]) * r_prev.inv()
                ang = float(delta.magnitude())
                if ang > self.max_step_rad * (1 + 1e-6):
                    out[i, 3:] = (
                        Rotation.from_rotvec(delta.as_rotvec() * (self.max_step_rad / ang)) * r_prev
                    ).as_rotvec()
                    limited = True
            prev = out[i]
        if limited:
            events.append(
                f"chunk {chunk_index}: steps faster than the speed limits were slowed down "
                f"(max {self.max_step_m * 1e3:.1f} mm per {self.dt_s * 1e3:.0f} ms step)"
            )
        return ChunkCheck(out, events)
