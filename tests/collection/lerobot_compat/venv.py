"""The LeRobot virtualenv of the compatibility tests: built once into ``.cache/lerobot-compat/venv``,
reused while ``requirements.txt`` and ``lerobot.txt`` are unchanged, rebuilt when they change.

A failed build raises (the tests that need it fail; they never skip). Builds are serialized with a
lock file, and a venv becomes visible only once complete (built beside it, then renamed), so two
test processes never share a half-built environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / ".cache" / "lerobot-compat"
REQUIREMENTS = HERE / "requirements.txt"
NO_DEPS = HERE / "lerobot.txt"
LOADER = HERE / "load_dataset.py"
BUILD_TIMEOUT_S = 1500


def _recipe_hash(requirements: Path, no_deps: Path) -> str:
    h = hashlib.sha256()
    for path in (requirements, no_deps):
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"building the LeRobot virtualenv failed ({' '.join(cmd[:4])} ...):\n{tail}")


def lerobot_python(cache: Path = CACHE, requirements: Path = REQUIREMENTS, no_deps: Path = NO_DEPS) -> Path:
    """The python of the LeRobot virtualenv ``cache/venv``, building it first if needed (RuntimeError
    naming the failed step, with the end of the pip log, when the build fails)."""
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "venv"
    stamp = venv / "recipe.sha256"
    want = _recipe_hash(requirements, no_deps)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want:
            return venv / "bin" / "python"
        tmp = cache / "venv.building"
        shutil.rmtree(tmp, ignore_errors=True)
        log = cache / "build.log"
        log.write_text("")
        _run([sys.executable, "-m", "venv", str(tmp)], log)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, "-r", str(requirements)], log)
        _run([*pip, "--no-deps", "-r", str(no_deps)], log)
        (tmp / "recipe.sha256").write_text(want)
        # Only the console scripts hold the build path; the tests run `venv/bin/python` (found through
        # pyvenv.cfg beside it), so the renamed venv works.
        shutil.rmtree(venv, ignore_errors=True)
        tmp.rename(venv)
        return venv / "bin" / "python"
