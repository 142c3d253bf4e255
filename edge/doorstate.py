"""What a dock door must not forget across an agent restart, kept in the outbox.

Two things live between passes: the hold list (a tag that got a movement here is not given
the same movement again within ``hold_s``: a pallet parked in the field must not be received
twice) and the movements the outbox refused while full (a tag that passed cannot be read
again). Both are saved in the same transaction as the events they go with: the hold list as its
changes (one row per tag in ``door_holds``, so a door holding thousands of tags writes only what
changed), the refused movements as the door's context row. A restart restores them. A context row
is not held to the outbox's byte cap, so refused movements are kept on disk even while the
outbox refuses events.

While the outbox is full, the keeper does not hammer it: refused movements are tried again
when new ones arrive or after a growing pause, in pieces that fit (a backlog larger than the
whole cap still gets in as room is made), and the saved state is rewritten only when it changed.
A hold that was only extended is saved at most once a second (a stale save can only shorten a
hold by that second). Movements the outbox already holds (a pass rebuilt from the door journal
after a restart has the id it had) are not added twice.

Documents are attached here, where the movements are committed, not in the pass logic (which
stays pure and replayable): a receive at a door whose location has open receipts gets ``doc``
with the edge's check, counted in the same transaction (``edge.documents``). A movement
refused while the outbox was full is checked when it finally goes in; one rebuilt from the
journal that the outbox already holds is not checked, nor counted, again. Each over or
unexpected movement is logged as it is kept, and given to the door's alert output
(``edge.dooralert``: a command, the reader's GPO) without waiting for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from floorsync.edge import wire
from floorsync.edge.documents import BAD_CHECKS, AtDoor, Claim, DocumentBook, Kept, book_for
from floorsync.edge.dooralert import DoorAlerter, alert_for
from floorsync.edge.errors import OutboxError, OutboxFull
from floorsync.edge.outbox import LOGGED_IDS, HoldChanges, Outbox
from floorsync.edge.portal import Door

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 1 also held the hold list (restored, then saved in its table)
HOLD_SAVE_S = 1.0  # the least time between saves of a hold list that changed alone
RETRY_S = (0.5, 30.0)  # first and longest pause before refused movements are tried again


class DoorKeeper:
    """Moves one door's events into the outbox and keeps its state with them."""

    def __init__(self, outbox: Outbox, door: Door,
                 clock: Callable[[], float] = time.monotonic,
                 documents: DocumentBook | None = None,
                 alerts: DoorAlerter | None = None) -> None:
        self.outbox = outbox
        self.door = door
        self.alerts = alerts
        self.key = f"door:{door.name}"  # its saved state's key; the source of its tallies
        self.documents = documents if documents is not None else book_for(outbox)
        self.backlog: list[wire.Event] = []
        self.backlog_saved = True  # the backlog as it is now is on disk (or empty)
        self._clock = clock
        self._held_saved_at = -HOLD_SAVE_S
        self._hold_set: dict[str, tuple[str, float]] = {}  # hold changes not yet on disk
        self._hold_forget: set[str] = set()
        self._retry_at = 0.0
        self._pause = RETRY_S[0]
        self._save_failed = False  # logged when saving starts failing and when it works again
        self._restore()

    def keep(self, events: Sequence[wire.Event], *, last: bool = False) -> tuple[int, bool]:
        """(events now in the outbox, whether every event is): refused ones wait, on disk, and
        go first next time. ``last`` (at stop): try the outbox even during a pause."""
        now = self._clock()
        if last:
            self._retry_at = 0.0
        self._take_hold_changes()
        if events:
            known = self.outbox.holds([e.id for e in events])
            self.backlog.extend(e for e in events if e.id not in known)
            self.backlog_saved = not self.backlog and self.backlog_saved
            if self.backlog:
                self.backlog_saved = False
        if self.backlog and now < self._retry_at:  # still full, as far as we know: pause
            if not self.backlog_saved or self._hold_due(now):
                self.backlog_saved = self._save_state(now)
            return 0, False
        if not self.backlog:
            if self._hold_due(now) or (last and self._holds_pending()):
                self._save_state(now)
            return 0, True
        return self._put_backlog(now)

    def _take_hold_changes(self) -> None:
        changes, forgotten = self.door.take_held_changes()
        for tag in forgotten:
            self._hold_set.pop(tag, None)
            self._hold_forget.add(tag)
        for tag, value in changes.items():
            self._hold_set[tag] = value
            self._hold_forget.discard(tag)

    def _holds_pending(self) -> bool:
        return bool(self._hold_set or self._hold_forget)

    def _hold_due(self, now: float) -> bool:
        return self._holds_pending() and now - self._held_saved_at >= HOLD_SAVE_S

    def _hold_changes(self) -> HoldChanges | None:
        if not self._holds_pending():
            return None
        return HoldChanges(self.door.name,
                           [(tag, m, t) for tag, (m, t) in self._hold_set.items()],
                           list(self._hold_forget))

    def _holds_saved(self, saved: HoldChanges | None) -> None:
        if saved is not None:
            for tag, m, t in saved.set:
                if self._hold_set.get(tag) == (m, t):
                    del self._hold_set[tag]
            self._hold_forget.difference_update(saved.forget)

    def _put_backlog(self, now: float) -> tuple[int, bool]:
        kept, size = 0, len(self.backlog)
        while self.backlog:
            size = min(size, len(self.backlog))
            piece, rest = self.backlog[:size], self.backlog[size:]
            holds = self._hold_changes()
            try:  # the piece, its tallies, the hold list's changes and the rest: one transaction
                done = self.documents.keep(piece, self._claims(piece), source=self.key,
                                           context=(self.key, self._state(rest)), holds=holds)
            except OutboxFull as exc:
                if size > 1:
                    size //= 2  # a smaller piece may fit
                    continue
                self._refused(now, exc)
                return kept, False
            except OutboxError as exc:
                self._refused(now, exc)
                return kept, False
            self._holds_saved(holds)
            self._held_saved_at = now
            self.backlog, kept = rest, kept + len(piece)
            self._say(done)
        if self._pause > RETRY_S[0]:
            log.warning("door %s: the outbox takes its movements again", self.door.name,
                        extra={"door": self.door.name, "state": "accepted"})
        self._pause, self._retry_at, self.backlog_saved = RETRY_S[0], 0.0, True
        return kept, True

    def _say(self, done: Kept) -> None:
        """The crew at the door hears of it at once: over and unexpected logged, and each
        checked movement offered to the alert output (which takes the checks it alerts on)."""
        name = self.door.name
        for event, note in zip(done.events, done.notes, strict=True):
            if note is None or event.doc is None:
                continue
            if event.doc.check in BAD_CHECKS:
                log.warning("door %s: %s", name, note)
            if self.alerts is not None:
                alert = alert_for(name, self.door.config.location, event, note)
                if alert is not None:
                    self.alerts.fire(alert)

    def _claims(self, events: list[wire.Event]) -> list[Claim | None]:
        """The door's receives, checked against the receipts open at its location."""
        location = self.door.config.location
        if not self.documents.expects_at(location):
            return [None] * len(events)
        claim = AtDoor(location)
        return [claim if e.type == "receive" and e.to == location else None for e in events]

    def _refused(self, now: float, exc: OutboxError) -> None:
        if self._pause == RETRY_S[0]:  # once per outage, not every tick
            log.error("door %s: %d movement(s) refused, kept on disk to retry: %s",
                      self.door.name, len(self.backlog), exc,
                      extra={"door": self.door.name, "state": "refused",
                             "event_ids": [e.id for e in self.backlog[:LOGGED_IDS]],
                             "events": len(self.backlog)})
        self._retry_at = now + self._pause
        self._pause = min(self._pause * 2, RETRY_S[1])
        self.backlog_saved = self._save_state(now)

    def _save_state(self, now: float) -> bool:
        """The state alone: it fits even when events do not."""
        holds = self._hold_changes()
        try:
            self.outbox.add([], context=(self.key, self._state(self.backlog)), holds=holds)
        except OutboxError as exc:
            if not self._save_failed:  # once until it works again, not on every tick
                log.error("door %s: state not saved: %s", self.door.name, exc,
                          extra={"door": self.door.name, "state": "state_not_saved"})
            self._save_failed = True
            return False
        if self._save_failed:
            self._save_failed = False
            log.warning("door %s: its state is saved again", self.door.name,
                        extra={"door": self.door.name, "state": "state_saved"})
        self._holds_saved(holds)
        self._held_saved_at = now
        return True

    @staticmethod
    def _state(backlog: list[wire.Event]) -> str:
        return json.dumps({
            "v": STATE_VERSION,
            # seq is the outbox's to give; 1 stands in so the saved events are valid wire events
            "backlog": [wire.event_to_dict(replace(e, seq=1)) for e in backlog],
        }, separators=(",", ":"))

    def _restore(self) -> None:
        held = self.door.restore_held(self.outbox.door_holds(self.door.name))
        text = self.outbox.context(self.key)
        if text is None:
            if held:
                log.info("door %s: restored %d held tag(s)", self.door.name, held)
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") not in (1, STATE_VERSION):
                raise ValueError("not a door state of a known version")
            legacy = data.get("held")
            if legacy is not None:  # version 1 kept the hold list here: it moves to its table
                held += self.door.restore_held(legacy)
                self._hold_set.update({t: (v[0], float(v[1])) for t, v in legacy.items()})
            saved = data.get("backlog") or []
            if not isinstance(saved, list):
                raise ValueError("backlog: not a list")
        except Exception as exc:  # whatever was saved, the door must start
            self._unreadable(text, exc)
            return
        backlog, bad = [], 0
        for item in saved:
            try:
                backlog.append(wire.event_from_dict(item))
            except (wire.WireError, ValueError, TypeError):
                bad += 1
        if bad:
            self._unreadable(text, ValueError(f"{bad} saved movement(s) unreadable"))
        kept = self.outbox.holds([e.id for e in backlog])  # already in: never twice
        self.backlog = [e for e in backlog if e.id not in kept]
        self.backlog_saved = not kept and not bad
        log.info("door %s: restored %d held tag(s), %d refused movement(s)", self.door.name,
                 held, len(self.backlog))

    def _unreadable(self, text: str, exc: Exception) -> None:
        log.error("door %s: saved state unreadable (in part or whole; kept for diagnosis): %s",
                  self.door.name, exc)
        self.outbox.record_exception(f"door:{self.door.name}", f"saved state unreadable: {exc}",
                                     text[:4096])
