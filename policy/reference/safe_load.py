"""Read a Diffusion Policy reference workspace checkpoint without running code from the file.

A reference ``*.ckpt`` is ``torch.save(payload, f, pickle_module=dill)`` of::

    {"cfg": OmegaConf DictConfig, "state_dicts": {"model", "ema_model", "optimizer"}, "pickles": {...}}

``torch.load(weights_only=True)`` refuses it even with OmegaConf's classes allowed (the config's
resolver cache is a ``defaultdict``), and a plain ``torch.load`` would import and run whatever globals
the file names. :func:`load_reference_checkpoint` unpickles it with an allow-list instead: exactly
the globals a workspace checkpoint needs, each mapped to something that cannot run code:

- OmegaConf containers, value nodes and metadata (``omegaconf.dictconfig.DictConfig``, ...) ->
  inert stand-ins that only record their pickled state; the config comes back as plain dicts, lists
  and scalars (absolute ``${a.b}`` interpolations resolved; omegaconf itself is never imported);
- ``typing.Any``, ``dill._dill._load_type`` (only for builtin value types such as ``dict``),
  ``collections.OrderedDict`` / ``defaultdict``, ``_codecs.encode`` (bytes in protocol 2);
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and torch's storage types.

Any other global is refused with :class:`UnsafeCheckpointError` naming it (``module.name``), before
it is imported. ``pickles`` (the workspace's extra dill blobs) are kept as bytes and not unpickled.

Memory: a zip-format checkpoint is loaded with ``mmap=True``: tensors are views of the file's pages,
not copies, so a 2.5 GB checkpoint does not cost 2.5 GB of RAM to read (pages are read on touch).
"""

from __future__ import annotations

import _codecs
import collections
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The file names a global outside the allow-list (never imported, never called)."""


class _OmegaObject:
    """Stand-in for an OmegaConf object: created empty by NEWOBJ, filled by BUILD with its state."""

    kind = "object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = kwargs or None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DictConfig(_OmegaObject):
    kind = "dict"


class _ListConfig(_OmegaObject):
    kind = "list"


class _ValueNode(_OmegaObject):
    kind = "node"


class _Metadata(_OmegaObject):
    kind = "metadata"


_ANY = object()  # typing.Any as it appears in OmegaConf metadata

_OMEGACONF = {
    ("omegaconf.dictconfig", "DictConfig"): _DictConfig,
    ("omegaconf.listconfig", "ListConfig"): _ListConfig,
    ("omegaconf.base", "Metadata"): _Metadata,
    ("omegaconf.base", "ContainerMetadata"): _Metadata,
    **{
        ("omegaconf.nodes", name): _ValueNode
        for name in (
            "AnyNode",
            "StringNode",
            "IntegerNode",
            "FloatNode",
            "BooleanNode",
            "BytesNode",
            "PathNode",
            "EnumNode",
            "InterpolationResultNode",
        )
    },
}

# dill pickles builtin types by name; only plain value types are admitted.
_BUILTIN_TYPES = {
    t.__name__: t for t in (dict, list, tuple, set, frozenset, str, bytes, int, float, bool, complex)
} | {"NoneType": type(None)}


def _load_type(name: str) -> type:
    if name not in _BUILTIN_TYPES:
        raise UnsafeCheckpointError(f"the checkpoint asks for type {name!r} (dill._dill._load_type); refused")
    return _BUILTIN_TYPES[name]


def _defaultdict(factory: Any = None, *args: Any) -> collections.defaultdict:
    if factory is not None and factory not in _BUILTIN_TYPES.values():
        raise UnsafeCheckpointError(f"the checkpoint builds a defaultdict of {factory!r}; refused")
    return collections.defaultdict(factory, *args)


def _encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    return _codecs.encode(text, encoding, errors)


_ALLOWED: dict[tuple[str, str], Any] = {
    **_OMEGACONF,
    ("typing", "Any"): _ANY,
    ("dill._dill", "_load_type"): _load_type,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("_codecs", "encode"): _encode,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
}
_STORAGES = {"UntypedStorage"} | {
    f"{p}Storage"
    for p in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` returns allow-listed objects only (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"the checkpoint names the global {module}.{name}, which a Diffusion Policy workspace "
            "checkpoint does not need; refused (nothing from the file was run)"
        )


# torch.load takes a module-like pickle_module and subclasses its Unpickler (adding storages).
_pickle_module = types.ModuleType("reference_safe_pickle")
_pickle_module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_pickle_module.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_pickle_module.__dict__["UnpicklingError"] = pickle.UnpicklingError


def to_plain(obj: Any) -> Any:
    """OmegaConf stand-ins (and containers holding them) -> plain dicts, lists and scalars."""
    if isinstance(obj, _DictConfig | _ListConfig):
        content = (obj.state or {}).get("_content")
        if content is None or isinstance(content, str):  # None, or a whole-container interpolation
            return content
        if isinstance(obj, _DictConfig):
            return {to_plain(k): to_plain(v) for k, v in content.items()}
        return [to_plain(v) for v in content]
    if isinstance(obj, _ValueNode):
        return to_plain((obj.state or {}).get("_val"))
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v) for v in obj)
    if obj is _ANY or isinstance(obj, _Metadata):
        return None
    return obj


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def resolve_interpolations(cfg: Any, root: Any = None, depth: int = 0) -> Any:
    """Resolve values that are exactly ``${a.b.c}`` (absolute) against ``root``; others are kept as
    written (the reference's training script resolves its config before saving, so a saved one
    rarely holds any)."""
    root = cfg if root is None else root
    if depth > 20:
        raise ValueError("the checkpoint's config has an interpolation cycle")
    if isinstance(cfg, dict):
        return {k: resolve_interpolations(v, root, depth) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [resolve_interpolations(v, root, depth) for v in cfg]
    if isinstance(cfg, str):
        m = _INTERPOLATION.match(cfg)
        if m:
            node = root
            for part in m.group(1).split("."):
                if not isinstance(node, dict) or part not in node:
                    return cfg
                node = node[part]
            return resolve_interpolations(node, root, depth + 1)
    return cfg


def load_reference_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"cfg": plain dict, "state_dicts": {...}, "pickles": {name: bytes}}`` of a reference
    workspace checkpoint; tensors on CPU, memory-mapped from the file where its format allows.

    Raises UnsafeCheckpointError naming a global outside the allow-list, FileNotFoundError, or
    ValueError when the file is not a workspace checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference checkpoint {p} does not exist")
    import zipfile

    mmap = zipfile.is_zipfile(p)  # torch's zip format; the legacy format cannot be memory-mapped
    try:
        payload = torch.load(
            p, map_location="cpu", weights_only=False, mmap=mmap, pickle_module=_pickle_module
        )
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # not a torch file, truncated, another program's pickle
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"{p} could not be read as a Diffusion Policy checkpoint ({type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(payload, dict) or not {"cfg", "state_dicts"} <= set(payload):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{p} is not a Diffusion Policy workspace checkpoint (expected cfg and state_dicts, found {keys})"
        )
    cfg = to_plain(payload["cfg"])
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: the checkpoint's cfg is not a config mapping")
    return {
        "cfg": resolve_interpolations(cfg),
        "state_dicts": payload["state_dicts"],
        "pickles": payload.get("pickles", {}),
    }


__all__ = ["UnsafeCheckpointError", "RestrictedUnpickler", "load_reference_checkpoint", "to_plain"]
