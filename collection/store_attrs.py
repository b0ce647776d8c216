"""An episode store's own metadata: the root attributes that say how its episodes were recorded.

``dt_s`` (the rig's step period: one store, one rate), ``action_time`` (the action-time convention,
:mod:`collection.action_time`: one store, one meaning of an action's time), ``next_seed`` (the sim
world seed ``rig collect`` continues from), and ``episode_attrs`` (what ``commit(attrs=...)`` stored
with each episode, keyed by episode index). Readers of the reference layout ignore them all. (The
zarr metadata of the arrays, ``.zarray``, is ``collection/store_meta.py``'s.)

Timing contract. The checks run once, when the store opens; the getters read the attributes held
in memory (no disk access); ``episode_attrs`` are written by the writer thread with their episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collection.store_layout import EpisodeStoreError, StoreState


class StoreAttributes(StoreState):
    """The metadata half of ``EpisodeStore`` (which sets this state when it opens the store)."""

    _check_writable: Callable[[], None]  # StoreWriting's

    def _check_action_time(self, convention: str | None) -> None:
        from collection import action_time

        stored = self._group.attrs.get(action_time.ATTR)
        if convention is None or self.mode == "r" or stored == convention:
            return
        if stored is None and not self._ends:
            self._group.attrs[action_time.ATTR] = convention
            return
        held = f"the {stored!r} rule" if stored is not None else "the legacy rule (no action_time attribute)"
        raise EpisodeStoreError(
            f"episode store {self.path} holds actions recorded under {held}, this writer records "
            f"{convention!r}; record into a new store, or convert this one first (`rig episodes "
            "convert-time`)"
        )

    @property
    def action_time(self) -> str | None:
        """The store's action-time convention (``action_time`` attribute; None: legacy)."""
        value = self._group.attrs.get("action_time")
        return None if value is None else str(value)

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's root attributes (a copy)."""
        return dict(self._group.attrs)

    def _check_dt_s(self, dt_s: float | None) -> float | None:
        stored = self._group.attrs.get("dt_s")
        if dt_s is None or self.mode == "r":
            return None if stored is None else float(stored)
        if stored is None:
            self._group.attrs["dt_s"] = float(dt_s)
            return float(dt_s)
        if abs(float(stored) - dt_s) > 1e-9:
            raise EpisodeStoreError(
                f"episode store {self.path} was recorded at dt_s={stored} s, this rig runs at {dt_s} s; "
                "record into a new store (one store, one step period)"
            )
        return float(stored)

    @property
    def next_seed(self) -> int | None:
        """The sim world seed the next recorded episode takes (``next_seed`` in the store's attributes,
        kept by ``rig collect`` so that appending continues the seeds instead of repeating worlds)."""
        value = self._group.attrs.get("next_seed")
        return None if value is None else int(value)

    @next_seed.setter
    def next_seed(self, seed: int) -> None:
        self._check_writable()
        self._group.attrs["next_seed"] = int(seed)

    def _set_episode_attrs(self, index: int, attrs: dict[str, Any] | None) -> None:
        # One root attribute (readers of the reference layout ignore it), keyed by episode index.
        every = dict(self._group.attrs.get("episode_attrs", {}))
        if attrs is None:
            if str(index) not in every:
                return  # leave a store without episode attributes untouched
            every.pop(str(index))
        else:
            every[str(index)] = attrs
        self._group.attrs["episode_attrs"] = every

    def episode_attrs(self, index: int) -> dict[str, Any]:
        """What ``commit(attrs=...)`` stored with episode ``index`` ({} if nothing)."""
        return dict(self._group.attrs.get("episode_attrs", {}).get(str(index), {}))
