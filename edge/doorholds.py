"""A dock door's hold list: a tag that made a movement here does not make it again at once.

A tag that made a movement at a door does not make the same movement again within ``hold_s``
(counted from the previous pass's last read; a tag that stays at the door keeps its hold while
its pass lasts): a pallet parked in the field must not be received twice. The door
(``edge.portal``) asks the list about every movement it decides; ``edge.doorstate`` saves the
list's changes with the movements they go with (in the outbox) and restores it at start.
"""

from __future__ import annotations

import math
from collections.abc import Container

_INF = math.inf


class HoldList:
    """One door's holds: tag -> (movement, last read). Not thread-safe (its door's lock)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._held: dict[str, tuple[str, float]] = {}  # tag -> (movement, last read)
        self._held_pruned = -_INF
        self._held_set: dict[str, tuple[str, float]] = {}  # changed since take_changes()
        self._held_forget: set[str] = set()  # pruned since take_changes()

    def repeats(self, tag: str, movement: str, first_t: float, last_t: float) -> bool:
        """A pass of ``tag`` (first and last read) made ``movement``: the tag is held from its
        last read. True if that repeats the tag's movement within ``hold_s`` (no event)."""
        held = self._held.get(tag)
        self._held[tag] = self._held_set[tag] = (movement, last_t)
        self._held_forget.discard(tag)
        return held is not None and held[0] == movement and first_t - held[1] < self.hold_s

    def take_changes(self) -> tuple[dict[str, tuple[str, float]], set[str]]:
        """The hold list's changes since last asked: (tag -> (movement, last read), tags
        forgotten). ``edge.doorstate`` saves them with the movements they go with."""
        changes, forgotten = self._held_set, self._held_forget
        self._held_set, self._held_forget = {}, set()
        return changes, forgotten

    @property
    def dirty(self) -> bool:
        """The hold list changed since ``take_changes()`` last gave its changes."""
        return bool(self._held_set or self._held_forget)

    def restore(self, data: object) -> int:
        """A hold list a previous run saved: tag -> (movement, last read) as a pair or a JSON
        list; ValueError if it is not one."""
        if data is None:
            return 0
        if not isinstance(data, dict):
            raise ValueError("held: not an object")
        restored: dict[str, tuple[str, float]] = {}
        for tag, value in data.items():
            if not (isinstance(value, list | tuple) and len(value) == 2
                    and isinstance(value[0], str)
                    and isinstance(value[1], int | float) and not isinstance(value[1], bool)
                    and math.isfinite(value[1])):
                raise ValueError(f"held: bad entry for {str(tag)[:40]!r}")
            restored[tag] = (value[0], float(value[1]))
        self._held.update(restored)
        return len(restored)

    def prune(self, now_t: float, active: Container[str], claims: Container[str]) -> None:
        """Forget holds older than ``hold_s`` at ``now_t`` (the door's watermark; at most once
        per 10 s), but not of the tags in ``active`` or ``claims``: a pass still going (or
        ended and not yet decided) keeps its hold."""
        if now_t < self._held_pruned + 10.0:
            return
        self._held_pruned = now_t
        limit = now_t - self.hold_s
        kept = {k: v for k, v in self._held.items()
                if v[1] >= limit or k in active or k in claims}
        if len(kept) != len(self._held):
            for tag in self._held.keys() - kept.keys():
                self._held_forget.add(tag)
                self._held_set.pop(tag, None)
            self._held = kept
