"""A dock door's event cycles: what one records while it is open, and what it reports.

A door (``edge.portal``) opens and closes its cycles on its own timeline (time-boxed, or by the
photo eye input) and notes in each one the reads it took, the tags it saw and what became of
their passes (``Cycle``). Each cycle yields a ``CycleReport`` (counts per GTIN and SSCC,
glimpses, filtered, stray, a bounded raw sample) once all its passes are decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from floorsync.edge import wire

_INF = math.inf


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What a door saw in one event cycle. Tag counts are distinct tags.

    ``tags``, ``per_gtin``, ``per_sscc``: tags observed in the cycle (before arbitration);
    ``glimpsed``: read but never observed; ``excluded``: filtered out (patterns, location tags);
    ``unknown``: EPCs that do not decode (``unknown_tags``: those seen for the first time, at
    most 20); ``stray``, ``unmoved``, ``held``, ``events``: what became of the passes last read
    in the cycle (lost to another door, no direction, a repeat within ``hold_s``, an event);
    ``reads``: raw reads in the cycle; ``weak``, ``unmapped``, ``late``, ``overflow``: reads
    ignored; ``samples``: the first raw reads, as JSON lines.
    """

    door: str
    opened: datetime
    closed: datetime
    tags: int
    per_gtin: dict[str, int]
    per_sscc: dict[str, int]
    glimpsed: int
    excluded: int
    stray: int
    unknown: int = 0
    unknown_tags: tuple[str, ...] = ()
    unmoved: int = 0
    held: int = 0
    events: int = 0
    reads: int = 0
    weak: int = 0
    unmapped: int = 0
    late: int = 0
    overflow: int = 0
    samples: tuple[str, ...] = ()


class Cycle:
    """One event cycle while its door runs it (mutable, slots: the hot path)."""

    __slots__ = (
        "closed_t",
        "due",
        "events",
        "excluded",
        "held",
        "id",
        "last_new",
        "late",
        "live",
        "new_unknown",
        "off_t",
        "opened_t",
        "overflow",
        "partial",
        "reads",
        "samples",
        "seen",
        "stray",
        "tags",
        "trigger",
        "undecided",
        "unknown",
        "unmapped",
        "unmoved",
        "weak",
    )

    def __init__(self, cycle_id: int, opened_t: float, due: float) -> None:
        self.id = cycle_id
        self.opened_t = opened_t
        self.closed_t = _INF
        self.due = due
        self.trigger = False
        self.partial = False  # the reader did not cover the whole cycle: no count
        self.off_t = -_INF
        self.last_new = -_INF
        self.tags: dict[str, wire.Item] = {}
        self.seen: set[str] = set()
        self.excluded: set[str] = set()
        self.unknown: set[str] = set()
        self.new_unknown: list[str] = []
        self.samples: list[str] = []
        self.live = self.undecided = 0
        self.reads = self.weak = self.unmapped = self.late = self.overflow = 0
        self.events = self.stray = self.unmoved = self.held = 0

    def report(self, door: str) -> CycleReport:
        """What ``door`` saw in this cycle (once it is closed and its passes decided)."""
        per_gtin: dict[str, int] = {}
        per_sscc: dict[str, int] = {}
        for item in self.tags.values():
            if item.gtin:
                per_gtin[item.gtin] = per_gtin.get(item.gtin, 0) + 1
            if item.sscc:
                per_sscc[item.sscc] = per_sscc.get(item.sscc, 0) + 1
        return CycleReport(
            door=door, opened=_dt(self.opened_t), closed=_dt(self.closed_t),
            tags=len(self.tags), per_gtin=dict(sorted(per_gtin.items())),
            per_sscc=dict(sorted(per_sscc.items())), glimpsed=len(self.seen) - len(self.tags),
            excluded=len(self.excluded), stray=self.stray, unknown=len(self.unknown),
            unknown_tags=tuple(self.new_unknown), unmoved=self.unmoved, held=self.held,
            events=self.events, reads=self.reads, weak=self.weak, unmapped=self.unmapped,
            late=self.late, overflow=self.overflow, samples=tuple(self.samples),
        )


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
