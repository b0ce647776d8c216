"""Synthetic episode stores for the policy tests: a 2-D reach task rendered into small images.

Each episode: a red target disc at a random (x, y) and a white tool disc at the end-effector (x, y);
the action is the next target pose, a step of at most ``step_m`` towards the target, so the policy
must read the target position from the image. z and the rotation are constant (zero-range dims for
the normalizer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr


def _render(h: int, w: int, tool_xy: np.ndarray, target_xy: np.ndarray) -> np.ndarray:
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]

    def disc(xy: np.ndarray, color: tuple[int, int, int], r: float) -> None:
        cx, cy = (xy[0] + 0.5) * (w - 1), (xy[1] + 0.5) * (h - 1)
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        img[m] = color

    disc(target_xy, (220, 30, 30), max(1.5, h / 10))
    disc(tool_xy, (240, 240, 240), max(1.0, h / 14))
    return img


def write_reach_store(
    path: Path,
    n_episodes: int = 6,
    length: int = 30,
    hw: tuple[int, int] = (24, 24),
    seed: int = 0,
    dt_s: float = 0.1,
    step_m: float = 0.06,
    zarr_format: int = 3,
) -> Path:
    rng = np.random.default_rng(seed)
    frames, poses, joints, actions, stamps, ends = [], [], [], [], [], []
    t = 100.0
    for _ in range(n_episodes):
        target = rng.uniform(-0.4, 0.4, size=2)
        pos = rng.uniform(-0.4, 0.4, size=2)
        for _ in range(length):
            pose = np.array([pos[0], pos[1], 0.1, 0.0, 3.14, 0.0])
            delta = target - pos
            dist = np.linalg.norm(delta)
            nxt = target if dist <= step_m else pos + delta / dist * step_m
            frames.append(_render(*hw, pos, target))
            poses.append(pose)
            joints.append(rng.normal(size=6))
            actions.append(np.array([nxt[0], nxt[1], 0.1, 0.0, 3.14, 0.0]))
            stamps.append(t)
            t += dt_s
            pos = nxt
        ends.append(len(frames))
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data = root.create_group("data")
    meta = root.create_group("meta")
    img = np.stack(frames)
    arr = data.create_array("camera_0", shape=img.shape, chunks=(1, *img.shape[1:]), dtype="uint8")
    arr[:] = img
    for key, val in [("robot_eef_pose", poses), ("robot_joint", joints), ("action", actions)]:
        v = np.asarray(val, dtype=np.float64)
        data.create_array(key, shape=v.shape, dtype="float64")[:] = v
    ts = np.asarray(stamps)
    data.create_array("timestamp", shape=ts.shape, dtype="float64")[:] = ts
    e = np.asarray(ends, dtype=np.int64)
    meta.create_array("episode_ends", shape=e.shape, dtype="int64")[:] = e
    return path


@pytest.fixture
def reach_store(tmp_path: Path) -> Path:
    return write_reach_store(tmp_path / "reach.zarr")


@pytest.fixture
def make_reach_store(tmp_path: Path):
    def make(name: str = "store.zarr", **kwargs) -> Path:
        return write_reach_store(tmp_path / name, **kwargs)

    return make


# A very small policy so that a few hundred CPU training steps take ~20 s.
TINY_TEST_OVERRIDES = [
    "policy.vision.width=8",
    "policy.vision.layers=[1,1,1,1]",
    "policy.vision.image_size=null",
    "policy.vision.stem_stride=1",
    "policy.vision.stem_pool=false",
    "policy.vision.crop_shape=[22,22]",
    "policy.vision.num_keypoints=8",
    "policy.model.unet.down_dims=[32,64]",
    "policy.model.unet.diffusion_step_embed_dim=32",
    "training.batch_size=32",
    "training.lr=1e-3",
    "training.lr_warmup_steps=20",
    "training.val_every_steps=150",
    "training.checkpoint_every_steps=150",
    "training.log_every_steps=10",
    "dataset.image_cache_mb=64",
    "dataset.val_ratio=0.2",
    # one thread: on a busy 2-core machine two OpenMP threads are several times slower
    "training.torch_threads=1",
]


# The shipped transformer config (its optimizer settings) with a transformer as small as the tests'
# U-Net: 2 layers of 32-wide tokens.
TRANSFORMER_CONFIG = "policy/tiny_reach_transformer.yaml"
TRANSFORMER_TEST_OVERRIDES = [
    *TINY_TEST_OVERRIDES,
    "policy.model.transformer.n_layer=2",
    "policy.model.transformer.n_emb=32",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_TEST_OVERRIDES)


def run_train(*args: str) -> tuple[int, dict, list[str]]:
    """`rig train` in-process: (exit code, the summary JSON of its last stdout line, stdout lines)."""
    import contextlib
    import io
    import json

    from policy.train_cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([str(a) for a in args])
    lines = out.getvalue().strip().splitlines()
    return rc, json.loads(lines[-1]), lines


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (from /proc)."""
    import glob

    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for c in children:
            found += [c, *_descendants(c)]
    return found


