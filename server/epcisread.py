"""Reading EPCIS 2.0 JSON-LD: validation against the GS1 schema, and the events we use.

``validate`` checks a document against ``standards/EPCIS-JSON-Schema.json`` (draft 7, with
format checks) and names each error by its JSON path. ``read`` turns the ObjectEvents and
AggregationEvents of a valid document (an ``EPCISDocument`` or an ``EPCISQueryDocument``) into
frozen dataclasses. Identifiers arrive as EPC URIs or GS1 Digital Link URIs; both are read into
one form (``Identifier``: the canonical Digital Link and the ``GS1Key``), so a supplier's URNs
and our own Digital Links compare equal. CBV words arrive bare (``receiving``) or as URIs
(``https://ref.gs1.org/cbv/BizStep-receiving``, ``urn:epcglobal:cbv:bizstep:receiving``); they
are kept bare. What an event says beyond these fields (sensor data, ilmd, extensions, error
declarations, persistent dispositions) is not read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from floorsync.server.gs1 import GS1Key, canonical_uri, parse_gs1_uri

# A CBV 2.0 word in any of the forms EPCIS 2.0 allows: the bare word (JSON-LD), the Web
# vocabulary URI, or the EPCIS 1.x URN. Group 2 is the word.
_CBV_FORMS = {
    "bizStep": re.compile(r"(https?://(?:ref\.gs1\.org/cbv|ns\.gs1\.org/cbv|gs1\.org/voc)/"
                          r"BizStep-|urn:epcglobal:cbv:bizstep:)?([a-z_]+)\Z", re.IGNORECASE),
    "disposition": re.compile(r"(https?://(?:ref\.gs1\.org/cbv|ns\.gs1\.org/cbv|gs1\.org/voc)/"
                              r"Disp-|urn:epcglobal:cbv:disp:)?([a-z_]+)\Z", re.IGNORECASE),
    "btt": re.compile(r"(https?://(?:ref\.gs1\.org/cbv|ns\.gs1\.org/cbv|gs1\.org/voc)/"
                      r"BTT-|urn:epcglobal:cbv:btt:)?([a-z_]+)\Z", re.IGNORECASE),
    "sdt": re.compile(r"(https?://(?:ref\.gs1\.org/cbv|ns\.gs1\.org/cbv|gs1\.org/voc)/"
                      r"SDT-|urn:epcglobal:cbv:sdt:)?([a-z_]+)\Z", re.IGNORECASE),
}
READ_TYPES = ("ObjectEvent", "AggregationEvent")


class InvalidEPCIS(ValueError):
    """A document that fails the schema (or that we cannot read); ``errors`` names each
    problem by its JSON path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)"
                                                  if len(errors) > 5 else ""))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Identifier:
    """An EPC, class, location or parent as one form: ``uri`` is the canonical GS1 Digital
    Link when ``key`` is a GS1 key we read, else the URI as the document gave it."""

    uri: str
    key: GS1Key | None

    @classmethod
    def of(cls, text: str) -> Identifier:
        key = parse_gs1_uri(text)
        return cls(key.digital_link() if key is not None else text, key)


@dataclass(frozen=True, slots=True)
class Quantity:
    """A quantityList / childQuantityList element: ``quantity`` None means unspecified;
    ``uom`` None means a count of instances (each)."""

    epc_class: Identifier
    quantity: float | None = None
    uom: str | None = None


@dataclass(frozen=True, slots=True)
class BizTransaction:
    id: str
    type: str | None = None  # a bare CBV word (po, desadv, ...) or another URI


@dataclass(frozen=True, slots=True)
class SourceDestination:
    type: str  # owning_party, possessing_party, location, or another URI
    id: Identifier


