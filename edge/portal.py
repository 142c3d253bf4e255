"""RFID dock doors: hundreds of raw tag reads per second become one movement per tag per pass.

A tag is counted once it was read ``min_reads`` times (fewer are glimpses: stray reads from a
neighbouring door); its pass ends after ``quiet_s`` without reads, and then one event is made
carrying read count, first and last seen, peak RSSI and the antenna that saw it best. A tag
that passed stays remembered for ``hold_s`` so a pallet parked in the door is not received twice.

This is the spine's door logic; read points per antenna, direction from antenna order, GPI
cycles and cross-door arbitration belong to the floor-logic issue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from devices.base import TagRead
from devices.codes import interpret_epc
from edge import wire

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Seen:
    first: datetime
    last: datetime
    reads: int
    peak_rssi: float | None
    antenna: int


class DoorPass:
    """Aggregates one door's tag reads in memory; ``close_passes`` returns finished movements."""

    def __init__(
        self,
        *,
        location: str,
        direction: str = "in",
        quiet_s: float = 1.0,
        min_reads: int = 2,
        hold_s: float = 60.0,
        company_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.location = location
        self.movement = "receive" if direction == "in" else "ship"
        self.quiet_s = quiet_s
        self.min_reads = min_reads
        self.hold_s = hold_s
        self.company_prefixes = company_prefixes
        self._seen: dict[str, _Seen] = {}
        self._done: dict[str, datetime] = {}  # tag -> when its pass closed
        self.unknown_tags = 0

    def add(self, read: TagRead) -> None:
        seen = self._seen.get(read.epc)
        if seen is None:
            self._seen[read.epc] = _Seen(read.at, read.at, read.seen, read.rssi, read.antenna)
            return
        seen.last = max(seen.last, read.at)
        seen.reads += read.seen
        if read.rssi is not None and (seen.peak_rssi is None or read.rssi > seen.peak_rssi):
            seen.peak_rssi, seen.antenna = read.rssi, read.antenna

    def close_passes(self, now: datetime) -> list[wire.Event]:
        """Events for tags silent for ``quiet_s``; glimpses expire quietly."""
        events = []
        for tag, seen in list(self._seen.items()):
            if (now - seen.last).total_seconds() < self.quiet_s:
                continue
            del self._seen[tag]
            held = self._done.get(tag)
            if seen.reads < self.min_reads or (
                held is not None and (seen.first - held).total_seconds() < self.hold_s
            ):
                continue
            event = self._event(tag, seen)
            if event is not None:
                self._done[tag] = seen.last
                events.append(event)
        for tag, at in list(self._done.items()):
            if (now - at).total_seconds() >= self.hold_s:
                del self._done[tag]
        return events

    def _event(self, tag: str, seen: _Seen) -> wire.Event | None:
        identity = interpret_epc(tag)
        if identity.kind not in ("item", "container", "returnable", "asset") or not identity.epc:
            self.unknown_tags += 1
            log.info("tag %s is not one of ours: %s", tag, identity.error or identity.kind)
            return None
        if self.company_prefixes and not any(p in identity.epc for p in self.company_prefixes):
            return None
        return wire.Event(
            id=wire.new_event_id(),
            seq=0,
            time=wire.format_time(seen.first.astimezone()),
            type=self.movement,
            item=wire.Item(gtin=identity.gtin, serial=identity.serial, epc=identity.epc,
                           sscc=identity.sscc),
            qty=1,
            from_=self.location if self.movement == "ship" else None,
            to=self.location if self.movement == "receive" else None,
            read=wire.SourceRead(
                kind="rfid", tag=tag, antenna=seen.antenna, rssi=seen.peak_rssi, reads=seen.reads,
                first=wire.format_time(seen.first.astimezone()),
                last=wire.format_time(seen.last.astimezone()),
            ),
        )
