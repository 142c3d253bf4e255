"""The backlog: work the warehouse has not done yet, each piece with how long it has waited.

Never mixed with backorders (``server.backorders``): a backorder is a customer's demand we
cannot meet for lack of stock; the backlog is work we can do and have not done. Five kinds:

- ``receipts``: expected receipts still open (nothing or part received), waiting since their
  expected date, or since they were announced if that is later;
- ``not_put_away``: stock received into a receiving location (a receipt's door, or a virtual
  ``receiving`` location) and still there, waiting since the receive of its oldest unit (first
  in, first out: what is left is what came last);
- ``order_lines``: allocated and not picked, picked and not shipped (``server.orders.backlog``);
- ``exceptions``: open exception records per kind, with the oldest one's age;
- ``devices``: events an edge holds that the central service has not confirmed, as the edge
  last reported them (its backlog and the age of its oldest unconfirmed event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from floorsync.server import checks, orders
from floorsync.server.ledger import Store


@dataclass(frozen=True, slots=True)
class OpenReceipt:
    id: str
    site: str
    supplier: str
    location: str | None
    expected_date: str
    expected: float
    received: float
    since: str
    age_s: float


@dataclass(frozen=True, slots=True)
class NotPutAway:
    site: str
    location: str
    item: str
    lot: str | None
    qty: float
    since: str
    age_s: float


@dataclass(frozen=True, slots=True)
class OpenExceptions:
    kind: str
    open: int
    oldest: str
    age_s: float


@dataclass(frozen=True, slots=True)
class DeviceBacklog:
    site: str
    device: str
    backlog: int
    oldest_unsynced_s: float | None
    measured_at: str | None
    online: bool | None


@dataclass(frozen=True, slots=True)
class Backlog:
    generated_at: str
    receipts: list[OpenReceipt]
    not_put_away: list[NotPutAway]
    order_lines: list[orders.BacklogLine]
    exceptions: list[OpenExceptions]
    devices: list[DeviceBacklog]


def _age(now: datetime, at: str) -> float:
    return max(0.0, (now - checks.utc(at)).total_seconds())


def _since(expected_date: str, created_at: str) -> str:
    """The later of the expected date (a plain date is its start, UTC) and the announcement."""
    expected = (expected_date + "T00:00:00+00:00") if len(expected_date) == 10 else expected_date
    return max((expected, created_at), key=checks.utc)


def open_receipts(store: Store, site: str | None, now: datetime) -> list[OpenReceipt]:
    rows = store._query(
        "SELECT r.id, r.site, r.supplier, r.location, r.expected_date, r.created_at,"
        " COALESCE((SELECT SUM(l.qty) FROM receipt_lines l WHERE l.receipt_id = r.id), 0),"
        " COALESCE((SELECT SUM(e.qty) FROM events e WHERE e.doc_kind = 'receipt'"
        "  AND e.doc_id = r.id AND e.type = 'receive'), 0)"
        " FROM receipts r WHERE r.status = 'open'" + (" AND r.site = ?" if site else "")
        + " ORDER BY r.seq", (site,) if site else ())
    out = []
    for ident, site_, supplier, location, expected_date, created, expected, received in rows:
        since = _since(expected_date, created)
        out.append(OpenReceipt(ident, site_, supplier, location, expected_date, float(expected),
                               float(received), since, _age(now, since)))
    return out


def not_put_away(store: Store, site: str | None, now: datetime) -> list[NotPutAway]:
    """Stock lines at receiving locations, waiting since the receive of their oldest unit, the
    units leaving first in first out (what is left is what came last)."""
    lines = store._query(
        "WITH receiving (site, location) AS ("
        "  SELECT DISTINCT site, location FROM receipts WHERE location IS NOT NULL"
        "  UNION SELECT site, code FROM locations WHERE kind = 'virtual' AND code = 'receiving')"
        " SELECT s.site, s.location, s.item, s.lot, s.quantity"
        " FROM stock s JOIN receiving r ON r.site = s.site AND r.location = s.location"
        " WHERE s.quantity > ?" + (" AND s.site = ?" if site else "")
        + " ORDER BY s.site, s.location, s.item, s.lot",
        (checks.TOLERANCE, *((site,) if site else ())))
    out = []
    for site_, location, item, lot, qty in lines:
        since, left = None, float(qty)
        for at, added in store._query(
            "SELECT event_time, qty FROM movements WHERE site = ? AND item = ? AND location = ?"
            " AND lot = ? AND qty > 0 ORDER BY id DESC", (site_, item, location, lot)):
            since, left = at, left - float(added)
            if left <= checks.TOLERANCE:
                break
        if since is not None:
            out.append(NotPutAway(site_, location, item, lot or None, float(qty), since,
                                  _age(now, since)))
    return out


def open_exceptions(store: Store, site: str | None, now: datetime) -> list[OpenExceptions]:
    rows = store._query(
        "SELECT kind, COUNT(*), MIN(raised_at) FROM exceptions WHERE status = 'open'"
        + (" AND site = ?" if site else "") + " GROUP BY kind ORDER BY kind",
        (site,) if site else ())
    return [OpenExceptions(kind, int(n), oldest, _age(now, oldest)) for kind, n, oldest in rows]


def device_backlogs(store: Store, site: str | None) -> list[DeviceBacklog]:
    return [DeviceBacklog(d.site, d.device, d.backlog or 0, d.oldest_unsynced_s, d.backlog_at,
                          d.online)
            for d in store.devices() if (site is None or d.site == site) and d.backlog]


def backlog(store: Store, site: str | None = None, now: datetime | None = None) -> Backlog:
    moment = now or datetime.now(UTC)
    return Backlog(
        generated_at=moment.isoformat(),
        receipts=open_receipts(store, site, moment),
        not_put_away=not_put_away(store, site, moment),
        order_lines=orders.backlog(store, site, moment),
        exceptions=open_exceptions(store, site, moment),
        devices=device_backlogs(store, site),
    )
