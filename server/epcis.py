"""EPCIS 2.0 export of the ledger: each movement as a JSON-LD event, streamed page by page.

The mapping (the design's, CBV 2.0 words only): receive -> receiving, putaway and move ->
storing, pick -> picking, pack -> packing, ship -> shipping, count -> cycle_counting, return ->
receiving with disposition returned, observe -> no business step. ``adjust`` is not exported: a
correction of the books, not something that happened to the goods. Every movement is an
ObjectEvent with action OBSERVE (EPCIS: ADD and DELETE on an ObjectEvent mean commissioning and
decommissioning the identifiers, which a warehouse does not do), except a pack of an item onto an
SSCC: an AggregationEvent, action ADD, the SSCC its parent.

What: a serialised item (an EPC, or GTIN + serial) in ``epcList``; a GTIN (with its lot) in
``quantityList``, uom omitted for each-counts; items known only by SKU take the first GTIN master
data gives them, and are left out when it gives none. All GS1 keys as canonical GS1 Digital Link
(no company prefix length needed); other EPC URIs (GRAI, GIAI, ...) as the tag gave them.
Where: readPoint and bizLocation are the GLN (+ extension) of the location or of the nearest
location above it that has one in master data, omitted when none does; a ship has no
bizLocation (the goods left). Why: the movement's document as a business transaction, a receipt
as ``desadv`` (the supplier's despatch advice it is checked against), an order as ``po`` (the
customer's purchase order; CBV 2.0 has no sales-order type), named in CBV's form for an id from
a party's own system, ``urn:epcglobal:cbv:bt:{site GLN}:{document id}``; left out when the site
has no GLN.

Paging follows the EPCIS 2.0 REST binding: a page covers at most ``per_page`` ledger events that
pass the filters SQL can apply (types, dates) in ledger order (its commit-ordered rowid), and the
next page's token is the last rowid it covered. Filters only Python can apply (bizLocation,
EPC, exact instants, identifiers master data cannot turn into GS1 keys) may leave a page with
fewer events, never lose or repeat one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from floorsync.server.epcisjson import (
    ENCODER,
    document_chunks,
    number,
    offset_text,
    time_text,
)
from floorsync.server.epcismaster import MasterView
from floorsync.server.epcisread import Event, read_event
from floorsync.server.gs1 import parse_gs1_uri
from floorsync.server.posting import API_DEVICE
from floorsync.server.queries import LedgerQueries

BIZ_STEPS: dict[str, str | None] = {
    "receive": "receiving", "putaway": "storing", "move": "storing", "pick": "picking",
    "pack": "packing", "ship": "shipping", "count": "cycle_counting", "return": "receiving",
    "observe": None,
}
DISPOSITIONS = {"return": "returned"}
BIZ_TRANSACTION_TYPES = {"receipt": "desadv", "order": "po"}
CHUNK_ROWS = 2000
COLUMNS = ("rowid, id, site, device, type, event_time, received_at, gtin, sku, lot, serial, epc,"
           " sscc, qty, from_location, to_location, detail, doc_kind, doc_id")
# Where the goods were seen (readPoint): the destination, or the source for these.
_READ_AT_SOURCE = frozenset({"pick", "pack", "ship"})
_AGGREGATION_SQL = ("(type = 'pack' AND sscc IS NOT NULL"
                    " AND (gtin IS NOT NULL OR sku IS NOT NULL OR epc IS NOT NULL))")
_IDENTIFIABLE_SQL = ("(type = 'count' OR gtin IS NOT NULL OR epc IS NOT NULL OR sscc IS NOT NULL"
                     " OR sku IN (SELECT sku FROM item_gtins))")
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-](?:0\d|1[0-3]):[0-5]\d|[+-]14:00)\Z")


@dataclass(frozen=True, slots=True)
class Filters:
    """The EPCIS query's filters. Times are instants; URIs are canonical (``canonical_uri``)."""

    ge_event_time: datetime | None = None
    lt_event_time: datetime | None = None
    ge_record_time: datetime | None = None
    lt_record_time: datetime | None = None
    event_types: frozenset[str] | None = None
    biz_steps: frozenset[str] | None = None
    biz_locations: frozenset[str] | None = None
    epcs: frozenset[str] | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """What SQL can decide, as a WHERE clause (no rowid bounds) and its params: a row it
        passes may still be dropped by ``match``, never the reverse."""
        types = [t for t, step in BIZ_STEPS.items()
                 if self.biz_steps is None or step in self.biz_steps]
        clauses = [f"type IN ({', '.join(repr(t) for t in types) or 'NULL'})",
                   _IDENTIFIABLE_SQL, f"NOT (type = 'count' AND device = '{API_DEVICE}')"]
        params: list[Any] = []
        if self.event_types is not None and "ObjectEvent" not in self.event_types:
            clauses.append(_AGGREGATION_SQL)
        # A stored time's text is local time: within 14 hours of its instant, and its first ten
        # characters are its date, so dates a day wider than the bounds lose nothing.
        if self.ge_event_time is not None:
            clauses.append("substr(event_time, 1, 10) >= ?")
            params.append((self.ge_event_time - timedelta(days=1)).date().isoformat())
        if self.lt_event_time is not None:
            clauses.append("substr(event_time, 1, 10) <= ?")
            params.append((self.lt_event_time + timedelta(days=1)).date().isoformat())
        # received_at is UTC with microseconds, all in one form: its text order is time order.
        if self.ge_record_time is not None:
            clauses.append("received_at >= ?")
            params.append(self.ge_record_time.astimezone(UTC).isoformat(timespec="microseconds"))
        if self.lt_record_time is not None:
            clauses.append("received_at < ?")
            params.append(self.lt_record_time.astimezone(UTC).isoformat(timespec="microseconds"))
        return " AND ".join(clauses), params

    def match(self, event: dict[str, Any]) -> bool:
        """What only the written event shows: exact instants, event type, bizLocation, EPCs."""
        if self.ge_event_time is not None or self.lt_event_time is not None:
            moment = datetime.fromisoformat(event["eventTime"])
            if self.ge_event_time is not None and moment < self.ge_event_time:
                return False
            if self.lt_event_time is not None and moment >= self.lt_event_time:
                return False
        if self.event_types is not None and event["type"] not in self.event_types:
            return False
        if self.biz_locations is not None and (
                event.get("bizLocation", {}).get("id") not in self.biz_locations):
            return False
        if self.epcs is not None:
            ids = [*event.get("epcList", ()), *event.get("childEPCs", ())]
            if "parentID" in event:
                ids.append(event["parentID"])
            if self.epcs.isdisjoint(ids):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Page:
    """Ledger rowids ``after`` < rowid <= ``last``, and the next page's token (None: no more)."""

    after: int
    last: int
    next_token: str | None


