"""The wire decoder (edge/wire.py: batches, acks, presence, topics; edge/expected.py: the
documents' expected lists) on any bytes, any JSON, and valid messages.

Boundary: the decoders raise only `WireError`, with a non-empty reason; a bad event inside a
good batch lands in `Batch.invalid` with its reason; `salvage_ids` never raises. Round trips:
`decode_batch(encode_batch(b))`, `decode_ack(encode_ack(a))`, `decode_status(encode_status(s))`
and `decode_expected(encode_expected(d))` give back what was encoded.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.edge import expected, wire

NESTED = b"[" * 5000  # regression: RecursionError escaped every decoder (now WireError)
# regression: a list where a name belongs ("type": [], read.kind, doc.kind, doc.check) raised
# TypeError (unhashable) out of decode_batch; now the event is invalid, with its reason
EVENT_TYPE_LIST = (b'{"v":1,"site":"a","device":"b","sent_at":"2026-01-02T03:04:05Z","events":'
                   b'[{"id":"0190a0b0-0000-7000-8000-000000000000","seq":1,'
                   b'"time":"2026-01-02T03:04:05Z","type":[],"item":{"sku":"x"},"qty":1}]}')
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Any text the wire carries: no lone surrogates, no NUL (refused with their reasons:
# tests/wire/golden/bad/events.json).
texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1,
                max_size=40)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.builds(
    lambda moment, tz: wire.format_time(moment.replace(tzinfo=tz)),
    st.datetimes(datetime(1000, 1, 2), datetime(9999, 12, 30)), offsets,
)
quantities = st.one_of(st.integers(1, wire.MAX_QTY),
                       st.floats(1e-9, wire.MAX_QTY, allow_nan=False, allow_infinity=False))
items = st.builds(wire.Item, gtin=st.none() | texts, sku=texts, lot=st.none() | texts,
                  serial=st.none() | texts, epc=st.none() | texts, sscc=st.none() | texts)
reads = st.builds(
    wire.SourceRead, kind=st.sampled_from(sorted(wire.READ_KINDS)), raw=st.none() | texts,
    symbology=st.none() | st.sampled_from(["]C1", "]d2"]), tag=st.none() | texts,
    antenna=st.none() | st.integers(0, wire.MAX_INT), rssi=st.none() | st.floats(-100, 0),
    reads=st.none() | st.integers(0, wire.MAX_INT), first=st.none() | times,
    last=st.none() | times)
docs = st.builds(wire.DocRef, kind=st.sampled_from(sorted(wire.DOC_KINDS)), id=names,
                 check=st.none() | st.sampled_from(sorted(wire.DOC_CHECKS)))


@st.composite
def events(draw: st.DrawFn) -> wire.Event:
    kind = draw(st.sampled_from(sorted(wire.MOVEMENT_TYPES)))
    needs_from, needs_to = {"receive": (0, 1), "putaway": (1, 1), "move": (1, 1), "pick": (1, 0),
                            "pack": (1, 0), "ship": (1, 0), "return": (0, 1)}.get(kind, (0, 0))
    src = draw(texts) if needs_from or draw(st.booleans()) else None
    dst = draw(texts) if needs_to or draw(st.booleans()) else None
    qty: float = draw(quantities)
    item: wire.Item | None = draw(items)
    count = None
    if kind == "adjust":
        if (src is None) == (dst is None):
            src, dst = (None, dst or draw(texts))
        qty = qty * draw(st.sampled_from([1, -1]))
    if kind == "count":
        item, qty = None, 0
        count = wire.Count(draw(texts), tuple(draw(st.lists(st.builds(
            wire.CountLine, items, st.integers(0, 10**6)), max_size=3))))
    return wire.Event(
        id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        seq=draw(st.integers(1, 2**63 - 1)), time=draw(times), type=kind, item=item, qty=qty,
        from_=src, to=dst,
        operator=draw(st.none() | texts), read=draw(st.none() | reads), count=count,
        doc=draw(st.none() | docs))


batches = st.builds(wire.Batch, site=names, device=names, sent_at=times,
                    events=st.lists(events(), max_size=4).map(tuple),
                    ack_statuses=st.sampled_from([(), ("held",)]))


@given(batches)
def test_batch_round_trip(batch: wire.Batch) -> None:
    assert wire.decode_batch(wire.encode_batch(batch)) == batch
    assert wire.salvage_ids(wire.encode_batch(batch)) == [e.id for e in batch.events]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                    st.text(max_size=20), names, times)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=10)


KEYS = ["v", "site", "device", "sent_at", "events", "ack_statuses", "id", "seq", "time", "type",
        "item", "qty", "from", "to", "read", "count", "doc", "seen", "kind", "antenna", "gtin",
        "location", "check", "rssi", "version", "lines", "pallets", "labels", "sscc", "epcs"]


def nodes(value: object) -> list[dict]:
    """Every JSON object in ``value``, outermost first."""
    out: list[dict] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def mangle(data: object, draw: st.DrawFn) -> object:
    """``data`` with one value (at any depth, an existing key or a known one) replaced, or
    removed."""
    objects = nodes(data)
    if not objects:
        return data
    node = draw(st.sampled_from(objects))
    key = draw(st.sampled_from(sorted(set(node) | set(KEYS))))
    if draw(st.integers(0, 5)) == 0:
        node.pop(key, None)
    else:
        node[key] = draw(json_values)
    return data


def judged(payload: bytes) -> None:
    try:
        batch = wire.decode_batch(payload)
    except wire.WireError as exc:
        assert str(exc).strip()
        assert all(isinstance(i, str) for i in wire.salvage_ids(payload))
        return
    assert wire.decode_batch(payload, fast=False) == batch  # the reference reads it alike
    for bad in batch.invalid:
        assert bad.reason.strip()
    for event in batch.events:  # what was accepted encodes again, and reads the same
        assert wire.event_from_dict(json.loads(wire.encode_event(event))) == event


@given(batches.filter(lambda b: b.events), st.data())
@example(wire.decode_batch(EVENT_TYPE_LIST.replace(b"[]", b'"observe"')), None)
def test_mangled_batches_are_judged_with_reasons(batch: wire.Batch, data: st.DataObject | None
                                                 ) -> None:
    if data is None:  # the regression: the original message, not a mangled one
        judged(EVENT_TYPE_LIST)
        return
    message = json.loads(wire.encode_batch(batch))
    for _ in range(data.draw(st.integers(1, 3))):
        message = mangle(message, data.draw)
    judged(json.dumps(message).encode())


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
@example(NESTED)
@example(b'{"v":1,"site":"a","device":"b","sent_at":"2026-01-02T03:04:05Z","events":[' + NESTED)
@example(b'{"v":1,"site":"a","device":"b","sent_at":"2026-01-02T03:04:05Z","events":'
         b'[{"id":"\\ud800"}]}')
def test_any_bytes_are_judged_with_reasons(payload: bytes) -> None:
    judged(payload)


# Values at the edges of what the fast path takes (wire._fast_event): it must leave each to the
# reference, or read it exactly as the reference does.
EDGE_VALUES = [
    None, "", "x" * 40, "x" * 41, "x" * 256, "x" * 257, "x" * 4096, "x" * 4097, "a\x00b", "é",
    "\ud800", "a\n", "A-01", True, False, 0, -1, 1, 0.0, -0.0, 1.5, -2.5, float("nan"),
    float("inf"), -float("inf"), 2**31 - 1, 2**31, 2**63 - 1, 2**63, wire.MAX_QTY,
    wire.MAX_QTY + 1, float(wire.MAX_QTY), 1e300, [], {}, "count", "adjust", "observe", "move",
    "receipt", "order", "expected", "barcode", "rfid", "2026-01-02T03:04:05Z",
    "2026-01-02T03:04:05+15:00", "2026-01-02T03:04:05", "2026-01-02 03:04:05Z",
    "0190a0b0-0000-7000-8000-000000000000", "0190A0B0-0000-7000-8000-000000000000",
    "0190a0b0-0000-7000-8000-000000000000\n",
]
tricky = st.sampled_from(EDGE_VALUES) | json_values
EVENT_KEYS = ["id", "seq", "time", "type", "item", "qty", "from", "to", "operator", "read", "doc",
              "count", "kind", "raw", "symbology", "tag", "antenna", "rssi", "reads", "first",
              "last", "check", *wire.ITEM_FIELDS]


@given(events(), st.data())
def test_fast_event_reads_as_the_reference(event: wire.Event, data: st.DataObject) -> None:
    raw = json.loads(wire.encode_event(event))
    for _ in range(data.draw(st.integers(0, 3))):
        node = data.draw(st.sampled_from(nodes(raw)))
        key = data.draw(st.sampled_from(sorted(set(node) | set(EVENT_KEYS))))
        if data.draw(st.integers(0, 5)) == 0:
            node.pop(key, None)
        else:
            node[key] = data.draw(tricky)
    assert_fast_reads_as_reference(raw)


def assert_fast_reads_as_reference(raw: dict) -> None:
    fast = wire._fast_event(raw, set())
    try:
        reference: wire.Event | None = wire.event_from_dict(raw)
    except wire.WireError:
        reference = None
    if fast is not None:  # taken: exactly the reference's event, types and all
        assert fast == reference
        assert repr(fast) == repr(reference)


def plain_event(kind: str) -> dict:
    return {"id": "0190a0b0-0000-7000-8000-000000000000", "seq": 1,
            "time": "2026-01-02T03:04:05.678+01:00", "type": kind,
            "item": {"gtin": "09501101530003", "lot": "L1", "serial": "S1"}, "qty": 1,
            "from": "A-1", "to": "B-2", "operator": "op-1",
            "read": {"kind": "barcode", "raw": "]C1x", "symbology": "]C1", "antenna": 2,
                     "rssi": -51.5, "reads": 3, "first": "t1", "last": "t2", "tag": "E2"},
            "doc": {"kind": "order", "id": "SO-1", "check": "expected"}}


def test_fast_path_takes_plain_events() -> None:
    """Well-formed events (not counts or adjusts, ASCII text) do take the fast path."""
    for kind in sorted(wire.MOVEMENT_TYPES - {"count", "adjust"}):
        raw = plain_event(kind)
        fast = wire._fast_event(raw, set())
        assert fast is not None and fast == wire.event_from_dict(raw)


def test_fast_event_on_every_edge_value() -> None:
    """Every field of a well-formed event, at every edge value or left out: the fast path
    leaves it to the reference or reads it exactly as the reference does."""
    for kind in ("putaway", "receive", "ship", "observe", "adjust", "count"):
        base = plain_event(kind)
        paths = [(k,) for k in (*base, "count")] + [
            (part, k) for part in ("item", "read", "doc")
            for k in (*base[part], *wire.ITEM_FIELDS, "kind", "id", "check", "antenna",
                      "reads", "rssi")]
        for path in paths:
            for value in [*EDGE_VALUES, "gone"]:
                raw = json.loads(json.dumps(base))
                node = raw if len(path) == 1 else raw[path[0]]
                if value == "gone":
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = value
                assert_fast_reads_as_reference(raw)


results = st.builds(wire.Result, id=texts, status=st.sampled_from(sorted(wire.RESULT_STATUSES)),
                    reason=st.none() | texts)


@given(st.builds(wire.Ack, device=names, results=st.lists(results, max_size=5).map(tuple)))
def test_ack_round_trip(ack: wire.Ack) -> None:
    assert wire.decode_ack(wire.encode_ack(ack)) == ack


statuses = st.builds(
    wire.Status, state=st.sampled_from(["online", "offline"]), at=times,
    backlog=st.none() | st.integers(0, 2**62), last_seq=st.none() | st.integers(0, 2**62),
    oldest_unsynced_s=st.none() | st.floats(0, 1e12), measured_at=st.none() | times)


@given(statuses)
def test_status_round_trip(status: wire.Status) -> None:
    assert wire.decode_status(wire.encode_status(status)) == status


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       st.sampled_from(["ack", "status", "expected"]))
@example(NESTED, "ack")
@example(NESTED, "status")
@example(NESTED, "expected")
def test_acks_status_and_documents_raise_only_wire_errors(payload: bytes, which: str) -> None:
    decode = {"ack": wire.decode_ack, "status": wire.decode_status,
              "expected": expected.decode_expected}[which]
    try:
        decode(payload)
    except wire.WireError as exc:
        assert str(exc).strip()


lines = st.builds(expected.ExpectedLine, item=items, qty=st.floats(1e-6, 1e9),
                  location=st.none() | texts)
documents = st.builds(
    expected.Expected, kind=st.sampled_from(sorted(wire.DOC_KINDS)), id=names, site=names,
    version=st.integers(1, 2**62), location=st.none() | texts,
    lines=st.lists(lines, max_size=3).map(tuple),
    pallets=st.lists(st.builds(expected.ExpectedPallet,
                               sscc=st.text(st.sampled_from("0123456789"), min_size=18,
                                            max_size=18),
                               epcs=st.lists(texts, max_size=3).map(tuple),
                               lines=st.lists(lines, max_size=2).map(tuple)),
                     max_size=2).map(tuple),
    labels=st.lists(texts, max_size=3).map(tuple))


DOC_KIND_LIST = expected.Expected("receipt", "asn-1", "wh1", 1)


@given(documents)
def test_expected_round_trip(doc: expected.Expected) -> None:
    assert expected.decode_expected(expected.encode_expected(doc)) == doc


@given(documents, st.data())
@example(DOC_KIND_LIST, None)
def test_mangled_documents_say_why(doc: expected.Expected, data: st.DataObject | None) -> None:
    message = json.loads(expected.encode_expected(doc))
    if data is None:  # the regression: "kind": [] raised TypeError (unhashable)
        message["kind"] = []
    else:
        message = mangle(message, data.draw)
    try:
        expected.decode_expected(json.dumps(message).encode())
    except wire.WireError as exc:
        assert str(exc).strip()


@given(st.lists(st.sampled_from(["floorsync", "v1", "docs", "receipt", "order", "events", "acks",
                                 "status", "+", "#", ""]) | names, max_size=7).map("/".join))
def test_topics_parse_or_say_why(topic: str) -> None:
    for parse in (wire.parse_topic, expected.parse_docs_topic):
        try:
            parts = parse(topic)
        except wire.WireError as exc:
            assert str(exc).strip()
        else:
            assert all(p and "/" not in p for p in parts)
