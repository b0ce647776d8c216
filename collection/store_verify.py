"""Verify an episode store byte by byte, trusting nothing in it: what ``rig episodes check`` reports
and what ``rig train`` refuses.

The store is read through zarr's storage layer directly (not through its groups), so a store whose
group metadata is gone is still examined, and every problem is named:

1. **Metadata.** Every group (root, ``data``, ``meta``) has its metadata file (``.zgroup`` in zarr
   format 2, ``zarr.json`` in format 3); every folder of chunk files under ``data/`` has its array
   metadata; ``meta/episode_ends`` exists. A store whose arrays carry checksums (every store this
   project writes, see ``episode_store.array_codecs``) also has its root attributes, written with it
   (``checksums``; ``dt_s``, the step period training uses, and the episode attributes live there).
2. **Layout.** ``meta/episode_ends`` against the data arrays, through
   :func:`collection.episode_store.validate_layout` (the one validator the store, the CLI and the
   dataset share). When it is broken, places are named by row instead of by episode.
3. **Chunks that must exist.** Every chunk under the committed episodes, of every array, is a file in
   the store (a missing one reads as the fill value: zeros, a black frame, silently). The writer
   stores every chunk, even one that equals the fill value. Rows past the last episode (a crash's
   leftovers, dropped by ``rig episodes repair``) are not examined.
4. **Every chunk decodes** (``decode="all"``: what ``check`` does), or, faster, every checksum
   matches the bytes on disk without decoding the images (``decode="checksums"``: what training
   does before it writes anything; every other array is decoded either way). A chunk that fails is one
   problem, named by the episodes and steps it spans.
5. **Values.** Low-dim float values are finite and timestamps strictly increase within each episode
   (rows already reported as damaged are left out, so a damaged chunk is reported once).

Stores without checksums (older ones, the reference's) are verified as far as their bytes allow:
``check`` decodes every chunk and says that a flipped byte can go unnoticed; training decodes their
images only as it samples them (a damaged frame then stops it, naming the array, episode and step).

Every problem carries the episodes it damages (``Problem.episodes``) or None for the whole store:
``rig train --skip-damaged`` leaves the former out and refuses the latter.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from collection.episode_store import CHECKSUM_ATTR, EpisodeStoreError, register_image_codecs, validate_layout

CHECKSUM_IDS_V2 = ("crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3")
GROUPS = ("", "data", "meta")


@dataclass(frozen=True)
class Problem:
    """One thing wrong, as one line: what and where (array, episodes, steps)."""

    text: str
    episodes: tuple[int, ...] | None = None  # the episodes it damages; None: the whole store
    kind: str = "store"  # "store", "dt_s", "chunk", "value"


@dataclass
class Report:
    path: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_episodes: int = 0
    n_steps: int = 0
    n_arrays: int = 0
    leftovers: int = 0
    checksummed: list[str] = field(default_factory=list)  # arrays with a checksum per chunk
    unchecksummed: list[str] = field(default_factory=list)

    @property
    def damaged_episodes(self) -> list[int]:
        return sorted({e for p in self.problems if p.episodes for e in p.episodes})

    @property
    def store_wide(self) -> list[Problem]:
        return [p for p in self.problems if p.episodes is None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Places:
    """Names global rows by episode and step (or by row when the layout is broken)."""

    def __init__(self, ends: np.ndarray | None) -> None:
        self.ends = ends

    def episodes(self, r0: int, r1: int) -> tuple[int, ...] | None:
        """Episodes touched by rows [r0, r1]; None without a valid layout."""
        if self.ends is None:
            return None
        e0 = int(np.searchsorted(self.ends, r0, side="right"))
        e1 = int(np.searchsorted(self.ends, r1, side="right"))
        return tuple(range(e0, min(e1, len(self.ends) - 1) + 1))

    def _at(self, row: int) -> tuple[int, int]:
        assert self.ends is not None
        ep = int(np.searchsorted(self.ends, row, side="right"))
        return ep, row - (int(self.ends[ep - 1]) if ep else 0)

    def name(self, r0: int, r1: int) -> str:
        """``episode 3 step 7``, ``episode 3 steps 0..9`` or ``episodes 0..4 (episode 0 step 0 ..
        episode 4 step 12)``; ``rows r0..r1`` without a valid layout."""
        if self.ends is None:
            return f"row {r0}" if r0 == r1 else f"rows {r0}..{r1}"
        (e0, s0), (e1, s1) = self._at(r0), self._at(r1)
        if e0 == e1:
            return f"episode {e0} step {s0}" if s0 == s1 else f"episode {e0} steps {s0}..{s1}"
        return f"episodes {e0}..{e1} (episode {e0} step {s0} .. episode {e1} step {s1})"


def _runs(rows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge touching row ranges [a, b] (sorted) into maximal runs."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(rows):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _RawStore:
    """The store's keys and bytes, through zarr's storage layer (directory or zip)."""

    def __init__(self, path: Path) -> None:
        import zarr
        from zarr.core.sync import sync

        self._sync = sync
        if path.suffix == ".zip":
            self.store: Any = sync(zarr.storage.ZipStore.open(path, mode="r"))
        else:
            self.store = zarr.storage.LocalStore(path, read_only=True)

        async def _list() -> list[str]:
            return [k async for k in self.store.list()]

        self.keys = set(sync(_list()))

    def get(self, key: str) -> bytes | None:
        from zarr.core.buffer import default_buffer_prototype

        buf = self._sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def json(self, key: str) -> dict[str, Any] | None:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)


def _prefix(group: str) -> str:
    return f"{group}/" if group else ""


def _array_paths(raw: _RawStore) -> tuple[int | None, list[str]]:
    """(zarr format, paths of the arrays under data/ and meta/) from the metadata files present."""
    v2 = sorted(k[: -len("/.zarray")] for k in raw.keys if k.endswith("/.zarray"))
    v3 = []
    for k in raw.keys:
        if k.endswith("/zarr.json"):
            meta = raw.json(k) or {}
            if meta.get("node_type") == "array":
                v3.append(k[: -len("/zarr.json")])
    if v2 or ".zgroup" in raw.keys:
        return 2, v2
    if v3 or "zarr.json" in raw.keys:
        return 3, sorted(v3)
    return None, []


def _has_checksum(arr: Any) -> bool:
    meta = arr.metadata
    if meta.zarr_format == 2:
        codecs = [meta.compressor, *(meta.filters or ())]
        return any(getattr(c, "codec_id", None) in CHECKSUM_IDS_V2 for c in codecs if c is not None)
    return any(type(c).__name__ in ("Crc32cCodec",) for c in meta.codecs)


def _chunk_keys(arr: Any, rows: int) -> list[tuple[int, int, list[str]]]:
    """(first row, last row, chunk keys) of each row-block of ``arr`` that covers rows [0, rows)."""
    chunks = arr.metadata.chunks if arr.metadata.zarr_format == 2 else arr.chunks
    grid = [range(-(-n // c)) for n, c in zip(arr.shape[1:], chunks[1:], strict=True)]
    out = []
    for i in range(-(-rows // chunks[0])):
        keys = [arr.metadata.encode_chunk_key((i, *rest)) for rest in itertools.product(*grid)]
        out.append((i * chunks[0], min(rows, (i + 1) * chunks[0]) - 1, keys))
    return out


def verify_store(
    path: str | Path,
    decode: Literal["all", "checksums"] = "all",
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> Report:
    """Everything wrong with the store at ``path`` (see the module docstring). Never raises for what
    is in the store; ``progress(n)`` is called per chunk examined after ``total(n)``."""
    import zarr

    register_image_codecs()
    path = Path(path)
    rep = Report(path)
    bad = rep.problems.append
    try:
        raw = _RawStore(path)
    except Exception as exc:  # noqa: BLE001 - a zip that is not one, no permission, ...
        bad(Problem(f"{path}: not readable as a zarr store ({_first_line(exc)})"))
        return rep
    fmt, array_paths = _array_paths(raw)
    if fmt is None:
        bad(Problem(f"{path}: not a zarr store (no .zgroup, zarr.json or array metadata in it)"))
        return rep
    group_file = ".zgroup" if fmt == 2 else "zarr.json"
    for g in GROUPS:
        if _prefix(g) + group_file not in raw.keys:
            where = f"group {g}/" if g else "the root group"
            bad(
                Problem(
                    f"{_prefix(g)}{group_file} missing: the metadata of {where} (zarr cannot open the store)"
                )
            )
    # Folders of chunk files whose array metadata is gone: zarr does not see such an array at all.
    meta_file = ".zarray" if fmt == 2 else "zarr.json"
    folders = {k.split("/")[1] for k in raw.keys if k.startswith("data/") and k.count("/") >= 2}
    groups = {
        k.split("/")[1] for k in raw.keys if k.count("/") == 2 and k.endswith(("/.zgroup", "/zarr.json"))
    }
    known = {p.split("/", 1)[1] for p in array_paths if p.startswith("data/")}
    for name in sorted(folders - known - groups):
        bad(Problem(f"data/{name}/{meta_file} missing: the array's metadata (zarr does not see data/{name})"))

    arrays: dict[str, Any] = {}
    for p in array_paths:
        if not (p.startswith("data/") and p.count("/") == 1) and p != "meta/episode_ends":
            continue
        try:
            arrays[p] = zarr.open_array(raw.store, path=p, mode="r")
        except Exception as exc:  # noqa: BLE001 - metadata that is not valid JSON, unknown codec, ...
            bad(Problem(f"{p}: array metadata unreadable ({_first_line(exc)})"))
    ee = arrays.pop("meta/episode_ends", None)
    data = {p.split("/", 1)[1]: a for p, a in arrays.items()}
    rep.n_arrays = len(data)
    for name, arr in sorted(data.items()):
        (rep.checksummed if _has_checksum(arr) else rep.unchecksummed).append(name)

    # Root attributes: written with every store that has checksums, so required there.
    attrs_key = ".zattrs" if fmt == 2 else "zarr.json"
    try:
        root_meta = raw.json(attrs_key)
        attrs = (root_meta or {}) if fmt == 2 else (root_meta or {}).get("attributes", {})
    except Exception as exc:  # noqa: BLE001
        root_meta, attrs = None, {}
        bad(Problem(f"{attrs_key}: root attributes unreadable ({_first_line(exc)})"))
    ours = bool(rep.checksummed) or (ee is not None and _has_checksum(ee))
    if ours and root_meta is None and fmt == 2:
        bad(
            Problem(
                ".zattrs missing: the root attributes (dt_s, the step period training uses; episode attributes)",
                kind="dt_s",
            )
        )
    elif ours and CHECKSUM_ATTR not in attrs:
        bad(
            Problem(
                f"root attributes lost: {attrs_key} has no '{CHECKSUM_ATTR}' entry (nor the dt_s written with it)",
                kind="dt_s",
            )
        )
    elif "dt_s" not in attrs:
        rep.notes.append(
            "no dt_s recorded: training infers the step period from the timestamps (or set dataset.dt_s)"
        )

    # Layout.
    ends: np.ndarray | None = None
    if ee is None:
        if "meta/episode_ends/" + meta_file not in raw.keys:
            bad(Problem("meta/episode_ends missing: which rows form which episode is lost"))
    else:
        missing = [
            k
            for _, _, ks in _chunk_keys(ee, ee.shape[0])
            for k in ks
            if f"meta/episode_ends/{k}" not in raw.keys
        ]
        if missing:
            bad(
                Problem(f"meta/episode_ends: chunk {', '.join(missing)} missing (the episode ends read as 0)")
            )
        try:
            ends_list = [int(e) for e in ee[:]]
        except Exception as exc:  # noqa: BLE001
            bad(Problem(f"meta/episode_ends cannot be decoded ({_first_line(exc)})"))
        else:
            try:
                n_valid = validate_layout(path, ends_list, {k: a.shape[0] for k, a in data.items()})
                ends = np.asarray(ends_list[:n_valid], dtype=np.int64)
            except EpisodeStoreError as exc:
                bad(
                    Problem(
                        str(exc).split(" Run `rig episodes check")[0].removeprefix(f"episode store {path}: ")
                    )
                )
    places = _Places(ends)
    if ends is not None:
        rep.n_episodes = len(ends)
        rep.n_steps = int(ends[-1]) if len(ends) else 0
        rep.leftovers = max([a.shape[0] for a in data.values()], default=0) - rep.n_steps

    def rows_of(arr: Any) -> int:
        return rep.n_steps if ends is not None else arr.shape[0]

    plan = {name: _chunk_keys(arr, rows_of(arr)) for name, arr in data.items()}
    if total is not None:
        total(sum(len(v) for v in plan.values()))
    low_dims: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, arr in sorted(data.items()):
        low_dim = arr.dtype.kind == "f" and (arr.ndim <= 2 or name == "timestamp")
        image = arr.dtype == np.uint8 and arr.ndim == 4  # the only arrays too large to decode cheaply
        checksummed = name in rep.checksummed
        # The checksum outermost (this project's stores): verified on the raw bytes, nothing decoded.
        crc_outside = arr.metadata.zarr_format == 2 and (
            getattr(arr.metadata.compressor, "codec_id", None) in CHECKSUM_IDS_V2
        )
        missing_rows: list[tuple[int, int]] = []
        broken: list[tuple[int, int, str]] = []
        n = rows_of(arr)
        values = np.zeros((n, *arr.shape[1:]), dtype=arr.dtype) if low_dim else None
        for r0, r1, keys in plan[name]:
            full = [f"data/{name}/{k}" for k in keys]
            if any(k not in raw.keys for k in full):
                missing_rows.append((r0, r1))
            elif image and decode == "checksums" and crc_outside:
                for k in full:
                    try:
                        arr.metadata.compressor.decode(raw.get(k))
                    except Exception as exc:  # noqa: BLE001 - a checksum mismatch, a chunk too short
                        broken.append((r0, r1, _first_line(exc)))
                        break
            elif not image or decode == "all" or checksummed:
                try:
                    block = arr[r0 : r1 + 1]
                    if values is not None:
                        values[r0 : r1 + 1] = block
                except Exception as exc:  # noqa: BLE001 - any codec's or checksum's error
                    broken.append((r0, r1, _first_line(exc)))
            if progress is not None:
                progress(1)
        fill = "a black frame" if arr.dtype == np.uint8 and arr.ndim == 4 else "zeros"
        for a, b in _runs(missing_rows):
            nchunks = sum(1 for r0, _, _ in plan[name] if a <= r0 <= b)
            what = "chunk file" if nchunks == 1 else f"{nchunks} chunk files"
            bad(
                Problem(
                    f"data/{name}: {places.name(a, b)}: {what} missing (read{'s' if nchunks == 1 else ''} as "
                    f"the fill value: {fill})",
                    places.episodes(a, b),
                    "chunk",
                )
            )
        for (a, b), text in _merge_broken(broken):
            bad(
                Problem(
                    f"data/{name}: {places.name(a, b)}: cannot be decoded ({text})",
                    places.episodes(a, b),
                    "chunk",
                )
            )
        if values is not None:
            ok = np.ones(n, dtype=bool)
            for a, b in missing_rows:
                ok[a : b + 1] = False
            for a, b, _ in broken:
                ok[a : b + 1] = False
            low_dims[name] = (values, ok)

    for name, (values, ok) in sorted(low_dims.items()):
        flat = values.reshape(len(values), -1)
        nonfinite = np.flatnonzero(ok & ~np.isfinite(flat).all(axis=1))
        for a, b in _runs([(int(r), int(r)) for r in nonfinite])[:20]:
            bad(
                Problem(
                    f"data/{name}: {places.name(a, b)}: not finite ({flat[a].tolist()})",
                    places.episodes(a, b),
                    "value",
                )
            )
        if len(_runs([(int(r), int(r)) for r in nonfinite])) > 20:
            bad(
                Problem(
                    f"data/{name}: more non-finite steps (20 runs shown)",
                    places.episodes(int(nonfinite[0]), int(nonfinite[-1])),
                    "value",
                )
            )
        if name == "timestamp" and ends is not None:
            ts = flat[:, 0]
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            for ep, (s, e) in enumerate(zip(starts, ends, strict=True)):
                d = np.diff(ts[s:e])
                good = ok[s + 1 : e] & ok[s : e - 1]
                for j in np.flatnonzero(~(d > 0) & good)[:5]:
                    bad(
                        Problem(
                            f"data/timestamp: episode {ep} step {j + 1}: not after step {j} "
                            f"({ts[s + j + 1]!r} after {ts[s + j]!r})",
                            (ep,),
                            "value",
                        )
                    )
    if rep.unchecksummed:
        some = "" if not rep.checksummed else f" ({', '.join(rep.unchecksummed)})"
        rep.notes.append(
            f"no checksums{some}: an older or the reference's store; a flipped byte goes unnoticed unless "
            "its codec fails (stores written now carry a CRC32 per chunk)"
        )
    return rep


def _merge_broken(broken: list[tuple[int, int, str]]) -> list[tuple[tuple[int, int], str]]:
    """Touching damaged chunks with the same error as one line (a deleted camera folder: one line)."""
    out: list[tuple[tuple[int, int], str]] = []
    for a, b, text in sorted(broken):
        if out and out[-1][1] == text and a <= out[-1][0][1] + 1:
            out[-1] = ((out[-1][0][0], b), text)
        else:
            out.append(((a, b), text))
    return out


def summary_line(rep: Report) -> str:
    note = (
        f"; {rep.leftovers} rows past the last episode (a crash's leftovers: `rig episodes repair` drops them)"
        if rep.leftovers > 0
        else ""
    )
    return (
        f"{rep.path}: {rep.n_episodes} episodes, {rep.n_steps} steps, {rep.n_arrays} arrays: "
        f"{len(rep.problems) or 'no'} problem(s){note}"
    )


def print_report(rep: Report, out: Any = None) -> None:
    out = out or sys.stdout
    for p in rep.problems:
        print(p.text, file=out)
    for note in rep.notes:
        print(f"note: {note}", file=out)
    print(summary_line(rep), file=out)
