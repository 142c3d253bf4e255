"""Writing EPCIS 2.0 JSON-LD: an event read by ``epcisread`` as JSON again, and the
EPCISDocument around a stream of events (the export writes its ledger events into the same
document, ``epcis.stream``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from floorsync.server.epcisread import Event, ObjectEvent, Quantity

CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# Compact, made once (json.dumps with separators makes a new encoder at every call).
ENCODER = json.JSONEncoder(separators=(",", ":"))


def number(value: float) -> float:
    """3.0 as 3: a count reads as one."""
    return int(value) if float(value).is_integer() else value


def time_text(moment: datetime) -> str:
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec)


def offset_text(moment: datetime) -> str:
    """``+01:00``: the UTC offset as eventTimeZoneOffset writes it (whole minutes)."""
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def quantity_json(q: Quantity) -> dict[str, Any]:
    out: dict[str, Any] = {"epcClass": q.epc_class.uri}
    if q.quantity is not None:
        out["quantity"] = number(q.quantity)
    if q.uom is not None:
        out["uom"] = q.uom
    return out


def event_json(event: Event) -> dict[str, Any]:
    """An event as EPCIS 2.0 JSON-LD (for a document's eventList: no ``@context`` of its own),
    identifiers in their canonical form."""
    out: dict[str, Any] = {"type": type(event).__name__}
    if event.event_id is not None:
        out["eventID"] = event.event_id
    out["eventTime"] = time_text(event.event_time)
    out["eventTimeZoneOffset"] = event.time_zone_offset
    if event.record_time is not None:
        out["recordTime"] = time_text(event.record_time)
    if isinstance(event, ObjectEvent):
        if event.epcs or not event.quantities:
            out["epcList"] = [i.uri for i in event.epcs]
        if event.quantities:
            out["quantityList"] = [quantity_json(q) for q in event.quantities]
    else:
        if event.parent is not None:
            out["parentID"] = event.parent.uri
        if event.child_epcs:
            out["childEPCs"] = [i.uri for i in event.child_epcs]
        if event.child_quantities:
            out["childQuantityList"] = [quantity_json(q) for q in event.child_quantities]
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


def document_chunks(event_texts: Iterable[str], created: datetime) -> Iterator[str]:
    """An EPCISDocument as text chunks around ``event_texts`` (each one or more events' JSON,
    comma-separated), so a document of any size is written in flat memory."""
    head = {"@context": [CONTEXT], "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": time_text(created.astimezone(UTC))}
    yield ENCODER.encode(head)[:-1] + ',"epcisBody":{"eventList":['
    first = True
    for text in event_texts:
        if text:
            yield text if first else "," + text
            first = False
    yield "]}}"


def document(events: Iterable[Event], created: datetime) -> dict[str, Any]:
    """A whole EPCISDocument in memory, for small sets of events."""
    text = "".join(document_chunks((ENCODER.encode(event_json(e)) for e in events), created))
    loaded: dict[str, Any] = json.loads(text)
    return loaded
