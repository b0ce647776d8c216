"""Deployment configuration (``configs/deploy/*.yaml``), loaded into :class:`DeployConfig`.

The rig is nested (``defaults: [{rig: ../rig/sim.yaml}]``), so deployment runs on exactly the rig
(cameras, arm limits, latencies) the demonstrations were collected on. Times are seconds on the host
monotonic clock, lengths metres.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from collection.action_time import DEFAULT_ACTION_TIME_OFFSET_S
from collection.teleop import TeleopConfig
from robot.config import StrictModel
from robot.rig_config import RigConfig

Vec3 = tuple[float, float, float]


class TakeoverConfig(StrictModel):
    """Human takeover: pause the policy and let the arm follow the SpaceMouse; press again to release."""

    key: str | None = "t"
    """Keyboard key toggling takeover (terminal or pipe); None: no key."""
    button: int | None = 1
    """SpaceMouse button index toggling takeover (0 = left, 1 = right); None: no button."""


class DeploySafetyConfig(StrictModel):
    """Chunk-level safety (deploy/safety.py) on top of the arm controller's own filter."""

    workspace_min_m: Vec3 | None = None
    """Tighter box for the policy (base frame, m); None: the arm's limits.workspace_min_m."""
    workspace_max_m: Vec3 | None = None
    speed_factor: float = Field(1.0, gt=0, le=1.0)
    """Per-step limit between consecutive actions, as a fraction of the arm's speed limits."""


class DeployConfig(StrictModel):
    rig: RigConfig = Field(default_factory=RigConfig)
    teleop: TeleopConfig = Field(default_factory=TeleopConfig)
    """SpaceMouse -> pose mapping used during takeover (same as collection)."""
    mode: Literal["sync", "async"] = "async"
    """``async``: inference in its own process, overlapping execution, chunks joined by inpainting
    the committed actions. ``sync``: the reference loop (observe, infer, execute the chunk, repeat)."""
    episodes: int = Field(3, ge=1)
    max_episode_s: float = Field(30.0, gt=0)
    success_hold_s: float = Field(0.0, ge=0)
    """Sim: keep running this long after the task reports success (it is latched by the task)."""
    seeds: list[int] | None = None
    """World seeds per episode (sim). Default: ``seed + i``; keep them apart from training."""
    seed: int = 100_000
    """Collection uses rig.task.seed (1000) upwards; evaluation seeds start far away from those."""
    policy_seed: int | None = None
    """Seed of the policy's sampling noise (None: random; request i uses policy_seed + i)."""
    action_margin_s: float = Field(0.01, ge=0)
    """Extra margin (s) on top of the action latency: an action is dropped unless its send time is
    at least this far in the future."""
    action_time_offset_s: float = DEFAULT_ACTION_TIME_OFFSET_S
    """Added to every stamped action time (s), and to the times the committed actions (inpainting)
    and the gripper's widths are sampled at. The default (0, shared with ``rig replay``) follows the
    stores' rule (:mod:`collection.action_time`): a stored action is the pose commanded for its
    observation's time, so ``actions[i]`` is stamped ``t_obs + (first_index + i) * dt_s``. Only a
    policy trained on a legacy store (actions reached about ``dt_s`` plus the camera latency after
    their observation) needs a negative offset, or better, that store converted
    (``rig episodes convert-time``) and the policy retrained."""
    commit_window_s: float = Field(0.2, gt=0)
    """Async: actions are sent to the arm this long (s) before their send time; everything later
    can still be replaced by a newer chunk. The arm always has ``commit_window_s - dt_s`` of
    waypoints ahead, so this must exceed one policy step plus the longest stall of the loop (a
    loaded machine stalls it by tens of ms); larger makes new chunks take over later."""
    replan_overlap_s: float = Field(0.2, ge=0)
    """Async: the next chunk is requested so that it is expected while the plan still covers this
    long beyond the commit window (s); larger replans more often (more reactive, more inference)."""
    loop_hz: float = Field(50.0, gt=0, le=500)
    """Rate of the deployment loop (polling, committing, takeover); observations are recorded every
    rig.obs.dt_s."""
    n_action_steps: int | None = None
    """Actions executed per chunk (sync) / new actions planned beyond the committed ones (async).
    None: the policy's n_action_steps."""
    expected_latency_s: float = Field(0.2, ge=0)
    """Initial inference latency estimate (s) for async request timing; replaced by measurements."""
    latency_quantile: float = Field(1.0, gt=0, le=1)
    """Async plans with this quantile of the last 20 inference latencies (1.0: their maximum). A chunk
    arriving later than planned joins where the policy was not conditioned on the committed actions
    (``late`` in the chunk log), so keep this high."""
    inference: Literal["process", "inline"] = "process"
    """Where async inference runs: its own process (default) or inline (blocks the loop)."""
    server: str | None = None
    """Policy server address (``tcp://host:5555``, deploy/serving.py): inference runs there."""
    server_keys: str | None = None
    """CurveZMQ key folder holding ``server.key`` and ``client.key_secret`` (from
    ``python -m deploy.serving keygen``), for a server started with ``--keys``."""
    server_timeout_s: float = Field(10.0, gt=0)
    """A policy server request unanswered this long stops the run (the arm holds)."""
    device: str = "cpu"
    """Torch device of the policy (``cpu``, ``cuda``, ``cuda:0``)."""
    torch_threads: int | None = Field(1, ge=1)
    """CPU threads torch may use for inference (None: all cores; the rig's processes need some)."""
    fast_inference: bool = False
    """Packed (bf16 for large denoisers) weights and the conditioning cached per chunk
    (``Policy.optimize_for_inference``); see policy_bench."""
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Arguments of a ``py:module:Factory`` policy (stand-ins for tests and benchmarks)."""
    store: str | None = "data/eval.zarr"
    """Evaluation episodes are appended here (episode store layout); None: not recorded."""
    image_codec: str = "jpegxl"
    record_video: bool = True
    """Per-camera mp4 of every evaluation episode, as collection records them."""
    video_dir: str | None = None
    """Where the videos go (``episode_<store index>/<camera>.mp4``); default ``<store>.videos/``.
    Without a store and a video_dir nothing is recorded."""
    spacemouse: bool = True
    """Start the SpaceMouse process (needed for takeover by button and to drive during takeover)."""
    takeover: TakeoverConfig = Field(default_factory=TakeoverConfig)
    safety: DeploySafetyConfig = Field(default_factory=DeploySafetyConfig)
    status_every_s: float = Field(2.0, gt=0)
