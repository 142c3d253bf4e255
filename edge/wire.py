"""The floorsync wire contract, version 1: what edges and the central service say to each other.

Standard library only: both sides import it (the edge without FastAPI, the server without the
edge), so the contract cannot drift apart. The README documents it; golden messages under
``tests/wire/golden`` are checked against it from both sides.

Topics::

    floorsync/v1/{site}/{device}/events   edge -> central, QoS 1, a batch of events
    floorsync/v1/{site}/{device}/acks     central -> edge, QoS 1, a result per event id
    floorsync/v1/{site}/{device}/status   edge, retained presence (last will: offline)
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

VERSION = 1
TOPIC_ROOT = "floorsync/v1"

MOVEMENT_TYPES = frozenset(
    {"receive", "putaway", "move", "pick", "pack", "ship", "return", "adjust", "count", "observe"}
)
# Which locations a movement type must name: (needs "from", needs "to").
_NEEDS: dict[str, tuple[bool, bool]] = {
    "receive": (False, True),
    "putaway": (True, True),
    "move": (True, True),
    "pick": (True, False),
    "pack": (True, False),
    "ship": (True, False),
    "return": (False, True),
    "adjust": (False, False),
    "count": (False, False),
    "observe": (False, False),
}
READ_KINDS = frozenset({"barcode", "rfid", "manual"})
RESULT_STATUSES = frozenset({"applied", "duplicate", "rejected", "held"})
# Statuses every v1 edge knows. Newer ones are answered only to a sender that lists them in its
# batch's ``ack_statuses`` (an older edge drops a whole ack with a status it does not know).
BASE_STATUSES = frozenset({"applied", "duplicate", "rejected"})
# Final statuses: the event needs no re-send. ``held``: recorded, its change (or part of it) held
# by a count of a location (late_after_count), not applied; a person resolves it centrally.
SETTLED_STATUSES = frozenset({"applied", "duplicate", "held"})
EDGE_ACK_STATUSES = ("held",)  # what this edge understands beyond BASE_STATUSES
ITEM_FIELDS = ("gtin", "sku", "lot", "serial", "epc", "sscc")
# A movement made against a document: an expected receipt (ASN, purchase order) or an outbound
# order. ``check`` is what the edge found against its own copy of the document, offline too:
# expected; over (more than the document asks for); unexpected (not on it: a wrong item);
# unknown (the edge has no copy of that document: closed, or never reached this edge).
DOC_KINDS = frozenset({"receipt", "order"})
DOC_CHECKS = frozenset({"expected", "over", "unexpected", "unknown"})
IDENTITY_FIELDS = ("sku", "gtin", "sscc", "epc")

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class WireError(ValueError):
    """A message that does not follow the contract; ``str()`` is the reason given back."""


# --- names and topics ---------------------------------------------------------------------


def check_name(value: object, what: str) -> str:
    """Site and device names are single topic levels: no '/', '+', '#', no blanks."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise WireError(f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ - (got {value!r})")
    return value


def events_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_name(site, 'site')}/{check_name(device, 'device')}/events"


def acks_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_name(site, 'site')}/{check_name(device, 'device')}/acks"


def status_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_name(site, 'site')}/{check_name(device, 'device')}/status"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split ``floorsync/v1/{site}/{device}/{kind}`` into (site, device, kind)."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise WireError(f"not a floorsync v1 topic: {topic!r}")
    site, device, kind = parts[2], parts[3], parts[4]
    check_name(site, "site")
    check_name(device, "device")
    if kind not in ("events", "acks", "status"):
        raise WireError(f"unknown topic kind {kind!r}")
    return site, device, kind


# --- ids and times ------------------------------------------------------------------------

