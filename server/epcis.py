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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from floorsync.server.epcisread import (
    AggregationEvent,
    BizTransaction,
    Event,
    Identifier,
    ObjectEvent,
    Quantity,
)
from floorsync.server.errors import Invalid
from floorsync.server.gs1 import (
    GS1Key,
    gln_uri,
    gtin_uri,
    normalize_gtin,
    normalize_sscc,
    parse_gln_label,
    parse_gs1_uri,
    sscc_uri,
)
from floorsync.server.posting import API_DEVICE
from floorsync.server.queries import LedgerQueries

CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
BIZ_STEPS: dict[str, str | None] = {
    "receive": "receiving", "putaway": "storing", "move": "storing", "pick": "picking",
    "pack": "packing", "ship": "shipping", "count": "cycle_counting", "return": "receiving",
    "observe": None,
}
DISPOSITIONS = {"return": "returned"}
BIZ_TRANSACTION_TYPES = {"receipt": "desadv", "order": "po"}
EVENT_TYPES = ("ObjectEvent", "AggregationEvent")
EACH = frozenset({"EA", "EACH", "H87", "C62", "PCE", "PCS"})  # counts of instances: no uom
_UOM = re.compile(r"[A-Z0-9]{2,3}\Z")
_EPC_URI = re.compile(r"urn:epc:id:[a-z0-9]+:[A-Za-z0-9._:%*'()!;=,+~-]+\Z")
CHUNK_ROWS = 2000
_COLUMNS = ("rowid, id, site, device, type, event_time, received_at, gtin, sku, lot, serial, epc,"
            " sscc, qty, from_location, to_location, detail, doc_kind, doc_id")
# Where the goods are observed (readPoint) and where they are after (bizLocation).
_READ_AT = {"receive": "to", "putaway": "to", "move": "to", "return": "to", "pick": "from",
            "pack": "from", "ship": "from"}
_AGGREGATION_SQL = ("(type = 'pack' AND sscc IS NOT NULL"
                    " AND (gtin IS NOT NULL OR sku IS NOT NULL OR epc IS NOT NULL))")
_IDENTIFIABLE_SQL = ("(type = 'count' OR gtin IS NOT NULL OR epc IS NOT NULL OR sscc IS NOT NULL"
                     " OR sku IN (SELECT sku FROM item_gtins))")


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
        """The part of the filters SQL applies: a WHERE clause (no rowid bounds) and params."""
        types = [t for t, step in BIZ_STEPS.items()
                 if self.biz_steps is None or step in self.biz_steps]
        clauses = [f"type IN ({', '.join(repr(t) for t in types) or 'NULL'})",
                   _IDENTIFIABLE_SQL,
                   f"NOT (type = 'count' AND device = '{API_DEVICE}')"]
        params: list[Any] = []
        if self.event_types is not None and len(self.event_types) == 1:
            (only,) = self.event_types
            clauses.append(_AGGREGATION_SQL if only == "AggregationEvent"
                           else f"NOT {_AGGREGATION_SQL}")
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

    def match(self, event: Event) -> bool:
        """What SQL could not decide: exact instants, event type, location and identifiers."""
        if self.ge_event_time is not None and event.event_time < self.ge_event_time:
            return False
        if self.lt_event_time is not None and event.event_time >= self.lt_event_time:
            return False
        if self.event_types is not None and type(event).__name__ not in self.event_types:
            return False
        if self.biz_locations is not None and (
                event.biz_location is None or event.biz_location.uri not in self.biz_locations):
            return False
        if self.epcs is not None:
            if isinstance(event, ObjectEvent):
                ids = event.epcs
            else:
                ids = (*event.child_epcs, *((event.parent,) if event.parent else ()))
            if not any(i.uri in self.epcs for i in ids):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Page:
    """Ledger rowids ``after`` < rowid <= ``last`` (None: to the end), and the next token."""

    after: int
    last: int | None
    next_token: str | None


