"""How the deployment loop talks to a policy: in-process, in an inference process, or over the network.

Every client has the same non-blocking shape, so the runner does not care where inference runs::

    client.request(obs, committed_actions, seed) -> request id   # at most one request in flight
    client.poll() -> ChunkResult | None                          # the finished request, if any
    client.wait(timeout_s) -> ChunkResult | None                 # block until it finishes
    client.meta -> PolicyMeta                                    # n_obs_steps, dt_s, shape_meta, ...

:class:`LocalPolicyClient` runs ``predict`` inside ``request`` (blocking: the reference behaviour,
used by sync mode). :class:`deploy.inference_process.InferenceProcess` runs it in its own process
and :class:`deploy.serving.RemotePolicyClient` on another machine; both overlap with execution.

``ChunkResult.latency_s`` is measured on the rig's side, from the moment the request was handed to
the client to the moment the result was available to the runner (host monotonic s): inference,
transfer and queueing together, which is what the scheduler has to compensate.

Policy specs (``--checkpoint``): a checkpoint file or run directory (loaded with
``policy.inference.Policy.load``), or ``py:package.module:Factory`` for any object with the
``predict`` API, built with the config's ``policy_kwargs`` (e.g. ``py:deploy.standin:ReferencePolicy``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from collection.action_time import CONVENTION
from robot.timing import now


@dataclass(frozen=True)
class ActionChunk:
    """Same contract as ``policy.inference.ActionChunk`` (raw actions, ``actions[i]`` meant for
    ``t_obs + (first_index + i) * dt_s``), without importing torch."""

    actions: np.ndarray
    first_index: int


@dataclass(frozen=True)
class PolicyMeta:
    """What the loop needs to know about a policy (step counts are in steps of ``dt_s`` seconds)."""

    n_obs_steps: int
    n_action_steps: int
    horizon: int
    dt_s: float
    obs_keys: tuple[str, ...]
    action_dim: int
    description: str
    obs_shapes: dict[str, list[int]] | None = None
    """Per observation key, the per-step shape the policy expects: images (H, W, 3) as stored,
    low-dim (D,). None: not declared (the runner does not pre-check)."""
    notes: tuple[str, ...] = ()
    """Lines the runner prints at start (e.g. a policy trained on a legacy store)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_obs_steps": self.n_obs_steps,
            "n_action_steps": self.n_action_steps,
            "horizon": self.horizon,
            "dt_s": self.dt_s,
            "obs_keys": list(self.obs_keys),
            "action_dim": self.action_dim,
            "description": self.description,
            "obs_shapes": self.obs_shapes,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyMeta:
        return cls(
            int(d["n_obs_steps"]),
            int(d["n_action_steps"]),
            int(d["horizon"]),
            float(d["dt_s"]),
            tuple(d["obs_keys"]),
            int(d["action_dim"]),
            str(d["description"]),
            d.get("obs_shapes"),
            tuple(d.get("notes", ())),
        )


@dataclass
class ChunkResult:
    """A finished request. ``actions`` is None when ``error`` says why inference failed."""

    request_id: int
    actions: np.ndarray | None
    first_index: int
    t_request: float
    t_done: float
    error: str | None = None
    compute_s: float = float("nan")
    """Time spent in ``predict`` itself (s); ``latency_s - compute_s`` is transport and queueing."""

    @property
    def latency_s(self) -> float:
        return self.t_done - self.t_request


@dataclass(frozen=True)
class PolicySpec:
    """Where to get the policy from; picklable, so an inference process or a server can load it."""

    checkpoint: str
    device: str = "cpu"
    kwargs: tuple[tuple[str, Any], ...] = ()
    torch_threads: int | None = 1
    """CPU threads of torch where the policy runs (None: torch's default, all cores)."""
    fast_inference: bool = False
    """``Policy.optimize_for_inference()`` (bf16 weights, see benchmarks/policy_bench.py)."""

    def describe(self) -> str:
        return self.checkpoint


def load_policy(spec: PolicySpec) -> Any:
    """Build the policy object of ``spec`` (see module docstring). Raises a clear error."""
    ckpt = spec.checkpoint
    if ckpt.startswith("py:"):
        target = ckpt[3:]
        module_name, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"policy {ckpt!r}: cannot import {target!r}: {exc}") from exc
        return factory(**dict(spec.kwargs))
    if spec.kwargs:
        raise ValueError(f"policy_kwargs are only for py: policies, got {dict(spec.kwargs)} for {ckpt}")
    path = Path(ckpt)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {ckpt} does not exist: pass a .pt file or a run directory from `rig train`"
        )
    import torch

    from policy.inference import Policy

    if spec.torch_threads is not None:
        # The rig's processes need the other cores; one intra-op thread also gives the steadiest latency.
        torch.set_num_threads(spec.torch_threads)
    policy = Policy.load(path, device=spec.device)
    if spec.fast_inference:
        policy.optimize_for_inference()
    return policy