@dataclass(frozen=True, slots=True)
class EventBase:
    event_id: str | None
    event_time: datetime  # timezone-aware: equality compares instants
    time_zone_offset: str  # "+01:00", as recorded where the event happened
    action: str
    record_time: datetime | None = None  # when the repository recorded it (not its meaning)
    biz_step: str | None = None
    disposition: str | None = None
    read_point: Identifier | None = None
    biz_location: Identifier | None = None
    biz_transactions: tuple[BizTransaction, ...] = ()
    sources: tuple[SourceDestination, ...] = ()
    destinations: tuple[SourceDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectEvent(EventBase):
    epcs: tuple[Identifier, ...] = ()
    quantities: tuple[Quantity, ...] = ()


@dataclass(frozen=True, slots=True)
class AggregationEvent(EventBase):
    """Children packed on (ADD), seen on (OBSERVE) or taken off (DELETE) a parent, e.g. the
    cases on an SSCC pallet of a supplier's despatch advice."""

    parent: Identifier | None = None
    child_epcs: tuple[Identifier, ...] = ()
    child_quantities: tuple[Quantity, ...] = ()


Event = ObjectEvent | AggregationEvent


@dataclass(frozen=True, slots=True)
class Skipped:
    """An event of a type we do not read, where it was (a JSON path) and its type."""

    path: str
    type: str


@dataclass(frozen=True, slots=True)
class EPCISRead:
    events: tuple[Event, ...]
    skipped: tuple[Skipped, ...] = ()

    def aggregations(self) -> list[AggregationEvent]:
        return [e for e in self.events if isinstance(e, AggregationEvent)]


# --- validation ---------------------------------------------------------------------------


def vocabulary(definition: str) -> frozenset[str]:
    """The CBV words the schema lists for ``definition`` (bizStep, disposition, ...)."""
    words: set[str] = set()
    for branch in schema()["definitions"][definition].get("anyOf", []):
        words.update(branch.get("enum", []))
    return frozenset(words)


@cache
def schema() -> dict[str, Any]:
    text = resources.files("floorsync.server").joinpath("standards/EPCIS-JSON-Schema.json")
    loaded: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return loaded


@cache
def validator() -> Draft7Validator:
    """The GS1 schema's validator, with format checks (date-time, uri: the server extra
    installs the checkers jsonschema needs for them)."""
    return Draft7Validator(schema(), format_checker=FormatChecker())


def json_path(parts: Iterator[Any] | Any) -> str:
    """``epcisBody.eventList[0].parentID`` from a jsonschema path."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _message(error: ValidationError) -> str:
    return f"{json_path(error.absolute_path)}: {error.message}"


def validate(document: object) -> list[str]:
    """Every schema error of ``document`` as ``path: message``; empty when it is valid. An
    ``anyOf``/``oneOf`` failure is named by its most relevant branch error."""
    found: list[str] = []
    for error in validator().iter_errors(document):
        best = best_match([error]) or error
        text = _message(best)
        if text not in found:
            found.append(text)
    return sorted(found)


# --- reading ------------------------------------------------------------------------------


def cbv_word(kind: str, value: object) -> str | None:
    """A CBV value of ``kind`` (bizStep, disposition, btt, sdt) in its bare JSON-LD form; any
    other URI unchanged."""
    if not isinstance(value, str):
        return None
    match = _CBV_FORMS[kind].match(value)
    return match.group(2).lower() if match else value


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _ids(values: object) -> tuple[Identifier, ...]:
    return tuple(Identifier.of(v) for v in values) if isinstance(values, list) else ()


def _place(value: object) -> Identifier | None:
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return Identifier.of(value["id"])
    return None


def _quantities(values: object) -> tuple[Quantity, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(
        Quantity(Identifier.of(q["epcClass"]),
                 float(q["quantity"]) if q.get("quantity") is not None else None,
                 q.get("uom"))
        for q in values
    )


def _transactions(values: object) -> tuple[BizTransaction, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(BizTransaction(canonical_uri(t["bizTransaction"]), cbv_word("btt", t.get("type")))
                 for t in values)


def _source_dest(values: object) -> tuple[SourceDestination, ...]:
    if not isinstance(values, list):
        return ()
    key = "source" if values and "source" in values[0] else "destination"
    return tuple(SourceDestination(cbv_word("sdt", v["type"]) or v["type"], Identifier.of(v[key]))
                 for v in values)


def read_event(event: Mapping[str, Any]) -> Event | None:
    """One event of a valid document as ours; None for a type we do not read."""
    kind = event.get("type")
    if kind not in READ_TYPES:
        return None
    common: dict[str, Any] = {
        "event_id": event.get("eventID"),
        "event_time": _time(event["eventTime"]),
        "time_zone_offset": event["eventTimeZoneOffset"],
        "action": event["action"],
        "record_time": _time(event["recordTime"]) if "recordTime" in event else None,
        "biz_step": cbv_word("bizStep", event.get("bizStep")),
        "disposition": cbv_word("disposition", event.get("disposition")),
        "read_point": _place(event.get("readPoint")),
        "biz_location": _place(event.get("bizLocation")),
        "biz_transactions": _transactions(event.get("bizTransactionList")),
        "sources": _source_dest(event.get("sourceList")),
        "destinations": _source_dest(event.get("destinationList")),
    }
    if kind == "ObjectEvent":
        return ObjectEvent(**common, epcs=_ids(event.get("epcList")),
                           quantities=_quantities(event.get("quantityList")))
    parent = event.get("parentID")
    return AggregationEvent(
        **common,
        parent=Identifier.of(parent) if isinstance(parent, str) else None,
        child_epcs=_ids(event.get("childEPCs")),
        child_quantities=_quantities(event.get("childQuantityList")),
    )


def event_list(document: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The document's events and their JSON path (a query document keeps them deeper)."""
    body = document.get("epcisBody", {})
    if document.get("type") == "EPCISQueryDocument":
        return ("epcisBody.queryResults.resultsBody.eventList",
                body.get("queryResults", {}).get("resultsBody", {}).get("eventList", []))
    return "epcisBody.eventList", body.get("eventList", [])


def read(document: object) -> EPCISRead:
    """The ObjectEvents and AggregationEvents of an EPCIS document, validated first (raises
    ``InvalidEPCIS`` with every error); events of other types are listed as skipped."""
    errors = validate(document)
    if not errors and not (isinstance(document, Mapping)
                           and document.get("type") in ("EPCISDocument", "EPCISQueryDocument")):
        errors = ["type: not an EPCISDocument or EPCISQueryDocument"]
    if errors:
        raise InvalidEPCIS(errors)
    assert isinstance(document, Mapping)
    path, items = event_list(document)
    events: list[Event] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(items):
        try:
            event = read_event(item)
        except ValueError as exc:  # an eventTime the format check let through
            raise InvalidEPCIS([f"{path}[{i}]: {exc}"]) from exc
        if event is None:
            skipped.append(Skipped(f"{path}[{i}]", str(item.get("type"))))
        else:
            events.append(event)
    return EPCISRead(tuple(events), tuple(skipped))