class MasterView:
    """What the export needs of master data, read once per export: a location label's GLN,
    a site's GLN, an item's GTIN and unit. Its size follows master data, never the ledger."""

    def __init__(self, store: LedgerQueries) -> None:
        rows = store._query("SELECT site, code, kind, parent, gln, gln_extension FROM locations")
        self._labels: dict[str, dict[str, str]] = {}
        self._by_gln: dict[str, dict[tuple[str, str], str]] = {}
        parents: dict[tuple[str, str], str | None] = {}
        own: dict[tuple[str, str], tuple[str, str]] = {}
        self._site_gln: dict[str, str] = {}
        for site, code, kind, parent, gln, extension in rows:
            self._labels.setdefault(site, {})[code] = code
            parents[(site, code)] = parent
            if gln:
                own[(site, code)] = (gln, extension)
                self._by_gln.setdefault(site, {})[(gln, extension)] = code
                if kind == "site":
                    self._site_gln[site] = gln
        for site, barcode, code in store._query(
                "SELECT site, barcode, code FROM location_barcodes"):
            self._labels.setdefault(site, {}).setdefault(barcode, code)
        self._gln: dict[tuple[str, str], tuple[str, str] | None] = {}
        for key in parents:  # the nearest GLN at or above each location
            found: tuple[str, str] | None = None
            node: tuple[str, str] | None = key
            seen = 0
            while node is not None and seen < 64:
                if node in own:
                    found = own[node]
                    break
                parent = parents.get(node)
                node, seen = ((node[0], parent) if parent is not None else None), seen + 1
            self._gln[key] = found
        self._sku_gtin = dict(store._query(
            "SELECT sku, gtin FROM item_gtins ORDER BY sku, ordinal DESC"))
        units = dict(store._query("SELECT sku, unit FROM items"))
        self._unit = {gtin: units.get(sku, "EA") for gtin, sku in store._query(
            "SELECT gtin, sku FROM item_gtins")}
        self._places: dict[tuple[str, str], Identifier | None] = {}
        self._gtins: dict[str, str | None] = {}
        self._ssccs: dict[str, str | None] = {}

    def place(self, site: str, label: str | None) -> Identifier | None:
        """The GLN of the location ``label`` names (code, barcode or GLN label) or of the nearest
        location above it with one; None when master data gives none."""
        if label is None:
            return None
        key = (site, label)
        if key not in self._places:
            code = self._labels.get(site, {}).get(label)
            if code is None and (found := parse_gln_label(label)) is not None:
                code = self._by_gln.get(site, {}).get(found)
            gln = self._gln.get((site, code)) if code is not None else None
            self._places[key] = None if gln is None else Identifier(
                gln_uri(*gln), GS1Key("sgln", gln=gln[0], extension=gln[1]))
        return self._places[key]

    def transactions(self, site: str, kind: str | None, ident: str | None
                     ) -> tuple[BizTransaction, ...]:
        gln = self._site_gln.get(site)
        if kind is None or ident is None or gln is None:
            return ()
        return (BizTransaction(f"urn:epcglobal:cbv:bt:{gln}:{ident}",
                               BIZ_TRANSACTION_TYPES.get(kind)),)

    def gtin(self, gtin: str | None, sku: str | None) -> str | None:
        text = gtin if gtin is not None else self._sku_gtin.get(sku or "")
        if text is None:
            return None
        if text not in self._gtins:
            try:
                self._gtins[text] = normalize_gtin(text)
            except Invalid:
                self._gtins[text] = None
        return self._gtins[text]

    def sscc(self, text: str | None) -> str | None:
        if text is None:
            return None
        if text not in self._ssccs:
            try:
                self._ssccs[text] = normalize_sscc(text)
            except Invalid:
                self._ssccs[text] = None
        return self._ssccs[text]

    def uom(self, gtin: str) -> str | None:
        unit = self._unit.get(gtin, "EA").upper()
        return None if unit in EACH or not _UOM.match(unit) else unit

    def what(self, item: dict[str, Any], qty: float
             ) -> tuple[Identifier | None, Quantity | None]:
        """An item as an instance (an EPC) or a class with its quantity; (None, None) when it
        is neither (known only by a SKU master data gives no GTIN, or by bad keys)."""
        epc, serial = item.get("epc"), item.get("serial")
        if epc is not None and _EPC_URI.match(epc):
            return Identifier.of(epc), None
        gtin = self.gtin(item.get("gtin"), item.get("sku"))
        if gtin is not None and serial:
            return Identifier(gtin_uri(gtin, serial=serial),
                              GS1Key("sgtin", gtin=gtin, serial=serial)), None
        if gtin is not None:
            lot = item.get("lot") or None
            key = GS1Key("lgtin", gtin=gtin, lot=lot) if lot else GS1Key("gtin", gtin=gtin)
            klass = Identifier(gtin_uri(gtin, lot=lot), key)
            return None, Quantity(klass, _number(abs(qty)), self.uom(gtin))
        if (sscc := self.sscc(item.get("sscc"))) is not None:
            return Identifier(sscc_uri(sscc), GS1Key("sscc", sscc=sscc)), None
        return None, None


