"""Handheld scan workflows: turn a stream of scans into movement events.

The floor's rhythm: scan a location, then items; for moves, the source location, then the
destination, then the items. Each item scan becomes one event at once, so every good-read beep
stands for an event already on disk. Mode comes from command labels (``CMD:PUTAWAY``) or config.

This is the spine's workflow; the full set (undo, duplicate window, quantity labels, context
kept across restarts, counts) belongs to the floor-logic issue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devices.base import ScanRead
from devices.codes import Identity, interpret
from edge import wire

log = logging.getLogger(__name__)

# Which locations each mode needs before an item scan: (from, to)
_NEEDS = {
    "receive": (False, True),
    "return": (False, True),
    "putaway": (True, True),
    "move": (True, True),
    "pick": (True, False),
    "pack": (True, False),
    "ship": (True, False),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scan did: events to keep (may be none), and good or bad feedback with why."""

    events: tuple[wire.Event, ...]
    good: bool
    message: str


class HandheldWorkflow:
    """One state machine per scanning device."""

    def __init__(
        self,
        *,
        mode: str = "receive",
        operator: str | None = None,
        location_prefixes: tuple[str, ...] = ("LOC:",),
        location_patterns: tuple[str, ...] = (),
        command_prefix: str = "CMD:",
    ) -> None:
        if mode not in _NEEDS:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.operator = operator
        self.location_prefixes = location_prefixes
        self.location_patterns = location_patterns
        self.command_prefix = command_prefix
        self.from_: str | None = None
        self.to: str | None = None

    def handle(self, read: ScanRead) -> Outcome:
        if read.error or read.text is None:
            return Outcome((), False, f"unreadable scan: {read.error}")
        identity = interpret(
            read.text,
            read.symbology,
            location_prefixes=self.location_prefixes,
            location_patterns=self.location_patterns,
            command_prefix=self.command_prefix,
        )
        if identity.kind == "command":
            return self._command(identity.command or "")
        if identity.kind == "location":
            return self._location(identity.location or identity.gln or "")
        if identity.kind in ("item", "container"):
            return self._item(identity, read)
        why = identity.error or identity.kind
        return Outcome((), False, f"not a label this workflow knows: {why}")

    def _command(self, command: str) -> Outcome:
        mode = command.strip().lower().replace("-", "").replace("_", "")
        if mode == "clear":
            self.from_ = self.to = None
            return Outcome((), True, "cleared")
        if mode not in _NEEDS:
            return Outcome((), False, f"unknown command {command!r}")
        self.mode, self.from_, self.to = mode, None, None
        return Outcome((), True, f"mode {mode}")

    def _location(self, location: str) -> Outcome:
        needs_from, needs_to = _NEEDS[self.mode]
        if needs_from and needs_to:
            if self.from_ is None or self.to is not None:
                self.from_, self.to = location, None
                return Outcome((), True, f"from {location}; now scan the destination")
            self.to = location
            return Outcome((), True, f"to {location}; now scan items")
        if needs_from:
            self.from_ = location
        else:
            self.to = location
        return Outcome((), True, f"at {location}; now scan items")

    def _item(self, identity: Identity, read: ScanRead) -> Outcome:
        needs_from, needs_to = _NEEDS[self.mode]
        if (needs_from and self.from_ is None) or (needs_to and self.to is None):
            wanted = "source location" if needs_from and self.from_ is None else "destination"
            return Outcome((), False, f"scan the {wanted} before items ({self.mode})")
        item = wire.Item(
            gtin=identity.gtin, lot=identity.lot, serial=identity.serial, sscc=identity.sscc,
            epc=identity.epc,
        )
        event = wire.Event(
            id=wire.new_event_id(),
            seq=0,  # numbered by the outbox
            time=wire.format_time(read.at.astimezone()),
            type=self.mode,
            item=item,
            qty=identity.quantity or 1,
            from_=self.from_ if needs_from else None,
            to=self.to if needs_to else None,
            operator=self.operator,
            read=wire.SourceRead(
                kind="barcode",
                raw=read.raw.decode("utf-8", "replace"),
                symbology=read.symbology,
            ),
        )
        return Outcome((event,), True, f"{self.mode} {item.key()} x{event.qty}")
