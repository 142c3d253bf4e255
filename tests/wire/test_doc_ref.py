"""A movement made against a document (receipt or order) carries ``doc``: the contract from both
sides, garbage answered with a reason, and the ledger keeping the reference once."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.server.ledger import Store
from tests.factories import event
from tests.server.helpers import batch


def test_a_doc_ref_round_trips_and_is_absent_when_none() -> None:
    plain = event()
    assert "doc" not in wire.event_to_dict(plain)
    made = replace(plain, doc=wire.DocRef("receipt", "ASN-4711", "over"))
    encoded = wire.encode_event(made)
    assert json.loads(encoded)["doc"] == {"kind": "receipt", "id": "ASN-4711", "check": "over"}
    assert wire.event_from_dict(json.loads(encoded)) == made
    unchecked = replace(plain, doc=wire.DocRef("order", "SO-1"))
    assert json.loads(wire.encode_event(unchecked))["doc"] == {"kind": "order", "id": "SO-1"}
    assert wire.event_from_dict(json.loads(wire.encode_event(unchecked))) == unchecked


@pytest.mark.parametrize(("doc", "reason"), [
    ("ASN-1", "doc must be an object"),
    ({"id": "ASN-1"}, "doc.kind must be one of ['order', 'receipt']"),
    ({"kind": "invoice", "id": "ASN-1"}, "doc.kind must be one of"),
    ({"kind": "receipt"}, "doc.id must be 1-64 characters"),
    ({"kind": "receipt", "id": "a/b"}, "doc.id must be 1-64 characters"),
    ({"kind": "receipt", "id": "x" * 65}, "doc.id must be 1-64 characters"),
    ({"kind": "receipt", "id": 7}, "doc.id must be 1-64 characters"),
    ({"kind": "receipt", "id": "ASN-1", "check": "short"}, "doc.check must be one of"),
])
def test_a_bad_doc_is_refused_with_its_reason(doc: object, reason: str) -> None:
    data = wire.event_to_dict(event())
    data["doc"] = doc
    with pytest.raises(wire.WireError) as caught:
        wire.event_from_dict(data)
    assert reason in str(caught.value)


def test_a_bad_doc_rejects_its_event_only(tmp_path: Path) -> None:
    good = replace(event(), doc=wire.DocRef("receipt", "ASN-1", "expected"))
    bad = wire.event_to_dict(event(1))
    bad["doc"] = {"kind": "receipt", "id": "ASN 1"}
    payload = json.dumps({"v": 1, "site": "wh1", "device": "hh-1", "sent_at": wire.utc_now(),
                          "events": [wire.event_to_dict(good), bad]})
    decoded = wire.decode_batch(payload)
    with Store(tmp_path / "ledger.db") as store:
        results = store.apply_batch(decoded, source="http")
    assert [r.status for r in results] == ["applied", "rejected"]
    assert "doc.id" in (results[1].reason or "")


def test_the_ledger_keeps_the_doc_of_an_event_once(tmp_path: Path) -> None:
    made = replace(event(), doc=wire.DocRef("receipt", "ASN-1", "unexpected"))
    plain = event(1)
    with Store(tmp_path / "ledger.db") as store:
        first = store.apply_batch(batch("wh1", "hh-1", made, plain), source="mqtt")
        again = store.apply_batch(batch("wh1", "hh-1", made), source="mqtt")
    assert [r.status for r in first] == ["applied", "applied"]
    assert [r.status for r in again] == ["duplicate"]
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = db.execute(
            "SELECT id, doc_kind, doc_id, doc_check FROM events ORDER BY seq").fetchall()
    assert rows == [(made.id, "receipt", "ASN-1", "unexpected"), (plain.id, None, None, None)]
