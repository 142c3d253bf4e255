"""The read side of the ledger: stock as of a past time, cache check and rebuild, sequence gaps,
and where a serial or an EPC is now.

Everything here is derived from ``events`` and ``movements``; only ``rebuild_stock`` writes, and it
does so through the Store's one writer, in one transaction.

Event times are stored as sent (``wire.format_time``: ISO 8601 with milliseconds and the offset of
the place, ``Z`` for UTC, but any ISO 8601 time with an offset passes the wire contract), so text
order is not time order across offsets: times are parsed and compared as UTC instants here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from floorsync.edge import wire
from floorsync.server.errors import BadRequest
from floorsync.server.ledger import Store
from floorsync.server.queries import item_location_filter

TOLERANCE = 1e-6  # float sums in a different order differ in the last bits, not by this much

# An event with one of these types puts the thing somewhere (its ``to``) or takes it away.
_MOVING = ("receive", "return", "putaway", "move", "pick", "pack", "ship", "adjust")
_ARRIVING = ("receive", "return")  # puts it somewhere without taking it out of a place


def parse_at(value: str, what: str = "at") -> datetime:
    """A client's ISO 8601 time with an offset, as UTC; BadRequest (400) otherwise."""
    try:
        return wire.parse_time(value, what).astimezone(UTC)
    except wire.WireError as exc:
        raise BadRequest(f"invalid {what}", str(exc)) from None


def utc(text: str) -> datetime:
    """A stored time (validated on the way in) as a UTC instant."""
    return datetime.fromisoformat(text).astimezone(UTC)


# --- stock as of ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockAsOf:
    site: str
    item: str
    location: str
    lot: str | None
    quantity: float


def stock_as_of(
    store: Store, at: datetime, item: str | None = None, location: str | None = None,
    site: str | None = None,
) -> list[StockAsOf]:
    """On-hand per (site, item, location, lot) summing movements with event time <= ``at``.

    Non-zero lines only, like ``Store.stock``. Reads the filtered movements once (grouped by their
    stored time text); cost grows with the ledger, not with the answer.
    """
    if at.tzinfo is None:
        raise ValueError("at needs a UTC offset")
    where, params = item_location_filter(
        None if item is None else store.item_keys(item), location)
    if site is not None:
        where, params = where + " AND site = ?", [*params, site]
    sql = ("SELECT site, item, location, lot, event_time, SUM(qty) FROM movements WHERE 1 = 1"
           + where + " GROUP BY site, item, location, lot, event_time")
    totals: dict[tuple[str, str, str, str], float] = {}
    parsed: dict[str, bool] = {}
    for st, it, loc, lot, when, qty in store._query(sql, params):
        included = parsed.get(when)
        if included is None:
            included = parsed[when] = utc(when) <= at
        if included:
            key = (st, it, loc, lot)
            totals[key] = totals.get(key, 0.0) + float(qty)
    return [
        StockAsOf(st, it, loc, lot or None, q)
        for (st, it, loc, lot), q in sorted(totals.items())
        if abs(q) > TOLERANCE
    ]


# --- check and rebuild ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockDifference:
    site: str
    item: str
    location: str
    lot: str | None
    cached: float
    ledger: float
    difference: float  # cached - ledger


@dataclass(frozen=True, slots=True)
class RebuildResult:
    fixed: list[StockDifference]  # what the cache held wrong before the rebuild
    lines: int  # stock rows after the rebuild


_DIFFERENCES = (
    "SELECT site, item, location, lot, SUM(cached), SUM(ledger) FROM ("
    " SELECT site, item, location, lot, quantity AS cached, 0.0 AS ledger FROM stock"
    " UNION ALL SELECT site, item, location, lot, 0.0, qty FROM movements"
    ") AS lines GROUP BY site, item, location, lot HAVING ABS(SUM(cached) - SUM(ledger)) > ?"
    " ORDER BY site, item, location, lot"
)


