"""Who did what: resolutions, count decisions, master-data changes, receipt closes and order
cancels recorded under the token's name (never the token), and GET /audit (admin) to read them.
The real app on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.server import tokens
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.settings import Settings
from tests.server.helpers import event, payload

API = API_PREFIX
CLERK, SUPERVISOR, AUDITOR = tokens.new_token(), tokens.new_token(), tokens.new_token()
CSV = {"content-type": "text/csv"}


@pytest.fixture
def app_tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"{tokens.line_of('clerk', CLERK, 'write')}\n"
                    f"{tokens.line_of('supervisor', SUPERVISOR, 'write')}\n"
                    f"{tokens.line_of('auditor', AUDITOR, 'admin')}\n")
    return path


@pytest.fixture
def client(tmp_path: Path, app_tokens: Path) -> Iterator[TestClient]:
    settings = Settings(database=tmp_path / "audit.db", broker=None, tokens_file=app_tokens)
    with TestClient(create_app(settings)) as c:
        yield c


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def audit(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    return ok(client.get(f"{API}/audit", params=params, headers=as_(AUDITOR)))["items"]


def test_changes_are_recorded_with_the_token_name(client: TestClient) -> None:
    c, s = as_(CLERK), as_(SUPERVISOR)
    # master data
    ok(client.post(f"{API}/items", json={"sku": "TSHIRT-M", "gtins": ["09501101530003"]},
                   headers=c), 201)
    ok(client.put(f"{API}/items/TSHIRT-M", json={"description": "T-shirt M",
                                                 "gtins": ["09501101530003"]}, headers=s))
    ok(client.post(f"{API}/items/import", content=b"sku\nCAP\nSOCKS\n",
                   headers={**CSV, **c}))
    ok(client.post(f"{API}/locations/import", content=(
        b"site,code,kind,parent\nwh1,wh1,site,\nwh1,A-01,aisle,\nwh1,A-01-02,bin,A-01\n"),
        headers={**CSV, **c}))
    ok(client.post(f"{API}/locations", json={"site": "wh1", "code": "A-01-03", "kind": "bin",
                                             "parent": "A-01"}, headers=c), 201)
    ok(client.put(f"{API}/locations/wh1/A-01-03", json={"kind": "bin", "parent": "A-01",
                                                        "name": "third"}, headers=s))
    ok(client.post(f"{API}/locations/wh1/virtual", headers=c))
    # a refused change leaves no row
    assert client.post(f"{API}/items", json={"sku": "TSHIRT-M"}, headers=c).status_code == 409

    # a count: opened, lines, closed (posted at once: nothing moved meanwhile)
    count = ok(client.post(f"{API}/counts", json={"site": "wh1", "location": "A-01-02",
                                                  "by": "Ana"}, headers=c), 201)
    ok(client.post(f"{API}/counts/{count['id']}/lines",
                   json={"lines": [{"item": "TSHIRT-M", "qty": 4}]}, headers=c))
    closed = ok(client.post(f"{API}/counts/{count['id']}/close", json={"by": "Ana"},
                            headers=s))
    # a second count cancelled
    other = ok(client.post(f"{API}/counts", json={"site": "wh1", "location": "A-01-03",
                                                  "by": "Bo"}, headers=c), 201)
    ok(client.post(f"{API}/counts/{other['id']}/cancel", json={"by": "Bo"}, headers=c))

    # an exception resolved: a pick of stock that is not there (negative stock)
    body = payload("wh1", "hh-01", event("pick", qty=2, src="A-01-03", dst=None))
    ok(client.post(f"{API}/events", content=body, headers=c))
    (exc,) = ok(client.get(f"{API}/exceptions", params={"kind": "negative_stock"},
                           headers=c))["items"]
    resolved = ok(client.post(f"{API}/exceptions/{exc['id']}/resolve",
                              json={"action": "dismiss", "by": "Cy", "reason": "recount"},
                              headers=s))
    assert resolved["resolved_token"] == "supervisor"

    rows = audit(client)
    assert [(r["actor"], r["action"], r["subject"]) for r in rows] == [
        ("clerk", "item.create", "item/TSHIRT-M"),
        ("supervisor", "item.update", "item/TSHIRT-M"),
        ("clerk", "item.import", "items"),
        ("clerk", "location.import", "locations"),
        ("clerk", "location.create", "location/wh1/A-01-03"),
        ("supervisor", "location.update", "location/wh1/A-01-03"),
        ("clerk", "location.virtual", "site/wh1"),
        ("clerk", "count.open", f"count/{count['id']}"),
        ("supervisor", "count.close", f"count/{count['id']}"),
        ("clerk", "count.open", f"count/{other['id']}"),
        ("clerk", "count.cancel", f"count/{other['id']}"),
        ("supervisor", "exception.resolve", f"exception/{exc['id']}"),
    ]
    details = {(r["action"], r["subject"]): r["detail"] for r in rows}
    assert details[("item.import", "items")]["created"] == 2
    assert details[("item.update", "item/TSHIRT-M")]["description"] == "T-shirt M"
    assert details[("count.close", f"count/{count['id']}")]["by"] == "Ana"
    assert details[("count.close", f"count/{count['id']}")]["adjustment_event_id"] == closed[
        "adjustment_event_id"]
    assert details[("exception.resolve", f"exception/{exc['id']}")] == {
        "kind": "negative_stock", "action": "dismiss", "by": "Cy", "reason": "recount",
        "adjustment_event_id": None}
    # the tokens themselves, and their hashes, are nowhere in the table
    dump = "\n".join(str(r) for r in client.app.state.store._query(  # type: ignore[attr-defined]
        "SELECT * FROM audit"))
    for token in (CLERK, SUPERVISOR, AUDITOR):
        assert token not in dump and tokens.digest(token).hex() not in dump

    # filters and paging
    assert {r["actor"] for r in audit(client, actor="supervisor")} == {"supervisor"}
    assert [r["subject"] for r in audit(client, action="count.open")] == [
        f"count/{count['id']}", f"count/{other['id']}"]
    first = ok(client.get(f"{API}/audit", params={"limit": 5}, headers=as_(AUDITOR)))
    assert len(first["items"]) == 5 and first["next_cursor"]
    rest = ok(client.get(f"{API}/audit", params={"cursor": first["next_cursor"]},
                         headers=as_(AUDITOR)))
    assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in rows]
    assert rest["next_cursor"] is None
    assert audit(client, since="2999-01-01T00:00:00Z") == []
    assert len(audit(client, since="2000-01-01T00:00:00+02:00")) == len(rows)


def test_receipt_close_and_order_cancel_are_recorded(client: TestClient) -> None:
    c = as_(CLERK)
    ok(client.post(f"{API}/items", json={"sku": "TSHIRT-M", "gtins": ["09501101530003"]},
                   headers=c), 201)
    ok(client.post(f"{API}/locations/wh1/virtual", headers=c))
    receipt = {"id": "ASN-1", "site": "wh1", "supplier": "ACME", "expected_date": "2026-12-07",
               "lines": [{"sku": "TSHIRT-M", "qty": 5}]}
    ok(client.post(f"{API}/receipts", json=receipt, headers=c), 201)
    ok(client.post(f"{API}/receipts/ASN-1/close", json={"by": "Dee"}, headers=c))
    order = {"id": "SO-1", "site": "wh1", "ship_to": "Shop 9", "due": "2026-12-09",
             "lines": [{"item": "TSHIRT-M", "qty": 1}]}
    ok(client.post(f"{API}/orders", json=order, headers=c), 201)
    ok(client.post(f"{API}/orders/SO-1/cancel", json={"by": "Eve", "reason": "dup"},
                   headers=as_(SUPERVISOR)))
    rows = [r for r in audit(client) if r["action"] in ("receipt.close", "order.cancel")]
    assert [(r["actor"], r["action"], r["subject"], r["detail"]) for r in rows] == [
        ("clerk", "receipt.close", "receipt/ASN-1", {"by": "Dee", "site": "wh1"}),
        ("supervisor", "order.cancel", "order/SO-1",
         {"by": "Eve", "reason": "dup", "site": "wh1"}),
    ]


def test_audit_is_admin_only_and_checks_its_parameters(client: TestClient) -> None:
    assert client.get(f"{API}/audit").status_code == 401
    assert client.get(f"{API}/audit", headers=as_(CLERK)).status_code == 403
    assert client.get(f"{API}/audit", params={"since": "yesterday"},
                      headers=as_(AUDITOR)).status_code == 400
    assert client.get(f"{API}/audit", params={"cursor": "x"},
                      headers=as_(AUDITOR)).status_code == 400
    assert client.get(f"{API}/audit", params={"limit": 0},
                      headers=as_(AUDITOR)).status_code == 422