POSE_DIM = 6  # the arm is commanded full TCP poses [x, y, z, rx, ry, rz]
GRIPPER_ACTION_DIM = 7  # on a rig with a gripper: the pose plus the width (m)


def _obs_shapes(shape_meta: dict[str, Any]) -> dict[str, list[int]]:
    out = {}
    for key, meta in shape_meta["obs"].items():
        if meta.get("type") == "low_dim" and meta.get("dims") is not None:
            continue  # trained on a subset of the stored columns: run_predict selects them
        shape = [int(x) for x in meta.get("shape", [])]
        if meta.get("type") == "rgb" and len(shape) == 3:
            shape = [shape[1], shape[2], shape[0]]  # shape_meta is (C, H, W); frames are (H, W, C)
        out[key] = shape
    return out


def policy_meta(policy: Any, description: str) -> PolicyMeta:
    backbone = getattr(policy, "backbone", None)  # a trained policy says which denoiser it runs
    if backbone is not None:
        description = f"{description} ({backbone})"
    trained = getattr(policy, "trained_action_time", CONVENTION)
    notes: tuple[str, ...] = ()
    if backbone is not None and trained != CONVENTION:
        notes = (
            "the policy was trained on a legacy store (no action-time rule): its actions run about one "
            "step plus the camera latency early; convert the store (rig episodes convert-time) and retrain",
        )
    return PolicyMeta(
        n_obs_steps=int(policy.n_obs_steps),
        n_action_steps=int(policy.n_action_steps),
        horizon=int(policy.horizon),
        dt_s=float(policy.dt_s),
        obs_keys=tuple(policy.shape_meta["obs"].keys()),
        action_dim=_full_action_dim(policy)
        if _action_dims(policy) is not None
        else int(policy.shape_meta["action"]["shape"][0]),
        description=description,
        obs_shapes=_obs_shapes(policy.shape_meta),
        notes=notes,
    )


def _full_action_dim(policy: Any) -> int:
    """Width of the stored actions the policy was trained on (checkpoints from before the gripper
    carry no ``stored_dim``: their actions were poses)."""
    return int(policy.shape_meta["action"].get("stored_dim", POSE_DIM))


def _action_dims(policy: Any) -> list[int] | None:
    """The action columns a policy predicts when it was trained on a subset of them (e.g. x, y for a
    planar task), else None."""
    dims = policy.shape_meta["action"].get("dims")
    if dims is None or list(dims) == list(range(_full_action_dim(policy))):
        return None
    return [int(d) for d in dims]


def run_predict(
    policy: Any, obs: dict[str, Any], committed: np.ndarray | None, seed: int | None, warm_up: bool = False
) -> tuple:
    """Call ``predict``; returns ``(actions, first_index, error_text, compute_s)`` and never raises
    (a failing policy is reported to the runner, which holds the arm and says why).

    ``warm_up``: the call before the first episode that pays the one-off costs (weight packing, the
    allocator, CUDA graphs); a policy with state that a predict advances (the stand-in's clock) says so
    by a ``warm_up`` method with predict's signature, which is called instead.

    A policy trained on a subset of the stored columns (``dims`` in its shape_meta, e.g. x and y of a
    planar task) gets those columns of the low-dim observations and of the committed poses, and its
    actions are completed into full poses with the other columns held at the newest observed
    ``robot_eef_pose`` (the dims the demonstrations never moved are never commanded to move); with a
    gripper (7 stored columns) an unpredicted width is held at the observed ``gripper_width``."""
    t0 = now()
    try:
        adims = _action_dims(policy)
        sel = {}
        for key, value in obs.items():
            meta = policy.shape_meta["obs"].get(key, {})
            dims = meta.get("dims")
            if meta.get("type") == "low_dim" and dims is not None and np.shape(value)[-1] != len(dims):
                value = np.asarray(value)[..., dims]
            sel[key] = value
        full_dim = _full_action_dim(policy)
        if adims is not None and committed is not None and np.shape(committed)[-1] == full_dim:
            committed = np.asarray(committed)[:, adims]
        call = getattr(policy, "warm_up", policy.predict) if warm_up else policy.predict
        chunk = call(sel, committed_actions=committed, seed=seed)
        actions = np.asarray(chunk.actions, dtype=np.float64)
        if adims is not None:
            if "robot_eef_pose" not in obs or np.shape(obs["robot_eef_pose"])[-1] != POSE_DIM:
                raise ValueError(
                    f"the policy predicts pose columns {adims} only; completing them into poses needs the "
                    "full robot_eef_pose observation"
                )
            held = np.asarray(obs["robot_eef_pose"], np.float64)[-1]
            if full_dim == GRIPPER_ACTION_DIM:
                if "gripper_width" not in obs:
                    raise ValueError(
                        "the policy was trained with a gripper; completing its actions needs gripper_width"
                    )
                held = np.append(held, np.asarray(obs["gripper_width"], np.float64).reshape(-1)[-1])
            full = np.repeat(held[None], len(actions), axis=0)
            full[:, adims] = actions
            actions = full
        return actions, int(chunk.first_index), None, now() - t0
    except Exception as exc:  # reported, not raised: the loop must hold the arm first
        return None, 0, f"{type(exc).__name__}: {exc}", now() - t0