def _differences(rows: Iterable[tuple[str, str, str, str, float, float]]
                 ) -> list[StockDifference]:
    return [
        StockDifference(st, i, loc, lot or None, float(c), float(led), float(c) - float(led))
        for st, i, loc, lot, c, led in rows
    ]


def check_stock(store: Store) -> list[StockDifference]:
    """Lines where the cached ``stock`` differs from the sum of the ledger (missing rows are 0)."""
    return _differences(store._query(_DIFFERENCES, (TOLERANCE,)))


def rebuild_stock(store: Store) -> RebuildResult:
    """Recompute the cache from the ledger in one writer transaction (ingest waits meanwhile)."""
    with store._transaction() as cur:
        fixed = _differences(cur.execute(_DIFFERENCES, (TOLERANCE,)).fetchall())
        cur.execute("DELETE FROM stock")
        cur.execute(
            "INSERT INTO stock (site, item, location, lot, quantity) SELECT site, item,"
            " location, lot, SUM(qty) FROM movements GROUP BY site, item, location, lot"
        )
        (lines,) = cur.execute("SELECT COUNT(*) FROM stock").fetchone()
        store.reload_checks()  # open negative lines are judged against the rebuilt stock
    return RebuildResult(fixed, int(lines))


# --- sequence gaps --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LateArrival:
    seq: int
    event_id: str
    received_at: str
    after_seq: int  # a higher seq that had arrived before it


@dataclass(frozen=True, slots=True)
class DeviceGaps:
    site: str
    device: str
    events: int
    first_seq: int | None
    last_seq: int | None
    missing: list[tuple[int, int]]  # inclusive ranges between first_seq and last_seq
    missing_count: int
    duplicate_seqs: list[int]  # seqs carried by more than one event id
    late: list[LateArrival]  # in seq order
    late_count: int


def device_gaps(store: Store, site: str, device: str) -> DeviceGaps | None:
    """Missing sequence numbers and late arrivals of one device; None if it sent no events.

    Gaps are looked for between the first and last seq received (an edge's first seq is not
    necessarily 1). Late: received (by ``received_at``, i.e. in a later batch) after an event with
    a higher seq; events of one batch arrive together and are never late to each other.
    """
    rows: list[tuple[int, str, str]] = store._query(
        "SELECT seq, id, received_at FROM events WHERE site = ? AND device = ?"
        " ORDER BY seq, received_at, id",
        (site, device),
    )
    if not rows:
        return None
    missing: list[tuple[int, int]] = []
    duplicates: list[int] = []
    prev: int | None = None
    for seq, _, _ in rows:
        if prev is not None:
            if seq == prev:
                if not duplicates or duplicates[-1] != seq:
                    duplicates.append(seq)
            elif seq > prev + 1:
                missing.append((prev + 1, seq - 1))
        prev = seq
    late: list[LateArrival] = []
    earliest: tuple[str, int] | None = None  # earliest received_at among higher seqs, its seq
    for seq, event_id, received in reversed(rows):
        if earliest is not None and earliest[1] > seq and earliest[0] < received:
            late.append(LateArrival(seq, event_id, received, earliest[1]))
        if earliest is None or received < earliest[0]:
            earliest = (received, seq)
    late.reverse()
    return DeviceGaps(
        site=site, device=device, events=len(rows), first_seq=rows[0][0], last_seq=rows[-1][0],
        missing=missing, missing_count=sum(b - a + 1 for a, b in missing),
        duplicate_seqs=duplicates, late=late, late_count=len(late),
    )