def _number(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def _offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def ledger_event(row: Sequence[Any], view: MasterView) -> Event | None:
    """One ledger event as EPCIS, or None when it is not exported (see the module's doc)."""
    (_, ident, site, _device, kind, when, received, gtin, sku, lot, serial, epc, sscc, qty,
     src, dst, detail, doc_kind, doc_id) = row
    if kind not in BIZ_STEPS:
        return None
    moment = datetime.fromisoformat(when)
    if (moment.utcoffset() or timedelta(0)) % timedelta(minutes=1):
        moment = moment.astimezone(UTC)  # an offset in seconds: RFC 3339 cannot say it
    if kind == "count":
        at = json.loads(detail) if detail else {}
        here = view.place(site, at.get("location"))
        read_point = biz_location = here
    else:
        read_point = view.place(site, src if _READ_AT.get(kind, "to") == "from" else dst)
        if read_point is None and kind == "observe":
            read_point = view.place(site, src)
        biz_location = None if kind == "ship" else view.place(site, dst) or read_point
    common: dict[str, Any] = {
        "event_id": f"urn:uuid:{ident}", "event_time": moment, "time_zone_offset": _offset(moment),
        "record_time": datetime.fromisoformat(received), "action": "OBSERVE",
        "biz_step": BIZ_STEPS[kind], "disposition": DISPOSITIONS.get(kind),
        "read_point": read_point, "biz_location": biz_location,
        "biz_transactions": view.transactions(site, doc_kind, doc_id),
    }
    if kind == "count":
        epcs: dict[str, Identifier] = {}
        classes: dict[tuple[str, str | None], Quantity] = {}
        for line in at.get("seen", ()):
            one, klass = view.what(line.get("item", {}), float(line.get("qty", 0)))
            if one is not None:
                epcs.setdefault(one.uri, one)
            elif klass is not None:
                key = (klass.epc_class.uri, klass.uom)
                before = classes.get(key)
                total = klass.quantity if before is None else (before.quantity or 0) + (
                    klass.quantity or 0)
                classes[key] = Quantity(klass.epc_class, total, klass.uom)
        return ObjectEvent(**common, epcs=tuple(epcs.values()), quantities=tuple(classes.values()))
    item = {"gtin": gtin, "sku": sku, "lot": lot, "serial": serial, "epc": epc}
    parent = view.sscc(sscc) if kind == "pack" else None
    if parent is None:
        item["sscc"] = sscc
    one, klass = view.what(item, qty)
    if one is None and klass is None:
        return None
    if parent is not None:
        common["action"] = "ADD"
        return AggregationEvent(
            **common, parent=Identifier(sscc_uri(parent), GS1Key("sscc", sscc=parent)),
            child_epcs=(one,) if one else (), child_quantities=(klass,) if klass else ())
    return ObjectEvent(**common, epcs=(one,) if one else (), quantities=(klass,) if klass else ())


# --- writing ------------------------------------------------------------------------------


def _time(moment: datetime) -> str:
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec)


def _quantity(q: Quantity) -> dict[str, Any]:
    out: dict[str, Any] = {"epcClass": q.epc_class.uri}
    if q.quantity is not None:
        out["quantity"] = _number(q.quantity)
    if q.uom is not None:
        out["uom"] = q.uom
    return out


