"""Training windows over a zarr episode store (the Diffusion Policy reference layout).

Store layout (read with zarr directly; written by ``collection/``): ``data/<key>`` arrays concatenated
over episodes along axis 0 -- ``camera_<i>`` uint8 (T, H, W, 3), one frame per chunk; ``robot_eef_pose``
(T, 6); ``robot_joint`` (T, 6); ``action`` (T, 6); ``timestamp`` (T,) host seconds -- and
``meta/episode_ends`` (E,) int64 cumulative end indices. Only episodes listed in ``episode_ends`` exist.

What an action's time means (:mod:`collection.action_time`): step ``k``'s ``action`` is the pose the arm
was commanded to be at at ``timestamp[k]``, the time its observation is aligned to, so a sample pairs
``obs[k]`` with ``action[k:]`` unshifted and the policy's row ``i`` is the pose for ``t_obs + i * dt``,
which is how deploy stamps it. Stores recorded before the rule (no ``action_time`` attribute) read the
same way; ``rig train`` says so in one line.

A sample is a window of ``horizon`` consecutive (downsampled) steps of one episode: observations of its
first ``n_obs_steps`` steps and actions of all its steps. Windows start from ``-(n_obs_steps - 1)`` to
``len - horizon + n_action_steps - 1`` relative to the episode start, and steps outside the episode are
filled by repeating the first/last step (exactly the paper's ``SequenceSampler``). Low-dim arrays are
held in memory (a few floats per step); images are decoded lazily per sample, in DataLoader workers.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.config import DatasetConfig, PolicyConfig

log = logging.getLogger(__name__)

ShapeMeta = dict[str, Any]


def open_store(path: str | Path) -> Any:
    """Open an episode store read-only (zarr v2 or v3 format, with imagecodecs' codecs registered)."""

    from collection.episode_store import open_root_readonly, register_image_codecs

    register_image_codecs()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"episode store {path} does not exist (pass --dataset PATH)")
    try:
        # The episode store's opener: a .zarr directory or a zipped store (.zarr.zip), read only.
        root = open_root_readonly(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a zarr episode store: {exc}") from exc
    for required in ("data", "meta/episode_ends"):
        if required not in root:
            raise ValueError(f"episode store {path} has no '{required}' (is it an episode store?)")
    valid_episode_ends(root, path)  # the store's own validator: refuse inconsistent stores up front
    return root


def valid_episode_ends(root: Any, path: Any = "") -> np.ndarray:
    """``meta/episode_ends`` as the episode store reads it (collection.episode_store.validate_layout):
    a crash's trailing fill value left out; ValueError naming the array for anything inconsistent."""
    from collection.episode_store import EpisodeStoreError, validate_layout

    ends = [int(e) for e in root["meta/episode_ends"][:]]
    lengths = {name: arr.shape[0] for name, arr in root["data"].arrays()}
    try:
        n_valid = validate_layout(path or root.store, ends, lengths)
    except EpisodeStoreError as exc:
        raise ValueError(str(exc)) from None
    return np.asarray(ends[:n_valid], dtype=np.int64)


def episode_step_indices(episode_ends: np.ndarray, downsample: int) -> tuple[np.ndarray, np.ndarray]:
    """Global indices of the kept steps and the episode ends in that downsampled index space.

    Every ``downsample``-th step of each episode is kept, starting at its first step.
    """
    starts = np.concatenate([[0], episode_ends[:-1]]).astype(np.int64)
    kept, ends = [], []
    total = 0
    for s, e in zip(starts, episode_ends, strict=True):
        idx = np.arange(s, e, downsample, dtype=np.int64)
        kept.append(idx)
        total += len(idx)
        ends.append(total)
    step_index = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return step_index, np.asarray(ends, dtype=np.int64)


def create_indices(
    episode_ends: np.ndarray,
    sequence_length: int,
    pad_before: int,
    pad_after: int,
    episode_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Windows as rows ``(buffer_start, buffer_end, sample_start, sample_end)``.

    ``buffer[buffer_start:buffer_end]`` fills ``window[sample_start:sample_end]``; window steps before
    ``sample_start`` repeat the first loaded step and those from ``sample_end`` on repeat the last.
    A window may stick out ``pad_before`` steps before its episode and ``pad_after`` steps after it.
    """
    episode_ends = np.asarray(episode_ends, dtype=np.int64)
    if episode_mask is None:
        episode_mask = np.ones(len(episode_ends), dtype=bool)
    rows = []
    for i, end in enumerate(episode_ends):
        if not episode_mask[i]:
            continue
        start = 0 if i == 0 else int(episode_ends[i - 1])
        length = int(end) - start
        if length <= 0:
            continue
        for idx in range(-pad_before, length - sequence_length + pad_after + 1):
            buffer_start = max(idx, 0) + start
            buffer_end = min(idx + sequence_length, length) + start
            sample_start = buffer_start - (idx + start)
            sample_end = sequence_length - ((idx + sequence_length + start) - buffer_end)
            rows.append((buffer_start, buffer_end, sample_start, sample_end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> np.ndarray:
    """Boolean validation mask over episodes; at least one validation episode when val_ratio > 0 and
    at least one training episode remains."""
    mask = np.zeros(n_episodes, dtype=bool)
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1) if val_ratio > 0 else 0
    if n_val > 0:
        rng = np.random.default_rng(seed)
        mask[rng.choice(n_episodes, size=n_val, replace=False)] = True
    return mask


def resize_image(frame: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    """Resize one uint8 HWC frame to ``image_size`` (H, W) with INTER_AREA; None = unchanged.

    Used by the data loader and by Policy.predict so that training and inference see the same pixels.
    """
    if image_size is None or tuple(frame.shape[:2]) == tuple(image_size):
        return frame
    import cv2

    h, w = image_size
    return cv2.resize(frame, (int(w), int(h)), interpolation=cv2.INTER_AREA)


def _median_step_s(root: Any) -> float | None:
    """Median timestamp difference within episodes; None without timestamps or 2-step episodes."""
    if "timestamp" not in root["data"]:
        return None
    ts = np.asarray(root["data/timestamp"][:], dtype=np.float64).reshape(root["data/timestamp"].shape[0], -1)[
        :, 0
    ]
    starts = np.concatenate([[0], valid_episode_ends(root)[:-1]])
    diffs = [np.diff(ts[s:e]) for s, e in zip(starts, valid_episode_ends(root), strict=True) if e - s > 1]
    return float(np.median(np.concatenate(diffs))) if diffs else None


def store_dt_s(root: Any, cfg: DatasetConfig) -> float:
    """Step period of the store in seconds: ``cfg.dt_s``, else the ``dt_s`` the store recorded (``rig
    collect`` records the rig's), else the median timestamp difference (warned: under load that is
    not the rig's period). Warns when the timestamps disagree with the period used by over 10%."""
    if cfg.dt_s is not None:
        return float(cfg.dt_s)
    median = _median_step_s(root)
    stored = root.attrs.get("dt_s")
    if stored is not None:
        dt = float(stored)
        if median is not None and abs(median - dt) > 0.1 * dt:
            log.warning(
                "episode store: recorded dt_s=%g s, but its timestamps step by %.4g s (median); "
                "training uses %g s (check `rig episodes list` for late steps)",
                dt,
                median,
                dt,
            )
        return dt
    if median is None:
        raise ValueError("episode store records no dt_s and has no timestamps to infer it; set dataset.dt_s")
    if not median > 0:
        raise ValueError(f"data/timestamp is not increasing (median step {median} s); set dataset.dt_s")
    log.warning(
        "episode store records no dt_s; using its median timestamp step %.4g s (set dataset.dt_s if the "
        "rig ran at another period)",
        median,
    )
    return median


def build_shape_meta(root: Any, policy_cfg: PolicyConfig) -> ShapeMeta:
    """Observation/action shapes from the config's keys and dims and the store's array shapes.

    rgb: ``{"type": "rgb", "shape": [3, H, W]}`` with H, W as stored (Policy.predict takes frames HWC
    as stored). low_dim: ``{"type": "low_dim", "shape": [len(dims)], "dims": [...]}``.
    """
    data = root["data"]
    obs: dict[str, Any] = {}
    missing = [k for k in [*policy_cfg.obs, policy_cfg.action_key] if k not in data]
    if missing:
        raise ValueError(
            f"episode store has no data/{', data/'.join(missing)}; it has: {', '.join(sorted(data.keys()))}"
        )
    for key, oc in policy_cfg.obs.items():
        shape = tuple(data[key].shape[1:])
        if oc.type == "rgb":
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"data/{key} has frames of shape {shape}, expected (H, W, 3) uint8")
            obs[key] = {"type": "rgb", "shape": [3, int(shape[0]), int(shape[1])]}
        else:
            if len(shape) != 1:
                raise ValueError(f"data/{key} has steps of shape {shape}, expected (D,) for low_dim")
            dims = list(range(shape[0])) if oc.dims is None else list(oc.dims)
            bad = [d for d in dims if not 0 <= d < shape[0]]
            if bad:
                raise ValueError(f"obs.{key}.dims {bad} out of range for data/{key} with {shape[0]} dims")
            obs[key] = {"type": "low_dim", "shape": [len(dims)], "dims": dims}
    ashape = tuple(data[policy_cfg.action_key].shape[1:])
    if len(ashape) != 1:
        raise ValueError(f"data/{policy_cfg.action_key} has steps of shape {ashape}, expected (D,)")
    adims = list(range(ashape[0])) if policy_cfg.action_dims is None else list(policy_cfg.action_dims)
    bad = [d for d in adims if not 0 <= d < ashape[0]]
    if bad:
        raise ValueError(
            f"action_dims {bad} out of range for data/{policy_cfg.action_key} ({ashape[0]} dims)"
        )
    return {
        "obs": obs,
        # stored_dim: the stored action's width (6 pose, 7 with a gripper width): deployment completes
        # a subset of dims into full actions of this width.
        "action": {
            "shape": [len(adims)],
            "dims": adims,
            "key": policy_cfg.action_key,
            "stored_dim": int(ashape[0]),
        },
    }


@dataclass
class _Layout:
    step_index: np.ndarray  # kept global indices
    episode_ends: np.ndarray  # in kept-step space


class EpisodeDataset(torch.utils.data.Dataset):
    """Windows of one split of an episode store; yields ``{"obs": {key: array}, "action": array}``.

    rgb observations: uint8 (n_obs_steps, H', W', 3) resized to ``vision.image_size``; low-dim: float32
    (n_obs_steps, D); action: float32 (horizon, Da). Values are raw (the model normalizes).
    """

    def __init__(
        self,
        path: str | Path,
        policy_cfg: PolicyConfig,
        dataset_cfg: DatasetConfig,
        split: str = "train",
        shape_meta: ShapeMeta | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.path = str(path)
        self.policy_cfg = policy_cfg
        self.dataset_cfg = dataset_cfg
        self.split = split
        root = open_store(path)
        self.shape_meta = shape_meta if shape_meta is not None else build_shape_meta(root, policy_cfg)
        episode_ends = valid_episode_ends(root)
        if len(episode_ends) == 0:
            raise ValueError(f"episode store {path} has no finished episodes")
        self.n_episodes = len(episode_ends)
        step_index, ds_ends = episode_step_indices(episode_ends, dataset_cfg.downsample)
        self._layout = _Layout(step_index, ds_ends)
        val_mask = split_episodes(self.n_episodes, dataset_cfg.val_ratio, dataset_cfg.seed)
        train_mask = ~val_mask
        skip = np.zeros(self.n_episodes, dtype=bool)
        skip[[e for e in dataset_cfg.skip_episodes if 0 <= e < self.n_episodes]] = True
        val_mask &= ~skip
        train_mask &= ~skip
        if dataset_cfg.max_train_episodes is not None:
            chosen = np.flatnonzero(train_mask)
            rng = np.random.default_rng(dataset_cfg.seed)
            keep = rng.permutation(chosen)[: dataset_cfg.max_train_episodes]
            train_mask = np.zeros_like(train_mask)
            train_mask[keep] = True
        self.episode_mask = train_mask if split == "train" else val_mask
        pc = policy_cfg
        self.indices = create_indices(
            ds_ends,
            sequence_length=pc.horizon,
            pad_before=pc.n_obs_steps - 1,
            pad_after=pc.n_action_steps - 1,
            episode_mask=self.episode_mask,
        )
        self.dt_s = store_dt_s(root, dataset_cfg) * dataset_cfg.downsample
        value = root.attrs.get("action_time")
        self.action_time: str | None = None if value is None else str(value)
        # Low-dim arrays in memory, only the kept steps and the used dims.
        self._low_dim: dict[str, np.ndarray] = {}
        for key, meta in self.shape_meta["obs"].items():
            if meta["type"] == "low_dim":
                self._low_dim[key] = np.asarray(root["data"][key][:], np.float32)[:, meta["dims"]][step_index]
        akey = self.shape_meta["action"]["key"]
        self._action = np.asarray(root["data"][akey][:], np.float32)[:, self.shape_meta["action"]["dims"]][
            step_index
        ]
        self.rgb_keys = [k for k, m in self.shape_meta["obs"].items() if m["type"] == "rgb"]
        self._root = None  # reopened lazily in each worker process
        self._arrays: dict[str, Any] = {}  # the image arrays of _root
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_root"] = None
        state["_arrays"] = {}
        state["_cache"] = OrderedDict()
        state["_cache_bytes"] = 0
        return state

    def episode_mask_steps(self) -> np.ndarray:
        """Boolean mask over kept steps: True for steps of this split's episodes."""
        ends = self._layout.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        mask = np.zeros(int(ends[-1]), dtype=bool)
        for i in np.flatnonzero(self.episode_mask):
            mask[starts[i] : ends[i]] = True
        return mask

    def low_dim_data(self) -> dict[str, np.ndarray]:
        """Raw low-dim observations and actions of this split's steps, for fitting the normalizer."""
        m = self.episode_mask_steps()
        out = {k: v[m] for k, v in self._low_dim.items()}
        out["action"] = self._action[m]
        return out

    def action_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every window of this split without its images: the ``horizon`` action rows (N, horizon, Da)
        and the robot_eef_pose observations (N, n_obs_steps, De), as ``self[i]`` gives them. Training
        fits the action normalizer on them, through the model's own conversion where it predicts
        offsets (``policy.relative_action``: DiffusionPolicy.to_relative)."""
        idx = np.stack([self.window_indices(i) for i in range(len(self))])  # (N, horizon)
        return self._action[idx], self._low_dim["robot_eef_pose"][idx[:, : self.policy_cfg.n_obs_steps]]

    def _frame(self, key: str, kept_idx: int) -> np.ndarray:
        ck = (key, kept_idx)
        hit = self._cache.get(ck)
        if hit is not None:
            self._cache.move_to_end(ck)
            return hit
        if self._root is None:
            self._root = open_store(self.path)
        if self.dataset_cfg.image_cache_mb > 0:
            # A miss decodes the frame's whole episode in one read: zarr's cost per call made row-by-row
            # reads of `rig train`'s first epoch (mostly misses) 2.6-2.8x slower (benchmarks/dataset_bench.py).
            frame = self._read_episode(key, kept_idx)
            if frame is not None:
                return frame
        row = int(self._layout.step_index[kept_idx])
        try:
            frame = np.asarray(self._array(key)[row])
        except Exception as exc:  # a damaged chunk found mid-training: name the array, episode and step
            ep, k0, _ = self._episode_span(kept_idx)
            step = row - int(self._layout.step_index[k0])
            raise ValueError(
                f"episode store {self.path}: data/{key} episode {ep} step {step} (row {row}) cannot be "
                f"decoded ({type(exc).__name__}: {exc}); `rig episodes check {self.path}` lists every "
                "damaged step"
            ) from None
        frame = resize_image(frame, self.policy_cfg.vision.image_size)
        self._cache_put(ck, frame)
        return frame

    def _array(self, key: str) -> Any:
        if key not in self._arrays:  # a group lookup costs ~1 ms in zarr 3: once per key
            self._arrays[key] = self._root["data"][key]
        return self._arrays[key]

    def _episode_span(self, kept_idx: int) -> tuple[int, int, int]:
        """The episode of kept step ``kept_idx`` and its kept steps' range [k0, k1)."""
        ends = self._layout.episode_ends
        ep = int(np.searchsorted(ends, kept_idx, side="right"))
        return ep, (int(ends[ep - 1]) if ep else 0), int(ends[ep])

    def _read_episode(self, key: str, kept_idx: int) -> np.ndarray | None:
        """Decode the ``key`` frames of ``kept_idx``'s episode in one read, cache them and return
        ``kept_idx``'s. A read that fails (a damaged chunk) gives None: the row-by-row read then names
        the step."""
        _, k0, k1 = self._episode_span(kept_idx)
        rows = self._layout.step_index[k0:k1]
        try:
            if len(rows) == int(rows[-1]) - int(rows[0]) + 1:  # contiguous (no downsampling)
                block = np.asarray(self._array(key)[int(rows[0]) : int(rows[-1]) + 1])
            else:
                block = np.asarray(self._array(key).oindex[rows])
        except Exception:
            return None
        size = self.policy_cfg.vision.image_size
        frames = [resize_image(frame, size) for frame in block]
        for k, frame in zip(range(k0, k1), frames, strict=True):
            self._cache_put((key, k), frame)
        return frames[kept_idx - k0]

    def _cache_put(self, ck: tuple[str, int], frame: np.ndarray) -> None:
        limit = self.dataset_cfg.image_cache_mb * 1e6
        if limit <= 0 or ck in self._cache:
            return
        self._cache[ck] = frame
        self._cache_bytes += frame.nbytes
        while self._cache_bytes > limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes

    @staticmethod
    def _pad_window(data: np.ndarray, seq_len: int, sample_start: int, sample_end: int) -> np.ndarray:
        if sample_start == 0 and sample_end == seq_len:
            return data
        out = np.empty((seq_len, *data.shape[1:]), dtype=data.dtype)
        out[sample_start:sample_end] = data
        out[:sample_start] = data[0]
        out[sample_end:] = data[-1]
        return out

    def window_indices(self, i: int) -> np.ndarray:
        """Kept-step indices of window ``i`` (length horizon), with the boundary padding applied."""
        b0, b1, s0, s1 = (int(v) for v in self.indices[i])
        return self._pad_window(np.arange(b0, b1), self.policy_cfg.horizon, s0, s1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = self.window_indices(i)
        n_obs = self.policy_cfg.n_obs_steps
        obs_idx = idx[:n_obs]
        obs: dict[str, np.ndarray] = {}
        for key in self.shape_meta["obs"]:
            if key in self._low_dim:
                obs[key] = self._low_dim[key][obs_idx]
            else:
                # Padded windows repeat a frame: decode each distinct frame once.
                frames = {int(j): self._frame(key, int(j)) for j in np.unique(obs_idx)}
                obs[key] = np.stack([frames[int(j)] for j in obs_idx])
        return {"obs": obs, "action": self._action[idx]}


def make_loader(
    dataset: EpisodeDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    distributed: bool = False,
    drop_last: bool = True,
) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded shuffle; a DistributedSampler when training under torchrun."""
    sampler = None
    if distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        shuffle = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    drop_last = drop_last and len(dataset) >= batch_size
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        generator=gen,
        pin_memory=torch.cuda.is_available(),
    )


def steps_per_epoch(n_samples: int, batch_size: int, world_size: int = 1) -> int:
    per_rank = math.ceil(n_samples / world_size)
    return max(1, per_rank // batch_size) if per_rank >= batch_size else 1
