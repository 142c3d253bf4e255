"""EPCIS 2.0 export of the ledger: each movement as a JSON-LD event, streamed page by page.

The mapping (the design's, CBV 2.0 words only): receive -> receiving, putaway and move ->
storing, pick -> picking, pack -> packing, ship -> shipping, count -> cycle_counting, return ->
receiving with disposition returned, observe -> no business step. ``adjust`` events and the
adjustment a count session posts (a ``count`` of the service's own device) are not exported:
corrections of the books, not something that happened to the goods. Every movement is an
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

``identifiers``: the export writes GS1 keys as EPC URIs (SGLN, SGTIN, LGTIN, SSCC URNs) for the
company prefixes an ``EPCWriter`` knows (``server/epcisurn.py``), else as Digital Links; the
filters compare every form alike.

Paging follows the EPCIS 2.0 REST binding: a page covers at most ``per_page`` ledger events that
pass the filters SQL can apply (types, dates) in ledger order (its commit-ordered rowid), then,
once the ledger's events fit, the captured events (``server/epcisstore.py``, in capture order)
up to ``per_page`` in all; the next page's token is ``{ledger rowid}.{captured id}``, the last of
each it covered. Filters only Python can apply to movements (bizLocation, EPC, exact instants,
identifiers master data cannot turn into GS1 keys) may leave a page with fewer events, never
lose or repeat one; captured events are filtered in SQL, exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii as _q
from typing import Any

from floorsync.server import epcisstore
from floorsync.server.epcisjson import (
    document_chunks,
    number,
    offset_text,
    time_text,
)
from floorsync.server.epcismaster import MasterView
from floorsync.server.epcisread import Event, read_event
from floorsync.server.epcisurn import EPCWriter
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
    read_points: frozenset[str] | None = None
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
            clauses.append(_AGGREGATION_SQL if "AggregationEvent" in self.event_types
                           else "1 = 0")  # no event type a movement is written as
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

    @property
    def beyond_sql(self) -> bool:
        """Whether ``match`` has anything to judge."""
        return any(v is not None for v in (self.ge_event_time, self.lt_event_time,
                                           self.event_types, self.biz_locations,
                                           self.read_points, self.epcs))

    def match(self, event: Written) -> bool:
        """What only the written event shows: exact instants, event type, bizLocation, EPCs."""
        if self.ge_event_time is not None or self.lt_event_time is not None:
            moment = datetime.fromisoformat(event.event_time)
            if self.ge_event_time is not None and moment < self.ge_event_time:
                return False
            if self.lt_event_time is not None and moment >= self.lt_event_time:
                return False
        if self.event_types is not None and event.type not in self.event_types:
            return False
        if self.biz_locations is not None and event.biz_location not in self.biz_locations:
            return False
        if self.read_points is not None and event.read_point not in self.read_points:
            return False
        return self.epcs is None or not self.epcs.isdisjoint(event.ids)


@dataclass(frozen=True, slots=True)
class Page:
    """Ledger rowids ``after`` < rowid <= ``last``, captured events ``captured_after`` < id <=
    ``captured_last``, and the next page's token (None: no more)."""

    after: int
    last: int
    next_token: str | None
    captured_after: int = 0
    captured_last: int = 0


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


@dataclass(frozen=True, slots=True)
class Written:
    """One ledger event as the export writes it: its JSON text, and what the filters beyond
    SQL judge it by."""

    text: str
    type: str
    event_time: str
    biz_location: str | None  # canonical (Digital Link), whatever form the text uses
    ids: tuple[str, ...]  # epcList, childEPCs and parentID, canonical
    read_point: str | None = None


def _tail(kind: str, aggregation: bool) -> str:
    step = BIZ_STEPS[kind]
    text = ',"action":"ADD"' if aggregation else ',"action":"OBSERVE"'
    text += f',"bizStep":"{step}"' if step is not None else ""
    return text + (f',"disposition":"{DISPOSITIONS[kind]}"' if kind in DISPOSITIONS else "")


# action, bizStep and disposition of each movement type, as text; per (type, aggregation).
_TAILS = {(kind, agg): _tail(kind, agg) for kind in BIZ_STEPS for agg in (False, True)}


def _quantity(uri: str, quantity: float, uom: str | None) -> str:
    text = f'{{"epcClass":{_q(uri)},"quantity":{number(quantity)!r}'
    return text + (f',"uom":{_q(uom)}}}' if uom is not None else "}")


