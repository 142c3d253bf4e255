"""What the live dashboard shows, read from the store the way the JSON API reads it.

One process's poller calls these (``server.dashboard.live``), never a browser tab: the panels
are the API's own queries and models (devices, open exceptions, receipts, orders, backorders,
counts, backlog), serialised once for every tab. Two reads are the dashboard's own, both cheap
at any size: the store's change counter, and the newest ledger rows with their events' reads
(door passes are the rows whose event an RFID door made).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from floorsync.server import backlog as bl
from floorsync.server import backorders as bo
from floorsync.server import counts as cs
from floorsync.server import exceptionlog as xl
from floorsync.server import orders as od
from floorsync.server.api import counts as counts_api
from floorsync.server.api import exceptions as exceptions_api
from floorsync.server.api.backlog import BacklogOut
from floorsync.server.api.devices import is_online
from floorsync.server.api.orders import BackorderOut, OrderSummaryOut
from floorsync.server.api.receipts import ReceiptSummaryOut
from floorsync.server.ledger import Store
from floorsync.server.queries import DeviceRow
from floorsync.server.receipts import book_of
from floorsync.server.schemas import Device

PANEL_ROWS = 50  # rows of each list the stream carries; the API pages through the rest
OPEN_CAP = 10_000  # open exceptions are counted up to this many (then "10,000+")
DIFFERENCES_SHOWN = 10  # a count's lines with a difference, shown per count


def version(store: Store) -> int:
    """A number that moves whenever any writer commits: PostgreSQL's ``store_epoch`` (every
    replica's writes bump it), SQLite's ``data_version`` (commits by other connections, as
    seen from this thread's reader: the poller keeps to one thread)."""
    if store.engine == "postgresql":
        return int(store._query("SELECT n FROM store_epoch")[0][0])
    return int(store._query("PRAGMA data_version")[0][0])


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A ledger row with its event's read: what a door pass looks like on the page."""

    id: int
    event_id: str
    site: str
    device: str
    type: str
    item: str
    lot: str | None
    location: str
    qty: float
    event_time: str
    received_at: str
    read_kind: str | None
    epc: str | None
    tag: str | None
    antenna: int | None
    rssi: float | None
    reads: int | None

    @property
    def lag_s(self) -> float | None:
        """Received minus happened: how far behind the floor the ledger is for this row."""
        try:
            happened = datetime.fromisoformat(self.event_time)
            received = datetime.fromisoformat(self.received_at)
        except ValueError:
            return None
        if happened.tzinfo is None or received.tzinfo is None:
            return None
        return round((received - happened).total_seconds(), 3)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "lag_s": self.lag_s}


def last_movement(store: Store) -> int:
    return int(store._query("SELECT COALESCE(MAX(id), 0) FROM movements")[0][0])


def movements_after(store: Store, after: int, upto: int, limit: int) -> list[LedgerRow]:
    """Ledger rows ``after`` < id <= ``upto``, the newest ``limit`` of them, oldest first.

    Writers commit one at a time (SQLite's one writer; PostgreSQL replicas under one advisory
    lock), so ids become visible in order: nothing below ``upto`` can still appear later."""
    start = max(after, upto - limit)
    rows = store._query(
        "SELECT m.id, m.event_id, m.site, m.device, m.type, m.item, m.lot, m.location, m.qty,"
        " m.event_time, m.received_at, e.read_kind, e.epc, e.tag, e.antenna, e.rssi, e.reads"
        " FROM movements m JOIN events e ON e.id = m.event_id"
        " WHERE m.id > ? AND m.id <= ? ORDER BY m.id",
        (start, upto),
    )
    return [LedgerRow(int(i), ev, s, d, t, item, lot or None, loc, float(q), at, rx, kind, epc,
                      tag, None if ant is None else int(ant), None if rssi is None else
                      float(rssi), None if reads is None else int(reads))
            for i, ev, s, d, t, item, lot, loc, q, at, rx, kind, epc, tag, ant, rssi, reads
            in rows]


def is_door_pass(row: LedgerRow) -> bool:
    return row.read_kind == "rfid"


def devices(rows: list[DeviceRow], online_after_s: float, now: datetime | None = None
            ) -> list[dict[str, Any]]:
    """``/api/v1/devices``'s list, from rows already read (online depends on the clock too)."""
    moment = now or datetime.now(UTC)
    return [
        Device(
            site=r.site, device=r.device, last_seen=r.last_seen,
            online=is_online(r, online_after_s, moment), last_seq=r.last_seq,
            backlog=r.backlog, events=r.events, status_at=r.status_at,
            oldest_unsynced_s=r.oldest_unsynced_s, backlog_at=r.backlog_at,
            topic_mismatches=r.topic_mismatches, topic_mismatch_at=r.topic_mismatch_at,
        ).model_dump(mode="json")
        for r in rows
    ]


