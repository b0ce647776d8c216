"""Keyboard commands for the collector, from a terminal (raw, non-blocking), a pipe, or a window.

Timing contract: :meth:`KeyReader.poll` never blocks; it returns the keys typed since the last call.
On a TTY the terminal is put in cbreak mode (single keys, no Enter) and restored on exit, Ctrl-C
included. On a pipe (tests, scripts) characters are read as they arrive; ``\\n`` is ignored. Other
sources (the preview window's OpenCV key events) are merged with :meth:`KeyReader.push`.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty
from typing import TextIO

BACKSPACE = "\x7f"
KEY_NAMES = {"\x7f": "Backspace", "\x08": "Backspace", "\x1b": "Esc"}


def normalize(key: str) -> str:
    """Map the several Backspace codes (terminal DEL, ^H, OpenCV 8) to one."""
    return BACKSPACE if key in ("\x7f", "\x08") else key


class KeyReader:
    """Non-blocking key source (see module docstring). Use as a context manager."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved: list | None = None
        self._pushed: list[str] = []
        self._lock = threading.Lock()
        self.closed = False  # stdin reached EOF (pipe closed)

    def __enter__(self) -> KeyReader:
        try:
            self._fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        if self._fd is not None and os.isatty(self._fd):
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None and self._fd is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def push(self, key: str) -> None:
        """Inject a key from another source (thread-safe)."""
        with self._lock:
            self._pushed.append(normalize(key))

    def poll(self) -> list[str]:
        """Keys typed since the last call (possibly none). Never blocks."""
        with self._lock:
            keys, self._pushed = self._pushed, []
        if self._fd is None or self.closed:
            return keys
        while select.select([self._fd], [], [], 0)[0]:
            data = os.read(self._fd, 64)
            if not data:
                self.closed = True
                break
            keys.extend(normalize(ch) for ch in data.decode(errors="ignore") if ch not in "\r\n")
        return keys
