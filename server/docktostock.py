"""Dock-to-stock time: how long a received unit waited at the place it was received until it
was put away, per period of its put-away.

Matching. Units leave a place in the order they came (first in, first out), per line: site,
location, item key and lot, and, for a unit that carries a serial (or an EPC), that unit alone.
Every movement into the line brings units in (a receive; a return, a move or an adjustment in,
whose units have no receive); every movement out of it takes the oldest out (a put-away; a move,
a pick, a ship, an adjustment or a count out). A unit's dock-to-stock time is the event time of
the put-away that took it out less the event time of the receive that brought it in. Units that
left by anything but a put-away were not put away and give no time. All by event time (as an
instant, whatever the edge's offset), ties in ledger order.

What is reported, per period of the put-away's event time: units put away out of any place, how
many of them were timed (received there within the horizon) and how many not (they came by
another movement, were received before the horizon, or the put-away is dated before the receive
it would match); of the timed units the mean, median, 90th percentile and longest time, each
unit weighing one (percentiles by nearest rank: the smallest time that at least that share of
the units took at most).

The horizon: the matching starts ``horizon_days`` before ``from``, with the units then on hand
(on-hand now less every movement since) taken out first, as units of unknown age. A put-away
names the unit as the receive did (same item key and lot; the same serial or EPC, or neither).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from floorsync.server import checks
from floorsync.server.db import failure
from floorsync.server.kpi import Span, instant_sql, invalid, read, to_ms, weighted_rank
from floorsync.server.ledger import Store
from floorsync.server.posting import CLOCK_AHEAD

HORIZON_DAYS = 7  # a unit waiting at the dock longer before ``from`` is put away untimed
MAX_HORIZON_DAYS = 366

DEFINITION = (
    "Dock-to-stock: for each unit put away in the period, the event time of the put-away less"
    " the event time of the receive that brought it to the place it was put away from;"
    " units leave a place first in, first out per site, location, item and lot (a unit with a"
    " serial or EPC: by it); units received before the horizon, or brought by another"
    " movement, are put away untimed. Mean, median, p90 (nearest rank) and max over timed"
    " units, in seconds."
)

_T = instant_sql("event_time")
_MT = instant_sql("m.event_time")

# Receiving lines: the partial index movements_receiving (site, event_time, item, location,
# lot) WHERE type = 'receive' OR (type = 'putaway' AND qty < 0) (0011); their movements since
# the horizon: movements_item_location (item, location, lot) and the rowid from :id0 on; the
# unit: events' primary key; on-hand: stock's primary key. The matching is window functions
# over those rows: sorts, no pairwise joins.
_MATCH = f"""
WITH dock AS (
    SELECT ROW_NUMBER() OVER () AS line, item, location, lot FROM (
        SELECT DISTINCT item, location, lot FROM movements
        WHERE (type = 'receive' OR (type = 'putaway' AND qty < 0)) AND site = :site
            AND event_time >= :lo_text AND event_time < :hi_text
            AND {_T} >= :t0 AND {_T} < :end
    ) AS lines
),
flows AS MATERIALIZED (
    SELECT d.line, m.id, m.type, m.qty, {_MT} AS t, COALESCE(e.serial, e.epc, '') AS unit
    FROM dock d
    JOIN movements m ON m.item = d.item AND m.location = d.location AND m.lot = d.lot
    JOIN events e ON e.id = m.event_id
    WHERE m.id >= :id0 AND m.site = :site
),
opening AS (
    SELECT line, SUM(qty) AS qty FROM (
        SELECT d.line, s.quantity AS qty FROM dock d
        JOIN stock s ON s.item = d.item AND s.site = :site AND s.location = d.location
            AND s.lot = d.lot
        UNION ALL
        SELECT line, -qty FROM flows WHERE t >= :t0
    ) AS lines GROUP BY line
),
moves (line, unit, t, id, type, qty) AS MATERIALIZED (
    SELECT line, '', :t0 - 1, 0, 'opening', qty FROM opening WHERE ABS(qty) > :eps
    UNION ALL
    SELECT line, unit, t, id, type, qty FROM flows WHERE t >= :t0 AND t < :end
),
ins AS (
    SELECT line, unit, t, CASE WHEN type = 'receive' THEN 1 ELSE 0 END AS timed,
        SUM(qty) OVER w AS upto,
        SUM(qty) OVER w - qty AS pos, ROW_NUMBER() OVER w AS n
    FROM moves WHERE qty > 0
    WINDOW w AS (PARTITION BY line, unit ORDER BY t, id ROWS UNBOUNDED PRECEDING)
),
outs AS (
    SELECT line, unit, t, CASE WHEN type = 'putaway' THEN 1 ELSE 0 END AS timed,
        SUM(-qty) OVER w AS upto,
        SUM(-qty) OVER w + qty AS pos, ROW_NUMBER() OVER w AS n
    FROM moves WHERE qty < 0
    WINDOW w AS (PARTITION BY line, unit ORDER BY t, id ROWS UNBOUNDED PRECEDING)
),
points AS (
    SELECT line, unit, pos, 2 * n + timed AS i, t AS t_in, upto AS in_end,
        NULL AS o, NULL AS t_out, NULL AS out_end FROM ins
    UNION ALL
    SELECT line, unit, pos, NULL, NULL, NULL, 2 * n + timed, t, upto FROM outs
),
segments AS (
    SELECT pos, MIN(COALESCE(LEAD(pos) OVER w, MAX(in_end) OVER w), MAX(in_end) OVER w,
            MAX(out_end) OVER w) - pos AS qty,
        MAX(i) OVER w AS i, MAX(t_in) OVER w AS t_in, MAX(o) OVER w AS o,
        MAX(t_out) OVER w AS t_out
    FROM points
    WINDOW w AS (PARTITION BY line, unit ORDER BY pos, i IS NULL, COALESCE(i, o)
                 ROWS UNBOUNDED PRECEDING)
)
SELECT t_out, t_out - t_in, qty FROM segments
WHERE qty > :eps AND i % 2 = 1 AND o % 2 = 1 AND t_out >= :start AND t_out >= t_in
UNION ALL
SELECT t, NULL, -qty FROM flows WHERE type = 'putaway' AND qty < 0 AND t >= :start AND t < :end
"""


@dataclass(frozen=True, slots=True)
class DockToStock:
    units: float  # put away in the period, out of any place
    timed_units: float
    untimed_units: float
    mean_s: float | None
    median_s: float | None
    p90_s: float | None
    max_s: float | None


@dataclass(frozen=True, slots=True)
class PeriodDockToStock:
    period: str
    start: datetime
    end: datetime
    total: DockToStock


@dataclass(frozen=True, slots=True)
class DockToStockReport:
    site: str
    span: Span
    horizon_days: int
    total: DockToStock
    periods: tuple[PeriodDockToStock, ...]  # every period of the range


def _first_received_since(store: Store, since: str) -> int:
    """The first ledger id received at or after ``since`` (ids and arrival stamps grow
    together), by bisection over the rowid: a couple of dozen primary-key probes."""
    conn = store._reader()
    try:
        low, high = conn.execute("SELECT MIN(id), MAX(id) FROM movements").fetchone()
        if low is None:
            return 0
        high += 1
        while low < high:
            middle = (low + high) // 2
            found, received = conn.execute(
                "SELECT id, received_at FROM movements WHERE id >= ? ORDER BY id LIMIT 1",
                (middle,)).fetchone()
            if received >= since:
                high = middle
            else:
                low = found + 1
        return int(low)
    except store.errors as exc:
        raise failure(exc, "read") from exc


def _summary(put: float, timed: list[tuple[float, float]]) -> DockToStock:
    timed.sort()
    units = sum(q for _, q in timed)
    seconds = [(ms / 1000, q) for ms, q in timed]
    return DockToStock(
        put, units, max(put - units, 0.0),
        sum(s * q for s, q in seconds) / units if units > 0 else None,
        weighted_rank(seconds, 0.5), weighted_rank(seconds, 0.9),
        seconds[-1][0] if seconds else None,
    )


def dock_to_stock(store: Store, site: str, span: Span, *, horizon_days: int = HORIZON_DAYS
                  ) -> DockToStockReport:
    """Dock-to-stock times of the units ``site`` put away in ``span``, per period."""
    if not 0 <= horizon_days <= MAX_HORIZON_DAYS:
        raise invalid(f"horizon_days must be between 0 and {MAX_HORIZON_DAYS}")
    horizon = span.start - timedelta(days=horizon_days)
    rows = read(store, _MATCH, {
        "site": site, "t0": to_ms(horizon), "start": span.start_ms, "end": span.end_ms,
        "lo_text": span.text_floor(horizon), "hi_text": span.text_ceiling(span.end),
        "id0": _first_received_since(store, checks.utc_text(horizon - CLOCK_AHEAD)),
        "eps": checks.TOLERANCE,
    })
    put: dict[int, float] = {}
    timed: dict[int, list[tuple[float, float]]] = {}
    for at, waited, qty in rows:
        index = span.locate(int(at))
        if index is None:
            continue
        if waited is None:
            put[index] = put.get(index, 0.0) + float(qty)
        else:
            timed.setdefault(index, []).append((float(waited), float(qty)))
    periods = tuple(
        PeriodDockToStock(b.label, b.start, b.end,
                          _summary(put.get(i, 0.0), list(timed.get(i, []))))
        for i, b in enumerate(span.buckets))
    return DockToStockReport(
        site, span, horizon_days,
        _summary(sum(put.values()), [s for i in timed for s in timed[i]]), periods)
