"""Editing an episode store after the fact: deleting the last episode, and repairing what a crash
left behind when the store is opened for append.

Crash safety. An episode becomes visible only when its ``meta/episode_ends`` entry is written, after
all its data is written. zarr's local store writes every chunk and metadata file to a temporary file
and renames it into place, so a killed process never leaves a torn file. A crash (even SIGKILL) in
the middle of episode N+1 therefore leaves N intact episodes plus trailing data past
``episode_ends[-1]``; opening the store in ``"a"`` mode truncates that trailing data and logs a
warning saying how many steps were dropped (``store.dropped_steps``). Durable means durable against
a crash of the process; against power loss only with ``fsync`` at the OS level (not done here).
Anything else that is wrong (``store_layout.validate_layout``) is reported and never "repaired".

Timing contract. ``delete_last`` waits for every pending write, then runs on the writer thread and
returns once the store is shortened on disk; the repair runs on the opening thread, before the store
is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from collection.store_layout import EpisodeStoreError, StoreState
from collection.store_meta import resize_rows
from collection.store_reader import EpisodeInfo

# One logger for the whole store, whichever file speaks.
log = logging.getLogger("collection.episode_store")


class StoreEditing(StoreState):
    """The editing part of ``EpisodeStore`` (which sets this state when it opens the store)."""

    n_steps: int  # StoreReading's
    _open_episode: Any  # StoreWriting's: the EpisodeWriter being streamed, or None
    _check_writable: Callable[[], None]  # StoreWriting's
    _submit: Callable[[Any], Any]  # StoreWriting's
    wait: Callable[[], None]  # StoreWriting's
    episodes: Callable[[], list[EpisodeInfo]]  # StoreReading's
    _set_rows: Callable[[int], None]  # EpisodeStore's
    _set_episode_attrs: Callable[[int, dict[str, Any] | None], None]  # StoreAttributes'

    def delete_last(self) -> EpisodeInfo:
        """Delete the last committed episode (waits for pending writes) and return what it was.

        episode_ends shrinks first, then the data: a crash in between leaves trailing data that the
        next open in "a" mode drops.
        """
        from collection.store_writer import Job

        self._check_writable()
        if self._open_episode is not None and self._open_episode.is_open:
            raise EpisodeStoreError("an episode is being streamed; commit() or discard() it first")
        self.wait()
        if not self._ends:
            raise EpisodeStoreError(f"episode store {self.path} has no episode to delete")
        future: Future[EpisodeInfo] = self._submit(Job("delete_last")).future
        return future.result()

    def _do_delete_last(self, job: Any) -> EpisodeInfo:
        info = self.episodes()[-1]
        self._set_episode_attrs(info.index, None)
        self._ee = resize_rows(self._group, self._ee, len(self._ends) - 1)
        self._ends.pop()
        self._set_rows(self.n_steps)
        return info

    def _repair(self, ends: list[int], n_valid: int, max_len: int) -> None:
        """Act on a crash's leftovers found on open (``ends[n_valid:]`` invalid entries, data rows past
        the last valid end): in "a" mode drop them (logged), else only say they are ignored."""
        n_steps = self._ends[-1] if self._ends else 0
        bad_ends = len(ends) - n_valid
        self.dropped_steps = max_len - n_steps
        if not (bad_ends or self.dropped_steps):
            return
        what = f"{self.dropped_steps} trailing steps of an unfinished episode"
        if bad_ends:
            what += f" and {bad_ends} invalid episode_ends entries"
        if self.mode != "a":
            log.info("episode store %s: ignoring %s (open with mode='a' to drop it)", self.path, what)
            return
        log.warning("episode store %s: dropped %s (left by a crash)", self.path, what)
        with self._lock:
            self._ee = resize_rows(self._group, self._ee, n_valid)
            self._set_rows(n_steps)
        if not self._ends and self._arrays:
            # Nothing committed: forget the declared keys so the next episode declares them.
            for name in list(self._arrays):
                del self._group["data"][name]
            self._arrays = {}
            self._schema = None