def _when(text: str) -> tuple[str, str]:
    """eventTime and eventTimeZoneOffset of a stored time: the text itself when it is RFC 3339
    already (the wire's extended form nearly always is), else written anew."""
    if _RFC3339.match(text):
        return text, ("+00:00" if text[-1] in "Zz" else text[-6:])
    moment = datetime.fromisoformat(text)
    offset = moment.utcoffset()
    if offset is not None and (offset.seconds % 60 or offset.microseconds):
        moment = moment.astimezone(UTC)  # an offset in seconds: RFC 3339 cannot say it
    return time_text(moment), offset_text(moment)


def ledger_json(row: Sequence[Any], view: MasterView) -> dict[str, Any] | None:
    """One ledger row (``COLUMNS``) as an EPCIS event's JSON, or None when it is not exported
    (see the module's doc)."""
    (_, ident, site, _device, kind, when, received, gtin, sku, lot, serial, epc, sscc, qty,
     src, dst, detail, doc_kind, doc_id) = row
    step = BIZ_STEPS.get(kind, "")
    if step == "":
        return None
    event_time, offset = _when(when)
    out: dict[str, Any] = {"type": "ObjectEvent", "eventID": f"urn:uuid:{ident}",
                           "eventTime": event_time, "eventTimeZoneOffset": offset,
                           "recordTime": _when(received)[0]}
    if kind == "count":
        seen = json.loads(detail) if detail else {}
        read_point = biz_location = view.place(site, seen.get("location"))
        epcs: dict[str, None] = {}
        classes: dict[tuple[str, str | None], float] = {}
        for line in seen.get("seen", ()):
            one, klass = view.what(line.get("item", {}), float(line.get("qty", 0)))
            if one is not None:
                epcs[one] = None
            elif klass is not None:
                classes[(klass[0], klass[2])] = classes.get((klass[0], klass[2]), 0.0) + klass[1]
        if epcs or not classes:
            out["epcList"] = list(epcs)
        if classes:
            out["quantityList"] = [_quantity(uri, q, uom) for (uri, uom), q in classes.items()]
    else:
        read_point = view.place(site, src if kind in _READ_AT_SOURCE or dst is None else dst)
        biz_location = None if kind == "ship" else (view.place(site, dst) or read_point)
        parent = view.sscc(sscc) if kind == "pack" else None
        item = {"gtin": gtin, "sku": sku, "lot": lot, "serial": serial, "epc": epc,
                "sscc": None if parent is not None else sscc}
        one, klass = view.what(item, qty)
        if one is None and klass is None:
            return None
        if parent is not None:
            out["type"] = "AggregationEvent"
            out["parentID"] = f"https://id.gs1.org/00/{parent}"
            if one is not None:
                out["childEPCs"] = [one]
            else:
                assert klass is not None
                out["childQuantityList"] = [_quantity(*klass)]
        elif one is not None:
            out["epcList"] = [one]
        else:
            assert klass is not None
            out["quantityList"] = [_quantity(*klass)]
    out["action"] = "ADD" if out["type"] == "AggregationEvent" else "OBSERVE"
    if step is not None:
        out["bizStep"] = step
    if kind in DISPOSITIONS:
        out["disposition"] = DISPOSITIONS[kind]
    if read_point is not None:
        out["readPoint"] = {"id": read_point}
    if biz_location is not None:
        out["bizLocation"] = {"id": biz_location}
    transaction = view.transaction(site, doc_kind, doc_id, BIZ_TRANSACTION_TYPES)
    if transaction is not None:
        out["bizTransactionList"] = [transaction]
    return out


