"""Zarr format 2 metadata of an episode store, changed only where it must be, as the writer wrote it.

zarr 3 rewrites an array's whole ``.zarray`` on every ``resize``, re-serialising the compressor with
every parameter its installed imagecodecs knows (``bitspersample``, ``planar``, ``mct``,
``squeeze``, ...). Older imagecodecs (the Diffusion Policy reference pins 2022.9.26) build codecs
with ``cls(**config)`` and refuse parameters they do not know, so such a rewrite makes a store
unreadable there, even the reference's own store after one ``delete-last``. Hence:

- ``resize_rows`` changes only ``shape[0]`` in ``.zarray`` (every other key, and ``.zattrs``, stays
  exactly as it was) and deletes the chunk files past the new end, as ``zarr.Array.resize`` would;
  an array whose length does not change is not touched at all.
- ``write_codecs`` records a new array's image codec as only the parameters this project chose
  (``{"id": "imagecodecs_jpeg2k", "level": 50}``), which every imagecodecs version accepts, and its
  checksum as ``{"id": "crc32"}`` (what numcodecs before 0.13, the reference's, reads).

Zarr format 3 stores and zipped stores go through zarr's own ``resize``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import zarr


def _v2_meta_file(root: zarr.Group, arr: zarr.Array) -> Path | None:
    """The ``.zarray`` file of ``arr`` in a local directory store of zarr format 2, else None."""
    store_root = getattr(root.store, "root", None)
    if store_root is None or arr.metadata.zarr_format != 2:
        return None
    path = Path(store_root) / arr.path / ".zarray"
    return path if path.is_file() else None


def _write_json_atomic(path: Path, meta: dict[str, Any]) -> None:
    # Same promise as zarr's local store: a killed process leaves the old file or the new one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=4))
    os.replace(tmp, path)


def resize_rows(root: zarr.Group, arr: zarr.Array, n_rows: int) -> zarr.Array:
    """``arr`` with ``n_rows`` rows along axis 0 (the array object to use from now on)."""
    if arr.shape[0] == n_rows:
        return arr
    meta_file = _v2_meta_file(root, arr)
    if meta_file is None:
        arr.resize((n_rows, *arr.shape[1:]))
        return arr
    meta = json.loads(meta_file.read_text())
    meta["shape"][0] = n_rows
    # Metadata first: a crash before the chunk deletion leaves chunks past the end, which zarr ignores.
    _write_json_atomic(meta_file, meta)
    rows_per_chunk = int(meta["chunks"][0])
    keep = -(-n_rows // rows_per_chunk)
    sep = meta.get("dimension_separator") or "."
    for entry in meta_file.parent.iterdir():
        first = entry.name.split(sep)[0] if sep == "." else entry.name
        if first.isdigit() and int(first) >= keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return root[arr.path]


def write_codecs(
    root: zarr.Group, arr: zarr.Array, filters: list[dict[str, Any]] | None, compressor: dict[str, Any] | None
) -> None:
    """Record ``arr``'s filters and compressor as exactly these configs (format 2 directory stores only)."""
    meta_file = _v2_meta_file(root, arr)
    if meta_file is None:
        return
    meta = json.loads(meta_file.read_text())
    meta["filters"] = filters
    meta["compressor"] = compressor
    _write_json_atomic(meta_file, meta)
