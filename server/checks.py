"""What the ledger consults as it applies events, kept in memory so the apply path stays cheap.

An event is never refused for what it says about the warehouse: it is applied and, where the
warehouse disagrees, an exception record is raised (see ``server.exceptionlog``). To decide that
in microseconds the writer keeps here: the items and location labels master data knows, the
latest count time per location, and which lines and labels already have an open exception (a
scanner repeating an unknown item adds occurrences to one record, not a thousand records).

The writer owns one ``Caches`` and mutates it inside its transaction; when a transaction fails,
or master data or an exception changes outside the apply path, the store drops it and the next
transaction loads it again from the database, so it is never ahead of what was committed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from floorsync.edge import wire
from floorsync.server.gs1 import parse_gln_label

KINDS = (
    "negative_stock", "unknown_item", "unknown_location", "serial_conflict", "late_after_count",
    "rejected",
    # raised by the documents (receipts, orders), against the floor's movements
    "receipt_over", "receipt_short", "receipt_unexpected", "receipt_unknown",
    "order_over", "order_unexpected", "order_unknown", "order_ship_off_books",
)
TOLERANCE = 1e-9  # float sums: a line at -1e-12 is zero, not negative

_LineKey = tuple[str, str, str, str]  # site, item, location, lot


def utc(text: str) -> datetime:
    """A stored or validated ISO 8601 time with an offset, as a UTC instant."""
    return datetime.fromisoformat(text).astimezone(UTC)


def utc_text(moment: datetime) -> str:
    """UTC, microseconds, ``+00:00``: text order is time order for these."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(slots=True)
class Caches:
    """What master data knows and which exceptions are open, as of the last commit."""

    items: frozenset[str] | None  # SKUs and GTINs; None: no items loaded, nothing to check
    labels: dict[str, dict[str, str]]  # site -> code or barcode -> code; no site: not checked
    glns: dict[str, dict[tuple[str, str], str]]  # site -> (GLN, extension) -> code
    counted: dict[tuple[str, str], datetime]  # (site, location) -> time of its latest count
    count_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # -> that count's id
    open_items: dict[str, int] = field(default_factory=dict)  # item -> exception id
    open_locations: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, location)
    open_negative: dict[_LineKey, int] = field(default_factory=dict)

    def forget(self, exception_id: int) -> None:
        """The exception is no longer open: its line or label raises a new one next time."""
        maps: tuple[dict[Any, int], ...] = (
            self.open_items, self.open_locations, self.open_negative)
        for open_ in maps:
            for key in [k for k, v in open_.items() if v == exception_id]:
                del open_[key]

    def item_known(self, item: wire.Item) -> bool:
        """True unless item master data exists and names neither the SKU nor the GTIN.

        Things known only by SSCC or by an EPC that is not an SGTIN are logistic units or foreign
        tags, not items of the master data, so they are not checked.
        """
        if self.items is None or (item.sku is None and item.gtin is None):
            return True
        return item.sku in self.items or item.gtin in self.items

    def location(self, site: str, text: str) -> tuple[str, bool]:
        """(the code stock is kept under, whether master data knows the label).

        A label is a location's code or one of its barcodes (a barcode wins, as in
        ``GET /locations/by-barcode``), else its GLN as SGLN, AI 414 or Digital Link. A site
        without locations in master data is not checked and its labels are kept as sent.
        """
        labels = self.labels.get(site)
        if labels is None:
            return text, True
        code = labels.get(text)
        if code is not None:
            return code, True
        glns = self.glns.get(site)
        if glns:  # only labels no code or barcode matched get here: rare, worth the parse
            found = parse_gln_label(text)
            if found is not None and (code := glns.get(found)) is not None:
                return code, True
        return text, False


def load(cur: sqlite3.Cursor) -> Caches:
    """Everything ``Caches`` holds, read in the caller's transaction."""
    names = [r[0] for r in cur.execute(
        "SELECT sku FROM items UNION ALL SELECT gtin FROM item_gtins")]
    labels: dict[str, dict[str, str]] = {}
    for site, code in cur.execute("SELECT site, code FROM locations"):
        labels.setdefault(site, {})[code] = code
    for site, barcode, code in cur.execute("SELECT site, barcode, code FROM location_barcodes"):
        labels.setdefault(site, {})[barcode] = code
    glns: dict[str, dict[tuple[str, str], str]] = {}
    for site, gln, extension, code in cur.execute(
        "SELECT site, gln, gln_extension, code FROM locations WHERE gln IS NOT NULL"
    ):
        glns.setdefault(site, {})[(gln, extension)] = code
    counted: dict[tuple[str, str], datetime] = {}
    count_ids: dict[tuple[str, str], int] = {}
    for site, loc, at, count_id in cur.execute(
            "SELECT site, location, counted_at, count_id FROM location_counts"):
        counted[(site, loc)], count_ids[(site, loc)] = utc(at), int(count_id)
    caches = Caches(frozenset(names) if names else None, labels, glns, counted, count_ids)
    for ident, kind, site, item, location, lot in cur.execute(
        "SELECT id, kind, site, item, location, lot FROM exceptions WHERE status = 'open'"
        " AND kind IN ('unknown_item', 'unknown_location', 'negative_stock')"
    ):
        if kind == "unknown_item":
            caches.open_items[item] = ident
        elif kind == "unknown_location":
            caches.open_locations[(site, location)] = ident
        else:
            caches.open_negative[(site, item, location, lot or "")] = ident
    return caches
