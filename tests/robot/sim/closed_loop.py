"""A kinematic closed loop for the task experts: no processes, no arm model, just the teleop maths.

Each tick (``dt_s``): the expert sees what the SpaceMouse process would hand it (``{"arm": record with
actual_tcp_pose, "world": SimWorld.record(...), "time": t}``), its axes become a base-frame TCP
velocity ``v = axes[:3] * max_speed_m_s`` applied ``delay_ticks`` ticks later (the arm's lag), the
TCP is clipped to the default workspace, held at ``z_m`` (planar teleop), and the world is stepped.
``control_every``: the collector samples the axes every that many ticks and holds them (``rig
collect`` runs its loop at ``obs.dt_s`` = 0.1 s while the expert runs at 100 Hz).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robot.arm.config import ArmConfig
from robot.sim.world import SimWorld, Task

_LIMITS = ArmConfig().limits


@dataclass
class Rollout:
    success: bool
    time_to_success_s: float | None
    tcp_xy: np.ndarray  # (T, 2)
    axes: np.ndarray  # (T, 6)
    buttons: np.ndarray  # (T, num_buttons)


def run_closed_loop(
    task: Task,
    expert,
    seed: int,
    max_time_s: float,
    dt_s: float = 0.01,
    max_speed_m_s: float = 0.15,
    z_m: float = 0.03,
    start_xy: tuple[float, float] = (0.45, 0.0),
    delay_ticks: int = 3,
    stop_on_success: bool = True,
    control_every: int = 1,
) -> Rollout:
    world = SimWorld(task)
    world.reset(seed)
    pose = np.array([start_xy[0], start_xy[1], z_m, np.pi, 0.0, 0.0])
    lo, hi = np.array(_LIMITS.workspace_min_m), np.array(_LIMITS.workspace_max_m)
    pending: deque[np.ndarray] = deque([np.zeros(3)] * delay_ticks)
    xy, axes_log, buttons_log = [], [], []
    t = 0.0
    t_success = None
    world.step(pose, 0.0)
    tick = 0
    held = np.zeros(3)
    for _ in range(int(round(max_time_s / dt_s))):
        obs = {
            "arm": {"actual_tcp_pose": pose.copy()},
            "world": world.record(t, pose, np.zeros(6)),
            "time": t,
        }
        axes, buttons = expert(obs)
        axes = np.clip(np.asarray(axes, float), -1, 1)
        assert axes.shape == (6,) and np.all(axes[3:] == 0)
        if tick % control_every == 0:  # a collector's control loop samples the axes at its own rate
            held = axes[:3] * max_speed_m_s
        tick += 1
        pending.append(held)
        v = pending.popleft()
        pose[:3] = np.clip(pose[:3] + v * dt_s, lo, hi)
        pose[2] = z_m
        t += dt_s
        world.step(pose, dt_s)
        xy.append(pose[:2].copy())
        axes_log.append(axes)
        buttons_log.append(np.asarray(buttons, bool))
        if world.success and t_success is None:
            t_success = t
            if stop_on_success:
                break
    return Rollout(world.success, t_success, np.array(xy), np.array(axes_log), np.array(buttons_log))