_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]  # last millisecond, last 12-bit counter


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids insert in order, and unique within a millisecond.

    The identity of an event is this id, never its timestamp: two reads in the same millisecond
    get two ids (a monotonic counter fills ``rand_a``).
    """
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _uuid7_last[0]:
            ms = _uuid7_last[0]
            counter = _uuid7_last[1] + 1
            if counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                counter = 0
        else:
            counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _uuid7_last[0], _uuid7_last[1] = ms, counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def format_time(moment: datetime) -> str:
    """ISO 8601 with milliseconds and the UTC offset of the place the event happened."""
    if moment.tzinfo is None:
        raise WireError("event times need a UTC offset")
    text = moment.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") and moment.tzinfo is UTC else text


def local_now() -> str:
    """Now, in the host's local time with its offset (event time keeps the site's offset)."""
    return format_time(datetime.now().astimezone())


_EXTENDED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}")
MAX_OFFSET = timedelta(hours=14)


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def parse_time(value: object, what: str) -> datetime:
    """An ISO 8601 / RFC 3339 date-time in the extended form (``YYYY-MM-DDTHH:MM...``) with a
    UTC offset of at most 14 hours (the widest in use). Stricter than ``fromisoformat``, so a
    stored time's text sorts with its instant to within its offset (the ledger relies on it)."""
    if not isinstance(value, str):
        raise WireError(f"{what} must be an ISO 8601 string")
    if not _EXTENDED_TIME.match(value):
        raise WireError(f"{what} is not an ISO 8601 time: {value[:40]!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(f"{what} is not an ISO 8601 time: {value[:40]!r}") from None
    offset = moment.utcoffset()
    if offset is None:
        raise WireError(f"{what} has no UTC offset: {value[:40]!r}")
    if abs(offset) > MAX_OFFSET:
        raise WireError(f"{what} has an offset beyond 14 hours: {value[:40]!r}")
    return moment


# --- the event ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    gtin: str | None = None
    sku: str | None = None
    lot: str | None = None
    serial: str | None = None
    epc: str | None = None
    sscc: str | None = None

    def key(self) -> str | None:
        """The item as stock is kept: SKU, else GTIN, else SSCC, else EPC."""
        return self.sku or self.gtin or self.sscc or self.epc


@dataclass(frozen=True, slots=True)
class SourceRead:
    """The read an event came from, kept for diagnosis: barcode text or tag, and how it was seen."""

    kind: str
    raw: str | None = None
    symbology: str | None = None
    tag: str | None = None
    antenna: int | None = None
    rssi: float | None = None
    reads: int | None = None
    first: str | None = None
    last: str | None = None


@dataclass(frozen=True, slots=True)
class CountLine:
    item: Item
    qty: float


@dataclass(frozen=True, slots=True)
class Count:
    """A count of one location: the full set seen there, not a stream of reads."""

    location: str
    seen: tuple[CountLine, ...] = ()


@dataclass(frozen=True, slots=True)
class DocRef:
    """The document a movement was made against (``DOC_KINDS``), and the edge's check of it."""

    kind: str
    id: str
    check: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    seq: int
    time: str
    type: str
    item: Item | None
    qty: float
    from_: str | None = None
    to: str | None = None
    operator: str | None = None
    read: SourceRead | None = None
    count: Count | None = None
    doc: DocRef | None = None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def item_to_dict(item: Item) -> dict[str, Any]:
    values = (item.gtin, item.sku, item.lot, item.serial, item.epc, item.sscc)
    return {k: v for k, v in zip(ITEM_FIELDS, values, strict=True) if v is not None}


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": event.id,
        "seq": event.seq,
        "time": event.time,
        "type": event.type,
        "item": item_to_dict(event.item) if event.item else None,
        "qty": event.qty,
        "from": event.from_,
        "to": event.to,
        "operator": event.operator,
    }
    if event.read is not None:
        r = event.read
        out["read"] = _drop_none(
            {
                "kind": r.kind,
                "raw": r.raw,
                "symbology": r.symbology,
                "tag": r.tag,
                "antenna": r.antenna,
                "rssi": r.rssi,
                "reads": r.reads,
                "first": r.first,
                "last": r.last,
            }
        )
    if event.count is not None:
        out["count"] = {
            "location": event.count.location,
            "seen": [{"item": item_to_dict(c.item), "qty": c.qty} for c in event.count.seen],
        }
    if event.doc is not None:
        out["doc"] = _drop_none({"kind": event.doc.kind, "id": event.doc.id,
                                 "check": event.doc.check})
    return out


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once: json.dumps
# with options builds a new encoder per call, a third of the cost of a small event


