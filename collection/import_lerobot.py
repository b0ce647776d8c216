"""Import a LeRobotDataset v3.0 directory into a new episode store, so ``rig train`` can use it.

The inverse of :mod:`collection.export_lerobot` (an export imported again gives the store's keys,
dtypes and low-dim values back exactly; frames come back as the video decodes them). LeRobot feature
-> store key:

- ``video`` / ``image`` features -> ``camera_<i>``: ``observation.images.camera_<i>`` keeps its
  ``i``; other names (``observation.images.top``, ...) are numbered in ``info.json`` order;
- ``observation.state`` -> ``robot_eef_pose`` when its names are ``x y z rx ry rz`` (our exports),
  otherwise ``state``;
- ``observation.<name>`` -> ``<name>`` (dots become underscores), any other feature keeps its name
  with dots as underscores;
- ``host_timestamp`` -> ``timestamp``; without it (datasets recorded elsewhere) ``timestamp`` is
  LeRobot's float32 ``timestamp`` (s from the episode start) as float64, rounded to the microsecond;
- LeRobot's bookkeeping (``frame_index``, ``episode_index``, ``index``, ``task_index``) and strings
  are left out. A one-value feature (shape (1,)) becomes a scalar per step.

The store records ``dt_s = 1 / fps`` (what ``rig train`` steps by).

Frames: each episode's frames are decoded (PyAV) from its video file between its
``from_timestamp`` and ``to_timestamp``; a missing or extra frame is an error naming the episode and
camera. ``image`` features (PNG/JPEG bytes in the parquet) are decoded with OpenCV.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from collection import action_time
from collection.episode_store import DEFAULT_IMAGE_CODEC, EpisodeStore
from collection.export_lerobot import IMAGE_PREFIX, LEROBOT_INDEX_FEATURES, POSE_NAMES


class LeRobotFormatError(ValueError):
    """The directory is not a LeRobot v3 dataset we can read (one line: what and where)."""


def store_keys(features: dict[str, dict[str, Any]]) -> dict[str, str]:
    """LeRobot feature -> store key for every feature that is imported (see the module docstring)."""
    out: dict[str, str] = {}
    cameras = [f for f, ft in features.items() if ft["dtype"] in ("video", "image")]
    taken = {int(f.removeprefix(IMAGE_PREFIX + "camera_")) for f in cameras if _is_our_camera(f)}
    free = (i for i in range(len(cameras) + len(taken)) if i not in taken)
    for f in cameras:
        out[f] = (
            f"camera_{int(f.removeprefix(IMAGE_PREFIX + 'camera_'))}"
            if _is_our_camera(f)
            else f"camera_{next(free)}"
        )
    for f, ft in features.items():
        if f in out or ft["dtype"] == "string" or (f in LEROBOT_INDEX_FEATURES and f != "timestamp"):
            continue
        if f == "timestamp":
            if "host_timestamp" not in features:
                out[f] = "timestamp"
        elif f == "host_timestamp":
            out[f] = "timestamp"
        elif f == "observation.state" and list(ft.get("names") or []) == POSE_NAMES:
            out[f] = "robot_eef_pose"
        else:
            out[f] = f.removeprefix("observation.").replace(".", "_")
    return out


def _is_our_camera(feature: str) -> bool:
    return (
        feature.startswith(IMAGE_PREFIX + "camera_")
        and feature.removeprefix(IMAGE_PREFIX + "camera_").isdigit()
    )


def _read_tables(paths: list[Path]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(p) for p in paths])


def _column(table: Any, name: str, dtype: str) -> np.ndarray:
    """A parquet column as (n,) or (n, d) numpy (LeRobot writes vectors as (fixed-size) lists)."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if (
        pa.types.is_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        width = len(col[0]) if len(col) else 0
        values = col.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(col), width).astype(dtype, copy=False)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _decode_images(column: Any) -> np.ndarray:
    import cv2

    frames = []
    for cell in column.to_pylist():
        raw = np.frombuffer(cell["bytes"], np.uint8)
        frames.append(cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def decode_episode_video(
    path: Path, from_s: float, to_s: float, fps: int, length: int, what: str
) -> np.ndarray:
    """The ``length`` RGB frames of ``path`` played in ``[from_s, to_s)``, (length, H, W, 3) uint8."""
    import av

    half_frame_s = 0.5 / fps
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(max(0, int(from_s / stream.time_base)), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t < from_s - half_frame_s:
                continue
            if t >= to_s - half_frame_s:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    if len(frames) != length:
        raise LeRobotFormatError(
            f"{what}: {path} has {len(frames)} frames in [{from_s:.3f}, {to_s:.3f}) s, the episode has {length} steps"
        )
    return np.stack(frames)


def import_lerobot(
    dataset_dir: str | Path,
    store_path: str | Path,
    *,
    image_codec: str = DEFAULT_IMAGE_CODEC,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write every episode of the LeRobot v3 dataset at ``dataset_dir`` into a new store at
    ``store_path`` (which must not exist). Returns ``{"episodes", "steps", "keys"}``."""
    root = Path(dataset_dir)
    store_path = Path(store_path)
    say = progress or (lambda _msg: None)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise LeRobotFormatError(f"{root} is not a LeRobot dataset: no meta/info.json")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise LeRobotFormatError(
            f"{root} is a LeRobot {version} dataset; only v3 is read (LeRobot's "
            "convert_dataset_v21_to_v30 converts older ones)"
        )
    if store_path.exists():
        raise FileExistsError(f"{store_path} exists; import into a new store")
    features: dict[str, dict[str, Any]] = info["features"]
    fps = int(info["fps"])
    keys = store_keys(features)
    episodes = _read_tables(sorted((root / "meta" / "episodes").glob("*/*.parquet"))).to_pylist()
    episodes.sort(key=lambda row: row["episode_index"])
    data = _read_tables(sorted((root / "data").glob("*/*.parquet")))
    episode_of_row = _column(data, "episode_index", "int64")
    index_of_row = _column(data, "index", "int64")
    n_steps = 0
    # LeRobot's rule is the action-time rule: the action at frame t is the command at frame t.
    with EpisodeStore.open(
        store_path, "w", image_codec=image_codec, dt_s=1.0 / fps, action_time=action_time.CONVENTION
    ) as store:
        for ep in episodes:
            e, length = int(ep["episode_index"]), int(ep["length"])
            rows = np.flatnonzero(episode_of_row == e)
            rows = rows[np.argsort(index_of_row[rows], kind="stable")]
            if len(rows) != length:
                raise LeRobotFormatError(
                    f"{root}: episode {e} has {len(rows)} data rows, its metadata says {length}"
                )
            table = data.take(rows)
            arrays: dict[str, np.ndarray] = {}
            for feature, key in keys.items():
                ft = features[feature]
                if ft["dtype"] == "video":
                    video = root / info["video_path"].format(
                        video_key=feature,
                        chunk_index=ep[f"videos/{feature}/chunk_index"],
                        file_index=ep[f"videos/{feature}/file_index"],
                    )
                    arrays[key] = decode_episode_video(
                        video,
                        float(ep[f"videos/{feature}/from_timestamp"]),
                        float(ep[f"videos/{feature}/to_timestamp"]),
                        fps,
                        length,
                        f"episode {e}, {feature}",
                    )
                elif ft["dtype"] == "image":
                    arrays[key] = _decode_images(table.column(feature))
                else:
                    arrays[key] = _column(table, feature, "float64" if key == "timestamp" else ft["dtype"])
                    if feature == "timestamp":  # float32 seconds: 0.30000001 -> 0.3
                        arrays[key] = np.round(arrays[key], 6)
            store.add_episode(arrays)
            n_steps += length
            say(f"episode {e}: {length} steps")
    return {"episodes": len(episodes), "steps": n_steps, "keys": sorted(keys.values())}
