"""Shared-memory segments of this project: naming, ownership, cleanup on every exit path.

Every segment is named ``rig_<owner pid>_<token>`` so that a segment left behind by a run that was
SIGKILLed can be recognised (its owner pid is gone) and removed by ``rig shm clean``. The
``sem.mp-*`` semaphores of multiprocessing (the device processes' events and pipes) survive a SIGKILL
of a whole process group too (the resource tracker dies with it): ``rig shm clean`` removes those
that no running process maps (from ``/proc/*/maps``).

Ownership: the process that creates a segment owns it and unlinks it when it is closed, when the
process exits normally, on an uncaught exception, on SIGINT (KeyboardInterrupt) and on SIGTERM (turned
into ``SystemExit`` by :func:`install_termination_handlers`). Children attach to segments they are
given; they never unlink them, so the death of a child never loses or leaks a segment. If the owner
itself is SIGKILLed, Python's resource tracker still unlinks what it registered once every process
of the run has exited, and ``rig shm clean`` removes anything that survives even that.
"""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

PREFIX = "rig_"
SHM_DIR = Path("/dev/shm")

_owned: dict[str, shared_memory.SharedMemory] = {}
_owned_lock = threading.Lock()
_register_lock = threading.Lock()


def make_name(label: str = "") -> str:
    """A fresh segment name carrying this process's pid (for stale detection) and a short label."""
    label = "".join(c for c in label if c.isalnum())[:24]
    return f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}{'_' + label if label else ''}"


def create_segment(size: int, label: str = "") -> shared_memory.SharedMemory:
    """Create and own a zero-filled segment of ``size`` bytes; it is unlinked at process exit."""
    shm = shared_memory.SharedMemory(name=make_name(label), create=True, size=max(int(size), 1))
    with _owned_lock:
        _owned[shm.name] = shm
    return shm


def attach_segment(name: str) -> shared_memory.SharedMemory:
    """Attach to an existing segment without taking ownership.

    Python 3.11 registers attached segments with the attaching process's resource tracker, which
    would unlink them when that process exits (and unregistering afterwards would also drop the
    owner's registration when the tracker is shared after a fork), so registration is suppressed.
    """
    with _register_lock:
        original = resource_tracker.register
        resource_tracker.register = lambda *a, **k: None
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared-memory segment {name!r} does not exist: its owner process has exited or cleaned up"
            ) from None
        finally:
            resource_tracker.register = original
    return shm


def release_segment(shm: shared_memory.SharedMemory) -> None:
    """Close ``shm``; unlink it too if this process owns it. Idempotent."""
    with _owned_lock:
        owned = _owned.get(shm.name) is shm
        if owned:
            del _owned[shm.name]
    try:
        shm.close()
    except BufferError:
        # A view is still exported; leave the mapping, the unlink below still frees the name.
        pass
    if owned and _owner_pid(shm.name) == os.getpid():
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


def _release_all_owned() -> None:
    with _owned_lock:
        items = list(_owned.values())
    for shm in items:
        release_segment(shm)


atexit.register(_release_all_owned)


def install_termination_handlers() -> None:
    """Make SIGTERM raise SystemExit in the main thread so ``finally`` blocks and atexit run.

    SIGINT already raises KeyboardInterrupt. Safe to call more than once; does nothing outside the
    main thread (Python allows signal handlers only there).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _on_sigterm(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _on_sigterm)


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    owner_pid: int | None
    size_bytes: int
    owner_alive: bool


def _owner_pid(name: str) -> int | None:
    try:
        return int(name[len(PREFIX) :].split("_", 1)[0])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead: it will never unlink anything.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def list_segments(shm_dir: Path = SHM_DIR) -> list[SegmentInfo]:
    """All segments of this project currently in ``/dev/shm``."""
    out = []
    if not shm_dir.is_dir():
        return out
    for path in sorted(shm_dir.glob(PREFIX + "*")):
        pid = _owner_pid(path.name)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        out.append(SegmentInfo(path.name, pid, size, pid is not None and _pid_alive(pid)))
    return out


SEM_PREFIX = "sem.mp-"


@dataclass(frozen=True)
class SemaphoreInfo:
    name: str
    mapped: bool  # some running process has it mapped (in use)


def _mapped_shm_inodes() -> set[int]:
    """Inodes of the /dev/shm files that any process (that we may inspect) has mapped.

    By inode, not name: glibc's sem_open maps a temporary file and then links it to the semaphore's
    name, so /proc/*/maps shows the deleted temporary name."""
    inodes: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    if "/dev/shm/" in line:
                        inodes.add(int(line.split()[4]))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return inodes


def list_semaphores(shm_dir: Path = SHM_DIR) -> list[SemaphoreInfo]:
    """multiprocessing's named semaphores in ``/dev/shm`` and whether a running process maps them."""
    if not shm_dir.is_dir():
        return []
    paths = sorted(shm_dir.glob(SEM_PREFIX + "*"))
    if not paths:
        return []
    mapped = _mapped_shm_inodes()
    out = []
    for path in paths:
        try:
            out.append(SemaphoreInfo(path.name, path.stat().st_ino in mapped))
        except FileNotFoundError:
            continue
    return out


def clean_stale(all_segments: bool = False, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove segments whose owner process is gone (or every project segment with ``all_segments``)
    and the ``sem.mp-*`` semaphores that no running process maps.

    Returns the names removed. Segments of live owners are left alone unless ``all_segments``.
    """
    removed = []
    for sem in list_semaphores(shm_dir):
        if sem.mapped:
            continue
        try:
            (shm_dir / sem.name).unlink()
            removed.append(sem.name)
        except FileNotFoundError:
            pass
    for seg in list_segments(shm_dir):
        if seg.owner_alive and not all_segments:
            continue
        try:
            (shm_dir / seg.name).unlink()
            removed.append(seg.name)
        except FileNotFoundError:
            pass
    return removed
