"""No import runs back up: the rooms of ``robot/`` stand on floors, and a module imports only its own
room or rooms on lower floors (read from the source, every import statement, lazy ones too).

A device knows its simulated twin only through its sim backend: inside a device package only the
sim backend (``sim_backend.py``, ``sim.py``) and the CLI may import the simulated world.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. Rooms on one floor do not import each other.
FLOORS: list[set[str]] = [
    {"timing", "config", "interrupt"},
    {"geometry", "shm", "process"},
    {"sim"},
    {"arm", "cameras", "gripper", "spacemouse"},
    {"fake_ur", "calibration_data", "latency_watch", "rig_config"},
    {"env"},
    {"cli"},
]
DEVICES = {"arm", "cameras", "gripper", "spacemouse"}
SIM_BACKENDS = {"sim_backend.py", "sim.py", "cli.py"}
UPPER_PACKAGES = ("collection", "policy", "deploy", "calibration")


def _floor(room: str) -> int:
    for i, rooms in enumerate(FLOORS):
        if room in rooms:
            return i
    raise AssertionError(f"robot/{room} is on no floor: add it to FLOORS in {Path(__file__).name}")


def _room(module: str) -> str:
    """``robot.arm.controller`` -> ``arm``; ``robot.timing`` -> ``timing``."""
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, wherever it stands in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def upward_arrows(root: Path) -> list[str]:
    """Every import under ``root/robot`` that breaks the floors, as ``file:line: what``."""
    bad = []
    for path in sorted((root / "robot").rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) < 3:  # robot/__init__.py
            continue
        room = rel.parts[1].removesuffix(".py")
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in UPPER_PACKAGES:
                bad.append(f"{rel}:{line}: robot/ imports {top}/ (robot/ knows nothing of the layers above)")
                continue
            if top != "robot" or module == "robot":
                continue
            target = _room(module)
            if target == room:
                continue
            if _floor(target) >= _floor(room):
                bad.append(
                    f"{rel}:{line}: {room} (floor {_floor(room)}) imports {target} (floor {_floor(target)})"
                )
            elif target == "sim" and room in DEVICES and path.name not in SIM_BACKENDS:
                bad.append(
                    f"{rel}:{line}: the {room} device imports the simulated world outside its sim backend"
                )
    return bad


def test_no_import_in_robot_runs_back_up() -> None:
    bad = upward_arrows(ROOT)
    assert not bad, "imports against the floors:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("room", "source", "why"),
    [
        ("sim", "from robot.arm.config import ArmConfig\n", "floor 2) imports arm"),
        ("shm", "def f():\n    from robot.process import DeviceProcess\n", "floor 1) imports process"),
        ("arm", "from robot.sim.world import Task\n", "the arm device imports the simulated world"),
        ("geometry", "import deploy.runner\n", "robot/ imports deploy/"),
    ],
)
def test_an_upward_or_sideways_import_fails_the_check(
    tmp_path: Path, room: str, source: str, why: str
) -> None:
    (tmp_path / "robot" / room).mkdir(parents=True)
    (tmp_path / "robot" / room / "extra.py").write_text(source)
    bad = upward_arrows(tmp_path)
    assert len(bad) == 1 and why in bad[0], bad
