"""The LeRobot virtualenv of the compatibility tests: ``.cache/lerobot-compat/venv``, built by
:func:`tests.compat_venv.compat_python` from ``requirements.txt`` and ``lerobot.txt`` (installed
without its dependencies: it pins CUDA builds of torch)."""

from __future__ import annotations

from pathlib import Path

from tests.compat_venv import REPO, compat_python

HERE = Path(__file__).resolve().parent
CACHE = REPO / ".cache" / "lerobot-compat"
REQUIREMENTS = HERE / "requirements.txt"
NO_DEPS = HERE / "lerobot.txt"
LOADER = HERE / "load_dataset.py"


def lerobot_python(cache: Path = CACHE, requirements: Path = REQUIREMENTS, no_deps: Path = NO_DEPS) -> Path:
    """The python of the LeRobot virtualenv, building it first if needed (RuntimeError when it fails)."""
    return compat_python(cache, requirements, no_deps, what="LeRobot")
