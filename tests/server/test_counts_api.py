"""``/api/v1/counts``: sessions counted, closed, decided, through the real app on SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData

SITE, DEV = "wh1", "hh-01"
G, H = "09501101530003", "09501101530010"
P = "/api/v1"
_seq = iter(range(1, 10**9))


def ev(type: str, *, gtin: str = G, src: str | None = None, dst: str | None = None,
       qty: float = 1, time: str | None = None) -> wire.Event:
    return wire.Event(wire.new_event_id(), next(_seq), time or wire.local_now(), type,
                      wire.Item(gtin=gtin), qty, src, dst)


def apply(store: Store, *events: wire.Event) -> None:
    results = store.apply_batch(wire.Batch(SITE, DEV, wire.utc_now(), events), source="http")
    assert all(r.status == "applied" for r in results), results


def on_hand(client: TestClient, location: str = "A") -> dict[str, float]:
    rows = client.get(f"{P}/stock", params={"location": location}).json()["items"]
    return {r["item"]: r["quantity"] for r in rows}


def start(client: TestClient, location: str = "A") -> dict[str, Any]:
    answer = client.post(f"{P}/counts", json={"site": SITE, "location": location, "by": "ann"})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def lines(client: TestClient, ident: int, *counted: tuple[str, float], add: bool = False
          ) -> dict[str, Any]:
    answer = client.post(f"{P}/counts/{ident}/lines", json={
        "lines": [{"item": i, "qty": q} for i, q in counted], "add": add})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def by_item(count: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {ln["item"]: ln for ln in count["lines"]}


def test_a_quiet_count_posts_its_difference_at_once(client: TestClient, store: Store) -> None:
    apply(store, ev("receive", dst="A", qty=10), ev("receive", gtin=H, dst="A", qty=2))
    count = start(client)
    assert count["status"] == "open" and count["origin"] == "api"
    assert {i: ln["expected"] for i, ln in by_item(count).items()} == {G: 10, H: 2}
    lines(client, count["id"], (G, 5))
    lines(client, count["id"], (G, 3), add=True)  # a second pass adds
    closed = client.post(f"{P}/counts/{count['id']}/close", json={"by": "ann"}).json()
    assert closed["status"] == "posted" and closed["adjustment_event_id"]
    got = by_item(closed)
    assert (got[G]["counted"], got[G]["expected"], got[G]["difference"]) == (8, 10, -2)
    assert (got[H]["counted"], got[H]["difference"], got[H]["adjustment"]) == (0, -2, -2)
    assert on_hand(client) == {G: 8}  # H was not counted: not there
    assert client.get(f"{P}/ledger/check").json()["ok"] is True
    moves = [m for m in client.get(f"{P}/movements").json()["items"]
             if m["event_id"] == closed["adjustment_event_id"]]
    assert sorted((m["item"], m["qty"], m["type"]) for m in moves) == [
        (G, -2.0, "count"), (H, -2.0, "count")]


@pytest.mark.parametrize(("keep", "expected"), [("counted", 8.0), ("difference", 5.0)])
def test_moves_during_the_count_wait_for_a_decision(
    client: TestClient, store: Store, keep: str, expected: float
) -> None:
    apply(store, ev("receive", dst="A", qty=10))
    count = start(client)
    lines(client, count["id"], (G, 8))  # two missing
    apply(store, ev("pick", src="A", qty=3))  # picked while counting: on-hand 7
    closed = client.post(f"{P}/counts/{count['id']}/close", json={"by": "ann"}).json()
    assert closed["status"] == "needs_decision" and closed["adjustment_event_id"] is None
    line = by_item(closed)[G]
    assert (line["expected"], line["counted"], line["on_hand_at_close"], line["moved"]) == (
        10, 8, 7, -3)
    assert on_hand(client) == {G: 7}  # nothing posted yet
    decided = client.post(f"{P}/counts/{count['id']}/decide", json={"keep": keep, "by": "lead"})
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["status"] == "posted" and body["decision"] == keep
    assert body["decided_by"] == "lead" and body["decided_at"]
    assert on_hand(client) == {G: expected}
    again = client.post(f"{P}/counts/{count['id']}/decide", json={"keep": keep, "by": "lead"})
    assert again.status_code == 409


def test_events_dated_before_a_posted_count_are_held(client: TestClient, store: Store) -> None:
    apply(store, ev("receive", dst="A", qty=4))
    before = wire.local_now()
    count = start(client)
    lines(client, count["id"], (G, 4))
    assert client.post(f"{P}/counts/{count['id']}/close", json={"by": "a"}).json()[
        "status"] == "posted"
    apply(store, ev("pick", src="A", qty=1, time=before))  # arrives late, dated before the count
    assert on_hand(client) == {G: 4}
    (late,) = client.get(f"{P}/exceptions", params={"kind": "late_after_count"}).json()["items"]
    assert late["location"] == "A" and late["quantity"] == -1
    apply(store, ev("pick", src="A", qty=1))  # after the count: applied
    assert on_hand(client) == {G: 3}


def test_floor_counts_are_listed_as_posted(client: TestClient, store: Store) -> None:
    apply(store, ev("receive", dst="B", qty=3))
    count = wire.Event(wire.new_event_id(), next(_seq), wire.local_now(), "count", None, 0,
                       count=wire.Count("B", (wire.CountLine(wire.Item(gtin=G), 5),)))
    apply(store, count)
    (floor,) = client.get(f"{P}/counts", params={"origin": "edge"}).json()["items"]
    assert floor["status"] == "posted" and floor["event_id"] == count.id
    assert floor["lines"] == [{"item": G, "lot": None, "counted": 5.0, "expected": 3.0,
                               "difference": 2.0, "on_hand_at_close": 3.0, "moved": 0.0,
                               "adjustment": 2.0}]


def test_states_and_refusals(client: TestClient, store: Store) -> None:
    count = start(client)
    assert client.post(f"{P}/counts", json={"site": SITE, "location": "A", "by": "b"}
                       ).status_code == 409  # one count of a location at a time
    assert client.post(f"{P}/counts/{count['id']}/decide",
                       json={"keep": "counted", "by": "b"}).status_code == 409
    cancelled = client.post(f"{P}/counts/{count['id']}/cancel", json={"by": "b"}).json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"{P}/counts/{count['id']}/lines",
                       json={"lines": [{"item": G, "qty": 1}]}).status_code == 409
    assert client.get(f"{P}/counts/9999").status_code == 404
    for body in ({"lines": []}, {"lines": [{"item": G, "qty": -1}]},
                 {"lines": [{"item": "", "qty": 1}]}, {"lines": [{"item": G, "qty": "x"}]}):
        assert client.post(f"{P}/counts/{count['id']}/lines", json=body).status_code == 422
    assert client.get(f"{P}/counts", params={"status": "bogus"}).status_code == 422
    assert client.get(f"{P}/counts", params={"cursor": "zz"}).status_code == 400


def test_locations_by_label_and_unknown_ones(client: TestClient, store: Store) -> None:
    md = MasterData(store)
    md.create_location(LocationSpec(SITE, SITE, "site"))
    md.create_location(LocationSpec(SITE, "A", "bin", barcodes=("LOC-A",)))
    count = start(client, "LOC-A")
    assert count["location"] == "A"
    unknown = client.post(f"{P}/counts", json={"site": SITE, "location": "nowhere", "by": "b"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")


def test_counts_page(client: TestClient, store: Store) -> None:
    ids = [start(client, f"L{n}")["id"] for n in range(3)]
    first = client.get(f"{P}/counts", params={"limit": 2}).json()
    second = client.get(f"{P}/counts", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None
    assert [c["location"] for c in client.get(f"{P}/counts", params={"location": "L1"}
                                              ).json()["items"]] == ["L1"]


@pytest.mark.parametrize(("keep", "expected"), [("counted", 109.0), ("difference", 107.0)])
def test_moves_after_the_close_are_kept_either_way(
    client: TestClient, store: Store, keep: str, expected: float
) -> None:
    apply(store, ev("receive", dst="A", qty=10))
    count = start(client)
    apply(store, ev("pick", src="A", qty=2))  # during the count: on-hand 8
    lines(client, count["id"], (G, 9))
    assert client.post(f"{P}/counts/{count['id']}/close", json={"by": "a"}).json()[
        "status"] == "needs_decision"
    apply(store, ev("receive", dst="A", qty=100))  # after the close, before the decision
    client.post(f"{P}/counts/{count['id']}/decide", json={"keep": keep, "by": "lead"})
    # counted: 9 at close, plus the 100 since; difference: 108 now, plus (9 - 10) found missing
    assert on_hand(client) == {G: expected}


@pytest.mark.parametrize("cursor", ["\u00b2", "9" * 25, "-1", "1.5"])
def test_cursors_not_issued_here_are_400(client: TestClient, cursor: str) -> None:
    for url in (f"{P}/counts", f"{P}/exceptions"):
        answer = client.get(url, params={"cursor": cursor})
        assert answer.status_code == 400, (url, cursor, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")


def test_a_cursor_with_a_lone_surrogate_is_400(client: TestClient) -> None:
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps(["\ud800", "A", ""]).encode()).decode()
    answer = client.get(f"{P}/stock", params={"cursor": forged.rstrip("=")})
    assert answer.status_code == 400, answer.text
