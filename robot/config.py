"""Typed, validated configuration loaded from YAML files plus ``key=value`` overrides.

Every CLI takes ``--config PATH`` and any number of ``dotted.key=value`` overrides. Values in
overrides are parsed as YAML (``fps=30`` is an int, ``enabled=false`` a bool, ``size=[640,480]`` a
list). Config models are pydantic models that forbid unknown keys, so a typo in a file or an override
is an error that names the key and the file, never a silently ignored setting.

Config files may include others with a top-level ``defaults:`` list (paths relative to the including
file): ``other.yaml`` merges that file at the top level, ``{arm: ../arm/sim_ur5.yaml}`` merges it under
the key ``arm``. Later entries and the including file itself override earlier ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the file."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, resolving its ``defaults:`` includes. Raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    includes = data.pop("defaults", []) or []
    merged: dict[str, Any] = {}
    for inc in includes:
        if isinstance(inc, Mapping):
            for key, sub in inc.items():
                merged = _deep_merge(merged, {key: read_yaml(path.parent / sub)})
        else:
            merged = _deep_merge(merged, read_yaml(path.parent / inc))
    return _deep_merge(merged, data)


def _field_type(model: Any, parts: list[str]) -> Any:
    """The annotation of the dotted key ``parts`` in ``model`` (None where it cannot be told)."""
    tp: Any = model
    for part in parts:
        while get_origin(tp) in (Union, UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return None
            tp = args[0]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    return tp


def _wants_text(tp: Any) -> bool:
    """A str field (possibly optional): a value like ``123456789012`` is text there, not a number."""
    if tp is str:
        return True
    if get_origin(tp) in (Union, UnionType):
        return str in get_args(tp) and all(a in (str, type(None)) for a in get_args(tp))
    return False


def parse_overrides(overrides: Iterable[str], model: Any = None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1,2]"]`` into a nested dict. Raises ConfigError on malformed items.

    With ``model``, a value is read by its field's type: for a text field (a camera serial, a host)
    ``serial=123456789012`` stays the text the user typed."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        parts = key.split(".")
        if (
            model is not None
            and not isinstance(value, str | type(None))
            and _wants_text(_field_type(model, parts))
        ):
            value = raw.strip()
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return tree


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    short_lists: set[tuple] = set()
    for err in exc.errors():
        loc = err["loc"]
        # A fixed-length list given too few values: pydantic reports each missing position.
        if (
            err["type"] == "missing"
            and loc
            and isinstance(loc[-1], int)
            and isinstance(err.get("input"), list)
        ):
            if loc[:-1] not in short_lists:
                short_lists.add(loc[:-1])
                n_expected = max(e["loc"][-1] for e in exc.errors() if e["loc"][:-1] == loc[:-1]) + 1
                key = ".".join(str(p) for p in loc[:-1])
                lines.append(
                    f"key '{key}' in {source}: expected {n_expected} values, got {len(err['input'])}"
                )
            continue
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' in {source}")
        elif err["type"] == "missing":
            lines.append(f"missing key '{key}' in {source}")
        else:
            got = err.get("input")
            lines.append(f"key '{key}' in {source}: {err['msg']} (got {got!r})")
    return "; ".join(lines)


def build_config(model: type[M], data: Mapping[str, Any], source: str = "<dict>") -> M:
    """Validate ``data`` into ``model``; errors name each bad key and ``source``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(model: type[M], path: str | Path | None, overrides: Iterable[str] = ()) -> M:
    """Load ``path`` (or only the model's defaults when None) with overrides applied.

    Raises ConfigError naming the offending key and where it came from (the file or the override).
    """
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    # Validate the file alone first so that an error in the file is blamed on the file.
    if data:
        build_config(model, data, source)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides, model))
        source = f"{source} with overrides {' '.join(overrides)}"
    return build_config(model, data, source)


def config_path(name: str) -> Path:
    """Resolve a config name: an existing path, or a path relative to ``configs/``."""
    p = Path(name)
    if p.is_file():
        return p
    q = CONFIG_DIR / name
    if q.is_file():
        return q
    if q.with_suffix(".yaml").is_file():
        return q.with_suffix(".yaml")
    if p.is_absolute() or p == q:
        raise ConfigError(f"config file {p} does not exist")
    raise ConfigError(f"config {name!r} not found (looked at {p} and {q})")


def add_config_arguments(parser: Any, default: str | None) -> None:
    """Add the standard ``--config PATH`` option and ``key=value`` override positionals to argparse."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"YAML config (a path, or a name under configs/; default: {default})",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")


def config_from_args(model: type[M], args: Any) -> M:
    """Build the config from parsed ``--config``/overrides (see add_config_arguments)."""
    path = config_path(args.config) if args.config else None
    return load_config(model, path, args.overrides)
