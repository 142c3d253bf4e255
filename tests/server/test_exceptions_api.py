"""``/api/v1/exceptions``: listed, filtered, paged, resolved, through the real app on SQLite."""

from __future__ import annotations

from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from tests.server.helpers import READ_TOKEN, WRITE_TOKEN

SITE, DEV = "wh1", "hh-01"
G = "09501101530003"
P = "/api/v1"


def ev(type: str = "receive", *, time: str | None = None, src: str | None = None,
       dst: str | None = "A", qty: float = 1, gtin: str = G, serial: str | None = None
       ) -> wire.Event:
    ev.seq += 1  # type: ignore[attr-defined]
    return wire.Event(wire.new_event_id(), ev.seq, time or wire.local_now(),  # type: ignore[attr-defined]
                      type, wire.Item(gtin=gtin, serial=serial), qty, src, dst)


ev.seq = 0  # type: ignore[attr-defined]


def apply(store: Store, *events: wire.Event, device: str = DEV) -> None:
    results = store.apply_batch(wire.Batch(SITE, device, wire.utc_now(), events), source="http")
    assert all(r.status == "applied" for r in results), results


def on_hand(client: TestClient, item: str = G, location: str = "A") -> float:
    rows = client.get(f"{P}/stock", params={"item": item, "location": location}).json()["items"]
    return sum(r["quantity"] for r in rows)


def test_negative_stock_is_listed_and_adjusted_back_to_zero(client: TestClient, store: Store
                                                            ) -> None:
    apply(store, ev("receive", qty=2))
    apply(store, ev("pick", src="A", dst=None, qty=5))
    assert on_hand(client) == -3  # applied, not refused
    page = client.get(f"{P}/exceptions", params={"kind": "negative_stock"}).json()
    (found,) = page["items"]
    assert found["status"] == "open" and found["quantity"] == -3 and found["location"] == "A"
    assert found["item"] == G and page["next_cursor"] is None
    resolved = client.post(f"{P}/exceptions/{found['id']}/resolve",
                           json={"action": "adjust", "by": "j.smith", "reason": "found 3"})
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["status"] == "adjusted" and body["resolved_by"] == "j.smith"
    token = body["resolved_token"]
    assert token.startswith("sha256:") and WRITE_TOKEN not in token
    assert body["resolved_at"] and body["adjustment_event_id"]
    assert on_hand(client) == 0
    moves = client.get(f"{P}/movements").json()["items"]
    posted = [m for m in moves if m["event_id"] == body["adjustment_event_id"]]
    assert [(m["type"], m["qty"], m["device"]) for m in posted] == [("adjust", 3.0, "@central")]
    assert client.get(f"{P}/ledger/check").json()["ok"] is True
    again = client.post(f"{P}/exceptions/{found['id']}/resolve",
                        json={"action": "dismiss", "by": "x", "reason": "twice"})
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


def test_dismiss_needs_a_reason_and_records_who(client: TestClient, store: Store) -> None:
    MasterData(store).create_item(ItemSpec("SKU-1", gtins=("09501101530010",)))
    apply(store, ev("receive", gtin="09501101530003"))
    (found,) = client.get(f"{P}/exceptions", params={"kind": "unknown_item"}).json()["items"]
    assert found["item"] == G
    no_reason = client.post(f"{P}/exceptions/{found['id']}/resolve",
                            json={"action": "dismiss", "by": "ann"})
    assert no_reason.status_code == 400
    ok = client.post(f"{P}/exceptions/{found['id']}/resolve",
                     json={"action": "dismiss", "by": "ann", "reason": "sample stock"})
    assert ok.json()["status"] == "dismissed" and ok.json()["reason"] == "sample stock"
    assert ok.json()["adjustment_event_id"] is None
    # dismissed: the next event with the item raises a new record
    apply(store, ev("receive", gtin="09501101530003"))
    rows = client.get(f"{P}/exceptions", params={"kind": "unknown_item"}).json()["items"]
    assert [r["status"] for r in rows] == ["dismissed", "open"]


def test_unknown_location_needs_lines_to_adjust(client: TestClient, store: Store) -> None:
    MasterData(store).create_location(LocationSpec(SITE, SITE, "site"))
    MasterData(store).create_location(LocationSpec(SITE, "A", "bin"))
    apply(store, ev("receive", dst="ZZ-9", qty=4))
    (found,) = client.get(f"{P}/exceptions", params={"kind": "unknown_location"}).json()["items"]
    assert found["location"] == "ZZ-9" and found["site"] == SITE
    bare = client.post(f"{P}/exceptions/{found['id']}/resolve",
                       json={"action": "adjust", "by": "ann"})
    assert bare.status_code == 400 and "lines" in bare.json()["detail"]
    moved = client.post(f"{P}/exceptions/{found['id']}/resolve", json={
        "action": "adjust", "by": "ann", "reason": "it was A",
        "lines": [{"item": G, "location": "ZZ-9", "qty": -4},
                  {"item": G, "location": "A", "qty": 4}]})
    assert moved.status_code == 200, moved.text
    assert on_hand(client, location="ZZ-9") == 0 and on_hand(client, location="A") == 4
    zero = client.post(f"{P}/exceptions/{found['id'] + 99}/resolve",
                       json={"action": "dismiss", "by": "a", "reason": "r"})
    assert zero.status_code == 404