def ledger_write(row: Sequence[Any], view: MasterView) -> Written | None:
    """One ledger row (``COLUMNS``) as an EPCIS event, or None when it is not exported (see the
    module's doc). Written as text, every string through JSON's own escaping: the export's hot
    path, a third of the cost of building a dict and encoding it. Identifiers are judged
    (``Written``) in their canonical form and written in the view's (``MasterView.convert``)."""
    out = view.convert  # None: as they are (Digital Links)
    (_, ident, site, _device, kind, when, received, gtin, sku, lot, serial, epc, sscc, qty,
     src, dst, detail, doc_kind, doc_id) = row
    if kind not in BIZ_STEPS:
        return None
    event_time, offset = _when(when)
    what: list[str] = []
    ids: tuple[str, ...] = ()
    kind_of = "ObjectEvent"
    if kind == "count":
        seen = json.loads(detail) if detail else {}
        read_point = biz_location = view.place(site, seen.get("location"))
        epcs: dict[str, None] = {}
        classes: dict[tuple[str, str | None], float] = {}
        for line in seen.get("seen", ()):
            it = line.get("item", {})
            one, klass = view.what(it.get("gtin"), it.get("sku"), it.get("lot"),
                                   it.get("serial"), it.get("epc"), it.get("sscc"),
                                   float(line.get("qty", 0)))
            if one is not None:
                epcs[one] = None
            elif klass is not None:
                classes[(klass[0], klass[2])] = classes.get((klass[0], klass[2]), 0.0) + klass[1]
        ids = tuple(epcs)
        if epcs or not classes:
            what.append(',"epcList":[' + ",".join(map(_q, ids if out is None else map(out, ids)))
                        + "]")
        if classes:
            what.append(',"quantityList":[' + ",".join(
                _quantity(uri if out is None else out(uri), q, uom)
                for (uri, uom), q in classes.items()) + "]")
    else:
        read_point = view.place(site, src if kind in _READ_AT_SOURCE or dst is None else dst)
        biz_location = None if kind == "ship" else (view.place(site, dst) or read_point)
        parent = view.sscc(sscc) if kind == "pack" else None
        one, klass = view.what(gtin, sku, lot, serial, epc, None if parent else sscc, qty)
        if one is not None:
            ids = (one,)
            things = "[" + _q(one if out is None else out(one)) + "]"
        elif klass is not None:
            things = "[" + (_quantity(*klass) if out is None
                            else _quantity(out(klass[0]), klass[1], klass[2])) + "]"
        else:
            return None
        if parent is not None:
            kind_of = "AggregationEvent"
            parent_id = f"https://id.gs1.org/00/{parent}"
            ids = (*ids, parent_id)
            what.append(f',"parentID":"{parent_id}"' if out is None
                        else ',"parentID":' + _q(out(parent_id)))
            what.append((',"childEPCs":' if one else ',"childQuantityList":') + things)
        else:
            what.append((',"epcList":' if one else ',"quantityList":') + things)
    what.append(_TAILS[(kind, kind_of == "AggregationEvent")])
    if read_point is not None:
        what.append(',"readPoint":{"id":' + _q(read_point if out is None else out(read_point))
                    + "}")
    if biz_location is not None:
        what.append(',"bizLocation":{"id":'
                    + _q(biz_location if out is None else out(biz_location)) + "}")
    if doc_id is not None and doc_kind in BIZ_TRANSACTION_TYPES:
        bt = view.transaction_id(site, doc_id)
        if bt is not None:
            what.append(f',"bizTransactionList":[{{"type":"{BIZ_TRANSACTION_TYPES[doc_kind]}"'
                        f',"bizTransaction":{_q(bt)}}}]')
    text = (f'{{"type":"{kind_of}","eventID":{_q("urn:uuid:" + ident)},"eventTime":'
            f'{_q(event_time)},"eventTimeZoneOffset":"{offset}","recordTime":{_q(received)}'
            + "".join(what) + "}")
    return Written(text, kind_of, event_time, biz_location, ids, read_point)


def ledger_json(row: Sequence[Any], view: MasterView) -> dict[str, Any] | None:
    """A ledger row's event as JSON data (what ``ledger_write`` writes, read back)."""
    written = ledger_write(row, view)
    if written is None:
        return None
    loaded: dict[str, Any] = json.loads(written.text)
    return loaded


