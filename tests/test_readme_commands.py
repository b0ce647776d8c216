"""Every ``rig ...`` command the README shows parses with the CLI's own argparse parsers.

The commands are taken from README.md's code (fenced blocks and inline spans), placeholders made
concrete (``STORE`` -> ``0``, ``[optional parts]`` and ``...`` left out, ``a/b/c`` alternatives each
tried), and run through ``robot.cli.main`` up to the moment its parser has accepted them: the parse
methods of argparse are wrapped to stop there, so no device, store or model is touched. A subcommand
or option the CLI does not have fails the parse (argparse's exit 2), as a user would see it. Config
names after ``--config`` must be files under ``configs/`` (or the README must not show them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from robot.cli import main as rig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands(text: str) -> dict[str, bool]:
    """``{command: complete}``: the ``rig ...`` commands of fenced code blocks (one per line,
    comments dropped; complete command lines) and of inline code spans (whitespace collapsed: a span
    may wrap over lines; prose may name a command without its required arguments)."""
    found: dict[str, bool] = {}
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in fenced:
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("rig "):
                found[line.split("  #")[0].split(" # ")[0].strip()] = True
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`(rig [^`]+)`", prose):
        found.setdefault(" ".join(span.split()), False)
    return found


def concrete(command: str) -> list[list[str]]:
    """The argument lists (after ``rig``) one README command stands for."""
    cmd = command.replace("\\|", "|")
    while re.search(r"\[[^\[\]]*\]", cmd):
        cmd = re.sub(r"\s*\[[^\[\]]*\]", "", cmd)  # optional parts: left out
    try:
        tokens = shlex.split(cmd)[1:]
    except ValueError:
        tokens = cmd.split()[1:]
    args: list[str] = []
    for i, tok in enumerate(tokens):
        if tok == "...":
            if i > 0 and tokens[i - 1].startswith("--"):
                args.append("x")  # `--config ...`: some value
            continue
        args.append("0" if re.fullmatch(r"[A-Z][A-Z0-9_]*", tok) else tok)  # STORE, I, DIR: a value
    variants = [args]
    for pos in (0, 1):  # `rig calibrate board/intrinsics/...`, `rig episodes list/show ...`
        out = []
        for v in variants:
            tok = v[pos] if len(v) > pos else ""
            if "/" in tok and "." not in tok and "=" not in tok and not tok.startswith("-"):
                out += [[*v[:pos], alt, *v[pos + 1 :]] for alt in tok.split("/")]
            else:
                out.append(v)
        variants = out
    return variants


class _Parsed(Exception):
    """The parser accepted the arguments; the command itself never runs."""


@contextlib.contextmanager
def parse_only():
    """Wrap argparse so that the first complete parse of a command line ends the command."""
    cls = argparse.ArgumentParser
    originals = {
        name: getattr(cls, name) for name in ("parse_args", "parse_intermixed_args", "parse_known_args")
    }
    state = {"depth": 0}

    def complete(name):
        def wrapper(self, *a, **k):
            state["depth"] += 1
            try:
                ns = originals[name](self, *a, **k)
            finally:
                state["depth"] -= 1
            if state["depth"] == 0:
                raise _Parsed(ns)
            return ns

        return wrapper

    try:
        for name in originals:
            setattr(cls, name, complete(name))
        yield
    finally:
        for name, fn in originals.items():
            setattr(cls, name, fn)


def parse_result(args: list[str]) -> tuple[bool, str]:
    """(accepted, what the parser said)."""
    err = io.StringIO()
    with parse_only(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = rig(args)
        except _Parsed:
            return True, ""
        except SystemExit as exc:
            return exc.code in (0, None), err.getvalue()
    return rc == 0, err.getvalue()  # e.g. `rig --help`


COMMANDS = readme_commands(README.read_text())


def test_the_readme_shows_many_commands():
    assert len(COMMANDS) > 40, COMMANDS
    assert any(c.startswith("rig collect --config collect/lab_task.yaml") for c in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_readme_command_parses_with_the_cli(command):
    for args in concrete(command):
        ok, said = parse_result(args)
        if not ok and not COMMANDS[command]:
            # Prose naming a command ("`rig episodes list` says so") may leave out required
            # arguments; every subcommand and option it names must still exist.
            ok = "the following arguments are required" in said and "invalid choice" not in said
            ok = ok and "unrecognized arguments" not in said
        assert ok, f"README: `{command}` -> rig {' '.join(args)}: {said.strip()[-800:]}"
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--config" and value not in ("x", "0") and not value.startswith("<"):
                assert (ROOT / "configs" / value).is_file(), f"README: `{command}`: no configs/{value}"


@pytest.mark.parametrize(
    "wrong",
    [
        ["episodes", "frobnicate", "0"],  # no such subcommand
        ["calibrate", "latency"],
        ["collect", "--no-such-option"],
        ["episodes", "export", "0", "--plotz", "0"],  # --plots
        ["deploy"],  # --checkpoint is required
    ],
)
def test_the_check_catches_a_command_the_cli_does_not_have(wrong):
    ok, said = parse_result(wrong)
    assert not ok and said, said


def test_placeholders_and_alternatives_become_concrete_commands():
    assert concrete("rig episodes list/show STORE I") == [
        ["episodes", "list", "0", "0"],
        ["episodes", "show", "0", "0"],
    ]
    assert concrete("rig demo [--task reach\\|pick_place]") == [["demo"]]
    assert concrete("rig cameras preview --config ...") == [["cameras", "preview", "--config", "x"]]


def _help(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        rig(args)
    return out.getvalue()


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(subs.choices)


def test_rig_help_names_every_calibrate_and_episodes_subcommand():
    from calibration.cli import _parser as calibrate_parser
    from collection.store_cli import _parser as episodes_parser

    lines = {line.split()[0]: line for line in _help(["--help"]).splitlines() if line.startswith("  ")}
    for command, parser in (("calibrate", calibrate_parser()), ("episodes", episodes_parser())):
        named = set(re.findall(r"[a-z][a-z-]+", lines[command].split(None, 1)[1]))
        missing = set(_subcommands(parser)) - named
        assert not missing, f"rig --help's {command} line leaves out {sorted(missing)}: {lines[command]}"


def test_collect_help_names_the_default_configs_store():
    from collection.collect import CollectConfig
    from robot.config import add_config_arguments, config_from_args

    said = _help(["collect", "--help"])
    default = re.search(r"--config CONFIG.*?default:\s+(\S+?)\)", said, flags=re.S).group(1)
    p = argparse.ArgumentParser()
    add_config_arguments(p, default)
    store = config_from_args(CollectConfig, p.parse_args([])).store
    assert f"{store} in the" in " ".join(said.split()), (store, said)


@pytest.mark.parametrize("name, kind", [("collect/lab_task.yaml", "collect"), ("deploy/lab.yaml", "deploy")])
def test_the_walkthroughs_example_configs_load_as_a_real_rig(name, kind):
    from collection.collect import CollectConfig
    from deploy.config import DeployConfig
    from robot.config import add_config_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_config_arguments(p, name)
    config = config_from_args(CollectConfig if kind == "collect" else DeployConfig, p.parse_args([]))
    assert config.rig.name == "lab" and not config.rig.is_sim
    assert config.rig.arm.backend == "ur" and config.rig.spacemouse.backend == "spnav"
    assert {c.backend for c in config.rig.cameras.cameras.values()} == {"realsense"}