def _quantity(uri: str, quantity: float, uom: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"epcClass": uri, "quantity": number(quantity)}
    if uom is not None:
        out["uom"] = uom
    return out


def ledger_event(row: Sequence[Any], view: MasterView) -> Event | None:
    """A ledger row as ``epcisread`` reads the export: the same event, as dataclasses."""
    out = ledger_json(row, view)
    return None if out is None else read_event(out)


# --- paging and streaming -----------------------------------------------------------------


def plan_page(store: LedgerQueries, filters: Filters, after: int | None, per_page: int) -> Page:
    """The rowids one page covers: up to the ``per_page``-th row past ``after`` that passes the
    SQL filters; when one more passes them beyond it, that rowid is the next page's token."""
    where, params = filters.sql()
    start = after or 0
    rows = store._query(
        f"SELECT rowid FROM events WHERE rowid > ? AND {where} ORDER BY rowid LIMIT 2 OFFSET ?",
        [start, *params, per_page - 1])
    if len(rows) == 2:
        return Page(start, rows[0][0], str(rows[0][0]))
    # The rest fits: up to the ledger's end as of now (what commits later is past it).
    (top,) = store._query("SELECT COALESCE(MAX(rowid), 0) FROM events")[0]
    return Page(start, max(top, start), None)


def page_json(store: LedgerQueries, filters: Filters, page: Page) -> Iterator[dict[str, Any]]:
    """The page's events as JSON, in ledger order, ``CHUNK_ROWS`` rows at a time."""
    view = MasterView(store)
    where, params = filters.sql()
    after = page.after
    while after < page.last:
        rows = store._query(
            f"SELECT {COLUMNS} FROM events WHERE rowid > ? AND rowid <= ? AND {where}"
            f" ORDER BY rowid LIMIT {CHUNK_ROWS}", [after, page.last, *params])
        for row in rows:
            out = ledger_json(row, view)
            if out is not None and filters.match(out):
                yield out
        if len(rows) < CHUNK_ROWS:
            return
        after = rows[-1][0]


def stream(store: LedgerQueries, filters: Filters, page: Page, created: datetime,
           batch: int = 500) -> Iterator[str]:
    """The page as an EPCISDocument, in text chunks of ``batch`` events (flat memory)."""
    def texts() -> Iterator[str]:
        pending: list[dict[str, Any]] = []
        for out in page_json(store, filters, page):
            pending.append(out)
            if len(pending) >= batch:
                yield ENCODER.encode(pending)[1:-1]
                pending = []
        if pending:
            yield ENCODER.encode(pending)[1:-1]
    return document_chunks(texts(), created)


def canonical_filter_uri(text: str) -> str | None:
    """A query's EPC or location as the export writes it; None when it is no URI at all."""
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z", text):
        return None
    key = parse_gs1_uri(text)
    return key.digital_link() if key is not None else text
