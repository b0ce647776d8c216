"""Recording a deployment episode: one store step every ``dt_s`` (the layout is in
:mod:`deploy.runner`'s docstring), the cameras' mp4s, and the per-episode sidecar.

Timing contract. ``_record`` runs on the runner's loop thread (step 6 of a tick): it reads the newest
observation and the commanded pose at its time and appends one step to the store's episode writer,
which copies it and never waits on zarr (:mod:`collection.store_writer`); a tick that sees no newer
frame than the last recorded step records nothing. Videos are written by the cameras' writer
processes, off the loop. The sidecar is written once, after the episode is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploy.config import DeployConfig
from deploy.episode_sidecar import write_sidecar
from deploy.scheduler import ActionPlan
from robot.latency_watch import LatencyWatch


class Recording:
    """The runner's recording (``DeployRunner`` sets this state in its ``__init__``)."""

    cfg: DeployConfig
    env: Any
    plan: ActionPlan
    dt_s: float
    action_latency_s: float
    latency_watch: LatencyWatch

    def _record(self, writer: Any, ep: dict[str, Any]) -> None:
        obs = self.env.get_obs(1)
        ts = float(obs["timestamp"][-1])
        if ts <= ep["last_recorded_t"]:  # a late tick saw no new frame: never record an obs twice
            return
        ep["last_recorded_t"] = ts
        step = {k: v[-1] for k, v in obs.items() if k.startswith("camera_") and v.ndim == 4}
        cur = None
        for r in reversed(self.plan.committed):
            if r.target_time <= ts + 1e-9:
                cur = r
                break
        # What the controllers were commanded for ts (collection's rule): never a row that was dropped.
        action = self.env.commanded_at([ts])[0]
        if self.env.gripper is not None:
            step["gripper_width"] = obs["gripper_width"][-1]
        step.update(
            robot_eef_pose=obs["robot_eef_pose"][-1],
            robot_joint=obs["robot_joint"][-1],
            action=np.asarray(action, dtype=np.float64),
            timestamp=ts,
            chunk_index=np.int64(cur.chunk if cur is not None else -1),
            chunk_start=np.bool_(ep.pop("chunk_start", False)),
            inference_latency_s=np.float64(ep.get("last_latency_s", np.nan)),
            dropped_actions=np.int64(ep["dropped"]),
            takeover=np.bool_(ep["takeover"]),
        )
        if writer is not None:
            writer.append(step)
        ep["steps"] += 1

    def _start_video(self, episode: int) -> dict[str, Path]:
        """Start the episode's per-camera mp4s (``record_video``); ``{camera: path}``, {} when off."""
        cfg = self.cfg
        directory = cfg.video_dir or (f"{cfg.store}.videos" if cfg.store else None)
        if not cfg.record_video or directory is None or self.env.cameras is None:
            return {}
        return self.env.cameras.start_recording(directory, episode)

    def _write_sidecar(
        self, store: Any, store_index: int, ep: dict[str, Any], seed: int | None, reason: str
    ) -> None:
        """Per-chunk details next to the store: ``<store>.deploy/episode_<index>.json``
        (:mod:`deploy.episode_sidecar`)."""
        fields = {
            "seed": seed,
            "mode": self.cfg.mode,
            "end_reason": reason,
            "action_latency_s": self.action_latency_s,
            "dt_s": self.dt_s,
            "ready_time": ep["ready_time"],
            "latency_watch": self.latency_watch.episode_summary(),
        }
        write_sidecar(store.path, store_index, fields, ep["chunk_infos"])
