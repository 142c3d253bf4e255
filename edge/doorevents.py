"""What a dock door hands on: its events, with ids made from what they record; raw reads.

A decided pass makes one event (its movement, or ``observe``) and a counting cycle one ``count``
event (``edge.portal`` decides which). An event's id is not drawn at random but made from the
pass itself (door, tag, movement, first read; a count: door and cycle opening), so the same
pass rebuilt from the door journal after a restart (``edge.journal``) has the id it had, and
the outbox and the central service keep it once. Event times carry the door's ``tz`` offset.
A raw read becomes one JSON line (``read_sample``): cycle samples, bad input kept for diagnosis.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, tzinfo

from floorsync.devices.base import TagRead
from floorsync.edge import wire
from floorsync.edge.arbiter import Pass
from floorsync.edge.doorcycles import Cycle


def pass_event(door: str, location: str, p: Pass, kind: str, tz: tzinfo | None) -> wire.Event:
    """The event of a decided pass: its movement (``receive``, ``ship``) or ``observe``."""
    return wire.Event(
        id=pass_event_id(door, p.tag, kind, p.first_t),
        seq=0,
        time=_fmt(p.first, tz),
        type=kind,
        item=p.item,
        qty=1,
        from_=location if kind == "ship" else None,
        to=location if kind != "ship" else None,
        read=wire.SourceRead(kind="rfid", tag=p.tag, antenna=p.antenna, rssi=p.rssi,
                             reads=p.reads, first=_fmt(p.first, tz),
                             last=_fmt(p.last, tz)),
    )


def count_event(door: str, location: str, cyc: Cycle, tz: tzinfo | None) -> wire.Event:
    """The ``count`` event of a cycle: every tag observed in it, at ``location``."""
    lines = tuple(wire.CountLine(item, 1) for _, item in sorted(cyc.tags.items()))
    closed = _dt(cyc.closed_t)
    return wire.Event(
        id=pass_event_id(door, "", "count", cyc.opened_t), seq=0,
        time=_fmt(closed, tz), type="count",
        item=None, qty=0,
        read=wire.SourceRead(kind="rfid", reads=cyc.reads,
                             first=_fmt(_dt(cyc.opened_t), tz),
                             last=_fmt(closed, tz)),
        count=wire.Count(location, lines),
    )


def pass_event_id(door: str, tag: str, kind: str, first_t: float) -> str:
    """The event id of a door's pass: a UUIDv7 made from the pass itself (door, tag, movement,
    first read), so the same pass rebuilt from the journal after a restart has the same id and
    the outbox and the central service keep it once."""
    ms = math.floor(first_t * 1000) & ((1 << 48) - 1)
    digest = hashlib.sha256(f"{door}\x1f{tag}\x1f{kind}\x1f{first_t!r}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")
    rand_a, rand_b = rand >> 68 & 0xFFF, rand & ((1 << 62) - 1)
    h = f"{ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # str(UUID(...)), faster


def read_sample(read: TagRead) -> str:
    """A raw read as one JSON line (cycle samples, bad input kept for diagnosis)."""
    return json.dumps({"at": read.at.isoformat(), "reader": read.reader, "antenna": read.antenna,
                       "epc": read.epc, "rssi": read.rssi, "seen": read.seen},
                      separators=(",", ":"))


def _fmt(moment: datetime, tz: tzinfo | None = None) -> str:
    return wire.format_time(moment.astimezone(tz))


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
