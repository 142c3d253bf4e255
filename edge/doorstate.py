"""What a dock door must not forget across an agent restart, kept in the outbox.

Two things live between passes: the hold list (a tag that got a movement here is not given
the same movement again within ``hold_s``: a pallet parked in the field must not be received
twice) and the movements the outbox refused while full (a tag that passed cannot be read
again). Both are saved as the door's context row, in the same transaction as the events they go
with; a restart restores them. A context row is not held to the outbox's byte cap, so refused
movements are kept on disk even while the outbox refuses events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace

from edge import wire
from edge.errors import OutboxError
from edge.outbox import Outbox
from edge.portal import Door

log = logging.getLogger(__name__)

STATE_VERSION = 1


class DoorKeeper:
    """Moves one door's events into the outbox and keeps its state with them."""

    def __init__(self, outbox: Outbox, door: Door) -> None:
        self.outbox = outbox
        self.door = door
        self.key = f"door:{door.name}"
        self.backlog: list[wire.Event] = []
        self._restore()

    def keep(self, events: Sequence[wire.Event]) -> tuple[int, bool]:
        """(events now in the outbox, whether every event is): refused ones wait, on disk, and
        go first next time."""
        self.backlog.extend(events)
        held = self.door.held_state()
        if not self.backlog and held is None:
            return 0, True
        waiting = list(self.backlog)
        try:
            self.outbox.add(waiting, context=(self.key, self._state(held, [])))
        except OutboxError as exc:
            log.error("door %s: %d movement(s) refused, kept to retry: %s", self.door.name,
                      len(waiting), exc)
            try:  # the state alone fits even when the events do not
                self.outbox.add([], context=(self.key, self._state(held, waiting)))
            except OutboxError as again:
                self.door.held_changed()  # try the hold list again next time
                log.error("door %s: state not saved: %s", self.door.name, again)
            return 0, False
        self.backlog.clear()
        return len(waiting), True

    def _state(self, held: dict[str, list[str | float]] | None, backlog: list[wire.Event]
               ) -> str:
        return json.dumps({
            "v": STATE_VERSION,
            "held": held if held is not None else self.door.held_state(force=True),
            # seq is the outbox's to give; 1 stands in so the saved events are valid wire events
            "backlog": [wire.event_to_dict(replace(e, seq=1)) for e in backlog],
        }, separators=(",", ":"))

    def _restore(self) -> None:
        text = self.outbox.context(self.key)
        if text is None:
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
                raise ValueError("not a door state of this version")
            restored = self.door.restore_held(data.get("held"))
            self.backlog = [wire.event_from_dict(e) for e in data.get("backlog") or []]
        except (ValueError, TypeError, wire.WireError) as exc:
            log.error("door %s: saved state unreadable, starting without it: %s",
                      self.door.name, exc)
            return
        log.info("door %s: restored %d held tag(s), %d refused movement(s)", self.door.name,
                 restored, len(self.backlog))
