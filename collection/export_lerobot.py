"""Export an episode store as a LeRobotDataset v3.0 directory (parquet data, mp4 videos, metadata).

The layout is LeRobot's (``lerobot/datasets/utils.py`` and ``lerobot_dataset.py`` of lerobot 0.4,
codebase version ``v3.0``), so ``LeRobotDataset(repo_id, root=DIR)`` loads the result::

    DIR/meta/info.json                                   fps, features, paths, totals
    DIR/meta/stats.json                                  per-feature min/max/mean/std/count/q01..q99
    DIR/meta/tasks.parquet                               task string (index) -> task_index
    DIR/meta/episodes/chunk-000/file-000.parquet         one row per episode: length, where its rows
                                                         and video frames are, its own stats
    DIR/data/chunk-000/file-000.parquet                  one row per step, episodes concatenated
    DIR/videos/observation.images.camera_<i>/chunk-000/file-000.mp4   the camera's frames, episodes
                                                         concatenated; frame n at n / fps seconds

Store key -> LeRobot feature (:func:`feature_name`; :mod:`collection.import_lerobot` inverts it):
``camera_<i>`` -> ``observation.images.camera_<i>`` (video), ``robot_eef_pose`` ->
``observation.state`` (names x y z rx ry rz: what LeRobot's policies read as the robot state),
other ``robot_*`` keys -> ``observation.robot_*``, ``action`` -> ``action``, ``timestamp`` (host
monotonic s) -> ``host_timestamp`` (float64, kept so an import gives the store back exactly); any other
key (an evaluation store's ``chunk_index``, ``takeover`` ...) keeps its name. LeRobot's own
``timestamp`` is ``frame_index / fps`` (``fps = 1 / rig.obs.dt_s``: a store's steps are one control
step apart, while their recorded host times jitter with the machine's load), and LeRobot finds a
video frame by that time (within 0.1 ms).

Values: low-dim arrays are written with their stored dtype, bit-exact. Frames are H.264 (yuv420p,
``crf``; 4:2:0 chroma and the codec make them close to, not equal to, the stored pixels) with a GOP of
2 frames, as LeRobot encodes, so that random access decodes at most one extra frame.

Stats follow ``lerobot/datasets/compute_stats.py``: per episode over all steps (images: per channel,
in [0, 1], over LeRobot's sample of frames, shape (3, 1, 1)), then aggregated over episodes with
count-weighted means, pooled variance and count-weighted quantiles (exact quantiles per episode where
LeRobot uses a histogram estimate).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from collection import action_time
from collection.episode_store import EpisodeStore, is_image_step

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_SIZE_MB = 100  # LeRobot's default size of one data parquet file
VIDEO_FILE_SIZE_MB = 200  # and of one mp4
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
POSE_NAMES = ["x", "y", "z", "rx", "ry", "rz"]
# Columns LeRobot adds to every dataset (its DEFAULT_FEATURES).
LEROBOT_INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
IMAGE_PREFIX = "observation.images."
DEFAULT_CRF = 18
GOP_FRAMES = 2


def feature_name(key: str) -> str:
    """The LeRobot feature a store key is exported as (see the module docstring)."""
    if key.startswith("camera_"):
        return IMAGE_PREFIX + key
    if key == "robot_eef_pose":
        return "observation.state"
    if key == "timestamp":
        return "host_timestamp"
    if key.startswith("robot_"):
        return "observation." + key
    if key in LEROBOT_INDEX_FEATURES:
        raise ValueError(f"store key {key!r} clashes with LeRobot's own column of that name")
    return key


@dataclass
class _FileCursor:
    """Where the next rows (or frames) go: ``chunk-<chunk>/file-<file>``, and what it holds so far."""

    chunk_index: int = 0
    file_index: int = 0

    def advance(self) -> None:
        self.file_index += 1
        if self.file_index == CHUNKS_SIZE:
            self.chunk_index, self.file_index = self.chunk_index + 1, 0


@dataclass
class ExportSummary:
    out_dir: Path
    episodes: int
    frames: int
    fps: int
    features: list[str]
    video_files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- stats
def _stats(samples: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """LeRobot's per-feature stats of ``samples`` (n, d): min/max/mean/std (d,), count (1,), q01..q99."""
    samples = samples.astype(np.float64)
    out = {
        "min": samples.min(axis=0),
        "max": samples.max(axis=0),
        "mean": samples.mean(axis=0),
        "std": samples.std(axis=0),
        "count": np.array([count]),
    }
    qs = np.quantile(samples, QUANTILES, axis=0) if len(samples) > 1 else [out["mean"]] * len(QUANTILES)
    for q, value in zip(QUANTILES, qs, strict=True):
        out[f"q{int(q * 100):02d}"] = np.asarray(value)
    return out