# --- serials and tags -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    event_id: str
    type: str
    event_time: str
    received_at: str
    site: str
    device: str
    item: str | None
    gtin: str | None
    lot: str | None
    serial: str | None
    epc: str | None
    qty: float
    from_location: str | None
    to_location: str | None


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where one serialised thing (GTIN + serial, or one EPC) is now."""

    item: str | None
    gtin: str | None
    serial: str | None
    epc: str | None
    site: str | None  # the site of ``location`` (of the last event that moved it)
    location: str | None  # None: shipped, or picked/packed without a destination, or adjusted out
    event_id: str | None  # the last event that moved it; None if it was only ever observed
    event_type: str | None
    event_time: str | None
    events: int


@dataclass(frozen=True, slots=True)
class Tracked:
    whereabouts: list[Whereabouts]  # one per (GTIN or item, serial); one for an EPC
    history: list[TrackedEvent]  # every event naming it, in event time (UTC)


@dataclass(frozen=True, slots=True)
class SerialConflict:
    """Received at a place while its last known place was another, with no move out between."""

    item: str | None
    gtin: str | None
    serial: str
    event_id: str
    event_time: str
    site: str
    location: str
    last_site: str
    last_location: str
    last_event_id: str


_TRACKED_COLUMNS = (
    "id, type, event_time, received_at, site, device, item, gtin, lot, serial, epc, qty,"
    " from_location, to_location"
)


def _tracked(rows: Iterable[tuple[object, ...]]) -> list[TrackedEvent]:
    events = [TrackedEvent(*r) for r in rows]  # type: ignore[arg-type]
    events.sort(key=lambda e: (utc(e.event_time), e.received_at, e.event_id))
    return events


def _destination(event: TrackedEvent) -> str | None:
    """Where a moving event leaves the thing (None: out of every location)."""
    if event.type == "adjust":
        return (event.to_location or event.from_location) if event.qty > 0 else None
    if event.type == "ship":
        return None
    return event.to_location


def _identity(event: TrackedEvent) -> str:
    return event.gtin or event.item or ""


def _whereabouts(events: list[TrackedEvent], serial: str | None, epc: str | None) -> Whereabouts:
    last = next((e for e in reversed(events) if e.type in _MOVING), None)
    first = events[0]
    return Whereabouts(
        item=first.item, gtin=first.gtin, serial=serial, epc=epc,
        site=None if last is None else last.site,
        location=None if last is None else _destination(last),
        event_id=None if last is None else last.event_id,
        event_type=None if last is None else last.type,
        event_time=None if last is None else last.event_time,
        events=len(events),
    )


def find_serial(store: Store, serial: str, gtin: str | None = None) -> Tracked | None:
    """Where a serial is now and its history; one whereabouts per GTIN (or item) carrying it."""
    sql = f"SELECT {_TRACKED_COLUMNS} FROM events WHERE serial = ?"
    params = [serial]
    if gtin is not None:
        sql += " AND gtin = ?"
        params.append(gtin)
    history = _tracked(store._query(sql, params))
    if not history:
        return None
    groups: dict[str, list[TrackedEvent]] = {}
    for event in history:
        groups.setdefault(_identity(event), []).append(event)
    return Tracked(
        [_whereabouts(evs, serial, None) for _, evs in sorted(groups.items())], history
    )


def find_epc(store: Store, epc: str) -> Tracked | None:
    """Where an EPC is now and its history; ``epc`` as stored (the pure-identity URI)."""
    history = _tracked(
        store._query(f"SELECT {_TRACKED_COLUMNS} FROM events WHERE epc = ?", (epc,))
    )
    if not history:
        return None
    return Tracked([_whereabouts(history, history[0].serial, epc)], history)


def serial_conflicts(store: Store) -> list[SerialConflict]:
    """Receives/returns of a serial at one place while its last known place was another."""
    history = _tracked(
        store._query(f"SELECT {_TRACKED_COLUMNS} FROM events WHERE serial IS NOT NULL")
    )
    # -> (site, location, event id)
    current: dict[tuple[str, str], tuple[str, str | None, str]] = {}
    out: list[SerialConflict] = []
    for event in history:
        if event.type not in _MOVING or event.serial is None:
            continue
        key = (_identity(event), event.serial)
        here = _destination(event)
        known = current.get(key)
        if (
            event.type in _ARRIVING and here is not None and known is not None
            and known[1] is not None and (known[0], known[1]) != (event.site, here)
        ):
            out.append(SerialConflict(
                event.item, event.gtin, event.serial, event.event_id, event.event_time,
                event.site, here, known[0], known[1], known[2],
            ))
        current[key] = (event.site, here, event.event_id)
    return out

