"""What a stored action's time means: one rule from collection to deployment.

**The rule.** A stored step ``k`` holds the observation aligned at its ``timestamp[k]`` (host
monotonic s) and, as its ``action``, the pose (and gripper width) the arm was *commanded to be at at
that same time*: the controller's commanded target (after its safety filter, what the arm received)
at tick time ``timestamp[k] - action_latency_s``, since every target is sent the calibrated action
latency before the time it is meant for (:meth:`robot.env.Env.exec_actions`). It is read back from
the arm's own commanded history (:meth:`robot.env.Env.commanded_at`), never taken from a target we
merely asked for (a dropped target never reaches the store). Both references do the same: Diffusion
Policy's real-world code records an action at its command time on the observations' grid and
evaluates with offset 0; UMI interpolates the commanded pose at the observation times.

Consequences, used everywhere:

- training pairs ``obs[k]`` with ``action[k:]`` unshifted (:mod:`policy.dataset`);
- deploy stamps a chunk predicted from an observation at ``t_obs`` ``t_obs + i * dt_s`` and sends
  each row the action latency early, so the arm is at ``action[i]`` at its stamp;
  :data:`DEFAULT_ACTION_TIME_OFFSET_S` (0) is the one default deploy and replay share;
- replay of a collected episode sends ``action[k]`` for ``timestamp[k]`` (offset 0) and the arm
  retraces the recorded poses in step;
- evaluation stores written by ``rig deploy`` follow the same rule.

**Stores say which rule they hold.** A store written since this rule carries the root attribute
``action_time = "commanded_at_timestamp"`` (:data:`CONVENTION`). A store without it (recorded before,
or by other software) is *legacy*: ``rig collect`` used to store the target it scheduled for the loop
deadline plus one step, which the arm reached ``dt_s`` plus the frame age (about 150-200 ms) after the
observation. Legacy stores read as before, with one line naming the offset assumed
(:func:`describe`); ``rig episodes convert-time`` rewrites one to this rule by an estimated shift
(:func:`estimate_lead_s`, approximate, and said so in the converted store's attributes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONVENTION = "commanded_at_timestamp"
"""Value of the store attribute ``action_time`` for stores that follow the rule above."""

ATTR = "action_time"
"""Root attribute of an episode store naming its action-time convention."""

CONVERTED_ATTR = "action_time_converted"
"""Root attribute of a store converted from the legacy rule: ``{"lead_s": ..., "approximate": true}``."""

DEFAULT_ACTION_TIME_OFFSET_S = 0.0
"""Added to every stamped action time by ``rig deploy`` and ``rig replay`` unless configured: 0 follows
the rule (a stored action is the pose commanded for its observation's time)."""

LEROBOT_NOTE = (
    "action at frame t is the pose the arm was commanded to be at at frame t's timestamp "
    "(commanded_at_timestamp)"
)


def describe(attrs: Any, dt_s: float | None) -> str | None:
    """One line for a store that does not follow the rule (None when it does).

    ``attrs``: the store's root attributes (a mapping). ``dt_s``: its step period, if known."""
    value = attrs.get(ATTR) if attrs is not None else None
    if value == CONVENTION:
        return None
    step = f"{dt_s:.3f} s" if dt_s else "one step"
    if value is None:
        return (
            f"legacy store (no '{ATTR}' attribute): each action is the target scheduled about {step} "
            f"plus the camera latency after its observation; read as is (offset 0). `rig episodes "
            f"convert-time` rewrites it to the '{CONVENTION}' rule"
        )
    return f"unknown action-time convention {value!r} (this version knows {CONVENTION!r}); read as is"


def is_current(attrs: Any) -> bool:
    return attrs is not None and attrs.get(ATTR) == CONVENTION


def best_shift(
    times: np.ndarray, path: np.ndarray, ref_times: np.ndarray, ref_path: np.ndarray, shifts: np.ndarray
) -> tuple[float, float]:
    """The shift ``s`` (s) minimising the mean distance between ``path(t + s)`` and ``ref_path(t)``
    over ``ref_times`` (positions, linear interpolation, clamped ends excluded). Returns ``(s, err)``."""
    best = (0.0, float("inf"))
    for s in shifts:
        q = ref_times + s
        inside = (q >= times[0]) & (q <= times[-1])
        if inside.sum() < 3:
            continue
        p = np.stack([np.interp(q[inside], times, path[:, i]) for i in range(path.shape[1])], axis=1)
        err = float(np.mean(np.linalg.norm(p - ref_path[inside], axis=1)))
        if err < best[1]:
            best = (float(s), err)
    return best


def estimate_lead_s(
    timestamps: np.ndarray, actions: np.ndarray, eef: np.ndarray, max_lead_s: float = 0.5
) -> float:
    """How long after its observation a legacy episode's action was reached (s): the shift that best
    lines the action path up with the measured TCP path (positions). An estimate from motion: an
    episode that barely moves gives a poor one (callers take the median over episodes)."""
    shifts = np.arange(0.0, max_lead_s + 1e-9, 0.005)
    # eef(t) ~= action(t - lead): look the actions up ``lead`` earlier.
    s, _ = best_shift(timestamps, actions[:, :3], timestamps, eef[:, :3], -shifts)
    return -s


def shift_actions(timestamps: np.ndarray, actions: np.ndarray, lead_s: float) -> np.ndarray:
    """Actions of the rule from legacy actions reached ``lead_s`` after their observation: the
    legacy action path looked up ``lead_s`` earlier (position and rotation vector linear, widths
    linear; clamped at the episode's start, where the arm held its first target)."""
    q = np.clip(timestamps - lead_s, timestamps[0], timestamps[-1])
    from robot.env import interpolate_poses

    out = np.array(actions, dtype=np.float64, copy=True)
    out[:, :6] = interpolate_poses(timestamps, actions[:, :6].astype(np.float64), q)
    for col in range(6, actions.shape[1]):
        out[:, col] = np.interp(q, timestamps, actions[:, col])
    return out