def _lerobot_sample_indices(n: int) -> np.ndarray:
    """The frames LeRobot computes image stats on (compute_stats.sample_indices)."""
    n_samples = max(min(100, n), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, n_samples)).astype(int)


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1] of (T, H, W, C) uint8 frames, shaped (C, 1, 1) as LeRobot's."""
    sample = frames[_lerobot_sample_indices(len(frames))]
    h, w = sample.shape[1:3]
    if max(h, w) >= 300:  # LeRobot's auto_downsample_height_width
        step = int(w / 150) if w > h else int(h / 150)
        sample = sample[:, ::step, ::step]
    st = _stats(sample.reshape(-1, sample.shape[-1]) / 255.0, len(sample))
    return {k: v if k == "count" else v.reshape(-1, 1, 1) for k, v in st.items()}


def low_dim_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of (T,) or (T, d) values: shapes (1,) resp. (d,)."""
    v = values.reshape(len(values), -1)
    return _stats(v, len(v))


def aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stats of the whole dataset from per-episode stats (LeRobot's aggregate_feature_stats)."""
    counts = np.stack([s["count"] for s in per_episode]).astype(np.float64)
    means = np.stack([s["mean"] for s in per_episode])
    w = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    total = counts.sum(axis=0)
    mean = (means * w).sum(axis=0) / total.reshape(total.shape + (1,) * (means.ndim - 1 - total.ndim))
    variances = np.stack([s["std"] ** 2 for s in per_episode])
    var = ((variances + (means - mean) ** 2) * w).sum(axis=0) / w.sum(axis=0)
    out = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": total.astype(np.int64),
    }
    for key in per_episode[0]:
        if key.startswith("q"):
            out[key] = (np.stack([s[key] for s in per_episode]) * w).sum(axis=0) / w.sum(axis=0)
    return out


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {f: {k: np.asarray(v).tolist() for k, v in st.items()} for f, st in stats.items()}


# ----------------------------------------------------------------------------------------- parquet
def _arrow_column(values: np.ndarray) -> Any:
    """One parquet column: a scalar per step, or a fixed-size list per step (LeRobot's Sequence)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.ndim == 1:
        return pa.array(values)
    width = int(np.prod(values.shape[1:]))
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) of a camera's (T, H, W, C) frames: grey repeated, alpha dropped (LeRobot videos are RGB)."""
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def _per_step(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values).reshape(len(values), -1)
    return flat[:, 0] if flat.shape[1] == 1 else flat


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """``meta/tasks.parquet`` as pandas writes ``DataFrame({"task_index": ...}, index=tasks)``: LeRobot
    reads it with ``pd.read_parquet`` and looks tasks up by the index, so the pandas metadata that
    marks the task column as the (unnamed) index is written too (pandas itself is not needed here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks)}
    )
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# ----------------------------------------------------------------------------------------- video
class _VideoWriter:
    """Frames of one camera into ``videos/<key>/chunk-*/file-*.mp4``: frame n of a file at n / fps s;
    a new file once one passes VIDEO_FILE_SIZE_MB at an episode boundary (as LeRobot splits them)."""

    def __init__(self, root: Path, video_key: str, fps: int, crf: int):
        self.root, self.video_key, self.fps, self.crf = root, video_key, fps, crf
        self.cursor = _FileCursor()
        self.container: Any = None
        self.stream: Any = None
        self.n_frames = 0  # frames in the open file
        self.files: list[Path] = []

    def _path(self) -> Path:
        c = self.cursor
        return self.root / VIDEO_PATH.format(
            video_key=self.video_key, chunk_index=c.chunk_index, file_index=c.file_index
        )

    def _open(self, width: int, height: int) -> None:
        import av

        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, self.fps)
        self.stream.codec_context.gop_size = GOP_FRAMES
        self.stream.options = {"crf": str(self.crf), "preset": "medium"}
        self.n_frames = 0
        self.files.append(path)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def add_episode(self, frames: np.ndarray) -> dict[str, Any]:
        """Encode one episode's (T, H, W, 3) frames; returns its ``videos/<key>/...`` episode columns."""
        import av

        if self.container is not None and self._path().stat().st_size > VIDEO_FILE_SIZE_MB * 1e6:
            self.close()
            self.cursor.advance()
        if self.container is None:
            height, width = frames.shape[1:3]
            if height % 2 or width % 2:
                raise ValueError(
                    f"{self.video_key}: frames of {width}x{height} cannot be encoded as yuv420p H.264 "
                    "(width and height must be even)"
                )
            self._open(width, height)
        start = self.n_frames
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.n_frames
            frame.time_base = Fraction(1, self.fps)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.n_frames += 1
        prefix = f"videos/{self.video_key}/"
        return {
            prefix + "chunk_index": self.cursor.chunk_index,
            prefix + "file_index": self.cursor.file_index,
            prefix + "from_timestamp": start / self.fps,
            prefix + "to_timestamp": self.n_frames / self.fps,
        }


