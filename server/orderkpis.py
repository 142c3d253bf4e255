"""The order KPIs, on the orders' own tables (``server/orders.py``, migration 0010): order cycle
time, pick accuracy and fill rate, per period of a time zone.

- **Order cycle time**: of the orders closed because every line shipped in full, the event time
  of the last ship against the order (the floor's clock: physical truth) less the time the
  order was accepted (the central service's clock); an order belongs to the period of that last
  ship. The ships counted are those applied up to the order's close (a ship arriving after it
  is not part of it); a ship dated before the order was accepted (an edge clock behind) counts
  0 s. Cancelled orders, and open ones, have no cycle time.
- **Pick accuracy**: of the floor's picks against an order (pick events carrying an order's
  ``doc``) dated in the period, the share the central service found right: no ``order_over``
  (more than the order asks), ``order_unexpected`` (an item or lot the order does not have) or
  ``order_unknown`` (no such open order at the site) exception raised on the pick. What the
  edge itself said (``doc.check``) is reported beside it.
- **Fill rate**: of the orders accepted in the period and not cancelled, the share of lines,
  of units and of orders filled from stock as first allocated: a line is filled when it never
  had a backorder (allocated in full at acceptance, and never short since: a reservation whose
  stock vanished and could be allocated elsewhere keeps it filled); its units less those ever
  backordered (at most what it ordered) are filled units; an order is filled when all its lines
  are. As the tables say now: a line of an open order that runs short later counts then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from floorsync.server import checks
from floorsync.server.kpi import Span, instant_sql, read, share, to_ms, weighted_rank
from floorsync.server.ledger import Store
from floorsync.server.posting import CLOCK_AHEAD

CYCLE_DEFINITION = (
    "Order cycle time: for each order closed because every line shipped in full, the event"
    " time of its last ship (of those applied up to its close) less the time the order was"
    " accepted; in the period of that last ship; a ship dated before acceptance counts 0 s."
    " Mean, median, p90 (nearest rank) and max over orders, in seconds."
)
PICK_DEFINITION = (
    "Pick accuracy: of the pick events against an order (with an order's doc) dated in the"
    " period, the share on which the central service raised no order_over, order_unexpected or"
    " order_unknown exception; the edge's own check (doc.check) is counted beside it."
)
FILL_DEFINITION = (
    "Fill rate: of the orders accepted in the period and not cancelled, the share of lines"
    " that never had a backorder (filled from stock as first allocated), of units (ordered"
    " less ever backordered, per line at most what it ordered) and of orders whose every line"
    " was filled; as known now."
)
EDGE_CHECKS = ("expected", "over", "unexpected", "unknown")
_PICK_EXCEPTIONS = ("order_over", "order_unexpected", "order_unknown")
T = TypeVar("T")

# orders_closed (site, closed_at) WHERE status = 'closed' (0011); the ships: events_document
# (doc_kind, doc_id). A ship is dated at most CLOCK_AHEAD before it arrived, so an order whose
# last ship is dated from :start on closed after :since.
_CYCLES = f"""
WITH closed AS (
    SELECT id, received_at, closed_at FROM orders
    WHERE site = :site AND status = 'closed' AND closed_at >= :since
),
shipped AS (
    SELECT c.id, {instant_sql("c.received_at")} AS accepted,
        MAX({instant_sql("e.event_time")}) AS last
    FROM closed c JOIN events e ON e.doc_kind = 'order' AND e.doc_id = c.id
    WHERE e.type = 'ship' AND e.site = :site AND e.received_at <= c.closed_at
    GROUP BY c.id, c.received_at
)
SELECT last, MAX(last - accepted, 0) FROM shipped WHERE last >= :start AND last < :end
"""

# events_order_picks (site, event_time) WHERE doc_kind = 'order' AND type = 'pick' (0011);
# their exceptions: exceptions_event (event_id).
_PICKS = f"""
WITH picks AS (
    SELECT id, {instant_sql("event_time")} AS t, doc_check FROM events
    WHERE doc_kind = 'order' AND type = 'pick' AND site = :site
        AND event_time >= :lo_text AND event_time < :hi_text
)
SELECT p.t, p.doc_check, COUNT(x.id) FROM picks p
LEFT JOIN exceptions x ON x.event_id = p.id
    AND x.kind IN ({", ".join(f"'{k}'" for k in _PICK_EXCEPTIONS)})