def open_exceptions(store: Store) -> dict[str, Any]:
    """The queue: how many are open (up to ``OPEN_CAP``) and the oldest ``PANEL_ROWS`` of them,
    as ``/api/v1/exceptions?status=open`` lists them."""
    (count,) = store._query(
        "SELECT COUNT(*) FROM (SELECT id FROM exceptions WHERE status = 'open' LIMIT ?) o",
        (OPEN_CAP + 1,))[0]
    rows = xl.list_exceptions(store, xl.Filters(status="open"), None, PANEL_ROWS + 1)
    return {
        "open": min(int(count), OPEN_CAP), "more_than": int(count) > OPEN_CAP,
        "items": [exceptions_api._out(r).model_dump(mode="json") for r in rows[:PANEL_ROWS]],
        "next_cursor": str(rows[PANEL_ROWS - 1].id) if len(rows) > PANEL_ROWS else None,
    }


def _count(count: cs.Count) -> dict[str, Any]:
    """A count with the lines that differ (its full list: ``/api/v1/counts/{id}``)."""
    out = counts_api._out(count).model_dump(mode="json")
    lines = out.pop("lines")
    differing = [ln for ln in lines if ln["difference"] not in (None, 0)]
    out["lines_total"] = len(lines)
    out["lines_counted"] = sum(1 for ln in lines if ln["counted"] is not None)
    out["differences"] = differing[:DIFFERENCES_SHOWN]
    out["differences_total"] = len(differing)
    return out


def documents(store: Store) -> dict[str, Any]:
    """Receipts, orders and backorders still open; counts waiting for lines or a decision,
    then the newest others (posted ones with their differences); and the backlog: each as
    its endpoint lists it, the first ``PANEL_ROWS``."""
    book = book_of(store)
    receipts = book.receipts(status="open", limit=PANEL_ROWS)
    orders = od.list_orders(store, status="open", limit=PANEL_ROWS)
    backorders = bo.list_backorders(store, status="open", limit=PANEL_ROWS)
    newest = int(store._query("SELECT COALESCE(MAX(id), 0) FROM counts")[0][0])
    recent = cs.list_counts(store, after=max(0, newest - PANEL_ROWS), limit=PANEL_ROWS)
    waiting = [c for status in ("needs_decision", "open")
               for c in cs.list_counts(store, status=status, limit=PANEL_ROWS)]
    counts = sorted({c.id: c for c in (*waiting, *recent)}.values(),
                    key=lambda c: (c.status not in ("needs_decision", "open"), -c.id))
    counts = counts[:PANEL_ROWS]
    return {
        "receipts": [ReceiptSummaryOut.model_validate(
            {k: v for k, v in asdict(r).items() if k != "cursor"}).model_dump(mode="json")
            for r in receipts],
        "orders": [OrderSummaryOut.model_validate(
            {k: v for k, v in asdict(r).items() if k != "seq"}).model_dump(mode="json")
            for r in orders],
        "backorders": [BackorderOut.model_validate(asdict(r)).model_dump(mode="json")
                       for r in backorders],
        "counts": [_count(c) for c in counts],
        "backlog": backlog_summary(BacklogOut.model_validate(asdict(bl.backlog(store)))),
    }


def backlog_summary(backlog: BacklogOut) -> dict[str, Any]:
    """``/api/v1/backlog`` in figures: how many of each and the oldest's age (the endpoint
    lists every line; a busy site's would be megabytes on every tab every few seconds)."""

    def figures(rows: list[Any], size: Callable[[Any], float] = lambda _: 1) -> dict[str, Any]:
        return {"count": sum(size(r) for r in rows),
                "oldest_s": max((r.age_s for r in rows), default=None)}

    return {
        "generated_at": backlog.generated_at,
        "receipts": figures(backlog.receipts),
        "not_put_away": figures(backlog.not_put_away),
        "order_lines": figures(backlog.order_lines),
        "exceptions": figures(backlog.exceptions, lambda e: e.open),
        "devices": {"count": sum(1 for d in backlog.devices if d.backlog),
                    "events": sum(d.backlog for d in backlog.devices)},
    }
