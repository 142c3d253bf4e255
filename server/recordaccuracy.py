"""Inventory record accuracy (IRA) from counts: the share of counted lines whose record, what
the books said, matched what was counted, within a tolerance; per period and per zone.

Which counts: the final ones, status ``posted`` (a floor count applied, a session posted). Left
out: sessions still open or waiting for a decision (not final), cancelled ones, and late floor
counts (dated before their location's latest count: recorded, not applied, and compared with
books a later count had already corrected). A count belongs to the period of its time
(``counted_at``: the floor count's event time, or the session's start).

A line's record is what the count was compared with when it was posted: for a floor count,
on-hand at the count's time (``expected``); for a session, on-hand at its close (the same as at
its start when nothing moved), or on-hand at its start where the person kept the difference
(moves during the count kept). Counted is what was counted (0 for a line not counted: not
there). A counted line is one where the count or the record is not zero (both zero: nothing on
the books, nothing found). It matched when |counted - record| <= max(tolerance, tolerance_pct
% of |record|).

A location's zone is its nearest ancestor of kind ``zone`` (itself, if a zone); a location under
no zone, or not in master data, has zone None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from floorsync.server import checks
from floorsync.server.kpi import Span, invalid, read, share, to_ms
from floorsync.server.ledger import Store
from floorsync.server.locations import MAX_DEPTH

DEFINITION = (
    "Inventory record accuracy: of the lines of final counts (posted; not open, waiting for a"
    " decision, cancelled or late) dated in the period, the share whose record matched the"
    " count: |counted - record| <= max(tolerance, tolerance_pct % of |record|). Record: on-hand"
    " the count was compared with (a floor count: on-hand at its time; a session: on-hand at"
    " close, or at its start where the difference was kept). Lines both call zero are not"
    " lines. Zone: the location's nearest zone in the location tree."
)

# Counts: the partial index counts_posted (site, counted_at) WHERE status = 'posted' (0011);
# lines: count_lines' primary key (count_id, ...); zones: locations' primary key, walking up.
_PER_COUNT = f"""
WITH RECURSIVE picked AS (
    SELECT id, location, counted_at, origin, decision FROM counts
    WHERE site = :site AND status = 'posted' AND counted_at >= :start AND counted_at < :end
),
lines AS (
    SELECT p.id, p.location, p.counted_at, COALESCE(l.counted, 0) AS counted,
        CASE WHEN p.origin = 'api' AND COALESCE(p.decision, '') <> 'difference'
            THEN COALESCE(l.on_hand_at_close, l.expected) ELSE l.expected END AS record
    FROM picked p LEFT JOIN count_lines l ON l.count_id = p.id
),
judged AS (
    SELECT id, location, counted_at, ABS(counted) > :eps OR ABS(record) > :eps AS counted_line,
        ABS(counted - record) <= MAX(:units, :pct * ABS(record)) + :eps AS matched
    FROM lines
),
per_count AS (
    SELECT id, location, counted_at, COALESCE(SUM(counted_line), 0) AS lines,
        COALESCE(SUM(counted_line AND matched), 0) AS matched
    FROM judged GROUP BY id, location, counted_at
),
up (location, code, kind, parent, depth) AS (
    SELECT code, code, kind, parent, 0 FROM locations
    WHERE site = :site AND code IN (SELECT location FROM picked)
    UNION ALL
    SELECT up.location, l.code, l.kind, l.parent, up.depth + 1
    FROM up JOIN locations l ON l.site = :site AND l.code = up.parent
    WHERE up.kind <> 'zone' AND up.depth < {MAX_DEPTH}
)
SELECT c.counted_at, z.code, c.lines, c.matched
FROM per_count c LEFT JOIN up z ON z.location = c.location AND z.kind = 'zone'
"""


@dataclass(frozen=True, slots=True)
class Tally:
    zone: str | None  # None: the whole site, or (in a zone list) locations under no zone
    counts: int
    lines: int
    matched: int
    accuracy: float | None  # matched / lines; None when no line was counted


@dataclass(frozen=True, slots=True)
class PeriodAccuracy:
    period: str  # 2026-03-05, 2026-W10, 2026-03
    start: datetime
    end: datetime
    total: Tally
    zones: tuple[Tally, ...]  # by zone, when asked for; zones with counts only


@dataclass(frozen=True, slots=True)
class RecordAccuracy:
    site: str
    span: Span
    tolerance: float
    tolerance_pct: float
    by_zone: bool
    total: Tally
    zones: tuple[Tally, ...]
    periods: tuple[PeriodAccuracy, ...]  # every period of the range, empty ones too


def record_accuracy(
    store: Store, site: str, span: Span, *, tolerance: float = 0.0,
    tolerance_pct: float = 0.0, by_zone: bool = False,
) -> RecordAccuracy:
    """IRA of ``site``'s final counts dated in ``span``, per period (and zone)."""
    if not (tolerance >= 0 and 0 <= tolerance_pct <= 100):
        raise invalid("tolerance must be >= 0 units, tolerance_pct between 0 and 100")
    rows = read(store, _PER_COUNT, {
        "site": site, "start": checks.utc_text(span.start), "end": checks.utc_text(span.end),
        "units": tolerance, "pct": tolerance_pct / 100, "eps": checks.TOLERANCE,
    })
    # (bucket index or -1 for the whole range, zone or "" for all zones) -> counts, lines, ok
    sums: dict[tuple[int, str | None], list[int]] = {}
    for counted_at, zone, lines, matched in rows:
        index = span.locate(to_ms(checks.utc(counted_at)))
        if index is None:  # the text range and the instant agree; this is a guard only
            continue
        keys: list[tuple[int, str | None]] = [(index, ""), (-1, "")]
        if by_zone:
            keys += [(index, zone), (-1, zone)]
        for key in keys:
            acc = sums.setdefault(key, [0, 0, 0])
            acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + int(lines), acc[2] + int(matched)

    def tally(key: tuple[int, str | None]) -> Tally:
        counts, lines, matched = sums.get(key, (0, 0, 0))
        return Tally(None if key[1] == "" else key[1], counts, lines, matched,
                     share(matched, lines))

    def zones(index: int) -> tuple[Tally, ...]:
        found = sorted((k[1] for k in sums if k[0] == index and k[1] != ""),
                       key=lambda z: (z is None, z or ""))
        return tuple(tally((index, z)) for z in found)

    return RecordAccuracy(
        site, span, tolerance, tolerance_pct, by_zone, tally((-1, "")), zones(-1),
        tuple(PeriodAccuracy(b.label, b.start, b.end, tally((i, "")), zones(i))
              for i, b in enumerate(span.buckets)),
    )
