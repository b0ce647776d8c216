"""Virtualenvs of the compatibility tests (the Diffusion Policy reference's reader and its policy code,
LeRobot): each is
built once into ``.cache/<name>/venv`` (ignored by git), reused while its requirement files are
unchanged, rebuilt when they change.

A failed build raises (the tests that need it fail; they never skip). Builds are serialized with a
lock file, and a venv becomes visible only once complete (built beside it, then renamed), so two
processes never share a half-built environment: ``make test`` starts ``python -m tests.compat_venv``
in the background to build them while the rest of the suite runs, and a test that needs one waits
for it on the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 1500


def _recipe_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _run(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"building the {what} virtualenv failed ({' '.join(cmd[:4])} ...):\n{tail}")


def compat_python(cache: Path, requirements: Path, no_deps: Path | None = None, what: str = "compat") -> Path:
    """The python of the virtualenv ``cache/venv`` with ``requirements`` (and ``no_deps`` installed
    without their dependencies), building it first if needed (RuntimeError naming the failed step,
    with the end of the pip log, when the build fails)."""
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "venv"
    stamp = venv / "recipe.sha256"
    want = _recipe_hash([requirements] + ([no_deps] if no_deps else []))
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want:
            return venv / "bin" / "python"
        tmp = cache / "venv.building"
        shutil.rmtree(tmp, ignore_errors=True)
        log = cache / "build.log"
        log.write_text("")
        _run([sys.executable, "-m", "venv", str(tmp)], log, what)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, "-r", str(requirements)], log, what)
        if no_deps is not None:
            _run([*pip, "--no-deps", "-r", str(no_deps)], log, what)
        (tmp / "recipe.sha256").write_text(want)
        # Only the console scripts hold the build path; the tests run `venv/bin/python` (found through
        # pyvenv.cfg beside it), so the renamed venv works.
        shutil.rmtree(venv, ignore_errors=True)
        tmp.rename(venv)
        return venv / "bin" / "python"


def main() -> int:
    """Build every compatibility virtualenv (``make test`` runs this beside the suite)."""
    from tests.collection.lerobot_compat.venv import lerobot_python
    from tests.collection.test_reference_compat import reference_venv_python
    from tests.policy.test_reference_checkpoint import reference_policy_python

    failed = 0
    for build in (reference_venv_python, reference_policy_python, lerobot_python):
        try:
            build()
        except RuntimeError as exc:  # the tests that need it fail with the same message
            print(exc.args[0].splitlines()[0], file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