def ledger_event(row: Sequence[Any], view: MasterView) -> Event | None:
    """A ledger row as ``epcisread`` reads the export: the same event, as dataclasses."""
    out = ledger_json(row, view)
    return None if out is None else read_event(out)


# --- paging and streaming -----------------------------------------------------------------


Cursor = tuple[int, int]  # the last ledger rowid and captured event id a page covered


def parse_token(token: str | None) -> Cursor | None:
    """A ``nextPageToken`` as we issue them (``{rowid}.{captured id}``; a bare rowid, as issued
    before events were captured, reads as ``{rowid}.0``); ValueError for anything else."""
    if token is None or token == "":
        return None
    ledger, dot, captured = token.partition(".")
    parts = (ledger, captured) if dot else (ledger,)
    if not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
        raise ValueError(f"page token {token[:40]!r} was not issued by this service")
    return int(ledger), int(captured) if dot else 0


def plan_page(store: LedgerQueries, filters: Filters, after: Cursor | None, per_page: int
              ) -> Page:
    """What one page covers: ledger rows up to the ``per_page``-th past ``after`` that passes
    the SQL filters; when they all fit, captured events after them up to ``per_page`` events
    in all. When more pass beyond, the page's last rowid and captured id are the token."""
    where, params = filters.sql()
    start, captured = after or (0, 0)
    rows = store._query(
        f"SELECT rowid FROM events WHERE rowid > ? AND {where} ORDER BY rowid LIMIT 2 OFFSET ?",
        [start, *params, per_page - 1])
    if len(rows) == 2:
        return Page(start, rows[0][0], f"{rows[0][0]}.{captured}", captured, captured)
    # The ledger's rest fits: up to its end as of now (what commits later is past it).
    (top,) = store._query("SELECT COALESCE(MAX(rowid), 0) FROM events")[0]
    last = max(top, start)
    if not epcisstore.first_after(store, filters, captured):  # no captured event waits
        return Page(start, last, None, captured, captured)
    (used,) = store._query(
        f"SELECT COUNT(*) FROM events WHERE rowid > ? AND rowid <= ? AND {where}",
        [start, last, *params])[0]
    room = per_page - used
    if room <= 0:
        return Page(start, last, f"{last}.{captured}", captured, captured)
    ids = epcisstore.first_after(store, filters, captured, room - 1)
    if len(ids) == 2:
        return Page(start, last, f"{last}.{ids[0]}", captured, ids[0])
    return Page(start, last, None, captured, max(epcisstore.top(store), captured))


def page_events(store: LedgerQueries, filters: Filters, page: Page,
                writer: EPCWriter | None = None) -> Iterator[Written]:
    """The page's ledger events as written, in ledger order, ``CHUNK_ROWS`` rows at a time."""
    view = MasterView(store, writer)
    where, params = filters.sql()
    judge = filters.match if filters.beyond_sql else None
    after = page.after
    while after < page.last:
        rows = store._query(
            f"SELECT {COLUMNS} FROM events WHERE rowid > ? AND rowid <= ? AND {where}"
            f" ORDER BY rowid LIMIT {CHUNK_ROWS}", [after, page.last, *params])
        for row in rows:
            written = ledger_write(row, view)
            if written is not None and (judge is None or judge(written)):
                yield written
        if len(rows) < CHUNK_ROWS:
            return
        after = rows[-1][0]


def stream(store: LedgerQueries, filters: Filters, page: Page, created: datetime,
           batch: int = 500, writer: EPCWriter | None = None) -> Iterator[str]:
    """The page as an EPCISDocument, in text chunks of ``batch`` events (flat memory): its
    ledger events, then its captured ones. ``writer``: GS1 keys of movements as EPC URIs where
    it knows the company prefix (None: Digital Links)."""
    def texts() -> Iterator[str]:
        pending: list[str] = []
        for written in page_events(store, filters, page, writer):
            pending.append(written.text)
            if len(pending) >= batch:
                yield ",".join(pending)
                pending = []
        for text in epcisstore.texts(store, filters, page.captured_after, page.captured_last):
            pending.append(text)
            if len(pending) >= batch:
                yield ",".join(pending)
                pending = []
        if pending:
            yield ",".join(pending)
    return document_chunks(texts(), created)


def canonical_filter_uri(text: str) -> str | None:
    """A query's EPC or location as the export writes it; None when it is no URI at all."""
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z", text):
        return None
    key = parse_gs1_uri(text)
    return key.digital_link() if key is not None else text
