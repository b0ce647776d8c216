"""``rig demo``: the whole product on the simulated rig, each stage through its own CLI.

1. ``rig collect`` records ``--episodes`` demonstrations of ``--task`` (``reach``, or ``pick_place``
   with the simulated gripper), the scripted SpaceMouse expert driving the simulated arm (and the
   gripper, by its buttons) through the same teleop path a person uses;
2. ``rig train`` trains the tiny diffusion policy on them (``--policy``: default the task's, e.g. the
   U-Net ``tiny_reach``; ``tiny_reach_transformer`` for the transformer backbone);
3. ``rig deploy`` runs the trained policy on the simulated arm for ``--eval-episodes`` episodes whose
   seeds were not used for collection, and reports the task's success rate.

Everything goes under ``runs/<UTC time>/`` (dataset, training run, evaluation store, logs), ending
with ``summary.json`` and a table. ``--dataset`` / ``--checkpoint`` reuse earlier stages' outputs.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from robot.interrupt import Interrupted

EVAL_SEED_OFFSET = 100_000  # evaluation seeds never overlap the collection seeds
# Per task: the configs of each stage, the demonstrations to collect and how long an evaluation episode
# may take (the scripted expert reaches in ~2-4 s and picks and places in ~11 s; a failing episode costs
# at most this).
TASKS: dict[str, dict[str, Any]] = {
    "reach": {
        "collect": "collect/sim_reach.yaml",
        "policy": "policy/tiny_reach.yaml",
        "deploy": "deploy/sim_reach.yaml",
        "episodes": 40,
        "max_episode_s": 15.0,
    },
    "pick_place": {
        "collect": "collect/sim_pick_place.yaml",
        "policy": "policy/tiny_pick_place.yaml",
        "deploy": "deploy/sim_pick_place.yaml",
        "episodes": 48,
        "max_episode_s": 30.0,
    },
}


def _stream(lines: Any, log: Any, kept: list[str] | None = None) -> dict[str, Any] | None:
    """Copy a stage's output to the terminal and its log; return its last JSON line (and add what an
    ``interrupted: ...`` line says it kept to ``kept``)."""
    last_json = None
    for line in lines:
        log.write(line)
        if kept is not None and "interrupted: " in line:
            kept.append(line.split("interrupted: ", 1)[1].strip())
        sys.stdout.write(f"  {line}" if not line.startswith("\r") else line)
        sys.stdout.flush()
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                last_json = json.loads(stripped)
            except json.JSONDecodeError:
                pass
    return last_json


def _run_stage(name: str, cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run one CLI, streaming its output to the terminal and to ``log_path``; return its JSON line."""
    print(f"\n=== {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.monotonic()
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        assert proc.stdout is not None
        kept: list[str] = []
        try:
            last_json = _stream(proc.stdout, log, kept)
            rc = proc.wait()
        except KeyboardInterrupt:
            # The stage got the same SIGINT (one process group, as a terminal sends it): it is
            # saving what it has. Its output goes to the log until it ends; its 'interrupted:' line
            # (what it kept) becomes part of ours.
            rest = list(proc.stdout)
            proc.wait()
            log.writelines(rest)
            kept += [line.split("interrupted: ", 1)[1].strip() for line in rest if "interrupted: " in line]
            rc = -signal.SIGINT
    if rc in (130, -signal.SIGINT):
        # Interrupted, whether or not this process saw the SIGINT before the stage ended: on a loaded
        # host the stage can save, print and exit before this process is scheduled to handle it.
        raise Interrupted(
            f"stage '{name}' stopped ({kept[-1] if kept else f'see {log_path}'}); "
            f"outputs so far under {log_path.parent}/"
        )
    if rc != 0:
        raise SystemExit(f"rig demo: stage '{name}' failed (exit {rc}); see {log_path}")
    if last_json is None:
        raise SystemExit(f"rig demo: stage '{name}' printed no JSON summary; see {log_path}")
    last_json["_wall_s"] = time.monotonic() - t0
    return last_json


def policy_config(name: str) -> str:
    """``--policy`` -> the config ``rig train`` gets: a bare name (``tiny_reach_transformer``) is the
    config of that name under configs/policy/; a path stays as given."""
    if "/" in name or Path(name).is_file():
        return name
    return f"policy/{name}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rig demo", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--episodes", type=int, default=None, help="demonstrations to collect (default: the task's, 40 or 48)"
    )
    ap.add_argument("--eval-episodes", type=int, default=20, help="deployment episodes to evaluate")
    ap.add_argument("--train-steps", type=int, default=None, help="optimizer steps (default: the config's)")
    ap.add_argument("--out", default=None, help="run folder (default runs/<UTC time>)")
    ap.add_argument("--dataset", default=None, help="reuse this episode store: skip collection")
    ap.add_argument(
        "--checkpoint", default=None, help="reuse this checkpoint/run: skip collection and training"
    )
    ap.add_argument(
        "--task", choices=sorted(TASKS), default="reach", help="the simulated task (default reach)"
    )
    ap.add_argument("--collect-config", default=None, help="default: the task's")
    ap.add_argument(
        "--policy",
        "--policy-config",
        dest="policy_config",
        default=None,
        help="policy config: a name under configs/policy/ (tiny_reach, tiny_reach_transformer) or a path; "
        "default: the task's",
    )
    ap.add_argument(
        "--train",
        dest="train_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for rig train (repeatable), e.g. --train training.torch_threads=1",
    )
    ap.add_argument("--deploy-config", default=None, help="default: the task's")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="extra overrides for rig deploy")
    args = ap.parse_args(argv)
    task = TASKS[args.task]
    args.episodes = task["episodes"] if args.episodes is None else args.episodes
    args.collect_config = args.collect_config or task["collect"]
    args.policy_config = args.policy_config or task["policy"]
    args.deploy_config = args.deploy_config or task["deploy"]

    args.policy_config = policy_config(args.policy_config)
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d_%H%M%S", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    rig = [sys.executable, "-m", "robot.cli"]
    print(f"rig demo: outputs under {out}/")
    t_start = time.monotonic()
    summary: dict[str, Any] = {"run_dir": str(out), "task": args.task}

    dataset = args.dataset
    if args.checkpoint is None and dataset is None:
        dataset = str(out / "demos.zarr")
        col = _run_stage(
            "collect",
            [
                *rig,
                "collect",
                "--config",
                args.collect_config,
                f"store={dataset}",
                f"auto.episodes={args.episodes}",
                "record_video=false",
            ],
            out / "collect.log",
        )
        summary["episodes"] = col["store_episodes"]
        summary["collect_seconds"] = round(col["_wall_s"], 1)
    elif dataset is not None:
        from collection.episode_store import EpisodeStore

        summary["episodes"] = EpisodeStore.open(dataset, "r").n_episodes

    checkpoint = args.checkpoint
    if checkpoint is None:
        train_cmd = [
            *rig,
            "train",
            "--config",
            args.policy_config,
            "--dataset",
            dataset,
            "--out",
            str(out / "train"),
        ]
        if args.train_steps is not None:
            train_cmd += ["--max-steps", str(args.train_steps)]
        train_cmd += list(args.train_overrides)
        tr = _run_stage("train", train_cmd, out / "train.log")
        checkpoint = str(out / "train")
        summary["train_seconds"] = round(float(tr["train_seconds"]), 1)
        summary["final_loss"] = float(tr["final_loss"])
        summary["train_steps"] = int(tr["steps"])
        summary["loss_plot"], summary["train_log"] = tr.get("loss_plot"), tr.get("log")

    dep = _run_stage(
        "deploy",
        [
            *rig,
            "deploy",
            "--checkpoint",
            checkpoint,
            "--config",
            args.deploy_config,
            "--episodes",
            str(args.eval_episodes),
            f"store={out / 'eval.zarr'}",
            f"seed={EVAL_SEED_OFFSET}",
            f"max_episode_s={task['max_episode_s']}",
            "record_video=false",  # as in its collection: the 2-core budget goes to the rig
            *args.overrides,
        ],
        out / "deploy.log",
    )
    for key in (
        "success_rate",
        "inference_p50_ms",
        "inference_p99_ms",
        "actions_dropped",
        "safety_events",
        "failure_causes",
    ):
        if key in dep:
            summary[key] = dep[key]
    summary["eval_episodes"] = dep.get("episodes", args.eval_episodes)
    summary["total_seconds"] = round(time.monotonic() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    rows = [
        ("episodes collected", summary.get("episodes", "-")),
        ("training time (s)", summary.get("train_seconds", "-")),
        ("final training loss", f"{summary['final_loss']:.4f}" if "final_loss" in summary else "-"),
        ("loss curve", summary.get("loss_plot") or "-"),
        ("training log", summary.get("train_log") or "-"),
        ("evaluation episodes", summary["eval_episodes"]),
        ("success rate", f"{100 * summary.get('success_rate', 0):.0f} %"),
        (
            "inference p50 / p99 (ms)",
            f"{summary.get('inference_p50_ms', 0):.1f} / {summary.get('inference_p99_ms', 0):.1f}",
        ),
        ("actions dropped", summary.get("actions_dropped", "-")),
        (
            "failures by cause (seeds)",
            "; ".join(f"{c}: {len(v)} {v}" for c, v in summary["failure_causes"].items()) or "none"
            if summary.get("failure_causes") is not None
            else "-",
        ),
        ("total time (s)", summary["total_seconds"]),
    ]
    print("\n=== rig demo summary")
    for k, v in rows:
        print(f"  {k:<26} {v}")
    print(f"  written: {out / 'summary.json'}")
    print(json.dumps(summary))
    return 0
