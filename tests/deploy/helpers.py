"""Shared by the deploy tests: one episode of a DeployRunner on a running rig."""

from __future__ import annotations

import io
from typing import Any

from collection.episode_store import EpisodeStore
from deploy.deploy_cli import close_client, make_client
from deploy.policy_client import PolicySpec
from deploy.runner import DeployRunner, EpisodeResult


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
