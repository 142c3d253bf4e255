"""``/api/v1/receipts`` through the real app (TestClient, SQLite file, no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from tests.server.helpers import READ_TOKEN, WRITE_TOKEN, api_settings, bearer
from tests.server.receiptfixtures import GTIN_A, document, load_items, receive


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    load_items(store)
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as c:
        assert app.state.publisher is None  # HTTP only: nothing to publish to
        yield c


def test_post_is_idempotent_and_another_document_under_the_id_is_409(api: TestClient) -> None:
    first = api.post("/api/v1/receipts", json=document())
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "open" and body["label"] == "ASN:ASN-1"
    assert body["created_by"].startswith("sha256:")
    again = api.post("/api/v1/receipts", content=json.dumps(document(), indent=2))
    assert again.status_code == 200 and again.json() == body
    other = api.post("/api/v1/receipts", json=document(supplier="Someone else"))
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert api.get("/api/v1/receipts/ASN-1").json()["supplier"] == "ACME"


def test_bad_documents_get_422_with_every_json_path(api: TestClient) -> None:
    bad = document(expected_date="2026/11/23", lines=[
        {"gtin": GTIN_A, "qty": "ten"}, {"sku": "GHOST", "qty": 1}, {"gtin": GTIN_A, "qty": 2}])
    answer = api.post("/api/v1/receipts", json=bad)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert {e["path"] for e in problem["errors"]} == {
        "$.expected_date", "$.lines[0].qty", "$.lines[1].sku"}
    assert problem["total"] == 3 and "nothing was kept" in problem["detail"]
    deep = b"[" * 200_000 + b"]" * 200_000  # deeper than json.loads' stack: not a 500
    for body in (b"{", b"\xff\xfe", b"[1, 2", b"", b'{"id": "ASN-2"}' * 2, deep):
        answer = api.post("/api/v1/receipts", content=body)
        assert answer.status_code == 422, body
        assert answer.json()["errors"]
    assert api.get("/api/v1/receipts").json() == {"items": [], "next_cursor": None}


def test_list_filters_by_status_and_pages(api: TestClient) -> None:
    for n in range(3):
        assert api.post("/api/v1/receipts", json=document(f"ASN-{n}")).status_code == 201
    api.post("/api/v1/receipts/ASN-1/close", json={"by": "boss"})
    page = api.get("/api/v1/receipts", params={"limit": 2}).json()
    assert [r["id"] for r in page["items"]] == ["ASN-0", "ASN-1"] and page["next_cursor"]
    rest = api.get("/api/v1/receipts", params={"cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["items"]] == ["ASN-2"] and rest["next_cursor"] is None
    shown = api.get("/api/v1/receipts", params={"status": "closed"}).json()["items"]
    assert [(r["id"], r["status"], r["version"], r["lines"], r["pallets"], r["expected_qty"])
            for r in shown] == [("ASN-1", "closed", 2, 3, 2, 22.0)]
    assert api.get("/api/v1/receipts", params={"site": "wh9"}).json()["items"] == []
    assert api.get("/api/v1/receipts", params={"status": "lost"}).status_code == 422
    assert api.get("/api/v1/receipts", params={"cursor": "x"}).status_code == 400


def test_the_view_after_events_and_close_with_the_exception_queue(api: TestClient) -> None:
    api.post("/api/v1/receipts", json=document())
    sent = wire.encode_batch(wire.Batch("wh1", "door-1", wire.utc_now(), (
        receive(qty=16), receive(gtin=None, sku="SKU-D"), receive(doc="ASN-9"))))
    ack = api.post("/api/v1/events", content=sent)
    assert [r["status"] for r in ack.json()["results"]] == ["applied"] * 3
    view = api.get("/api/v1/receipts/ASN-1").json()
    assert [(ln["expected"], ln["received"], ln["difference"], ln["status"])
            for ln in view["lines"]] == [(10, 10, 0, "complete"), (5, 0, -5, "waiting"),
                                         (4, 6, 2, "over")]
    assert [x["kind"] for x in view["exceptions"]] == ["receipt_over", "receipt_unexpected"]
    closed = api.post("/api/v1/receipts/ASN-1/close", json={"by": "boss"})
    assert closed.status_code == 200
    assert [d["kind"] for d in closed.json()["discrepancies"]] == [
        "short", "over", "short", "short", "unexpected"]
    assert api.post("/api/v1/receipts/ASN-1/close", json={"by": "boss"}).status_code == 409
    listed = api.get("/api/v1/exceptions", params={"kind": "receipt_short"})
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == 3
    summary = api.get("/api/v1/exceptions/summary")
    assert summary.status_code == 200, summary.text
    counts = {kind: by["open"] for kind, by in summary.json().items() if by["open"]}
    assert counts == {"receipt_over": 1, "receipt_unexpected": 1, "receipt_unknown": 1,
                      "receipt_short": 3}


def test_unknown_receipts_bad_ids_and_scopes(api: TestClient, store: Store,
                                             tmp_path: Path) -> None:
    assert api.get("/api/v1/receipts/ASN-404").status_code == 404
    assert api.post("/api/v1/receipts/ASN-404/close", json={"by": "x"}).status_code == 404
    assert api.get("/api/v1/receipts/a%2Fb").status_code in (404, 422)
    assert api.post("/api/v1/receipts/ASN-1/close", json={}).status_code == 422
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(READ_TOKEN)) as reader:
        assert reader.post("/api/v1/receipts", json=document()).status_code == 403
        assert reader.get("/api/v1/receipts").status_code == 200
    with TestClient(app) as nobody:
        assert nobody.get("/api/v1/receipts").status_code == 401
