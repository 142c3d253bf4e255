"""Reads of the ledger: stock on hand, the movement ledger, rejections, devices, totals.

Each read runs on the calling thread's reader connection, beside the writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from floorsync.server.db import Database


@dataclass(frozen=True, slots=True)
class StockRow:
    site: str
    item: str
    location: str
    lot: str | None
    quantity: float
    sku: str | None = None  # the master-data item the key belongs to, if any


@dataclass(frozen=True, slots=True)
class MovementRow:
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


@dataclass(frozen=True, slots=True)
class RejectionRow:
    id: int
    received_at: str
    source: str
    topic: str | None
    site: str | None
    device: str | None
    event_id: str | None
    reason: str
    payload: str


@dataclass(frozen=True, slots=True)
class DeviceRow:
    site: str
    device: str
    last_seen: str | None
    last_seq: int | None
    events: int
    online: bool | None
    status_at: str | None
    backlog: int | None
    oldest_unsynced_s: float | None = None  # age of the oldest unconfirmed event, at backlog_at
    backlog_at: str | None = None  # when the edge measured backlog (its clock)
    topic_mismatches: int = 0  # batches it sent claiming another site or device
    topic_mismatch_at: str | None = None  # when the last of them arrived


def item_location_filter(
    item: str | Sequence[str] | None, location: str | None, table: str = ""
) -> tuple[str, list[str]]:
    """`` AND item IN (...) AND location = ?`` for the filters given, and their parameters
    (columns of ``table``, an alias, when given)."""
    where, params, of = "", list[str](), f"{table}." if table else ""
    if isinstance(item, str):
        where, params = where + f" AND {of}item = ?", [*params, item]
    elif item is not None:
        where += f" AND {of}item IN ({', '.join('?' * len(item))})"
        params = [*params, *item]
    if location is not None:
        where, params = where + f" AND {of}location = ?", [*params, location]
    return where, params


class LedgerQueries(Database):
    """The store's reads."""

    def ping(self) -> None:
        self._query("SELECT 1")

    def stock(
        self, item: str | None = None, location: str | None = None, site: str | None = None,
        after: tuple[str, ...] | None = None, limit: int | None = None,
    ) -> list[StockRow]:
        """Non-zero lines in key order (item, site, location, lot); ``after`` such a key, for
        paging.

        ``item`` finds the item under every key it is kept by (``item_keys``); each line says
        the SKU its key belongs to in master data.
        """
        where, params = item_location_filter(
            None if item is None else self.item_keys(item), location, "s")
        if site is not None:
            where, params = where + " AND s.site = ?", [*params, site]
        if after is not None:
            where += " AND (s.item, s.site, s.location, s.lot) > (?, ?, ?, ?)"
            params = [*params, *after]
        rows = self._query(
            "SELECT s.site, s.item, s.location, s.lot, s.quantity, COALESCE(i.sku, g.sku)"
            " FROM stock s LEFT JOIN items i ON i.sku = s.item"
            " LEFT JOIN item_gtins g ON g.gtin = s.item"
            " WHERE s.quantity <> 0" + where + " ORDER BY s.item, s.site, s.location, s.lot"
            + ("" if limit is None else f" LIMIT {int(limit)}"),
            params,
        )
        return [StockRow(st, i, loc, lot or None, float(q), sku)
                for st, i, loc, lot, q, sku in rows]

    def item_keys(self, item: str) -> list[str]:
        """The keys stock of ``item`` is kept under: the text itself and, when master data knows
        it as a SKU or a GTIN, that item's SKU and every GTIN of it (edges send what they
        scanned: a GTIN from one label, the SKU from another)."""
        found = self._query(
            "SELECT sku FROM items WHERE sku = ? UNION SELECT sku FROM item_gtins WHERE gtin = ?",
            (item, item),
        )
        if not found:
            return [item]
        sku = found[0][0]
        gtins = [g for (g,) in self._query(
            "SELECT gtin FROM item_gtins WHERE sku = ? ORDER BY ordinal", (sku,))]
        return list(dict.fromkeys([item, sku, *gtins]))

    def movements(self, after: int | None = None, limit: int = 100) -> list[MovementRow]:
        rows = self._query(
            "SELECT id, event_id, site, device, type, item, lot, location, qty, event_time,"
            " received_at FROM movements WHERE id > ? ORDER BY id LIMIT ?",
            (after or 0, limit),
        )
        return [
            MovementRow(i, ev, s, d, t, item, lot or None, loc, float(q), at, rx)
            for i, ev, s, d, t, item, lot, loc, q, at, rx in rows
        ]

    def rejections(self, after: int | None = None, limit: int = 100) -> list[RejectionRow]:
        rows = self._query(
            "SELECT id, received_at, source, topic, site, device, event_id, reason, payload"
            " FROM rejections WHERE id > ? ORDER BY id LIMIT ?",
            (after or 0, limit),
        )
        return [RejectionRow(*r) for r in rows]

    def devices(self) -> list[DeviceRow]:
        rows = self._query(
            "SELECT site, device, last_seen, last_seq, events, online, status_at, backlog,"
            " oldest_unsynced_s, backlog_at, topic_mismatches, topic_mismatch_at FROM devices"
            " ORDER BY site, device"
        )
        return [
            DeviceRow(s, d, seen, seq, n, None if on is None else bool(on), at, backlog,
                      None if oldest is None else float(oldest), backlog_at, int(mism), mism_at)
            for s, d, seen, seq, n, on, at, backlog, oldest, backlog_at, mism, mism_at in rows
        ]

    def summary(self) -> dict[str, int]:
        (row,) = self._query(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM movements),"
            " (SELECT COUNT(*) FROM rejections), (SELECT COUNT(*) FROM devices),"
            " (SELECT COUNT(*) FROM stock WHERE quantity <> 0),"
            " (SELECT COUNT(*) FROM exceptions WHERE status = 'open')"
        )
        keys = ("events", "movements", "rejections", "devices", "stock_lines", "open_exceptions")
        return dict(zip(keys, (int(v) for v in row), strict=True))