def encode_event(event: Event) -> str:
    """One event as compact JSON; the edge stores exactly this text in its outbox."""
    return _COMPACT.encode(event_to_dict(event))


def is_one_of(value: object, names: frozenset[str]) -> TypeGuard[str]:
    """``value in names`` for any JSON value: a list or object there is no name, not a
    TypeError (unhashable) escaping the decoder."""
    return isinstance(value, str) and value in names


def _opt_str(data: dict[str, Any], key: str, what: str, limit: int = 256) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise WireError(f"{what}.{key} must be a non-empty string of at most {limit} characters")
    if not value.isascii():
        _check_unicode(value, f"{what}.{key}")
    if "\x00" in value:
        raise WireError(f"{what}.{key} contains a NUL character")
    return value


def _check_unicode(value: str, what: str) -> None:
    """JSON can carry lone surrogates (\\ud800) that no database can store as text (nor NUL,
    \\u0000, which PostgreSQL's text cannot hold: refused beside it, as a stored event that one
    engine keeps and the other cannot write would stop the edge's outbox at that event)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise WireError(f"{what} is not valid Unicode text") from None


MAX_QTY = 10**12  # beyond any physical count; also keeps integers inside SQLite's 64 bits
MAX_INT = 2**31 - 1  # antenna numbers, read counts


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{what} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WireError(f"{what} must be finite")
    if abs(value) > MAX_QTY:
        raise WireError(f"{what} must be at most {MAX_QTY} in size")
    return value


def _strings(data: dict[str, Any], keys: Sequence[str], what: str, limit: int = 256
             ) -> list[Any]:
    """Optional strings, in order; the hot path of validation, so a plain loop."""
    out = []
    get = data.get
    for key in keys:
        value = get(key)
        if value is not None and (type(value) is not str or not value or len(value) > limit):
            raise WireError(
                f"{what}.{key} must be a non-empty string of at most {limit} characters"
            )
        if value is not None and not value.isascii():
            _check_unicode(value, f"{what}.{key}")
        if value is not None and "\x00" in value:
            raise WireError(f"{what}.{key} contains a NUL character")
        out.append(value)
    return out


def item_from_dict(data: object, what: str = "item") -> Item:
    if not isinstance(data, dict):
        raise WireError(f"{what} must be an object")
    item = Item(*_strings(data, ITEM_FIELDS, what))
    if item.key() is None:
        raise WireError(f"{what} needs one of sku, gtin, sscc, epc")
    return item


def _read_from_dict(data: object) -> SourceRead:
    if not isinstance(data, dict):
        raise WireError("read must be an object")
    kind = data.get("kind")
    if not is_one_of(kind, READ_KINDS):
        raise WireError(f"read.kind must be one of {sorted(READ_KINDS)}")
    antenna, reads, rssi = data.get("antenna"), data.get("reads"), data.get("rssi")
    for name, value in (("antenna", antenna), ("reads", reads)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT
        ):
            raise WireError(f"read.{name} must be an integer from 0 to {MAX_INT}")
    raw, tag = _strings(data, ("raw", "tag"), "read", limit=4096)
    symbology, first, last = _strings(data, ("symbology", "first", "last"), "read", limit=40)
    return SourceRead(
        kind, raw, symbology, tag, antenna, None if rssi is None else _number(rssi, "read.rssi"),
        reads, first, last,
    )


def _doc_from_dict(data: object) -> DocRef:
    if not isinstance(data, dict):
        raise WireError("doc must be an object")
    kind, check = data.get("kind"), data.get("check")
    if not is_one_of(kind, DOC_KINDS):
        raise WireError(f"doc.kind must be one of {sorted(DOC_KINDS)}")
    if check is not None and not is_one_of(check, DOC_CHECKS):
        raise WireError(f"doc.check must be one of {sorted(DOC_CHECKS)}")
    return DocRef(kind, check_name(data.get("id"), "doc.id"), check)


def _count_from_dict(data: object) -> Count:
    if not isinstance(data, dict):
        raise WireError("count must be an object")
    location = _opt_str(data, "location", "count")
    if location is None:
        raise WireError("count.location is required")
    seen = data.get("seen")
    if not isinstance(seen, list):
        raise WireError("count.seen must be a list")
    lines = []
    for i, line in enumerate(seen):
        if not isinstance(line, dict):
            raise WireError(f"count.seen[{i}] must be an object")
        qty = _number(line.get("qty"), f"count.seen[{i}].qty")
        if qty < 0:
            raise WireError(f"count.seen[{i}].qty must not be negative")
        lines.append(CountLine(item_from_dict(line.get("item"), f"count.seen[{i}].item"), qty))
    return Count(location, tuple(lines))


def event_from_dict(data: object) -> Event:
    """Validate one event; raises WireError with the reason the central service reports."""
    if not isinstance(data, dict):
        raise WireError("event must be an object")
    event_id = data.get("id")
    if not isinstance(event_id, str):
        raise WireError("event id must be a UUID string")
    if not _CANONICAL_UUID.match(event_id):
        raise WireError(f"event id must be a lower-case canonical UUID: {event_id[:40]!r}")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise WireError("seq must be a positive integer below 2**63")
    kind = data.get("type")
    if not is_one_of(kind, MOVEMENT_TYPES):
        raise WireError(f"type must be one of {sorted(MOVEMENT_TYPES)} (got {kind!r})")
    when = data.get("time")
    parse_time(when, "time")
    assert isinstance(when, str)
    src, dst, operator = _strings(data, ("from", "to", "operator"), "event")
    needs_from, needs_to = _NEEDS[kind]
    if needs_from and src is None:
        raise WireError(f"a {kind} needs 'from'")
    if needs_to and dst is None:
        raise WireError(f"a {kind} needs 'to'")
    count = _count_from_dict(data.get("count")) if kind == "count" else None
    if kind == "count":
        item, qty = None, 0.0
    else:
        item = item_from_dict(data.get("item"))
        qty = _number(data.get("qty"), "qty")
        if kind == "adjust":
            if qty == 0:
                raise WireError("an adjust needs a non-zero qty")
            if (src is None) == (dst is None):
                raise WireError("an adjust names exactly one location, in 'to' or 'from'")
        elif qty <= 0:
            raise WireError(f"qty must be positive for a {kind}")
    read, doc = data.get("read"), data.get("doc")
    return Event(
        id=event_id,
        seq=seq,
        time=when,
        type=kind,
        item=item,
        qty=qty,
        from_=src,
        to=dst,
        operator=operator,
        read=None if read is None else _read_from_dict(read),
        count=count,
        doc=None if doc is None else _doc_from_dict(doc),
    )


# --- the fast path: the central service reads a well-formed event at about a third of the cost

def _builder(cls: type) -> Any:
    """A function making a ``cls`` from its fields in order, as its ``__init__`` would, without
    a frozen dataclass's ``object.__setattr__`` a field (each slot's own setter instead)."""
    names = [f.name for f in dataclass_fields(cls)]
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    scope.update({f"set_{n}": getattr(cls, n).__set__ for n in names})
    code = (f"def build({', '.join(names)}):\n    o = new(cls)\n"
            + "".join(f"    set_{n}(o, {n})\n" for n in names) + "    return o\n")
    exec(code, scope)  # our own field names, nothing from outside
    return scope["build"]


_new_event, _new_item, _new_read, _new_doc = (
    _builder(Event), _builder(Item), _builder(SourceRead), _builder(DocRef))
_ITEM_INDEX = {name: i for i, name in enumerate(ITEM_FIELDS)}
_READ_LIMITS = {"raw": 4096, "tag": 4096, "symbology": 40, "first": 40, "last": 40}


def _plain(value: object, limit: int) -> bool:
    """An optional wire string the reference accepts without looking closer: absent, or ASCII
    of 1 to ``limit`` characters without NUL (anything else goes to the reference)."""
    return value is None or (type(value) is str and 0 < len(value) <= limit
                             and value.isascii() and "\x00" not in value)


def _fast_event(data: object, times: set[str]) -> Event | None:
    """``event_from_dict(data)`` for a well-formed event other than a count or an adjust, with
    ASCII strings; None for anything else, which the reference then reads (and rejects with its
    reason, or accepts). Never accepts what the reference rejects; builds an equal Event."""
    if type(data) is not dict:
        return None
    get = data.get
    event_id, seq, kind, when, qty = get("id"), get("seq"), get("type"), get("time"), get("qty")
    if (type(event_id) is not str or not _CANONICAL_UUID.match(event_id)
            or type(seq) is not int or not 1 <= seq < 2**63
            or type(kind) is not str or kind not in _NEEDS or kind == "count" or kind == "adjust"
            or type(when) is not str):
        return None
    if type(qty) is float:
        if not math.isfinite(qty):
            return None
    elif type(qty) is not int:
        return None
    if not 0 < qty <= MAX_QTY:
        return None
    src, dst, operator = get("from"), get("to"), get("operator")
    for value in (src, dst, operator):  # _plain(value, 256), inline: the hot path
        if value is not None and (type(value) is not str or not 0 < len(value) <= 256
                                  or not value.isascii() or "\x00" in value):
            return None
    needs_from, needs_to = _NEEDS[kind]
    if (needs_from and src is None) or (needs_to and dst is None):
        return None
    raw_item = get("item")
    if type(raw_item) is not dict:
        return None
    values: list[Any] = [None] * 6
    for key, value in raw_item.items():
        index = _ITEM_INDEX.get(key)
        if index is not None and value is not None:
            if (type(value) is not str or not 0 < len(value) <= 256 or not value.isascii()
                    or "\x00" in value):  # _plain(value, 256), inline
                return None
            values[index] = value
    if values[1] is None and values[0] is None and values[5] is None and values[4] is None:
        return None  # no sku, gtin, sscc or epc
    read = get("read")
    if read is not None:
        if type(read) is not dict:
            return None
        read_kind = read.get("kind")
        if type(read_kind) is not str or read_kind not in READ_KINDS:
            return None
        for name, value in read.items():
            limit = _READ_LIMITS.get(name)
            if limit is not None and not _plain(value, limit):
                return None
        antenna, reads, rssi = read.get("antenna"), read.get("reads"), read.get("rssi")
        if ((antenna is not None and (type(antenna) is not int or not 0 <= antenna <= MAX_INT))
                or (reads is not None and (type(reads) is not int or not 0 <= reads <= MAX_INT))):
            return None
        if rssi is not None and not (
                (type(rssi) is int or (type(rssi) is float and math.isfinite(rssi)))
                and abs(rssi) <= MAX_QTY):
            return None
        read = _new_read(read_kind, read.get("raw"), read.get("symbology"), read.get("tag"),
                         antenna, rssi, reads, read.get("first"), read.get("last"))
    doc = get("doc")
    if doc is not None:
        if type(doc) is not dict:
            return None
        doc_kind, doc_id, check = doc.get("kind"), doc.get("id"), doc.get("check")
        if (type(doc_kind) is not str or doc_kind not in DOC_KINDS
                or (check is not None and (type(check) is not str or check not in DOC_CHECKS))
                or type(doc_id) is not str or not _NAME.match(doc_id)):
            return None
        doc = _new_doc(doc_kind, doc_id, check)
    if when not in times:
        try:
            parse_time(when, "time")
        except WireError:
            return None
        times.add(when)
    return _new_event(event_id, seq, when, kind, _new_item(*values), qty, src, dst, operator,
                      read, None, doc)


def load_json(payload: bytes | str, what: str) -> Any:
    """``json.loads`` with every way it fails as a WireError: bad JSON, bad UTF-8, and nesting
    deeper than the interpreter's recursion limit (``[[[[...`` raises RecursionError, not
    ValueError; a few kilobytes of it would otherwise escape every decoder below)."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise WireError(f"{what} is not JSON: nested too deep") from None


