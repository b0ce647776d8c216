"""Shared by the deploy tests: their rig and stand-in policy, and one episode of a DeployRunner on a
running rig."""

from __future__ import annotations

import io
from typing import Any

from benchmarks.chunking_bench import ARM_40MS, DELAY_S, STANDIN, START  # noqa: F401 (DELAY_S for the tests)
from collection.episode_store import EpisodeStore
from deploy.deploy_cli import close_client, make_client
from deploy.policy_client import PolicySpec
from deploy.runner import DeployRunner, EpisodeResult

# The deploy tests' rig: the chunking benchmark's (a 40 ms arm and a calibration that says so, homed at
# START), a scripted SpaceMouse, small scene frames; and its stand-in policy (deploy/standin.py).
RIG = [
    *ARM_40MS,
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
