"""``/api/v1/orders`` and ``/api/v1/backorders`` through the real app on SQLite: a document is one
transaction, idempotent by id, refused with every bad line named; views, pick list, cancel."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.server.ledger import Store
from tests.server.helpers import READ_TOKEN, bearer
from tests.server.orderkit import G, apply, order_doc, pick, receive, with_items

P = "/api/v1"


@pytest.fixture
def api(client: TestClient, store: Store) -> TestClient:
    with_items(store)
    apply(store, receive("A", 10, "A-01"), receive("B", 3, "B-01", lot="L1"))
    return client


def post(api: TestClient, doc: Any) -> Any:
    return api.post(f"{P}/orders", json=doc)


def written(store: Store) -> tuple[Any, ...]:
    return tuple(store._query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in (
        "orders", "order_lines", "order_allocations", "backorders", "backorder_fills"))


def test_an_order_is_accepted_allocated_and_backordered_in_one_go(api: TestClient) -> None:
    doc = order_doc("SO-1", ("A", 4), ("B", 5), ("C", 1))
    doc["lines"][1]["item"] = G["B"][1:]  # a GTIN-13 of SKU-B: kept as its GTIN-14
    answer = post(api, doc)
    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert (order["id"], order["status"], order["priority"], order["due"]) == (
        "SO-1", "open", 5, "2026-12-01")
    lines = {ln["line"]: ln for ln in order["lines"]}
    assert (lines[1]["allocated"], lines[1]["backordered"]) == (4, 0)
    assert lines[1]["reserved"] == [{"item": G["A"], "location": "A-01", "lot": None,
                                     "qty": 4, "staged": False}]
    assert (lines[2]["item"], lines[2]["sku"]) == (G["B"], "SKU-B")
    assert (lines[2]["allocated"], lines[2]["backordered"]) == (3, 2)
    assert (lines[3]["allocated"], lines[3]["backordered"]) == (0, 1)
    assert api.get(f"{P}/orders/SO-1").json() == order
    picks = api.get(f"{P}/orders/SO-1/picklist").json()
    assert picks["label"] == "ORD:SO-1"
    assert [(p["line"], p["location"], p["qty"], p["lot"]) for p in picks["lines"]] == [
        (1, "A-01", 4, None), (2, "B-01", 3, "L1")]
    waiting = api.get(f"{P}/backorders", params={"order": "SO-1"}).json()["items"]
    assert [(b["line"], b["open_qty"], b["why"]) for b in waiting] == [
        (2, 2, "stock held by other orders (on hand 3, free 0)"), (3, 1, "no stock")]


def test_the_same_document_again_changes_nothing_and_another_is_a_conflict(
    api: TestClient, store: Store
) -> None:
    doc = order_doc("SO-1", ("A", 4), ("B", 5))
    first = post(api, doc)
    assert first.status_code == 201
    before = written(store)
    again = post(api, json.loads(json.dumps(doc)))
    assert again.status_code == 200 and again.json() == first.json()
    reordered = dict(reversed(list(doc.items())))  # key order is not content
    assert post(api, reordered).status_code == 200
    changed = order_doc("SO-1", ("A", 5), ("B", 5))
    conflict = post(api, changed)
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert written(store) == before
    assert api.get(f"{P}/orders/SO-1").json()["lines"][0]["ordered"] == 4


def test_a_bad_document_is_refused_naming_every_bad_line_and_nothing_is_written(
    api: TestClient, store: Store
) -> None:
    before = written(store)
    doc: dict[str, Any] = {
        "id": "SO-9", "site": "wh1", "ship_to": "ACME", "priority": 0, "due": "01/12/2026",
        "colour": "red",
        "lines": [
            {"item": "SKU-A", "qty": 2},  # good: it does not make the rest go through
            {"item": "NOPE", "qty": 1},
            {"item": "SKU-B", "qty": 0},
            {"item": "SKU-B", "qty": "5"},
            {"item": "SKU-C", "qty": True},
            {"line": 2, "item": "SKU-D", "qty": 1},
            {"item": "SKU-E", "quantity": 3},
            {"item": G["A"][:-1] + str((int(G["A"][-1]) + 1) % 10), "qty": 1},
            "not a line",
            {"item": "SKU-A", "qty": 1, "lot": ""},
        ],
    }
    answer = post(api, doc)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    where = {(e["line"], e["path"]) for e in body["errors"]}
    assert where == {
        (None, "priority"), (None, "due"), (None, "colour"),
        (2, "lines[1].item"), (3, "lines[2].qty"), (4, "lines[3].qty"), (5, "lines[4].qty"),
        (2, "lines[5].line"), (7, "lines[6].quantity"), (7, "lines[6].qty"),
        (8, "lines[7].item"), (9, "lines[8]"), (10, "lines[9].lot"),
    }
    reasons = {e["path"]: e["reason"] for e in body["errors"]}
    assert "unknown item 'NOPE'" in reasons["lines[1].item"]
    assert "the quantity is qty" in reasons["lines[6].quantity"]
    assert "YYYY-MM-DD" in reasons["due"] and "1 (first) to 9" in reasons["priority"]
    assert "nothing was accepted" in body["detail"]
    assert written(store) == before
    assert api.get(f"{P}/orders/SO-9").status_code == 404


@pytest.mark.parametrize(("field", "value"), [
    ("due", "2026-02-30"), ("due", "20261201"), ("due", "2026-12-01T10:00:00Z"), ("due", None),
    ("priority", 10), ("priority", "high"), ("priority", 2.5), ("id", "SO/1"), ("id", ""),
    ("site", None), ("ship_to", ""), ("ship_to", "\ud800"), ("lines", []), ("lines", {}),
])
def test_each_bad_header_field_is_a_422(api: TestClient, field: str, value: Any) -> None:
    doc = order_doc("SO-1", ("A", 1))
    doc[field] = value
    answer = api.post(f"{P}/orders", content=json.dumps(doc),
                      headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert field in {e["path"] for e in answer.json()["errors"]}


def test_garbage_truncation_and_the_wrong_shape(api: TestClient, store: Store) -> None:
    text = json.dumps(order_doc("SO-1", ("A", 1), ("B", 1)))
    for broken in (text[: len(text) // 2], "", "\xff\xfe", "[1, 2"):
        answer = api.post(f"{P}/orders", content=broken.encode("utf-8", "surrogateescape"),
                          headers={"content-type": "application/json"})
        assert answer.status_code == 400, broken
    deep = "[" * 200_000 + "]" * 200_000  # deeper than json.loads' stack: 400, not a 500
    answer = api.post(f"{P}/orders", content=deep, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["detail"]
    for shape in ("[]", '"SO-1"', "7", "null"):
        answer = api.post(f"{P}/orders", content=shape,
                          headers={"content-type": "application/json"})
        assert answer.status_code == 422 and answer.json()["errors"][0]["path"] == "$", shape
    assert written(store)[0] == 0


def test_reading_needs_read_and_accepting_needs_write(api: TestClient) -> None:
    reader = {**bearer(READ_TOKEN)}
    assert api.post(f"{P}/orders", json=order_doc("SO-1", ("A", 1)),
                    headers=reader).status_code == 403
    assert post(api, order_doc("SO-1", ("A", 1))).status_code == 201
    assert api.get(f"{P}/orders/SO-1", headers=reader).status_code == 200
    assert api.get(f"{P}/backorders", headers=reader).status_code == 200
    assert api.post(f"{P}/orders/SO-1/cancel", json={"by": "ann"},
                    headers=reader).status_code == 403


def test_listing_orders_pages_and_filters(api: TestClient) -> None:
    for n in range(5):
        assert post(api, order_doc(f"SO-{n}", ("A", 1))).status_code == 201
    api.post(f"{P}/orders/SO-3/cancel", json={"by": "ann"})
    seen, cursor = [], None
    while True:
        page = api.get(f"{P}/orders", params={"limit": 2, **({"cursor": cursor} if cursor
                                                            else {})}).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"SO-{n}" for n in range(5)]
    open_ = api.get(f"{P}/orders", params={"status": "open"}).json()["items"]
    assert [o["id"] for o in open_] == ["SO-0", "SO-1", "SO-2", "SO-4"]
    assert open_[0]["lines"] == 1 and open_[0]["allocated"] == 1
    assert api.get(f"{P}/orders", params={"site": "nowhere"}).json()["items"] == []
    assert api.get(f"{P}/orders", params={"cursor": "x"}).status_code == 400
    assert api.get(f"{P}/orders", params={"status": "lost"}).status_code == 422


def test_cancelling_frees_the_stock_for_the_next_in_line(api: TestClient) -> None:
    post(api, order_doc("SO-1", ("A", 8)))
    post(api, order_doc("SO-2", ("A", 5)))  # 2 held, 3 backordered
    cancelled = api.post(f"{P}/orders/SO-1/cancel", json={"by": "ann", "reason": "called"})
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["cancelled_by"] == "ann"
    assert all(ln["status"] == "cancelled" and ln["allocated"] == 0 for ln in body["lines"])
    assert api.get(f"{P}/orders/SO-2").json()["lines"][0]["allocated"] == 5
    assert api.get(f"{P}/backorders").json()["items"] == []
    filled = api.get(f"{P}/backorders", params={"status": "filled"}).json()["items"]
    assert [(b["order_id"], b["qty"], [f["qty"] for f in b["fills"]]) for b in filled] == [
        ("SO-2", 3, [3])]
    assert api.post(f"{P}/orders/SO-1/cancel", json={"by": "ann"}).status_code == 409
    assert api.post(f"{P}/orders/NOPE/cancel", json={"by": "ann"}).status_code == 404
    assert api.get(f"{P}/orders/SO-1/picklist").json()["lines"] == []


def test_backorders_filter_by_item_as_sku_or_gtin_and_by_site(api: TestClient) -> None:
    post(api, order_doc("SO-1", ("C", 2), ("D", 1)))
    post(api, order_doc("SO-2", ("C", 1), site="wh2"))
    by_sku = api.get(f"{P}/backorders", params={"item": "SKU-C"}).json()["items"]
    by_gtin = api.get(f"{P}/backorders", params={"item": G["C"]}).json()["items"]
    assert by_sku == by_gtin and [b["order_id"] for b in by_sku] == ["SO-1", "SO-2"]
    here = api.get(f"{P}/backorders", params={"site": "wh1"}).json()["items"]
    assert {(b["sku"], b["open_qty"]) for b in here} == {("SKU-C", 2), ("SKU-D", 1)}
    first = api.get(f"{P}/backorders", params={"limit": 1}).json()
    rest = api.get(f"{P}/backorders", params={"cursor": first["next_cursor"]}).json()
    assert len(first["items"]) + len(rest["items"]) == 3


def test_floor_exceptions_of_an_order_are_listed_with_it(api: TestClient, store: Store) -> None:
    post(api, order_doc("SO-1", ("A", 1)))
    wrong = pick("SO-1", "B", 1, "B-01", lot="L1")
    assert apply(store, wrong) == ["applied"]
    order = api.get(f"{P}/orders/SO-1").json()
    (ident,) = order["exceptions"]
    raised = api.get(f"{P}/exceptions/{ident}").json()
    assert (raised["kind"], raised["event_id"]) == ("order_unexpected", wrong.id)
    listed = api.get(f"{P}/exceptions", params={"kind": "order_unexpected"}).json()["items"]
    assert [e["id"] for e in listed] == [ident]
