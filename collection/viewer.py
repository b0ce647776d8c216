"""``rig episodes view STORE [EPISODE ...] [--save FILE.rrd]``: episodes in the rerun viewer.

Everything is logged on the timeline ``time``: the store's ``timestamp`` of each step (host monotonic
s, a duration), so steps sit where they were recorded and a late chunk shows as late; ``step`` (the
step index within its episode) is a second timeline. Episode ``<i>`` lives under ``episode_<i>/``
(6 digits)::

    world                                    the arm base = table frame (z up, table at z = 0): axes
    world/table                              the table top (the simulated rig's extent)
    world/episode_<i>/ee                     end-effector pose per step (Transform3D + axes)
    world/episode_<i>/ee_path                the whole end-effector path (static line strip)
    world/episode_<i>/action_path            the whole commanded path (static line strip)
    episode_<i>/camera_<k>                   every camera stream (JPEG-compressed images)
    episode_<i>/video/<camera>               the full-rate episode video (collection / deploy write
                                             ``<store>.videos/episode_<i>/<camera>.mp4``), each frame
                                             at its capture time from the ``.timestamps.npz`` beside it
    episode_<i>/pose/<x|y|z|rx|ry|rz>/{ee,action}   pose and action channels over time
    episode_<i>/gripper/<key>                gripper width, when the store has one
  evaluation stores (``rig deploy``) also:
    episode_<i>/eval/inference_latency_ms    latency of each chunk, at its arrival (sidecar) or per step
    episode_<i>/eval/dropped_actions         cumulative dropped actions
    episode_<i>/eval/takeover                1 while a person had the arm
    episode_<i>/eval/events                  text log: chunk boundaries (observation, request, arrival
                                             times), takeover start/end, safety events, end reason

Chunk details and safety events come from the sidecar ``<store>.deploy/episode_<i>.json`` that
``rig deploy`` writes; without it, from the per-step arrays. Without ``--save`` the native viewer is
spawned (needs a display); ``--save`` writes an ``.rrd`` file (headless machines), opened later with
``rerun FILE.rrd`` (the ``rerun`` command comes with ``rerun-sdk``). rerun is imported only here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from collection.export_cli import EPISODES_HELP, store_subcommand
from collection.export_media import (
    ACTION_KEY,
    POSE_KEY,
    camera_keys,
    episode_name,
    gripper_key,
    step_times_s,
)

AXES = ("x", "y", "z", "rx", "ry", "rz")
TABLE_EXTENT_M = (-0.25, 1.05, -0.75, 0.75)  # the simulated rig's table (x_min, x_max, y_min, y_max)
JPEG_QUALITY = 85  # raw 640x480 frames would make a minute of two cameras ~1 GB


def add_parser(sub: Any) -> None:
    """Add the ``view`` subcommand to ``rig episodes``' subparsers."""
    summary = "open episodes in the rerun viewer (cameras, 3D path, channels, evaluation timing)"
    p = store_subcommand(sub, "view", summary, __doc__)
    p.add_argument("episodes", type=int, nargs="*", help=EPISODES_HELP)
    p.add_argument(
        "--save", type=Path, metavar="FILE.rrd", help="write a rerun file instead of opening the viewer"
    )


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    from collection.episode_store import EpisodeStore, EpisodeStoreError
    from collection.export_cli import select_episodes

    if not args.path.exists():
        print(f"rig episodes view: no episode store at {args.path}", file=sys.stderr)
        return 2
    try:
        import rerun as rr
    except ImportError as exc:
        print(
            f"rig episodes view: rerun-sdk is not installed ({exc}); `make setup` installs it",
            file=sys.stderr,
        )
        return 1
    if args.save is None and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print(
            "rig episodes view: no display to open the viewer on; use --save FILE.rrd and open the file with "
            "`rerun FILE.rrd` where there is one",
            file=sys.stderr,
        )
        return 1
    rec = rr.RecordingStream("rig episodes", recording_id=str(args.path.resolve()))
    try:
        with EpisodeStore.open(args.path, mode="r") as store:
            episodes = select_episodes(store.n_episodes, args.episodes or None, args.path)
            if args.save is not None:
                args.save.parent.mkdir(parents=True, exist_ok=True)
                rec.save(args.save)
            else:
                # The viewer binary comes with rerun-sdk, beside this interpreter (the venv's bin/),
                # which is not always on PATH (e.g. .venv/bin/rig run without activating the venv).
                exe = Path(sys.executable).with_name("rerun")
                rr.spawn(recording=rec, executable_path=str(exe) if exe.is_file() else None)
            log_store(rec, store, episodes)
    except (ValueError, EpisodeStoreError) as exc:  # the user's input: arguments, path, store
        print(f"rig episodes view: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        hint = "" if args.save else " (no display? use --save FILE.rrd and open it with `rerun FILE.rrd`)"
        print(f"rig episodes view: {exc}{hint}", file=sys.stderr)
        return 1
    finally:
        rec.flush()
        rec.disconnect()
    where = f"saved to {args.save}" if args.save else "sent to the viewer"
    print(f"{len(episodes)} episodes of {args.path} {where}", file=out)
    return 0


def log_store(rec: Any, store: Any, episodes: list[int]) -> None:
    """Log the table frame once, then every episode in ``episodes`` (store indices)."""
    import rerun as rr

    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rec.log("world", rr.TransformAxes3D(0.2), static=True)
    x0, x1, y0, y1 = TABLE_EXTENT_M
    rec.log(
        "world/table",
        rr.Boxes3D(
            centers=[[(x0 + x1) / 2, (y0 + y1) / 2, -0.005]],
            half_sizes=[[(x1 - x0) / 2, (y1 - y0) / 2, 0.005]],
            colors=[[150, 120, 90, 80]],
            fill_mode="solid",
        ),
        static=True,
    )
    sidecar_dir = Path(str(store.path) + ".deploy")
    tabs = []
    for index in episodes:
        sidecar = sidecar_dir / f"{episode_name(index)}.json"
        arrays = store.get_episode(index)
        log_episode(rec, index, arrays, json.loads(sidecar.read_text()) if sidecar.is_file() else None)
        videos = log_videos(rec, index, Path(str(store.path) + ".videos") / episode_name(index))
        tabs.append(episode_layout(index, arrays, videos))
    import rerun.blueprint as rrb

    rec.send_blueprint(rrb.Blueprint(rrb.Tabs(*tabs), collapse_panels=True))


def episode_layout(index: int, arrays: dict[str, np.ndarray], videos: list[str]) -> Any:
    """The viewer layout of one episode (a tab): 3D path and cameras left, channels and events right."""
    import rerun.blueprint as rrb

    name = episode_name(index)
    images = [rrb.Spatial2DView(origin=f"/{name}/{k}", name=k) for k in camera_keys(arrays)]
    images += [rrb.Spatial2DView(origin=f"/{name}/video/{v}", name=f"{v} (full rate)") for v in videos]
    pose = arrays.get(POSE_KEY)
    eye = None
    if pose is not None and pose.ndim == 2 and pose.shape[1] >= 3 and len(pose):
        # Look at the path from the front-left and above, close enough to see a few-cm motion.
        target = pose[:, :3].mean(axis=0)
        eye = rrb.archetypes.EyeControls3D(
            position=target + np.array([0.3, -0.45, 0.3]), look_target=target, eye_up=[0.0, 0.0, 1.0]
        )
    left = [
        rrb.Spatial3DView(
            origin="/world",
            contents=["/world", "/world/table", f"/world/{name}/**"],
            name="end effector (table frame)",
            eye_controls=eye,
        )
    ]
    if images:
        left.append(rrb.Grid(*images))
    channels = f"/{name}/pose"
    right = [
        rrb.TimeSeriesView(
            origin=channels, contents=[f"$origin/{a}/**" for a in AXES[:3]], name="position (m)"
        ),
        rrb.TimeSeriesView(
            origin=channels, contents=[f"$origin/{a}/**" for a in AXES[3:]], name="rotation (rad)"
        ),
    ]
    if gripper_key(arrays):
        right.append(rrb.TimeSeriesView(origin=f"/{name}/gripper", name="gripper"))
    if "inference_latency_s" in arrays:
        right += [
            rrb.TimeSeriesView(
                origin=f"/{name}/eval", contents="$origin/inference_latency_ms", name="inference latency (ms)"
            ),
            rrb.TimeSeriesView(
                origin=f"/{name}/eval",
                contents=["$origin/dropped_actions", "$origin/takeover"],
                name="dropped actions, takeover",
            ),
            rrb.TextLogView(origin=f"/{name}/eval/events", name="chunks, takeover, safety"),
        ]
    return rrb.Horizontal(rrb.Vertical(*left), rrb.Vertical(*right), name=f"episode {index}")


def log_videos(rec: Any, index: int, video_dir: Path) -> list[str]:
    """The episode's full-rate mp4s (if any), each frame on the timeline at its capture time; returns
    the camera names logged."""
    import rerun as rr

    names = []
    for mp4 in sorted(video_dir.glob("*.mp4")):
        stamps = mp4.with_name(mp4.stem + ".timestamps.npz")
        if not stamps.is_file():
            continue
        capture_s = np.load(stamps)["capture_time"]
        entity = f"{episode_name(index)}/video/{mp4.stem}"
        video = rr.AssetVideo(path=mp4)
        rec.log(entity, video, static=True)
        pts_ns = video.read_frame_timestamps_nanos()
        n = min(len(pts_ns), len(capture_s))  # one sidecar row per encoded frame; equal unless truncated
        rec.send_columns(
            entity,
            indexes=[rr.TimeColumn("time", duration=capture_s[:n])],
            columns=rr.VideoFrameReference.columns_nanos(pts_ns[:n]),
        )
        names.append(mp4.stem)
    return names


def _columns(rec: Any, path: str, times: np.ndarray, steps: np.ndarray, columns: Any) -> None:
    import rerun as rr

    rec.send_columns(
        path,
        indexes=[rr.TimeColumn("time", duration=times), rr.TimeColumn("step", sequence=steps)],
        columns=columns,
    )


def _scalars(
    rec: Any, path: str, times: np.ndarray, steps: np.ndarray, values: np.ndarray, color=None
) -> None:
    import rerun as rr

    if color is not None:
        rec.log(path, rr.SeriesLines(colors=[color]), static=True)
    _columns(rec, path, times, steps, rr.Scalars.columns(scalars=np.asarray(values, np.float64)))


def log_episode(rec: Any, index: int, arrays: dict[str, np.ndarray], sidecar: dict | None = None) -> None:
    """Log one episode (see the module docstring for the entities)."""
    import rerun as rr
    from scipy.spatial.transform import Rotation

    name = episode_name(index)
    times = step_times_s(arrays)
    steps = np.arange(len(times))
    for key in camera_keys(arrays):
        for step, (img, t) in enumerate(zip(arrays[key], times, strict=True)):
            rec.set_time("time", duration=float(t))
            rec.set_time("step", sequence=step)
            rec.log(f"{name}/{key}", rr.Image(img).compress(jpeg_quality=JPEG_QUALITY))
    pose, action = arrays.get(POSE_KEY), arrays.get(ACTION_KEY)
    if pose is not None and pose.ndim == 2 and pose.shape[1] == 6:
        quats = Rotation.from_rotvec(pose[:, 3:]).as_quat()  # x, y, z, w
        rec.log(f"world/{name}/ee", rr.TransformAxes3D(0.05), static=True)
        _columns(
            rec,
            f"world/{name}/ee",
            times,
            steps,
            rr.Transform3D.columns(translation=pose[:, :3], quaternion=quats),
        )
        rec.log(
            f"world/{name}/ee_path",
            rr.LineStrips3D([pose[:, :3]], colors=[[40, 120, 230]], radii=0.002),
            static=True,
        )
    if action is not None and action.ndim == 2 and action.shape[1] >= 3:
        rec.log(
            f"world/{name}/action_path",
            rr.LineStrips3D([action[:, :3]], colors=[[240, 140, 30]], radii=0.0015),
            static=True,
        )
    for key, data, color in ((POSE_KEY, pose, [40, 120, 230]), (ACTION_KEY, action, [240, 140, 30])):
        if data is None or data.ndim != 2:
            continue
        short = "ee" if key == POSE_KEY else "action"
        for i in range(min(data.shape[1], len(AXES))):
            _scalars(rec, f"{name}/pose/{AXES[i]}/{short}", times, steps, data[:, i], color)
    gripper = gripper_key(arrays)
    if gripper:
        _scalars(
            rec,
            f"{name}/gripper/{gripper}",
            times,
            steps,
            np.asarray(arrays[gripper]).reshape(len(times), -1)[:, 0],
        )
    _log_evaluation(rec, name, arrays, times, steps, sidecar)


def _log_evaluation(
    rec: Any,
    name: str,
    arrays: dict[str, np.ndarray],
    times: np.ndarray,
    steps: np.ndarray,
    sidecar: dict | None,
) -> None:
    """Chunk boundaries, inference latency, dropped actions, takeover spans and safety events."""
    import rerun as rr

    events: list[tuple[float, str, str]] = []  # (time, level, text)
    chunks = (sidecar or {}).get("chunks", [])
    if chunks:
        t_done = np.array([c["t_done"] for c in chunks], np.float64)
        latency_ms = np.array([1000 * c["latency_s"] for c in chunks], np.float64)
        _columns(
            rec,
            f"{name}/eval/inference_latency_ms",
            t_done,
            np.searchsorted(times, t_done).clip(0, len(times) - 1),
            rr.Scalars.columns(scalars=latency_ms),
        )
        for c in chunks:
            text = (
                f"chunk {c['chunk']} arrives: observation at {c['t_obs']:.3f} s, requested {c['t_request']:.3f} s, "
                f"latency {1000 * c['latency_s']:.0f} ms, {c.get('planned', '?')} planned, "
                f"{c.get('dropped', 0)} dropped" + (" (late)" if c.get("late") else "")
            )
            events.append((float(c["t_done"]), "INFO", text))
            for e in c.get("safety_events", []):
                events.append((float(c["t_done"]), "WARN", f"safety: {e}"))
    elif "inference_latency_s" in arrays:
        _scalars(rec, f"{name}/eval/inference_latency_ms", times, steps, 1000 * arrays["inference_latency_s"])
    if not chunks and "chunk_start" in arrays:
        for s in np.flatnonzero(arrays["chunk_start"]):
            k = int(arrays["chunk_index"][s]) if "chunk_index" in arrays else -1
            events.append((float(times[s]), "INFO", f"chunk {k} starts"))
    if "dropped_actions" in arrays:
        _scalars(rec, f"{name}/eval/dropped_actions", times, steps, arrays["dropped_actions"])
    if "takeover" in arrays:
        takeover = np.asarray(arrays["takeover"], bool)
        _scalars(rec, f"{name}/eval/takeover", times, steps, takeover.astype(np.float64), [220, 40, 40])
        edges = np.flatnonzero(np.diff(np.concatenate([[False], takeover]).astype(np.int8)))
        for s in edges:
            events.append((float(times[s]), "WARN", "takeover starts" if takeover[s] else "takeover ends"))
    if sidecar and sidecar.get("end_reason"):
        level = "ERROR" if sidecar["end_reason"] == "safety_stop" else "INFO"
        events.append((float(times[-1]), level, f"episode ends: {sidecar['end_reason']}"))
    for t, level, text in sorted(events, key=lambda e: e[0]):
        rec.set_time("time", duration=t)
        rec.set_time("step", sequence=int(np.searchsorted(times, t).clip(0, len(times) - 1)))
        rec.log(f"{name}/eval/events", rr.TextLog(text, level=level))