def event_json(event: Event) -> dict[str, Any]:
    """An event as EPCIS 2.0 JSON-LD (for a document's eventList: no ``@context`` of its own)."""
    out: dict[str, Any] = {"type": type(event).__name__}
    if event.event_id is not None:
        out["eventID"] = event.event_id
    out["eventTime"] = _time(event.event_time)
    out["eventTimeZoneOffset"] = event.time_zone_offset
    if event.record_time is not None:
        out["recordTime"] = _time(event.record_time)
    if isinstance(event, ObjectEvent):
        if event.epcs or not event.quantities:
            out["epcList"] = [i.uri for i in event.epcs]
        if event.quantities:
            out["quantityList"] = [_quantity(q) for q in event.quantities]
    else:
        if event.parent is not None:
            out["parentID"] = event.parent.uri
        if event.child_epcs:
            out["childEPCs"] = [i.uri for i in event.child_epcs]
        if event.child_quantities:
            out["childQuantityList"] = [_quantity(q) for q in event.child_quantities]
    out["action"] = event.action
    if event.biz_step is not None:
        out["bizStep"] = event.biz_step
    if event.disposition is not None:
        out["disposition"] = event.disposition
    if event.read_point is not None:
        out["readPoint"] = {"id": event.read_point.uri}
    if event.biz_location is not None:
        out["bizLocation"] = {"id": event.biz_location.uri}
    if event.biz_transactions:
        out["bizTransactionList"] = [
            {"type": t.type, "bizTransaction": t.id} if t.type else {"bizTransaction": t.id}
            for t in event.biz_transactions]
    for name, key, values in (("sourceList", "source", event.sources),
                              ("destinationList", "destination", event.destinations)):
        if values:
            out[name] = [{"type": v.type, key: v.id.uri} for v in values]
    return out


def document(events: Iterable[Event], created: datetime) -> dict[str, Any]:
    """A whole EPCISDocument in memory (small exports, the round trip of the tests)."""
    loaded: dict[str, Any] = json.loads(
        "".join(_document_chunks((_dumps(e) for e in events), created)))
    return loaded


def _dumps(event: Event) -> str:
    return json.dumps(event_json(event), separators=(",", ":"))


def _document_chunks(events: Iterable[str], created: datetime) -> Iterator[str]:
    head = {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": _time(created.astimezone(UTC))}
    yield json.dumps(head, separators=(",", ":"))[:-1] + ',"epcisBody":{"eventList":['
    first = True
    for text in events:
        yield text if first else "," + text
        first = False
    yield "]}}"


# --- paging and streaming -----------------------------------------------------------------


def plan_page(store: LedgerQueries, filters: Filters, after: int | None, per_page: int) -> Page:
    """The rowids one page covers: the ``per_page``-th row past ``after`` passing the SQL
    filters, and whether any row passes them beyond it (then its rowid is the next token)."""
    where, params = filters.sql()
    start = after or 0
    rows = store._query(
        f"SELECT rowid FROM events WHERE rowid > ? AND {where} ORDER BY rowid LIMIT 2 OFFSET ?",
        [start, *params, per_page - 1])
    if len(rows) < 2:
        (top,) = store._query("SELECT COALESCE(MAX(rowid), 0) FROM events")[0]
        return Page(start, top, None)
    last = rows[0][0]
    return Page(start, last, str(last))


def page_events(store: LedgerQueries, filters: Filters, page: Page,
                view: MasterView | None = None) -> Iterator[Event]:
    """The page's events in ledger order, read ``CHUNK_ROWS`` at a time (flat memory)."""
    view = view or MasterView(store)
    where, params = filters.sql()
    after = page.after
    upper = page.last if page.last is not None else 2**63 - 1
    while True:
        rows = store._query(
            f"SELECT {_COLUMNS} FROM events WHERE rowid > ? AND rowid <= ? AND {where}"
            f" ORDER BY rowid LIMIT {CHUNK_ROWS}", [after, upper, *params])
        for row in rows:
            event = ledger_event(row, view)
            if event is not None and filters.match(event):
                yield event
        if len(rows) < CHUNK_ROWS:
            return
        after = rows[-1][0]


def stream(store: LedgerQueries, filters: Filters, page: Page, created: datetime,
           batch: int = 500) -> Iterator[str]:
    """The page as an EPCISDocument in JSON text chunks of about ``batch`` events each."""
    def texts() -> Iterator[str]:
        pending: list[str] = []
        for event in page_events(store, filters, page):
            pending.append(_dumps(event))
            if len(pending) >= batch:
                yield ",".join(pending)
                pending = []
        if pending:
            yield ",".join(pending)
    return _document_chunks(texts(), created)


def canonical_filter_uri(text: str) -> str | None:
    """A query's EPC or location as the export writes it; None when it is no URI at all."""
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z", text):
        return None
    key = parse_gs1_uri(text)
    return key.digital_link() if key is not None else text