def video_info(path: Path, fps: int) -> dict[str, Any]:
    """The ``info`` block LeRobot keeps per video feature (video_utils.get_video_info)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }


# ----------------------------------------------------------------------------------------- export
def store_fps(store: EpisodeStore) -> int:
    """LeRobot's whole frames per second of a store: ``1 / dt_s`` (the rig's step period, which the store
    records); ValueError when it has none or it is not a whole rate (then pass ``--fps``)."""
    if store.dt_s is None:
        raise ValueError(f"{store.path} records no step period (dt_s): pass --fps (1 / rig.obs.dt_s)")
    fps = round(1.0 / store.dt_s)
    if abs(fps * store.dt_s - 1.0) > 1e-6:
        raise ValueError(
            f"{store.path} steps every {store.dt_s} s, not a whole number of frames per second: pass --fps"
        )
    return fps


def export(
    store: EpisodeStore, out_dir: Path, episodes: list[int], out: TextIO, fps: int | None = None
) -> None:
    """``rig episodes export STORE --format lerobot DIR`` (the plug-in of collection/export_cli.py)."""
    s = export_lerobot(
        store,
        out_dir,
        fps or store_fps(store),
        episodes=episodes,
        progress=lambda m: print(m, file=out, flush=True),
    )
    print(
        f"exported {s.episodes} episodes, {s.frames} frames at {s.fps} fps to {s.out_dir} (LeRobot v3.0)",
        file=out,
    )


def export_lerobot(
    store: EpisodeStore,
    out_dir: str | Path,
    fps: int,
    *,
    episodes: list[int] | None = None,
    task: str | None = None,
    robot_type: str = "ur5",
    crf: int = DEFAULT_CRF,
    progress: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write the committed episodes ``episodes`` (store indices; default all) of an open ``store`` as a
    LeRobot v3.0 dataset; they become LeRobot episodes 0, 1, ... in that order.

    ``out_dir`` must not exist or be empty (nothing is overwritten). ``task``: the task string of
    every frame (default: each episode's own, ``task``/``tasks`` of its episode attributes as an
    import keeps them, else the store's name). ``fps``: the store's control rate (``1 / dt_s``; its
    recorded timestamps jitter with the load of the machine, so they are not used to guess it).
    Raises ValueError with one clear line (and then leaves no ``out_dir`` behind).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new one")
    if episodes is None:
        episodes = list(range(store.n_episodes))
    try:
        return _export(store, episodes, out, fps, task, robot_type, crf, progress or (lambda _msg: None))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # it was empty or absent: leave no half dataset behind
        raise


def _export(
    store: EpisodeStore,
    episodes: list[int],
    out: Path,
    fps: int,
    task: str | None,
    robot_type: str,
    crf: int,
    say: Callable[[str], None],
) -> ExportSummary:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not episodes:
        raise ValueError(f"{store.path} has no episodes to export")
    if int(fps) != fps or fps < 1:
        raise ValueError(f"LeRobot datasets need a whole number of frames per second, got fps={fps}")
    fps = int(fps)
    default_task = store.path.name.removesuffix(".zarr")
    task_list: list[str] = []  # tasks.parquet: task_index -> string, in first-seen order

    def episode_tasks(index: int) -> list[str]:
        if task:
            names = [task]
        else:
            attrs = store.episode_attrs(index)
            names = (
                [str(t) for t in attrs.get("tasks") or [attrs["task"]]] if "task" in attrs else [default_task]
            )
        for name in names:
            if name not in task_list:
                task_list.append(name)
        return names

    first = store.get_episode(episodes[0])
    cameras = [k for k in store.keys if is_image_step(first[k].shape[1:], first[k].dtype)]
    low_dim = [k for k in store.keys if k not in cameras]
    for k in low_dim:
        if first[k].ndim > 2:
            raise ValueError(
                f"key {k!r}: steps of shape {first[k].shape[1:]} cannot be exported (0-d or 1-d only)"
            )
    features: dict[str, dict[str, Any]] = {}
    for k in cameras:
        h, w = first[k].shape[1:3]
        features[feature_name(k)] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
        }
    for k in low_dim:
        width = int(np.prod(first[k].shape[1:], dtype=np.int64))
        names = POSE_NAMES if k in ("robot_eef_pose", "action") and width == 6 else None
        features[feature_name(k)] = {"dtype": str(first[k].dtype), "shape": [width], "names": names}
    for k, dtype in LEROBOT_INDEX_FEATURES.items():
        features[k] = {"dtype": dtype, "shape": [1], "names": None}

    out.mkdir(parents=True, exist_ok=True)
    videos = {k: _VideoWriter(out, feature_name(k), fps, crf) for k in cameras}
    data_cursor = _FileCursor()
    data_tables: list[Any] = []
    data_bytes = 0
    episode_rows: list[dict[str, Any]] = []
    per_episode_stats: list[dict[str, dict[str, np.ndarray]]] = []
    n_frames = 0
    try:
        infos = store.episodes()
        for lerobot_index, store_index in enumerate(episodes):
            arrays = store.get_episode(store_index)
            length = infos[store_index].length
            frame_index = np.arange(length, dtype=np.int64)
            tasks = episode_tasks(store_index)
            # One value per step is a scalar column (LeRobot's shape (1,)), more a fixed-size list.
            columns = {feature_name(k): _per_step(arrays[k]) for k in low_dim}
            columns.update(
                timestamp=(frame_index / fps).astype(np.float32),
                frame_index=frame_index,
                episode_index=np.full(length, lerobot_index, np.int64),
                index=np.arange(n_frames, n_frames + length, dtype=np.int64),
                task_index=np.full(length, task_list.index(tasks[0]), np.int64),
            )
            table = pa.table({name: _arrow_column(v) for name, v in columns.items()})
            if data_tables and data_bytes + table.nbytes > DATA_FILE_SIZE_MB * 1e6:
                _write_parquet(pq, pa, out / DATA_PATH.format(**vars(data_cursor)), data_tables)
                data_cursor.advance()
                data_tables, data_bytes = [], 0
            data_tables.append(table)
            data_bytes += table.nbytes
            row: dict[str, Any] = {
                "episode_index": lerobot_index,
                "tasks": tasks,
                "length": length,
                "data/chunk_index": data_cursor.chunk_index,
                "data/file_index": data_cursor.file_index,
                "dataset_from_index": n_frames,
                "dataset_to_index": n_frames + length,
            }
            ep_stats = {name: low_dim_stats(v) for name, v in columns.items()}
            for k in cameras:
                frames = _rgb(arrays[k])
                row.update(videos[k].add_episode(frames))
                ep_stats[feature_name(k)] = image_stats(frames)
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            for name, st in ep_stats.items():
                for stat, value in st.items():
                    row[f"stats/{name}/{stat}"] = np.asarray(value).tolist()
            episode_rows.append(row)
            per_episode_stats.append(ep_stats)
            n_frames += length
            say(f"episode {store_index}: {length} frames")
    finally:
        for writer in videos.values():
            writer.close()
    _write_parquet(pq, pa, out / DATA_PATH.format(**vars(data_cursor)), data_tables)

    for k in cameras:
        features[feature_name(k)]["info"] = video_info(videos[k].files[0], fps)
    _write_parquet(
        pq, pa, out / EPISODES_PATH.format(chunk_index=0, file_index=0), [pa.Table.from_pylist(episode_rows)]
    )
    _write_tasks(out / "meta/tasks.parquet", task_list)
    stats = {name: aggregate_stats([s[name] for s in per_episode_stats]) for name in per_episode_stats[0]}
    (out / "meta/stats.json").write_text(json.dumps(_jsonable(stats), indent=2))
    info_json = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(episode_rows),
        "total_frames": n_frames,
        "total_tasks": len(task_list),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_SIZE_MB,
        "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(episode_rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
        # What the action's time means (collection/action_time.py); LeRobot's own rule is the same:
        # the action at frame t is the command at frame t's timestamp.
        "action_time": {
            "convention": store.action_time,
            "meaning": action_time.LEROBOT_NOTE
            if store.action_time == action_time.CONVENTION
            else action_time.describe(store.attrs, store.dt_s),
        },
    }
    (out / "meta/info.json").write_text(json.dumps(info_json, indent=4))
    return ExportSummary(
        out, len(episode_rows), n_frames, fps, list(features), [p for v in videos.values() for p in v.files]
    )


def _write_parquet(pq: Any, pa: Any, path: Path, tables: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    pq.write_table(pa.concat_tables(tables), tmp)
    os.replace(tmp, path)
