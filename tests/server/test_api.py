"""The HTTP API through FastAPI's TestClient on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from tests.brokers import Mosquitto
from tests.server.helpers import api_client, api_settings, event, payload

SITE, DEV = "wh1", "hh-01"
G = "09501101530003"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(api_settings(tmp_path / "api.db"))
    with api_client(app) as c:
        yield c


def post(client: TestClient, body: bytes) -> list[tuple[str, str]]:
    response = client.post("/api/v1/events", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    ack = wire.decode_ack(response.content)
    assert ack.device == DEV
    return [(r.id, r.status) for r in ack.results]


def test_health_without_broker(client: TestClient) -> None:
    assert client.get("/api/v1/health").json() == {
        "status": "ok", "database": "ok", "mqtt": "disabled"
    }


def test_health_reports_mqtt(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = api_settings(tmp_path / "h.db", broker=mosquitto.url, client_id="central-h")
    with api_client(create_app(settings), token=None) as c:
        assert c.app.state.ingest.wait_ready(10)  # type: ignore[attr-defined]
        assert c.get("/api/v1/health").json()["mqtt"] == "connected"


def test_post_events_is_idempotent_and_feeds_stock(client: TestClient) -> None:
    e1, e2 = event("receive", qty=5, lot="L1", dst="DOCK-1"), event("receive", qty=1, dst="A")
    body = payload(SITE, DEV, e1, e2)
    assert post(client, body) == [(e1.id, "applied"), (e2.id, "applied")]
    assert post(client, body) == [(e1.id, "duplicate"), (e2.id, "duplicate")]
    assert client.get("/api/v1/stock").json()["items"] == [
        {"site": SITE, "item": G, "location": "A", "lot": None, "quantity": 1, "sku": None},
        {"site": SITE, "item": G, "location": "DOCK-1", "lot": "L1", "quantity": 5, "sku": None},
    ]
    first = client.get("/api/v1/stock", params={"limit": 1}).json()
    assert [r["location"] for r in first["items"]] == ["A"] and first["next_cursor"]
    rest = client.get("/api/v1/stock", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [r["location"] for r in rest["items"]] == ["DOCK-1"] and rest["next_cursor"] is None
    assert client.get("/api/v1/stock", params={"cursor": "nonsense"}).status_code == 400
    assert client.get("/api/v1/stock", params={"location": "A"}).json()["items"][0][
        "quantity"] == 1
    assert client.get("/api/v1/stock", params={"item": "nope"}).json()["items"] == []
    summary = client.get("/api/v1/summary").json()
    assert summary == {"events": 2, "movements": 2, "rejections": 0, "devices": 1,
                       "stock_lines": 2, "open_exceptions": 0}
    (dev,) = client.get("/api/v1/devices").json()
    assert dev["site"] == SITE and dev["device"] == DEV and dev["online"] is True
    assert dev["events"] == 2 and dev["last_seq"] == e2.seq and dev["backlog"] is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"{oops", "not JSON"), (b'{"v": 2}', "unsupported version 2"), (b"", "not JSON")],
)
def test_bad_body_is_problem_json_and_recorded(
    client: TestClient, body: bytes, detail: str
) -> None:
    response = client.post("/api/v1/events", content=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail"}
    assert problem["status"] == 400 and detail in problem["detail"]
    (rejection,) = client.get("/api/v1/rejections").json()["items"]
    assert rejection["source"] == "http" and detail in rejection["reason"]


def test_bad_event_in_good_envelope(client: TestClient) -> None:
    good = event("receive")
    bad_id = wire.new_event_id()
    body = json.dumps({"v": 1, "site": SITE, "device": DEV, "sent_at": wire.utc_now(),
                       "events": [wire.event_to_dict(good), {"id": bad_id, "seq": 0}]})
    assert post(client, body.encode()) == [(good.id, "applied"), (bad_id, "rejected")]
    (rejection,) = client.get("/api/v1/rejections").json()["items"]
    assert rejection["event_id"] == bad_id and "seq" in rejection["reason"]


def test_movements_pagination(client: TestClient) -> None:
    events = [event("move", qty=1, src="A", dst="B") for _ in range(5)]  # 10 ledger rows
    post(client, payload(SITE, DEV, *events))
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/movements", params=params).json()
        seen += [m["id"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == 10 and seen == sorted(seen)
    first = client.get("/api/v1/movements").json()
    assert first["next_cursor"] is None and first["items"][0]["qty"] == -1
    assert first["items"][0]["event_id"] == events[0].id


def test_bad_query_parameters_are_problems(client: TestClient) -> None:
    bad_cursor = client.get("/api/v1/movements", params={"cursor": "zz"})
    assert bad_cursor.status_code == 400
    assert bad_cursor.headers["content-type"] == "application/problem+json"
    too_many = client.get("/api/v1/movements", params={"limit": 5000})
    assert too_many.status_code == 422 and too_many.json()["status"] == 422
    assert client.get("/api/v1/nothing").json()["status"] == 404


def test_rejections_pagination(client: TestClient) -> None:
    for _ in range(3):
        client.post("/api/v1/events", content=b"nope")
    page = client.get("/api/v1/rejections", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    rest = client.get("/api/v1/rejections", params={"cursor": page["next_cursor"]}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_openapi_documents_the_batch_body(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    post_op = spec["paths"]["/api/v1/events"]["post"]
    schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) >= {"site", "device", "sent_at", "events"}
    assert "from" in schema["properties"]["events"]["items"]["properties"]
    assert "$ref" not in json.dumps(schema)
    assert {"/api/v1/stock", "/api/v1/movements", "/api/v1/devices", "/api/v1/health",
            "/api/v1/rejections", "/api/v1/summary"} <= set(spec["paths"])


def test_given_store_is_not_closed_by_the_app(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        app = create_app(api_settings(tmp_path / "unused.db"), store=store)
        with api_client(app) as c:
            post(c, payload(SITE, DEV, event("receive")))
        assert store.summary()["events"] == 1
    assert not (tmp_path / "unused.db").exists()


def test_stock_of_an_item_by_sku_or_any_gtin_finds_every_key(client: TestClient) -> None:
    """Edges send what they scanned (a GTIN, or a SKU label): the item's stock is all of it."""
    other = "09501101530010"
    made = client.post("/api/v1/items", json={"sku": "TSHIRT-M", "gtins": [G, other]})
    assert made.status_code == 201, made.text
    body = wire.encode_batch(wire.Batch(SITE, DEV, wire.utc_now(), (
        event("receive", gtin=G, dst="A"), event("receive", gtin=other, dst="A", qty=2),
        wire.Event(wire.new_event_id(), 99, wire.local_now(), "receive",
                   wire.Item(sku="TSHIRT-M"), 4, None, "B"),
        event("receive", gtin="04012345000009", dst="A"))))
    assert client.post("/api/v1/events", content=body).status_code == 200
    for asked in ("TSHIRT-M", G, other):
        lines = client.get("/api/v1/stock", params={"item": asked}).json()["items"]
        assert sorted((r["item"], r["location"], r["quantity"], r["sku"]) for r in lines) == [
            (G, "A", 1.0, "TSHIRT-M"), (other, "A", 2.0, "TSHIRT-M"),
            ("TSHIRT-M", "B", 4.0, "TSHIRT-M")], asked
    unknown = client.get("/api/v1/stock", params={"item": "04012345000009"}).json()["items"]
    assert [(r["item"], r["sku"]) for r in unknown] == [("04012345000009", None)]
