"""Ctrl-C as a terminal sends it: start a command in its own process group, SIGINT the group once.

:func:`interrupt_command` returns what a user would see (exit code, output) and what the run left
behind: processes of its group and the ``/dev/shm`` files (segments and ``sem.mp-*`` semaphores)
that its processes had mapped just before the signal. Only the run's own files are checked, by
inode, so tests of other processes running at the same time do not interfere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RIG = [sys.executable, "-m", "robot.cli"]


def as_from_a_terminal() -> None:
    """``preexec_fn``: SIGINT as a process started from a terminal has it (default, unblocked).

    An ignored SIGINT is inherited across exec: a suite started in the background by a
    non-interactive shell (``make test &``, as a CI script may) ignores SIGINT in every process, and
    a command then never sees the Ctrl-C a test sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@dataclass
class Interrupted:
    rc: int
    took_s: float
    out: str
    err: str
    left_pids: list[int] = field(default_factory=list)
    left_shm: list[str] = field(default_factory=list)

    def assert_clean_interrupt(self, kept: str = "") -> None:
        """One ``interrupted: ...`` line naming what was kept, exit 130, nothing left behind."""
        tail = self.err[-3000:]
        assert self.rc == 130, tail
        assert "Traceback" not in self.err and "leaked" not in self.err, tail
        lines = [line for line in self.err.splitlines() if "interrupted" in line]
        assert len(lines) == 1 and "interrupted: " in lines[0], tail
        assert kept in lines[0], tail
        assert self.left_pids == [], f"processes left: {self.left_pids}"
        assert self.left_shm == [], f"/dev/shm entries left: {self.left_shm}"


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _mapped_shm_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                inodes.update(int(line.split()[4]) for line in f if "/dev/shm/" in line)
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def _shm_files_with(inodes: set[int]) -> list[str]:
    left = []
    for path in Path("/dev/shm").iterdir():
        try:
            if path.stat().st_ino in inodes:
                left.append(path.name)
        except FileNotFoundError:
            continue
    return left


def interrupt_command(
    cmd: list[str], tmp_path: Path, ready: str, ready_timeout_s: float = 120.0, settle_s: float = 0.5
) -> Interrupted:
    """Run ``cmd`` in its own session; once ``ready`` appears in its output (stdout or stderr),
    wait ``settle_s``, SIGINT the group and wait for it to end (at most 30 s, then SIGKILL)."""
    out_path, err_path = tmp_path / "sigint_out.txt", tmp_path / "sigint_err.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while ready not in out_path.read_text() + err_path.read_text():
            assert proc.poll() is None, f"ended before {ready!r}: {err_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {ready!r} in time: {err_path.read_text()[-3000:]}"
            time.sleep(0.1)
        time.sleep(settle_s)
        inodes = _mapped_shm_inodes(group_pids(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = -999
        took_s = time.monotonic() - t0
        time.sleep(0.5)  # children still on their way out are not "left"
        left = group_pids(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    return Interrupted(rc, took_s, out_path.read_text(), err_path.read_text(), left, _shm_files_with(inodes))
