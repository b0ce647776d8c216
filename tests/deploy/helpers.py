"""Shared by the deploy tests: their rig and stand-in policy, and one episode of a DeployRunner on a
running rig."""

from __future__ import annotations

import io
import math
from typing import Any

from collection.episode_store import EpisodeStore
from deploy.deploy_cli import close_client, make_client
from deploy.policy_client import PolicySpec
from deploy.runner import DeployRunner, EpisodeResult

# The deploy tests' rig: a 40 ms arm (and a calibration that says so), homed at START, a scripted
# SpaceMouse, small scene frames; and the stand-in policy (deploy/standin.py).
DELAY_S = 0.04
START = [0.45, 0.0, 0.2, math.pi, 0.0, 0.0]
RIG = [
    f"rig.arm.sim.action_delay_s={DELAY_S}",
    f"rig.latency.action_latency_s={DELAY_S}",
    f"rig.arm.start_pose={START}",
    "rig.spacemouse.scripted.expert=null",
    "rig.spacemouse.scripted.loop=true",
    # A person pushing the SpaceMouse to +y (only obeyed during takeover).
    "rig.spacemouse.scripted.trajectory=[{time_s: 0, axes: [0, 0.6, 0, 0, 0, 0], buttons: [false, false]},"
    " {time_s: 1000, axes: [0, 0.6, 0, 0, 0, 0], buttons: [false, false]}]",
    "teleop.lock_z_m=null",
    "rig.arm.home_speed_m_s=0.2",  # quick re-homing between tests
    # Small scene frames: cheap to render, and the tiny checkpoint test_deploy_sim.py trains uses them.
    "rig.cameras.cameras.scene.width=32",
    "rig.cameras.cameras.scene.height=24",
    "rig.cameras.cameras.scene.sim.intrinsics={fx: 28.0, fy: 28.0, cx: 15.5, cy: 11.5}",
]
STANDIN = "py:deploy.standin:ReferencePolicy"


def run_episode_once(
    cfg: Any, env: Any, spec: PolicySpec, keys: Any = None
) -> tuple[DeployRunner, EpisodeResult, str]:
    """Run episode 0 of ``spec``'s policy with ``cfg`` on ``env``, recorded into ``cfg.store``; the
    client is closed and the store too. Returns the runner (keep_logs), the result and the output."""
    client = make_client(cfg, spec)
    out = io.StringIO()
    store = EpisodeStore.open(cfg.store, "a")
    try:
        runner = DeployRunner(cfg, env, client, keys=keys, out=out, keep_logs=True)
        result = runner.run_episode(0, None, store)
    finally:
        store.close()
        close_client(client)
    return runner, result, out.getvalue()
