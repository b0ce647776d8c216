"""``rig deploy --checkpoint PATH [--config deploy/sim.yaml] [--episodes N] [--mode sync|async] [key=value ...]``

Runs a trained policy on the rig (the simulated rig by default) with latency-compensated action
chunks; see deploy/runner.py for the loop. Keys (terminal or pipe): ``t`` takeover on/off (the arm
follows the SpaceMouse; also SpaceMouse button ``takeover.button``), ``q`` quit after saving the
current episode.

Prints the timing numbers in use at start, one line per episode, a summary table, and as the very
last line one JSON object: ``mode``, ``episodes``, ``success_rate`` (sim; null on a real rig),
``inference_p50_ms``, ``inference_p99_ms``, ``inference_mean_ms``, ``actions_dropped``,
``actions_superseded``, ``safety_events``, ``episode_durations_s``, ``per_episode`` (list of dicts),
``safety_stop`` (the message, or null), ``store``.

Exit status: 0 done, 3 stopped by the safety layer (NaN policy...), 2 config error, 130 Ctrl-C: the
episode under way is kept in the store, marked interrupted in its attributes (``rig episodes list``
shows it so), and the one ``interrupted:`` line names it.
``--checkpoint`` takes a checkpoint file / run directory, or ``py:module:Factory`` for a stand-in
policy built with ``policy_kwargs`` (see deploy/standin.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from collection import action_time
from collection.episode_store import saved_episodes_note
from deploy.config import DeployConfig
from deploy.policy_client import PolicySpec
from robot.config import ConfigError, add_config_arguments, config_from_args
from robot.interrupt import Interrupted


def make_client(config: DeployConfig, spec: PolicySpec) -> Any:
    """The policy client for ``config``: remote (``server``), an inference process (async,
    ``inference: process``), or in-process (sync: the reference behaviour; or ``inference: inline``)."""
    if config.server:
        from deploy.serving import RemotePolicyClient

        return RemotePolicyClient(config.server, timeout_s=config.server_timeout_s, keys=config.server_keys)
    if config.mode == "async" and config.inference == "process":
        from deploy.inference_process import InferenceProcess
        from robot.process import DeviceProcessError

        proc = InferenceProcess(spec)
        try:
            proc.start()
        except DeviceProcessError as exc:
            # A checkpoint that is not one (missing, a random or text file, an empty folder) is an
            # input error, as it is when the policy loads in this process (inline mode).
            last = (exc.detail or "").strip().splitlines()[-1:] or [""]
            if last[0].startswith(("FileNotFoundError: ", "ValueError: ", "IsADirectoryError: ")):
                raise ValueError(last[0].split(": ", 1)[1]) from None
            raise
        return proc
    from deploy.policy_client import LocalPolicyClient, load_policy

    return LocalPolicyClient(load_policy(spec), spec.describe())


# Low-dim observations whose per-step shape the rig fixes (the arm's TCP pose and joints).
RIG_LOW_DIM_SHAPES = {"robot_eef_pose": [6], "robot_joint": [6], "gripper_width": [1]}


def check_fits_rig(
    meta: Any, checkpoint: str, rig_action_dim: int | None = None, rig_cameras: list[str] | None = None
) -> None:
    """Refuse a policy trained for another rig before any device starts (ValueError naming the key
    and both shapes, or the camera the rig lacks). Images of another size stay accepted: the runner
    resizes them. ``rig_cameras``: the rig's camera observation keys (``camera_<i>``); None: not checked."""
    from deploy.policy_client import POSE_DIM

    if meta is None:
        return
    if rig_cameras is not None:
        shapes = meta.obs_shapes or {}
        wanted = [k for k in meta.obs_keys if k.startswith("camera_") or len(shapes.get(k) or []) == 3]
        lacking = [k for k in wanted if k not in rig_cameras]
        if lacking:
            raise ValueError(
                f"checkpoint {checkpoint} does not fit this rig: it observes {', '.join(lacking)}, the rig has "
                f"{', '.join(rig_cameras) or 'no camera'} (add the camera to rig.cameras, or rename the key: "
                "`rig policy import-reference --map` for an imported checkpoint)"
            )
    want = POSE_DIM if rig_action_dim is None else rig_action_dim
    if meta.action_dim != want:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit this rig: action: checkpoint {meta.action_dim}, rig {want}"
            + (" (pose + gripper width)" if want == 7 else "")
        )
    for key, shape in (meta.obs_shapes or {}).items():
        want = RIG_LOW_DIM_SHAPES.get(key)
        if want is not None and list(shape) != want:
            raise ValueError(
                f"checkpoint {checkpoint} does not fit this rig: {key}: checkpoint {list(shape)}, rig {want}"
            )