# --- the batch ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invalid:
    """An event the central service could not read; acked as rejected when its id is known."""

    id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    site: str
    device: str
    sent_at: str
    events: tuple[Event, ...]
    invalid: tuple[Invalid, ...] = field(default=())
    ack_statuses: tuple[str, ...] = ()  # statuses beyond BASE_STATUSES the sender understands

    def understands(self, status: str) -> bool:
        return status in BASE_STATUSES or status in self.ack_statuses


def encode_batch_payloads(
    site: str, device: str, sent_at: str, payloads: Sequence[str],
    ack_statuses: Sequence[str] = EDGE_ACK_STATUSES,
) -> bytes:
    """The edge's fast path: events already encoded (as stored in the outbox) into one batch.

    ``ack_statuses``: the ack statuses beyond applied/duplicate/rejected this sender understands
    (this edge: ``held``); left out when empty, as an older edge sends it.
    """
    head: dict[str, Any] = {"v": VERSION, "site": check_name(site, "site"),
                            "device": check_name(device, "device"), "sent_at": sent_at}
    if ack_statuses:
        head["ack_statuses"] = list(ack_statuses)
    text = json.dumps(head, separators=(",", ":"))
    return (text[:-1] + ',"events":[' + ",".join(payloads) + "]}").encode()


def encode_batch(batch: Batch) -> bytes:
    return encode_batch_payloads(
        batch.site, batch.device, batch.sent_at, [encode_event(e) for e in batch.events],
        batch.ack_statuses,
    )


def decode_batch(payload: bytes | str, *, fast: bool = True) -> Batch:
    """Read a batch; a bad envelope raises WireError, a bad event lands in ``Batch.invalid``.

    One bad event does not sink its neighbours: each event is judged on its own. ``fast``: a
    well-formed event is read by ``_fast_event``, anything else by ``event_from_dict`` (the
    reference, which gives every reason); ``fast=False`` reads every event by the reference.
    The two give equal batches (tests/fuzz/test_wire.py compares them).
    """
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    data = load_json(payload, "payload")
    if not isinstance(data, dict):
        raise WireError("payload must be a JSON object")
    if data.get("v") != VERSION:
        raise WireError(f"unsupported version {data.get('v')!r}; this service speaks v{VERSION}")
    site = check_name(data.get("site"), "site")
    device = check_name(data.get("device"), "device")
    sent_at = data.get("sent_at")
    parse_time(sent_at, "sent_at")
    assert isinstance(sent_at, str)
    statuses = data.get("ack_statuses", [])
    if not isinstance(statuses, list) or not all(isinstance(x, str) for x in statuses):
        raise WireError("ack_statuses must be a list of strings")
    # unknown names are ignored: a newer edge may know statuses this service never sends
    understood = tuple(x for x in statuses if x in RESULT_STATUSES)
    raw_events = data.get("events")
    if not isinstance(raw_events, list):
        raise WireError("events must be a list")
    if len(raw_events) > MAX_EVENTS_PER_BATCH:
        raise WireError(f"{len(raw_events)} events is over the limit of {MAX_EVENTS_PER_BATCH}")
    events: list[Event] = []
    invalid: list[Invalid] = []
    times: set[str] = set()  # event times this batch has already seen pass parse_time
    for raw in raw_events:
        event = _fast_event(raw, times) if fast else None
        if event is not None:
            events.append(event)
            continue
        try:
            events.append(event_from_dict(raw))
        except WireError as exc:
            invalid.append(Invalid(readable_id(raw), str(exc)))
    return Batch(site, device, sent_at, tuple(events), tuple(invalid), understood)


def readable_id(raw: object) -> str | None:
    """The event id of a malformed event, if one can be read, so it can be acked as rejected."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        try:
            uuid.UUID(raw["id"])
        except ValueError:
            return None
        return str(raw["id"])  # as sent: the edge matches the ack by its own spelling
    return None


def salvage_ids(payload: bytes | str) -> list[str]:
    """Event ids from a payload whose envelope was rejected, so each can be acked as rejected."""
    try:
        data = load_json(payload, "payload")
    except WireError:
        return []
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        return []
    return [i for i in (readable_id(e) for e in events[:MAX_EVENTS_PER_BATCH]) if i]


# --- the ack ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    status: str  # applied | duplicate | rejected | held (see RESULT_STATUSES)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    device: str
    results: tuple[Result, ...]


def encode_ack(ack: Ack) -> bytes:
    return json.dumps(
        {
            "v": VERSION,
            "device": ack.device,
            "results": [{"id": r.id, "status": r.status, "reason": r.reason} for r in ack.results],
        },
        separators=(",", ":"),
    ).encode()


def decode_ack(payload: bytes | str) -> Ack:
    """Read an ack. A result with a status this edge does not know is kept as it is (not
    settled, so the event is sent again and answered ``duplicate``); its neighbours still
    count."""
    data = load_json(payload, "ack")
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise WireError("ack must be a v1 object")
    device = check_name(data.get("device"), "device")
    results = data.get("results")
    if not isinstance(results, list):
        raise WireError("ack results must be a list")
    out = []
    for r in results:
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise WireError("each ack result needs an id")
        if not isinstance(r.get("status"), str):
            raise WireError(f"ack status must be a string (got {r.get('status')!r})")
        reason = r.get("reason")
        out.append(Result(r["id"], r["status"], reason if isinstance(reason, str) else None))
    return Ack(device, tuple(out))


# --- presence -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """Retained presence of an edge; the last will says ``offline``.

    ``backlog`` (events not yet confirmed by the central service), ``oldest_unsynced_s`` (age
    in seconds of the oldest of them; null when there are none) and ``last_seq`` are figures
    measured at ``measured_at`` (the edge's clock). A last will is made when the edge connects,
    so it carries the figures of that moment; the central service keeps whichever figures were
    measured last.
    """

    state: str  # online | offline
    at: str
    backlog: int | None = None
    last_seq: int | None = None
    oldest_unsynced_s: float | None = None
    measured_at: str | None = None


def encode_status(status: Status) -> bytes:
    return json.dumps(
        {"v": VERSION, "state": status.state, "at": status.at, "backlog": status.backlog,
         "last_seq": status.last_seq, "oldest_unsynced_s": status.oldest_unsynced_s,
         "measured_at": status.measured_at},
        separators=(",", ":"),
    ).encode()


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def decode_status(payload: bytes | str) -> Status:
    """Read presence; figures that are absent or malformed read as null (an older edge sends
    neither ``oldest_unsynced_s`` nor ``measured_at``: its ``at`` is when it measured)."""
    data = load_json(payload, "status")
    if not isinstance(data, dict) or data.get("state") not in ("online", "offline"):
        raise WireError("status must be an object with state online or offline")
    at = data.get("at")
    oldest, measured = data.get("oldest_unsynced_s"), data.get("measured_at")
    if isinstance(oldest, bool) or not isinstance(oldest, int | float) or not (
            math.isfinite(oldest) and oldest >= 0):
        oldest = None
    if measured is not None:
        try:
            parse_time(measured, "measured_at")
        except WireError:
            measured = None
    return Status(
        state=data["state"],
        at=at if isinstance(at, str) else utc_now(),
        backlog=_count(data.get("backlog")),
        last_seq=_count(data.get("last_seq")),
        oldest_unsynced_s=oldest,
        measured_at=measured,
    )


def results_for(ids: Iterable[str], status: str, reason: str | None = None) -> tuple[Result, ...]:
    return tuple(Result(i, status, reason) for i in ids)