def test_late_after_count_held_then_posted(client: TestClient, store: Store) -> None:
    apply(store, ev("receive", qty=10, time="2026-03-01T08:00:00.000Z"))
    count = wire.Event(wire.new_event_id(), 999, "2026-03-01T10:00:00.000Z", "count", None, 0,
                       count=wire.Count("A", (wire.CountLine(wire.Item(gtin=G), 7),)))
    apply(store, count)
    assert on_hand(client) == 7
    apply(store, ev("pick", src="A", dst=None, qty=3, time="2026-03-01T09:00:00.000Z"))
    assert on_hand(client) == 7  # held: the count already saw it
    (found,) = client.get(f"{P}/exceptions", params={"kind": "late_after_count"}).json()["items"]
    (floor,) = client.get(f"{P}/counts", params={"origin": "edge"}).json()["items"]
    assert found["count_id"] == found["held_by_count_id"] == floor["id"]  # the count that held it
    detail = client.get(f"{P}/exceptions/{found['id']}").json()
    assert [(h["location"], h["qty"], h["type"]) for h in detail["held"]] == [("A", -3.0, "pick")]
    posted = client.post(f"{P}/exceptions/{found['id']}/resolve",
                         json={"action": "adjust", "by": "lead"})
    assert posted.json()["status"] == "adjusted"
    assert on_hand(client) == 4
    assert client.get(f"{P}/ledger/check").json()["ok"] is True


def test_rejected_ingest_is_listed_beside(client: TestClient) -> None:
    bad = client.post(f"{P}/events", content=b'{"v":1,"site":"wh1"', headers={
        "content-type": "application/json"})
    assert bad.status_code == 400
    (found,) = client.get(f"{P}/exceptions", params={"kind": "rejected"}).json()["items"]
    assert found["rejection_id"] is not None and found["status"] == "open"
    rejection = client.get(f"{P}/rejections").json()["items"][0]
    assert rejection["id"] == found["rejection_id"] and rejection["reason"] == found["detail"]
    no_site = client.post(f"{P}/exceptions/{found['id']}/resolve", json={
        "action": "adjust", "by": "a", "lines": [{"item": G, "location": "A", "qty": 1}]})
    assert no_site.status_code == 400 and "site" in no_site.json()["detail"]
    gone = client.post(f"{P}/exceptions/{found['id']}/resolve",
                       json={"action": "dismiss", "by": "a", "reason": "truncated test"})
    assert gone.json()["status"] == "dismissed"


def test_filters_cursor_and_summary(client: TestClient, store: Store) -> None:
    for n in range(5):
        apply(store, ev("pick", src=f"L{n}", dst=None), device=f"hh-{n % 2}")
    everything = client.get(f"{P}/exceptions", params={"limit": 2}).json()
    seen = [r["id"] for r in everything["items"]]
    cursor = everything["next_cursor"]
    while cursor:
        page = client.get(f"{P}/exceptions", params={"limit": 2, "cursor": cursor}).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == 5 and seen == sorted(seen)
    one = client.get(f"{P}/exceptions", params={"device": "hh-1"}).json()["items"]
    assert {r["location"] for r in one} == {"L1", "L3"}
    assert client.get(f"{P}/exceptions", params={"location": "L4", "status": "open"}
                      ).json()["items"][0]["location"] == "L4"
    assert client.get(f"{P}/exceptions", params={"since": "2999-01-01T00:00:00Z"}
                      ).json()["items"] == []
    assert len(client.get(f"{P}/exceptions", params={"until": "2999-01-01T00:00:00Z"}
                          ).json()["items"]) == 5
    summary = client.get(f"{P}/exceptions/summary").json()
    assert summary["negative_stock"]["open"] == 5 and summary["rejected"]["open"] == 0
    for params in ({"cursor": "abc"}, {"since": "yesterday"}, {"kind": "bogus"},
                   {"limit": 0}):
        bad = client.get(f"{P}/exceptions", params=params)
        assert bad.status_code in (400, 422), (params, bad.text)
        assert bad.headers["content-type"].startswith("application/problem+json")


def test_scopes(client: TestClient, store: Store) -> None:
    apply(store, ev("pick", src="A", dst=None))
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert client.get(f"{P}/exceptions", headers=reader).status_code == 200
    denied = client.post(f"{P}/exceptions/1/resolve", headers=reader,
                         json={"action": "dismiss", "by": "a", "reason": "r"})
    assert denied.status_code == 403
    anonymous = client.get(f"{P}/exceptions", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_garbage_resolutions(client: TestClient, store: Store) -> None:
    apply(store, ev("pick", src="A", dst=None))
    url = f"{P}/exceptions/1/resolve"
    for body in ({}, {"action": "burn", "by": "a"}, {"action": "dismiss", "by": ""},
                 {"action": "adjust", "by": "a", "lines": [{"item": G, "location": "A",
                                                           "qty": 1e300}]},
                 {"action": "adjust", "by": "a", "lines": [{"item": G, "location": "A",
                                                           "qty": 0}]},
                 {"action": "adjust", "by": "a", "lines": "A"}):
        answer = client.post(url, json=body)
        assert answer.status_code in (400, 422), (body, answer.text)
    assert client.get(f"{P}/exceptions/1").json()["status"] == "open"
    assert client.get(f"{P}/exceptions/abc").status_code == 422
