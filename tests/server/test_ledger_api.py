"""The ledger read API through TestClient, on its own app (the lead registers the router)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server.api.ledger import router
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings

SITE, DEV = "wh1", "hh-01"
G = "09501101530003"
READER = {"Authorization": "Bearer reader-token-1"}
ADMIN = {"Authorization": "Bearer admin-token-1"}


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database=tmp_path / "api.db", broker=None,
                        tokens={"reader-token-1": frozenset({"read"}),
                                "admin-token-1": frozenset({"admin"})})
    app = create_app(settings, store=store)
    if not any(getattr(r, "path", "") == f"{API_PREFIX}/ledger/check" for r in app.routes):
        app.include_router(router, prefix=API_PREFIX)
    with TestClient(app) as c:
        yield c


def ev(seq: int, type: str = "receive", *, time: str = "2026-03-01T10:00:00.000Z",
       src: str | None = None, dst: str | None = "DOCK", serial: str | None = None,
       epc: str | None = None, qty: float = 1) -> wire.Event:
    return wire.Event(id=wire.new_event_id(), seq=seq, time=time, type=type,
                      item=wire.Item(gtin=G, serial=serial, epc=epc), qty=qty, from_=src, to=dst)


def apply(store: Store, *events: wire.Event) -> None:
    store.apply_batch(wire.Batch(SITE, DEV, wire.utc_now(), events), source="http")


def is_problem(response: object, status: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(  # type: ignore[attr-defined]
        "application/problem+json")


def test_stock_as_of(client: TestClient, store: Store) -> None:
    apply(store, ev(1, time="2026-03-01T10:30:00.000+02:00", qty=5, dst="A"),
          ev(2, time="2026-03-01T09:30:00.000Z", qty=3, dst="A"))
    r = client.get("/api/v1/stock/as-of", params={"at": "2026-03-01T09:00:00Z"}, headers=READER)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "at": "2026-03-01T09:00:00.000+00:00",
        "items": [{"site": SITE, "item": G, "location": "A", "lot": None, "quantity": 5.0}],
    }
    r = client.get("/api/v1/stock/as-of",
                   params={"at": "2026-03-01T12:00:00+02:00", "location": "B"}, headers=READER)
    assert r.json()["items"] == []
    is_problem(client.get("/api/v1/stock/as-of", params={"at": "2026-03-01T09:00"},
                          headers=READER), 400)
    is_problem(client.get("/api/v1/stock/as-of", headers=READER), 422)
    is_problem(client.get("/api/v1/stock/as-of", params={"at": "2026-03-01T09:00Z"}), 401)


def test_check_and_rebuild(client: TestClient, store: Store) -> None:
    apply(store, ev(1, qty=5, dst="A"))
    assert client.get("/api/v1/ledger/check", headers=READER).json() == {
        "ok": True, "differences": []
    }
    with store._transaction() as cur:
        cur.execute("UPDATE stock SET quantity = 9")
    body = client.get("/api/v1/ledger/check", headers=READER).json()
    assert body == {"ok": False, "differences": [{
        "site": SITE, "item": G, "location": "A", "lot": None, "cached": 9.0, "ledger": 5.0,
        "difference": 4.0,
    }]}
    is_problem(client.post("/api/v1/ledger/rebuild", headers=READER), 403)
    r = client.post("/api/v1/ledger/rebuild", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["lines"] == 1 and len(r.json()["fixed"]) == 1
    assert client.get("/api/v1/ledger/check", headers=READER).json()["ok"] is True


def test_device_gaps_paged(client: TestClient, store: Store) -> None:
    apply(store, ev(1), ev(3), ev(5), ev(7), ev(9))
    apply(store, ev(2))
    r = client.get(f"/api/v1/devices/{SITE}/{DEV}/gaps", params={"limit": 2}, headers=READER)
    body = r.json()
    assert body["missing"] == [[4, 4], [6, 6]] and body["missing_count"] == 3
    assert [x["seq"] for x in body["late"]] == [2] and body["late_count"] == 1
    assert body["next_cursor"] == "2"
    body = client.get(f"/api/v1/devices/{SITE}/{DEV}/gaps",
                      params={"limit": 2, "cursor": body["next_cursor"]}, headers=READER).json()
    assert body["missing"] == [[8, 8]] and body["late"] == [] and body["next_cursor"] is None
    is_problem(client.get(f"/api/v1/devices/{SITE}/ghost/gaps", headers=READER), 404)
    is_problem(client.get(f"/api/v1/devices/{SITE}/{DEV}/gaps", params={"cursor": "x"},
                          headers=READER), 400)


def test_serials_tags_and_conflicts(client: TestClient, store: Store) -> None:
    epc = "urn:epc:id:sgtin:0614141.812345.42"
    apply(store, ev(1, dst="A", serial="42", epc=epc),
          ev(2, "move", src="A", dst="B", serial="42", epc=epc, time="2026-03-01T11:00:00Z"),
          ev(3, dst="A", serial="7"), ev(4, dst="C", serial="7", time="2026-03-01T12:00:00Z"))
    body = client.get("/api/v1/serials/42", params={"gtin": G, "limit": 1},
                      headers=READER).json()
    assert body["whereabouts"][0]["location"] == "B"
    assert [e["type"] for e in body["history"]] == ["receive"] and body["next_cursor"] == "1"
    body = client.get(f"/api/v1/tags/{epc}", headers=READER).json()
    assert body["whereabouts"][0]["location"] == "B" and len(body["history"]) == 2
    assert body["next_cursor"] is None
    is_problem(client.get("/api/v1/serials/none", headers=READER), 404)
    is_problem(client.get("/api/v1/tags/urn:epc:id:sgtin:0.0.0", headers=READER), 404)
    conflicts = client.get("/api/v1/ledger/conflicts", headers=READER).json()
    assert [(c["serial"], c["location"], c["last_location"]) for c in conflicts["items"]] == [
        ("7", "C", "A")
    ]