WHERE p.t >= :start AND p.t < :end
GROUP BY p.id, p.t, p.doc_check
"""

# orders_received (site, received_at) (0011); lines: order_lines' primary key; backorders:
# backorders_line (order_id, line).
_FILLS = """
WITH accepted AS (
    SELECT id, received_at FROM orders
    WHERE site = :site AND received_at >= :start_text AND received_at < :end_text
        AND status <> 'cancelled'
),
lines AS (
    SELECT a.id, a.received_at, l.qty, COALESCE(
        (SELECT SUM(b.qty) FROM backorders b WHERE b.order_id = l.order_id AND b.line = l.line),
        0) AS short
    FROM accepted a JOIN order_lines l ON l.order_id = a.id
)
SELECT received_at, COUNT(*), SUM(short <= :eps), SUM(qty), SUM(qty - MIN(short, qty))
FROM lines GROUP BY id, received_at
"""


@dataclass(frozen=True, slots=True)
class CycleTime:
    orders: int
    mean_s: float | None
    median_s: float | None
    p90_s: float | None
    max_s: float | None


@dataclass(frozen=True, slots=True)
class PickAccuracy:
    picks: int
    accurate: int
    accuracy: float | None  # accurate / picks
    edge_checks: dict[str, int]  # expected, over, unexpected, unknown: what the edges said


@dataclass(frozen=True, slots=True)
class FillRate:
    orders: int
    filled_orders: int
    order_fill_rate: float | None
    lines: int
    filled_lines: int
    line_fill_rate: float | None
    units: float
    filled_units: float
    unit_fill_rate: float | None


@dataclass(frozen=True, slots=True)
class Periodic(Generic[T]):
    """A KPI's total over the range and its value in every period of it."""

    total: T
    periods: tuple[tuple[str, datetime, datetime, T], ...]  # label, start, end, value


def _periods(span: Span, values: list[T]) -> tuple[tuple[str, datetime, datetime, T], ...]:
    return tuple((b.label, b.start, b.end, v) for b, v in zip(span.buckets, values, strict=True))


def _cycle(samples: list[float]) -> CycleTime:
    ranked = sorted((ms / 1000, 1.0) for ms in samples)
    return CycleTime(len(ranked), sum(s for s, _ in ranked) / len(ranked) if ranked else None,
                     weighted_rank(ranked, 0.5), weighted_rank(ranked, 0.9),
                     ranked[-1][0] if ranked else None)


def order_cycle_time(store: Store, site: str, span: Span) -> Periodic[CycleTime]:
    rows = read(store, _CYCLES, {
        "site": site, "since": checks.utc_text(span.start - CLOCK_AHEAD),
        "start": span.start_ms, "end": span.end_ms})
    found: list[list[float]] = [[] for _ in span.buckets]
    for last, took in rows:
        index = span.locate(int(last))
        if index is not None:
            found[index].append(float(took))
    return Periodic(_cycle([s for b in found for s in b]), _periods(span, [_cycle(b)
                                                                           for b in found]))


def _picks(rows: list[tuple[str | None, int]]) -> PickAccuracy:
    accurate = sum(1 for _, raised in rows if raised == 0)
    checks_ = {c: sum(1 for check, _ in rows if check == c) for c in EDGE_CHECKS}
    return PickAccuracy(len(rows), accurate, share(accurate, len(rows)), checks_)


def pick_accuracy(store: Store, site: str, span: Span) -> Periodic[PickAccuracy]:
    rows = read(store, _PICKS, {
        "site": site, "lo_text": span.text_floor(span.start),
        "hi_text": span.text_ceiling(span.end), "start": span.start_ms, "end": span.end_ms})
    found: list[list[tuple[str | None, int]]] = [[] for _ in span.buckets]
    for at, check, raised in rows:
        index = span.locate(int(at))
        if index is not None:
            found[index].append((check, int(raised)))
    return Periodic(_picks([r for b in found for r in b]),
                    _periods(span, [_picks(b) for b in found]))


def _fills(rows: list[tuple[int, int, float, float]]) -> FillRate:
    orders = len(rows)
    filled_orders = sum(1 for lines, filled, _, _ in rows if filled == lines)
    lines = sum(r[0] for r in rows)
    filled_lines = sum(r[1] for r in rows)
    units = sum(r[2] for r in rows)
    filled_units = sum(r[3] for r in rows)
    return FillRate(orders, filled_orders, share(filled_orders, orders), lines, filled_lines,
                    share(filled_lines, lines), units, filled_units, share(filled_units, units))


def fill_rate(store: Store, site: str, span: Span) -> Periodic[FillRate]:
    rows = read(store, _FILLS, {
        "site": site, "start_text": checks.utc_text(span.start),
        "end_text": checks.utc_text(span.end), "eps": checks.TOLERANCE})
    found: list[list[tuple[int, int, float, float]]] = [[] for _ in span.buckets]
    for accepted, lines, filled, units, filled_units in rows:
        index = span.locate(to_ms(checks.utc(accepted)))
        if index is not None:
            found[index].append((int(lines), int(filled), float(units), float(filled_units)))
    return Periodic(_fills([r for b in found for r in b]),
                    _periods(span, [_fills(b) for b in found]))

