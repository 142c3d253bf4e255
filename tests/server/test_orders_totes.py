"""Orders naming their totes (``totes`` in ``POST /api/v1/orders``), on both engines: the list is
part of the document (the same again: 200; another: 409), a tote holds one open order at a time
(409 naming the other order, nothing written; free again once that order ships or is
cancelled), bad tote ids are 422 by JSON path, and the floor's copy carries the totes, while an
order without totes is the very message and digest it was before."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import expected as floor
from floorsync.server import orders
from floorsync.server.ledger import Store
from tests.server.orderkit import apply, order_doc, pick, receive, ship, with_items

P = "/api/v1"


@pytest.fixture
def api(client: TestClient, store: Store) -> TestClient:
    with_items(store)
    apply(store, receive("A", 10, "A-01"), receive("B", 10, "B-01"))
    return client


def with_totes(doc: dict[str, Any], *totes: str) -> dict[str, Any]:
    return {**doc, "totes": list(totes)}


def counts(store: Store) -> tuple[Any, ...]:
    return tuple(store._query(f"SELECT COUNT(*) FROM {t}")[0][0]
                 for t in ("orders", "order_lines", "order_totes", "order_allocations"))


def test_an_orders_totes_are_kept_shown_and_part_of_the_document(
    api: TestClient, store: Store
) -> None:
    doc = with_totes(order_doc("SO-1", ("A", 2)), "T-9", "T-1")
    first = api.post(f"{P}/orders", json=doc)
    assert first.status_code == 201, first.text
    assert first.json()["totes"] == ["T-1", "T-9"]  # a set: kept sorted
    assert api.get(f"{P}/orders/SO-1").json()["totes"] == ["T-1", "T-9"]
    picks = api.get(f"{P}/orders/SO-1/picklist").json()
    assert (picks["label"], picks["totes"]) == ("ORD:SO-1", ["T-1", "T-9"])
    before = counts(store)
    same = api.post(f"{P}/orders", json=with_totes(doc, "T-1", "T-9"))  # order is not content
    assert same.status_code == 200 and same.json() == first.json()
    for other in (with_totes(doc, "T-1"), with_totes(doc, "T-1", "T-9", "T-3"),
                  order_doc("SO-1", ("A", 2))):
        conflict = api.post(f"{P}/orders", json=other)
        assert conflict.status_code == 409, other
        assert conflict.json()["title"] == "order exists"
    assert counts(store) == before


def test_a_tote_holds_one_open_order_until_it_ships_or_is_cancelled(
    api: TestClient, store: Store
) -> None:
    assert api.post(f"{P}/orders", json=with_totes(order_doc("SO-1", ("A", 1)),
                                                   "T-1")).status_code == 201
    before = counts(store)
    for site in ("wh1", "wh2"):  # a tote is one physical box, whichever site names it
        taken = api.post(f"{P}/orders", json=with_totes(
            order_doc(f"SO-2{site}", ("B", 1), site=site), "T-2", "T-1"))
        assert taken.status_code == 409, taken.text
        body = taken.json()
        assert body["title"] == "tote in use"
        assert "tote T-1 is on open order SO-1 (site wh1)" in body["detail"]
        assert "T-2" not in body["detail"]
    assert counts(store) == before  # nothing half-written
    apply(store, pick("SO-1", "A", 1, "A-01"), ship("SO-1", "A", 1))
    assert api.get(f"{P}/orders/SO-1").json()["status"] == "closed"
    assert api.post(f"{P}/orders", json=with_totes(order_doc("SO-2", ("B", 1)),
                                                   "T-1")).status_code == 201
    assert api.post(f"{P}/orders/SO-2/cancel", json={"by": "ann"}).status_code == 200
    again = api.post(f"{P}/orders", json=with_totes(order_doc("SO-3", ("B", 1)), "T-1"))
    assert again.status_code == 201 and again.json()["totes"] == ["T-1"]


@pytest.mark.parametrize(("totes", "paths"), [
    ("T-1", ["totes"]),
    (["T-1", "T 2", "", 7, "A/B"], ["totes[1]", "totes[2]", "totes[3]", "totes[4]"]),
    (["T-1", "T-2", "T-1"], ["totes[2]"]),
    ([f"T-{n}" for n in range(orders.MAX_TOTES + 1)], ["totes"]),
])
def test_bad_totes_are_refused_by_their_path_and_nothing_is_written(
    api: TestClient, store: Store, totes: Any, paths: list[str]
) -> None:
    doc = {**order_doc("SO-1", ("A", 1)), "totes": totes}
    answer = api.post(f"{P}/orders", json=doc)
    assert answer.status_code == 422, answer.text
    assert [e["path"] for e in answer.json()["errors"]] == paths
    assert counts(store)[:3] == (0, 0, 0)


def test_the_floor_copy_carries_the_totes_and_an_order_without_is_unchanged(
    api: TestClient, store: Store
) -> None:
    api.post(f"{P}/orders", json=with_totes(order_doc("SO-1", ("A", 2)), "T-7", "T-3"))
    api.post(f"{P}/orders", json=order_doc("SO-2", ("B", 1)))
    copy = orders.expected_of(store, "SO-1")
    assert copy is not None and copy.totes == ("T-3", "T-7")
    assert orders.floor_copy(store, "SO-1") == ("wh1", copy)
    assert [(e.id, e.totes) for e in orders.expected(store, "wh1")] == [
        ("SO-1", ("T-3", "T-7")), ("SO-2", ())]
    message = json.loads(floor.encode_expected(copy))
    assert message["totes"] == ["T-3", "T-7"]
    assert floor.decode_expected(floor.encode_expected(copy)) == copy
    plain = orders.expected_of(store, "SO-2")
    assert plain is not None and "totes" not in json.loads(floor.encode_expected(plain))
    apply(store, pick("SO-1", "A", 2, "A-01"), ship("SO-1", "A", 2))
    assert orders.expected_of(store, "SO-1") is None  # closed: withdrawn, totes with it


def test_an_order_without_totes_keeps_the_digest_it_had_before_totes() -> None:
    doc = orders.OrderDoc("SO-1", "wh1", "ACME", 5, "2026-12-01",
                          (orders.OrderLine(1, "SKU-A", "SKU-A", "", 2.0),))
    before = hashlib.sha256(json.dumps(
        ["SO-1", "wh1", "ACME", 5, "2026-12-01", [[1, "SKU-A", "", 2.0]]],
        separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert doc.digest() == before  # orders accepted before totes still match themselves
    assert replace(doc, totes=("T-1",)).digest() != before