def torchrun_train(nproc: int, *args: str, timeout: float = 200) -> tuple[Any, list[dict]]:
    """`torchrun --standalone --nproc-per-node N -m robot.cli train ARGS` as a subprocess (the README's
    multi-GPU command): (the completed process, the JSON summaries found on its stdout)."""
    import contextlib
    import json
    import os
    import shutil
    import signal
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun is installed with torch"
    cmd = [torchrun, "--standalone", "--nproc-per-node", str(nproc), "-m", "robot.cli", "train"]
    # PYTHONFAULTHANDLER: on a hang, SIGABRT makes every rank (and the agent) print where it was.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    popen = subprocess.Popen(
        [*cmd, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: signal them one by one.
        pids = [popen.pid, *_descendants(popen.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        try:
            stdout, stderr = popen.communicate(timeout=20)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            popen.wait()
        raise AssertionError(
            f"torchrun hung for {timeout} s; where each process was:\n{stderr[-8000:]}"
        ) from None
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, summaries


# The shared training runs: built once per pytest run, outside the timed tests (see _built_once).
SHARED_RUNS = {"trained_run": "policy_run", "trained_transformer_run": "transformer_run"}
BUILD_TIMEOUT_S = 900.0  # its own limit: 300 tiny steps take ~20 s on an idle 2-core machine
_ROOT = Path(__file__).resolve().parents[2]


def _build_policy_run(base: Path) -> dict:
    store = write_reach_store(base / "reach.zarr", n_episodes=8, length=30)
    run_dir = base / "run"
    rc, summary, lines = run_train(
        "--dataset", store, "--out", run_dir, "--max-steps", "300", *TINY_TEST_OVERRIDES
    )
    return {"rc": rc, "store": store, "run_dir": run_dir, "summary": summary, "stdout": lines}


def _build_transformer_run(base: Path) -> dict:
    store = write_reach_store(base / "reach.zarr", n_episodes=8, length=30)
    run_dir = base / "run"
    rc, summary, lines = run_train(
        "--config",
        TRANSFORMER_CONFIG,
        "--dataset",
        store,
        "--out",
        run_dir,
        "--max-steps",
        "300",
        *TRANSFORMER_TEST_OVERRIDES,
    )
    return {"rc": rc, "store": store, "run_dir": run_dir, "summary": summary, "stdout": lines}


_BUILDS = {"policy_run": _build_policy_run, "transformer_run": _build_transformer_run}


def build_in_child(name: str, base: str, result: str) -> None:
    """The body of a build's child process: build ``name`` in ``base``, write its JSON to ``result``."""
    import json

    import torch

    torch.set_num_threads(1)
    out = _BUILDS[name](Path(base))
    Path(result).write_text(json.dumps(out, default=str))


def _run_build(name: str, base: Path, done: Path) -> None:
    """Build ``name`` in a child process with its own time limit; write its result or its failure."""
    import json
    import signal
    import subprocess
    import sys

    log = base.parent / f"{name}.log"
    partial = base.parent / f"{name}.partial.json"
    code = (
        f"import sys; sys.path.insert(0, {str(_ROOT)!r}); from tests.policy.conftest import build_in_child; "
    )
    code += f"build_in_child({name!r}, {str(base)!r}, {str(partial)!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(BUILD_TIMEOUT_S)
            error = None if rc == 0 and partial.exists() else f"its process exited with code {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            error = f"it did not finish within {BUILD_TIMEOUT_S:.0f} s"
    if error is None:
        partial.replace(done)
    else:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        done.write_text(json.dumps({"error": f"{error}; last line: {tail[0]}; its log: {log}"}))


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> dict:
    """The shared run ``name``, built once per pytest run and shared by every xdist worker: the first
    worker to ask builds it (in a child process with its own limit, BUILD_TIMEOUT_S) under a file
    lock, the others wait and read its result (tests copy a run before they change it). Saves the CPU
    of a second and third identical training run on a 2-core machine.

    The build and the wait are not part of any test's timeout (pytest_collection_modifyitems below
    times only the test function of the tests that use a shared run). A failed build fails the test
    that built it, once, with the reason and its log (see _checked); the other tests that need it are
    skipped with that reason instead of erroring one by one."""
    from tests.shared_store import built_once

    result, built_here = built_once(
        tmp_path_factory, name, lambda base, done: _run_build(name, base, done), BUILD_TIMEOUT_S
    )
    if "error" in result:
        return {**result, "built_here": built_here}
    return {**result, "store": Path(result["store"]), "run_dir": Path(result["run_dir"])}


_FAILURES_REPORTED: set[str] = set()


def _checked(result: dict, name: str) -> dict:
    """``result`` if its build succeeded; else one error (in the process that built it, for the first
    test that asks) and a skip with the same reason for every other test."""
    if "error" not in result:
        return result
    message = f"the shared training run {name!r} failed to build: {result['error']}"
    if result["built_here"] and name not in _FAILURES_REPORTED:
        _FAILURES_REPORTED.add(name)
        pytest.fail(message, pytrace=False)
    pytest.skip(f"{message} (reported once, as an error of the test that built it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses a shared run is timed from its function's call on: building the run (or
    waiting for another worker to build it) is bounded by BUILD_TIMEOUT_S, not by its timeout."""
    from tests.shared_store import time_function_only

    for item in items:
        if not set(getattr(item, "fixturenames", ())) & {*SHARED_RUNS, "shared_run"}:
            continue
        time_function_only(config, item)


@pytest.fixture(scope="session")
def _policy_run_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _built_once(tmp_path_factory, "policy_run")


@pytest.fixture(scope="session")
def _transformer_run_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _built_once(tmp_path_factory, "transformer_run")


@pytest.fixture
def trained_run(_policy_run_build: dict) -> dict:
    """One real `rig train` run (300 steps) on a synthetic reach store, shared by several tests."""
    return _checked(_policy_run_build, "policy_run")


@pytest.fixture
def trained_transformer_run(_transformer_run_build: dict) -> dict:
    """`rig train --config policy/tiny_reach_transformer.yaml` (300 steps, the transformer shrunk) on a
    synthetic reach store, shared by the transformer tests."""
    return _checked(_transformer_run_build, "transformer_run")


@pytest.fixture
def shared_run(request: pytest.FixtureRequest) -> dict:
    """The shared run named by an indirect parameter (``trained_run`` or ``trained_transformer_run``),
    set up before the test's call like any fixture (its build is then not timed as the test)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Policy tests use one torch thread: on a busy 2-core machine two OpenMP threads that spin-wait
    for each other are several times slower than one. Restored after each test."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
