"""The per-episode sidecar of a deployment: ``<store>.deploy/episode_<index>.json`` beside the store.

One JSON document per saved episode, with what the store's per-step arrays cannot hold: ``episode``
(the store index), ``seed``, ``mode``, ``end_reason``, ``action_latency_s``, ``dt_s``, ``ready_time``
(host monotonic s, when the reset and homing finished), ``latency_watch`` (the episode's figures,
:mod:`robot.latency_watch`) and ``chunks``: per chunk its observation, request and arrival times,
latency, committed rows, dropped/superseded counts, fallback, join jump, safety events and the
latency watch's estimates at its arrival (numpy values as plain JSON numbers and lists).
``rig episodes view`` (:mod:`collection.viewer`) reads it.

Timing contract. Written once per episode, on the runner's thread, after the episode is committed
to the store (so a sidecar always names a saved episode); a crash before that leaves the episode
without its sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def sidecar_path(store_path: str | Path, store_index: int) -> Path:
    """Where the sidecar of the store's episode ``store_index`` goes."""
    return Path(str(store_path) + ".deploy") / f"episode_{store_index:06d}.json"


def write_sidecar(
    store_path: str | Path, store_index: int, fields: dict[str, Any], chunk_infos: list[dict[str, Any]]
) -> Path:
    """Write the sidecar: ``episode``, then ``fields`` in their order, then ``chunks`` (each chunk's
    info without its ``poses``/``times`` arrays). Returns its path."""
    path = sidecar_path(store_path, store_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "episode": store_index,
        **fields,
        "chunks": [
            {
                k: (float(v) if isinstance(v, float | np.floating) else v)
                for k, v in c.items()
                if k not in ("poses", "times")
            }
            for c in chunk_infos
        ],
    }
    path.write_text(json.dumps(doc, indent=1, default=_json_default))
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