def close_client(client: Any) -> None:
    stop = getattr(client, "stop", None)
    if stop is not None:
        stop()
    client.close()


class PartialEpisodeInterrupt(KeyboardInterrupt):
    """Ctrl-C mid-episode: the partial episode was saved as ``store_index``, marked interrupted."""

    def __init__(self, store_index: int) -> None:
        super().__init__(store_index)
        self.store_index = store_index


def run_deploy(
    config: DeployConfig, checkpoint: str, keys: Any = None, out: Any = sys.stdout
) -> dict[str, Any]:
    """Start the rig and the policy, run the episodes, stop everything. Returns the summary."""
    from collection.episode_store import EpisodeStore
    from collection.keys import KeyReader
    from deploy.runner import DeployRunner
    from robot.env import Env

    spec = PolicySpec(
        checkpoint,
        config.device,
        tuple(sorted(config.policy_kwargs.items())),
        torch_threads=config.torch_threads,
        fast_inference=config.fast_inference,
    )
    client = make_client(config, spec)
    try:
        check_fits_rig(
            getattr(client, "meta", None),
            checkpoint,
            7 if config.rig.gripper.enabled else 6,
            rig_cameras=[f"camera_{i}" for i in range(len(config.rig.cameras.cameras))],
        )
        with (
            keys if keys is not None else KeyReader() as kr,
            Env(config.rig, spacemouse=config.spacemouse) as env,
        ):
            store = (
                EpisodeStore.open(
                    config.store,
                    "a",
                    image_codec=config.image_codec,
                    dt_s=config.rig.obs.dt_s,
                    action_time=action_time.CONVENTION,
                )
                if config.store
                else None
            )
            runner = DeployRunner(config, env, client, keys=kr, out=out)
            try:
                summary = runner.run(store)
            except KeyboardInterrupt as exc:
                last = runner.episodes[-1] if runner.episodes else None
                if last is not None and last.end_reason == "interrupted" and last.store_index is not None:
                    raise PartialEpisodeInterrupt(last.store_index) from exc
                raise
            finally:
                if store is not None:
                    store.close()
    finally:
        close_client(client)
    summary["store"] = config.store
    return summary


def format_table(summary: dict[str, Any]) -> str:
    rows = [("episode", "seed", "result", "duration s", "chunks", "p50 ms", "dropped", "safety")]
    for e in summary["per_episode"]:
        rows.append(
            (
                str(e["index"]),
                str(e["seed"]),
                "success" if e["success"] else e["end_reason"],
                f"{e['duration_s']:.1f}",
                str(e["chunks"]),
                "-" if e["inference_p50_ms"] is None else f"{e['inference_p50_ms']:.0f}",
                str(e["actions_dropped"]),
                str(e["safety_events"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    sr = summary["success_rate"]
    lines.append(
        f"success rate {'n/a' if sr is None else f'{sr:.0%}'} | inference p50 {summary['inference_p50_ms']} ms, "
        f"p99 {summary['inference_p99_ms']} ms | dropped {summary['actions_dropped']} | "
        f"safety events {summary['safety_events']}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rig deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt / run dir, or py:module:Factory")
    parser.add_argument(
        "--episodes", type=int, default=None, help="number of episodes (overrides the config)"
    )
    parser.add_argument("--mode", choices=["sync", "async"], default=None, help="overrides the config's mode")
    add_config_arguments(parser, default="deploy/sim.yaml")
    args = parser.parse_args(argv)
    if args.episodes is not None:
        args.overrides = [*args.overrides, f"episodes={args.episodes}"]
    if args.mode is not None:
        args.overrides = [*args.overrides, f"mode={args.mode}"]
    config = config_from_args(DeployConfig, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_deploy(config, args.checkpoint)
    except KeyboardInterrupt as exc:
        kept = saved_episodes_note(config.store) if config.store else "evaluation recording was off"
        if isinstance(exc, PartialEpisodeInterrupt):
            kept += f"; episode {exc.store_index} is partial, marked interrupted (not a failure)"
        raise Interrupted(kept) from exc
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"rig deploy: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # the policy server: not answering, or gone mid-run (the arm held)
        print(f"rig deploy: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary), flush=True)
    print(json.dumps(summary), flush=True)
    return 3 if summary["safety_stop"] else 0
