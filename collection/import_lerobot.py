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
- LeRobot's bookkeeping (``frame_index``, ``episode_index``, ``index``, ``task_index``) is left
  out. A one-value feature (shape (1,)) becomes a scalar per step. What cannot be taken (string
  features, non-image features of more than one dimension such as a (2, 3) ``observation.state``)
  is left out and named with its shape (``dropped`` in the summary; ``rig episodes import`` prints it).
- Each episode's task strings (``tasks`` of ``meta/episodes``) become its episode attributes
  (``{"task": first, "tasks": all}`` when there are several); the export writes them back.

The store records ``dt_s = 1 / fps`` (what ``rig train`` steps by).

Atomic: the store is built in a hidden folder beside ``store_path`` and renamed into place only when
every episode is in; a failure (or Ctrl-C) removes it, so nothing is left and a retry starts clean.

Image codec: by default the source's kind: ``image`` features stored as PNG (lossless) are stored
``jpegxl_lossless``, videos (lossy already) with the default ``jpegxl``. A lossy codec asked for
lossless images is used, with one warning giving the PSNR measured on the first episode.

Frames: each episode's frames are decoded (PyAV) from its video file between its
``from_timestamp`` and ``to_timestamp``; a missing or extra frame is an error naming the episode and
camera. ``image`` features (PNG/JPEG bytes in the parquet) are decoded with OpenCV.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
        if len(ft.get("shape") or []) > 1:
            continue  # see dropped_features
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


def dropped_features(features: dict[str, dict[str, Any]]) -> list[str]:
    """The features an import leaves out, each with its dtype and shape and why."""
    out = []
    for f, ft in features.items():
        shape = tuple(ft.get("shape") or ())
        if ft["dtype"] == "string":
            out.append(f"{f} (string, shape {shape}): strings are not stored")
        elif ft["dtype"] not in ("video", "image") and len(shape) > 1 and f not in LEROBOT_INDEX_FEATURES:
            out.append(f"{f} ({ft['dtype']}, shape {shape}): only scalars and vectors per step are imported")
    return out


LOSSY_CODECS = ("jpegxl", "jpeg2k")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


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
    image_codec: str | None = None,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write every episode of the LeRobot v3 dataset at ``dataset_dir`` into a new store at
    ``store_path`` (which must not exist; created only when complete). ``image_codec``: None follows
    the source (see the module docstring). Returns ``{"episodes", "steps", "keys", "dropped",
    "image_codec"}``; ``warn`` gets the one lossy-codec warning."""
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
    dropped = dropped_features(features)
    episodes = _read_tables(sorted((root / "meta" / "episodes").glob("*/*.parquet"))).to_pylist()
    episodes.sort(key=lambda row: row["episode_index"])
    data = _read_tables(sorted((root / "data").glob("*/*.parquet")))
    png = [
        f
        for f, ft in features.items()
        if ft["dtype"] == "image" and len(data) and bytes(data.column(f)[0].as_py()["bytes"][:8]) == PNG_MAGIC
    ]
    codec = image_codec or ("jpegxl_lossless" if png else DEFAULT_IMAGE_CODEC)
    parent = store_path.resolve().parent
    made_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{store_path.name}.importing-", dir=parent))
    try:
        n_steps = _build(
            root, info, features, keys, episodes, data, fps, codec, build_dir / store_path.name, say
        )
        if png and codec in LOSSY_CODECS and warn is not None:
            with EpisodeStore.open(build_dir / store_path.name, "r") as built:
                ep = int(episodes[0]["episode_index"])
                first = data.take(np.flatnonzero(_column(data, "episode_index", "int64") == ep))
                worst = min(
                    _psnr_db(_decode_images(first.column(f)), built.get_episode(0, [keys[f]])[keys[f]])
                    for f in png
                )
            warn(
                f"{', '.join(png)}: lossless PNG images stored with the lossy codec {codec}: PSNR {worst:.1f} dB "
                f"on episode {ep} (--image-codec jpegxl_lossless keeps them exact)"
            )
        os.rename(build_dir / store_path.name, store_path)  # fails, keeping nothing, if it appeared meanwhile
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
        if made_parent and not store_path.exists():
            shutil.rmtree(parent, ignore_errors=True)
    return {
        "episodes": len(episodes),
        "steps": n_steps,
        "keys": sorted(keys.values()),
        "dropped": dropped,
        "image_codec": codec,
    }


def _build(
    root: Path,
    info: dict[str, Any],
    features: dict[str, dict[str, Any]],
    keys: dict[str, str],
    episodes: list[dict[str, Any]],
    data: Any,
    fps: int,
    image_codec: str,
    store_path: Path,
    say: Callable[[str], None],
) -> int:
    """Write the episodes into a new store at ``store_path``; returns the number of steps."""
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
            tasks = [str(t) for t in (ep.get("tasks") or [])]
            attrs = {"task": tasks[0], **({"tasks": tasks} if len(tasks) > 1 else {})} if tasks else None
            store.add_episode(arrays, attrs=attrs)
            n_steps += length
            say(f"episode {e}: {length} steps")
    return n_steps