class PredictRequest(NamedTuple):
    """One request's arguments, in :func:`run_predict`'s order (after the policy)."""

    obs: dict[str, Any]
    committed_actions: np.ndarray | None
    seed: int | None
    warm_up: bool


class PolicyClient:
    """What every policy client has (see the module docstring); each gives ``_request``."""

    transport: str
    meta: PolicyMeta | None  # None only before an inference process has started

    def request(
        self,
        obs: dict[str, Any],
        committed_actions: np.ndarray | None = None,
        seed: int | None = None,
        warm_up: bool = False,
    ) -> int:
        """Hand one observation (and the committed actions the chunk must start with) to the policy;
        returns the request id. Only the in-process client blocks here (it predicts at once); the
        others return at once and raise RuntimeError while a request is in flight. ``warm_up``: see
        :func:`run_predict`."""
        return self._request(PredictRequest(obs, committed_actions, seed, warm_up))

    def _request(self, req: PredictRequest) -> int:
        raise NotImplementedError


class OneRequestInFlight(PolicyClient):
    """Request bookkeeping of the asynchronous policy clients (inference process, policy server):
    one request at a time, ids counted up from 0, and a cancelled request's result dropped when it
    arrives (the policy is still busy with it until then, so ``busy`` stays true)."""

    transport: str

    def _init_requests(self) -> None:
        self._next_id = 0
        self._in_flight: tuple[int, float] | None = None  # (request id, time sent)
        self._cancelled: set[int] = set()

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def _send_request(self, send: Any) -> int:
        """Call ``send(request_id)`` unless a request is in flight (RuntimeError); return the id."""
        if self._in_flight is not None:
            raise RuntimeError(f"{self.transport}: a request is already in flight (poll() it first)")
        rid = self._next_id
        self._next_id += 1
        t0 = now()
        send(rid)
        self._in_flight = (rid, t0)
        return rid

    def _take_in_flight(self) -> tuple[int, float, bool]:
        """The answered request: (id, time sent, whether it was cancelled); nothing is in flight after."""
        assert self._in_flight is not None
        rid, t0 = self._in_flight
        self._in_flight = None
        cancelled = rid in self._cancelled
        self._cancelled.discard(rid)
        return rid, t0, cancelled

    def warm_up(self, obs: dict[str, Any], timeout_s: float) -> ChunkResult | None:
        """One predict whose result is not used (see :func:`run_predict`); None if it took longer
        than ``timeout_s``."""
        self.request(obs, None, None, warm_up=True)
        res = self.wait(timeout_s)
        if res is None:
            self.cancel()
        return res

    def cancel(self) -> None:
        """Forget the in-flight request (its result is discarded when it arrives)."""
        if self._in_flight is not None:
            self._cancelled.add(self._in_flight[0])


class LocalPolicyClient(PolicyClient):
    """Runs ``predict`` in the caller's thread inside :meth:`request` (sync mode, the reference)."""

    def __init__(self, policy: Any, description: str = "in-process policy") -> None:
        self.policy = policy
        self.meta = policy_meta(policy, description)
        self._result: ChunkResult | None = None
        self._next_id = 0
        self.transport = "in-process"

    @property
    def busy(self) -> bool:
        return False

    def _request(self, req: PredictRequest) -> int:
        rid = self._next_id
        self._next_id += 1
        t0 = now()
        actions, first, err, compute_s = run_predict(self.policy, *req)
        self._result = ChunkResult(rid, actions, first, t0, now(), err, compute_s)
        return rid

    def warm_up(self, obs: dict[str, Any], timeout_s: float) -> ChunkResult | None:
        self.request(obs, warm_up=True)
        return self.poll()

    def poll(self) -> ChunkResult | None:
        out, self._result = self._result, None
        return out

    def wait(self, timeout_s: float | None = None) -> ChunkResult | None:
        return self.poll()

    def cancel(self) -> None:
        self._result = None

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass
