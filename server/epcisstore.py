"""EPCIS 2.0 events captured whole (``POST /epcis/capture``), and given back by the export.

**Capture.** A document (an ``EPCISDocument``, or the events of an ``EPCISQueryDocument``) is
validated against the GS1 schema with format checks (``epcisread.validate``); every error is
named by its JSON path and nothing is kept (422). Each event is kept as it came: its JSON
(numbers as written, ``1.50`` stays ``1.50``, read as decimals; key order kept) under the
JSON-LD ``@context`` it was read with, so its extension fields (``example:myField``), sensor
data, ilmd, error declaration, certification info and persistent disposition keep their meaning.
Beside it, columns for the export's filters: type, eventTime as a UTC instant, bizStep (a CBV
word, bare), readPoint and bizLocation (canonical Digital Link), and in ``epcis_event_epcs`` the
EPCs MATCH_anyEPC looks in (epcList, childEPCs, inputEPCList, outputEPCList, parentID), all in
one identifier form (``gs1.canonical_uri``), so a filter finds an event whichever form of a key
either used. A document is one transaction.

**Idempotent by eventID.** The same event again (the same JSON under the same context, its
recordTime aside) changes nothing; other content under a kept eventID is refused (409) and so
is the whole document. The exception is EPCIS's own correction: an event with an
``errorDeclaration``, and otherwise the content of the event it declares erroneous, under that
event's eventID (EPCIS 2.0 §7.4.1.6), is kept beside it (the key is eventID and whether it
declares an error); a declaration that does not repeat its event is a 409. An event without an
eventID is its own content: the same content again is the same event.

**recordTime** is ours, as EPCIS says (the capture interface ignores a sender's; it is kept in
``sent_record_time``): the moment of capture, on the clock the ledger stamps its events with,
so ``GE_recordTime`` polls both alike.

**Export.** An event is written back as stored, with ``recordTime`` and, when its document
declared more than the EPCIS context (or the event a context of its own), an event-level
``@context`` with those definitions, so events of documents that bind one prefix differently
share an export document without changing meaning. Identifiers stay as the sender wrote them
(the export's ``identifiers=`` choice is for the events written from movements).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _q
from typing import TYPE_CHECKING, Any, Protocol

from floorsync.server import epcisread
from floorsync.server.epcisjson import CONTEXT
from floorsync.server.gs1 import canonical_uri

if TYPE_CHECKING:
    from floorsync.server.ledger import Store
    from floorsync.server.queries import LedgerQueries



class Filters(Protocol):
    """What of the query's filters (``epcis.Filters``) decides which captured events match;
    named here so this module stays below ``epcis``, which reads it."""

    @property
    def ge_event_time(self) -> datetime | None: ...
    @property
    def lt_event_time(self) -> datetime | None: ...
    @property
    def ge_record_time(self) -> datetime | None: ...
    @property
    def lt_record_time(self) -> datetime | None: ...
    @property
    def event_types(self) -> frozenset[str] | None: ...
    @property
    def biz_steps(self) -> frozenset[str] | None: ...
    @property
    def biz_locations(self) -> frozenset[str] | None: ...
    @property
    def read_points(self) -> frozenset[str] | None: ...
    @property
    def epcs(self) -> frozenset[str] | None: ...


DOCUMENT_TYPES = ("EPCISDocument", "EPCISQueryDocument")
MAX_LISTED = 1000  # errors named in one answer; ``total`` counts them all
CHUNK_ROWS = 2000
LOOKUP_CHUNK = 500
# What MATCH_anyEPC looks in (EPCIS 2.0 §8.2.7.1), besides parentID.
EPC_LISTS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")
_NOT_KEPT = ("recordTime", "@context")  # written anew at export
COLUMNS = ("id, capture_id, ident, declared, digest, core_digest, type, event_time, recorded_at,"
           " biz_step, read_point, biz_location, context, body, sent_record_time")


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad place of a document: its JSON path (``$.epcisBody.eventList[3].eventTime``)
    and why."""

    path: str
    reason: str


class CaptureRejected(Exception):
    """A document not kept, nothing of it: ``status`` 422 (not valid) or 409 (an eventID kept
    with other content); ``errors`` names each bad place (up to ``MAX_LISTED``)."""

    def __init__(self, status: int, title: str, errors: Sequence[Problem]) -> None:
        self.status = status
        self.title = title
        self.total = len(errors)
        self.errors = tuple(errors[:MAX_LISTED])
        first = "; ".join(f"{e.path}: {e.reason}" for e in self.errors[:3])
        more = f" (+{self.total - 3} more)" if self.total > 3 else ""
        super().__init__(f"{title}: {first}{more}")
        self.detail = first + more


@dataclass(frozen=True, slots=True)
class Prepared:
    """One event of a document as it is kept: its key, content digests, filter columns, and
    its JSON text (``body``: without recordTime and @context, both written anew at export)."""

    path: str
    ident: str  # the eventID, or "#" + digest for an event without one
    declared: int  # 1: it carries an errorDeclaration
    digest: str  # sha-256 of its content (context included, recordTime not), canonical JSON
    core_digest: str  # the same without the errorDeclaration: the event it declares erroneous
    type: str
    event_time: str  # UTC, microseconds: text order is time order
    biz_step: str | None
    read_point: str | None
    biz_location: str | None
    context: str | None  # the event-level @context the export writes (JSON), None: none
    body: str
    sent_record_time: str | None
    epcs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Captured:
    """What a capture did: ``captured`` events kept anew, ``unchanged`` ones already kept as
    they are; ``capture_id`` None when nothing was new (then nothing was written)."""

    capture_id: int | None
    events: int
    captured: int
    unchanged: int
    recorded_at: str | None


# --- JSON as written --------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def text(value: Any, *, sort: bool = False) -> str:
    """Compact JSON of a value read with decimals (``loads``): every number as it was written,
    every string ASCII-escaped (a lone surrogate stays an escape, storable on both engines)."""
    if isinstance(value, str):
        return _q(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):  # not from ``loads``; kept exact as Python writes floats
        return float.__repr__(value)
    if isinstance(value, list):
        return "[" + ",".join(text(v, sort=sort) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items()) if sort else value.items()
        return "{" + ",".join(_q(k) + ":" + text(v, sort=sort) for k, v in items) + "}"
    raise TypeError(f"not JSON data: {type(value).__name__}")


def loads(body: bytes | str) -> Any:
    """JSON with its numbers as ``Decimal`` (exact) and no NaN or Infinity."""
    return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)


# --- reading a document -----------------------------------------------------------------


def instant(value: str) -> str:
    """An RFC 3339 time as a UTC instant to the microsecond (digits beyond are dropped),
    written so that text order is time order; ValueError when it is none."""
    match = _TIME.match(value)
    if match is None:
        raise ValueError(f"{value[:60]!r} is not an RFC 3339 date-time")
    day, clock, fraction, offset = match.groups()
    moment = datetime.fromisoformat(
        f"{day}T{clock}{(fraction or '')[:7]}{'+00:00' if offset in 'Zz' else offset}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _as_list(context: Any) -> list[Any]:
    return list(context) if isinstance(context, list) else [context]


def event_context(document_context: Any, own: Any) -> list[Any]:
    """The event-level @context an export of the event needs: the document's definitions
    beyond the EPCIS context, then the event's own, each once (its last place kept: applying a
    context again overrides what came between it and its first place anyway)."""
    found = [c for c in _as_list(document_context) if c != CONTEXT]
    if own is not None:
        found += _as_list(own)
    keyed = [(text(c, sort=True), c) for c in found]
    last = {key: n for n, (key, _) in enumerate(keyed)}
    return [c for n, (key, c) in enumerate(keyed) if last[key] == n]


def _digest(context: list[Any], event: Mapping[str, Any], *leave_out: str) -> str:
    content = {k: v for k, v in event.items() if k not in _NOT_KEPT and k not in leave_out}
    canonical = text({"@context": context, "event": content}, sort=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return canonical_uri(value["id"])
    return None


def _storable(value: str | None) -> bool:
    """Whether a column value encodes as UTF-8 (a lone surrogate from a JSON escape does
    not; the body keeps it escaped, an index column could not)."""
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prepare_event(path: str, event: Mapping[str, Any], document_context: Any) -> Prepared:
    """One event (read by ``loads``, schema-valid) as it is kept; ValueError naming the field
    when a value the schema lets through cannot be kept."""
    context = event_context(document_context, event.get("@context"))
    ident = event.get("eventID")
    digest = _digest(context, event)
    try:
        event_time = instant(event["eventTime"])
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{path}.eventTime: {exc}") from None
    step = epcisread.cbv_word("bizStep", event.get("bizStep"))
    epcs: dict[str, None] = {}
    for name in EPC_LISTS:
        for value in event.get(name) or ():
            epcs[canonical_uri(value)] = None
    if isinstance(event.get("parentID"), str):
        epcs[canonical_uri(event["parentID"])] = None
    prepared = Prepared(
        path=path,
        ident=ident if isinstance(ident, str) else "#" + digest,
        declared=1 if "errorDeclaration" in event else 0,
        digest=digest,
        core_digest=_digest(context, event, "errorDeclaration"),
        type=str(event["type"]),
        event_time=event_time,
        biz_step=step,
        read_point=_id_of(event.get("readPoint")),
        biz_location=_id_of(event.get("bizLocation")),
        context=text(context) if context else None,
        body=text({k: v for k, v in event.items() if k not in _NOT_KEPT}),
        sent_record_time=event.get("recordTime"),
        epcs=tuple(epcs),
    )
    for name in ("ident", "type", "biz_step", "read_point", "biz_location", "sent_record_time"):
        if not _storable(getattr(prepared, name)):
            raise ValueError(f"{path}: {name} holds a lone surrogate (not Unicode text)")
    if not all(map(_storable, prepared.epcs)):
        raise ValueError(f"{path}: an EPC holds a lone surrogate (not Unicode text)")
    return prepared


def _schema_problem(found: str) -> Problem:
    path, _, message = found.partition(": ")
    return Problem("$" if path == "(document)" else f"$.{path}", message)


def prepare(body: bytes | str) -> tuple[Any, list[Prepared]]:
    """A capture request's body as (the document read exactly, its events as kept); raises
    ``CaptureRejected`` (422) with every problem."""
    try:
        document = json.loads(body, parse_constant=_no_constant)
        exact = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CaptureRejected(422, "invalid EPCIS document",
                              [Problem("$", f"not JSON: {exc}")]) from None
    except RecursionError:
        raise CaptureRejected(422, "invalid EPCIS document",
                              [Problem("$", "nested too deeply")]) from None
    try:
        errors = epcisread.validate(document)
    except RecursionError:
        errors = ["(document): nested too deeply"]
    if not errors and (not isinstance(document, Mapping)
                       or document.get("type") not in DOCUMENT_TYPES):
        errors = ["type: not an EPCISDocument or EPCISQueryDocument"]
    if errors:
        raise CaptureRejected(422, "invalid EPCIS document", [_schema_problem(e) for e in errors])
    where, events = epcisread.event_list(exact)
    prepared: list[Prepared] = []
    problems: list[Problem] = []
    for n, event in enumerate(events):
        path = f"$.{where}[{n}]"
        try:
            prepared.append(prepare_event(path, event, exact.get("@context")))
        except ValueError as exc:
            found, _, reason = str(exc).partition(": ")
            problems.append(Problem(found, reason))
        except RecursionError:
            problems.append(Problem(path, "nested too deeply"))
    if problems:
        raise CaptureRejected(422, "invalid EPCIS document", problems)
    return exact, prepared


def header_text(document: Mapping[str, Any]) -> str:
    """The document without its events (context, id, sender, epcisHeader, ...), as kept."""
    out = dict(document)
    body = dict(out.get("epcisBody") or {})
    if document.get("type") == "EPCISQueryDocument":
        results = dict(body.get("queryResults") or {})
        results["resultsBody"] = {k: v for k, v in (results.get("resultsBody") or {}).items()
                                  if k != "eventList"}
        body["queryResults"] = results
    else:
        body.pop("eventList", None)
    out["epcisBody"] = body
    return text(out)


# --- keeping them -----------------------------------------------------------------------

_INSERT = ("INSERT INTO epcis_events (id, capture_id, ident, declared, digest, core_digest, type,"
           " event_time, recorded_at, biz_step, read_point, biz_location, context, body,"
           " sent_record_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _conflict(event: Prepared, declared_other: bool) -> Problem:
    if declared_other:
        return Problem(event.path, f"eventID {event.ident[:200]!r}: an error declaration must"
                       " repeat the event it declares erroneous, and this one does not match"
                       " the event kept under it")
    return Problem(event.path, f"eventID {event.ident[:200]!r} was captured with other content;"
                   " an event is not changed under its eventID (declare it erroneous instead)")


def capture(store: Store, document: Mapping[str, Any], events: Sequence[Prepared],
            by: str | None = None) -> Captured:
    """Keep the document's events in one transaction (see the module's doc); raises
    ``CaptureRejected`` (409) naming every event whose eventID is kept with other content."""
    with store._transaction() as cur:
        kept: dict[tuple[str, int], tuple[str, str]] = {}
        idents = sorted({e.ident for e in events})
        for start in range(0, len(idents), LOOKUP_CHUNK):
            chunk = idents[start:start + LOOKUP_CHUNK]
            for ident, declared, digest, core in cur.execute(
                    "SELECT ident, declared, digest, core_digest FROM epcis_events"
                    f" WHERE ident IN ({', '.join('?' * len(chunk))})", chunk).fetchall():
                kept[(ident, int(declared))] = (digest, core)
        new: list[Prepared] = []
        conflicts: list[Problem] = []
        unchanged = 0
        for event in events:
            same = kept.get((event.ident, event.declared))
            if same is not None:
                if same[0] == event.digest:
                    unchanged += 1
                else:
                    conflicts.append(_conflict(event, False))
                continue
            other = kept.get((event.ident, 1 - event.declared))
            if other is not None and other[1] != event.core_digest:
                conflicts.append(_conflict(event, True))
                continue
            kept[(event.ident, event.declared)] = (event.digest, event.core_digest)
            new.append(event)
        if conflicts:
            raise CaptureRejected(409, "event exists", conflicts)
        if not new:
            return Captured(None, len(events), 0, unchanged, None)
        recorded = store._arrivals.next()
        (capture_id,) = cur.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM epcis_captures").fetchone()
        (top,) = cur.execute("SELECT COALESCE(MAX(id), 0) FROM epcis_events").fetchone()
        cur.execute("INSERT INTO epcis_captures (id, captured_at, captured_by, document, events)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (capture_id, recorded, by, header_text(document), len(new)))
        cur.executemany(_INSERT, [
            (top + n, capture_id, e.ident, e.declared, e.digest, e.core_digest, e.type,
             e.event_time, recorded, e.biz_step, e.read_point, e.biz_location, e.context,
             e.body, e.sent_record_time)
            for n, e in enumerate(new, start=1)])
        cur.executemany("INSERT INTO epcis_event_epcs (uri, event_row) VALUES (?, ?)",
                        [(uri, top + n) for n, e in enumerate(new, start=1) for uri in e.epcs])
    return Captured(int(capture_id), len(events), len(new), unchanged, recorded)


# --- the export's side ------------------------------------------------------------------


def sql(filters: Filters) -> tuple[str, list[Any]]:
    """The filters as a WHERE clause on ``epcis_events``: all of them (the columns hold what
    they judge), so a page of captured events is never short."""
    clauses: list[str] = []
    params: list[Any] = []

    def among(column: str, values: frozenset[str] | None) -> None:
        if values is not None:
            ordered = sorted(values)
            clauses.append(f"{column} IN ({', '.join('?' * len(ordered)) or 'NULL'})")
            params.extend(ordered)

    among("type", filters.event_types)
    among("biz_step", filters.biz_steps)
    among("biz_location", filters.biz_locations)
    among("read_point", filters.read_points)
    if filters.epcs is not None:
        ordered = sorted(filters.epcs)
        clauses.append("id IN (SELECT event_row FROM epcis_event_epcs WHERE uri IN"
                       f" ({', '.join('?' * len(ordered)) or 'NULL'}))")
        params.extend(ordered)
    for column, bound, op in (
            ("event_time", filters.ge_event_time, ">="), ("event_time", filters.lt_event_time, "<"),
            ("recorded_at", filters.ge_record_time, ">="),
            ("recorded_at", filters.lt_record_time, "<")):
        if bound is not None:
            clauses.append(f"{column} {op} ?")
            params.append(bound.astimezone(UTC).isoformat(timespec="microseconds"))
    return " AND ".join(clauses) or "1 = 1", params


def first_after(store: LedgerQueries, filters: Filters, after: int, offset: int = 0
                ) -> list[int]:
    """Ids of the captured events passing the filters past ``after``: the ``offset``-th (0:
    the first) and the one after it, as many as there are."""
    where, params = sql(filters)
    return [r[0] for r in store._query(
        f"SELECT id FROM epcis_events WHERE id > ? AND {where} ORDER BY id LIMIT 2 OFFSET ?",
        [after, *params, offset])]


def top(store: LedgerQueries) -> int:
    (found,) = store._query("SELECT COALESCE(MAX(id), 0) FROM epcis_events")[0]
    return int(found)


def written(row: Sequence[Any]) -> str:
    """A stored event as the export writes it: with our recordTime and its @context."""
    recorded, context, body = row
    head = '{"@context":' + context + "," if context else "{"
    return head + '"recordTime":' + _q(recorded) + "," + body[1:]


def texts(store: LedgerQueries, filters: Filters, after: int, last: int) -> Iterator[str]:
    """The captured events ``after`` < id <= ``last`` passing the filters, as written, in
    capture order, ``CHUNK_ROWS`` at a time."""
    where, params = sql(filters)
    while after < last:
        rows = store._query(
            f"SELECT id, recorded_at, context, body FROM epcis_events WHERE id > ? AND id <= ?"
            f" AND {where} ORDER BY id LIMIT {CHUNK_ROWS}", [after, last, *params])
        for row in rows:
            yield written(row[1:])
        if len(rows) < CHUNK_ROWS:
            return
        after = rows[-1][0]
