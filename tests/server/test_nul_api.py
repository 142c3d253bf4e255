"""NUL (U+0000) is refused at the HTTP boundary on every route, identically on SQLite and
PostgreSQL: 422 problem+json naming where it was, nothing stored (server/nulguard.py).

Every route taking a body is in ``CASES`` (a test walks the app's routes and fails on one that
is not): its body with a NUL in a string is 422 naming the JSON path (or CSV line), the same
with a NUL in a key, and every table of the database is as it was; the same body with the
escaped text ``\\u0000`` (a backslash, then ``u0000``: no NUL) is accepted and stored as that
text. Query parameters and path parameters of every route likewise. Behind the boundary, the
store maps PostgreSQL's refusal of NUL to 422 too (``server.db.failure``).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server import counts as cs
from floorsync.server import nulguard
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.errors import Unstorable
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from floorsync.server.nulguard import NulGuard
from tests.server.helpers import WRITE_TOKEN, api_settings, batch, bearer, event, payload
from tests.server.orderkit import order_doc, with_items
from tests.server.receiptfixtures import document, load_items

P = API_PREFIX
SITE, DEV = "wh1", "hh-01"
G = "09501101530003"
NUL = "\x00"
ESCAPED = "\\u0000"  # six characters: a backslash, then u0000; JSON sends it as "\\u0000"
EPCIS = Path(__file__).resolve().parents[1] / "data" / "epcis2" / "examples"
JSON = {"content-type": "application/json"}
EXEMPT = {("POST", f"{P}/events"): "the wire decoder refuses NUL itself (400, recorded)"}


# --- the store, whole ------------------------------------------------------------------------


def tables(store: Store) -> list[str]:
    if store.engine == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    else:
        sql = ("SELECT table_name FROM information_schema.tables WHERE table_schema ="
               " current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")
    return [str(row[0]) for row in store._query(sql)]


def snapshot(store: Store) -> dict[str, list[str]]:
    """Every row of every table, as text: what 'nothing was stored' compares."""
    return {t: sorted(repr(tuple(r)) for r in store._query(f"SELECT * FROM {t}"))
            for t in tables(store)}


def holds_text(store: Store, text: str) -> bool:
    return any(isinstance(v, str) and text in v
               for t in tables(store) for r in store._query(f"SELECT * FROM {t}") for v in r)


def nul_problem(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    assert problem["status"] == 422 and problem["title"] == "invalid request"
    assert "NUL" in problem["detail"] and problem["total"] >= len(problem["errors"]) >= 1
    return problem


# --- setups: what a route needs before it can take its body ----------------------------------


def apply(store: Store, *events: wire.Event) -> None:
    results = store.apply_batch(batch(SITE, DEV, *events), source="http")
    assert all(r.status == "applied" for r in results), results


def an_item(client: TestClient, store: Store) -> None:
    MasterData(store).create_item(ItemSpec("SKU-1", gtins=(G,)))


def a_site(client: TestClient, store: Store) -> None:
    MasterData(store).create_location(LocationSpec(SITE, SITE, "site"))


def negative_stock(client: TestClient, store: Store) -> None:
    apply(store, event("receive", gtin=G, dst="A", qty=2))
    apply(store, event("pick", gtin=G, src="A", dst=None, qty=5))


def open_count(client: TestClient, store: Store) -> None:
    apply(store, event("receive", gtin=G, dst="A", qty=10))
    answer = client.post(f"{P}/counts", json={"site": SITE, "location": "A", "by": "ann"})
    assert answer.status_code == 201 and answer.json()["id"] == 1, answer.text


def count_needing_decision(client: TestClient, store: Store) -> None:
    open_count(client, store)
    client.post(f"{P}/counts/1/lines", json={"lines": [{"item": G, "qty": 8}]})
    apply(store, event("pick", gtin=G, src="A", dst=None, qty=3))
    closed = client.post(f"{P}/counts/1/close", json={"by": "ann"})
    assert closed.json()["status"] == "needs_decision", closed.text


def items(client: TestClient, store: Store) -> None:
    with_items(store)


def an_order(client: TestClient, store: Store) -> None:
    with_items(store)
    assert client.post(f"{P}/orders", json=order_doc("SO-1", ("A", 1))).status_code == 201


def receipt_items(client: TestClient, store: Store) -> None:
    load_items(store)


def a_receipt(client: TestClient, store: Store) -> None:
    load_items(store)
    assert client.post(f"{P}/receipts", json=document()).status_code == 201


def epcis_master_data(client: TestClient, store: Store) -> None:
    md = MasterData(store)
    md.import_items("sku,gtins,unit\nX1,10614141073464,EA\nQ,04012345987652,EA\n"
                    "KG,04012345123456,KGM\n")
    md.create_location(LocationSpec(SITE, SITE, "site", gln="0614141000050"))
    md.create_location(LocationSpec(SITE, "DOCK-1", "bin", SITE))


def nothing(client: TestClient, store: Store) -> None:
    pass


# --- the table: one case (at least) per route taking a body ------------------------------------


def epcis_receipt(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EPCIS / "Example_9.6.3-AggregationEvent.jsonld")
                                     .read_text())
    doc["epcisBody"]["eventList"][0]["example:myField"] = f"vendor field{text}"
    return doc


def order_with_lot(text: str) -> dict[str, Any]:
    doc = order_doc("SO-9", ("A", 1), ("B", 2))
    doc["lines"][1]["lot"] = f"L1{text}"
    return doc


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # as in app.routes
    url: str
    body: Callable[[str], Any]  # the body with the given text inside one of its strings
    where: str  # the path the 422 names
    setup: Callable[[TestClient, Store], None] = nothing
    csv: bool = False
    params: dict[str, str] = field(default_factory=dict)
    accepted: int = 200  # the answer to the body holding the escaped text instead
    stored: bool = True  # the escaped text is then in the store, as it was sent

    @property
    def id(self) -> str:
        return f"{self.method} {self.url}{' csv' if self.csv else ''}{self.where}"


CASES = [
    Case("POST", f"{P}/items", f"{P}/items",
         lambda t: {"sku": "SKU-9", "description": f"T-shirt{t}"}, "description",
         accepted=201),
    Case("PUT", f"{P}/items/{{sku}}", f"{P}/items/SKU-1",
         lambda t: {"gtins": [G], "description": f"shirt{t}"}, "description", an_item),
    Case("POST", f"{P}/items/import", f"{P}/items/import",
         lambda t: f"sku,description\nSKU-1,ok\nSKU-2,shirt{t}\n", "line 3", csv=True),
    Case("POST", f"{P}/locations", f"{P}/locations",
         lambda t: {"site": SITE, "code": SITE, "kind": "site", "name": f"Main{t}"}, "name",
         accepted=201),
    Case("PUT", f"{P}/locations/{{site}}/{{code}}", f"{P}/locations/{SITE}/{SITE}",
         lambda t: {"kind": "site", "name": f"Main{t}"}, "name", a_site),
    Case("POST", f"{P}/locations/import", f"{P}/locations/import",
         lambda t: f"site,code,kind,name\n{SITE},{SITE},site,Main{t}\n", "line 2", csv=True),
    Case("POST", f"{P}/exceptions/{{ident}}/resolve", f"{P}/exceptions/1/resolve",
         lambda t: {"action": "dismiss", "by": "ann", "reason": f"found{t}"}, "reason",
         negative_stock),
    Case("POST", f"{P}/counts", f"{P}/counts",
         lambda t: {"site": SITE, "location": "A", "by": f"ann{t}"}, "by", accepted=201),
    Case("POST", f"{P}/counts/{{ident}}/lines", f"{P}/counts/1/lines",
         lambda t: {"lines": [{"item": G, "qty": 1}, {"item": G, "qty": 2, "lot": f"L{t}"}]},
         "lines[1].lot", open_count),
    Case("POST", f"{P}/counts/{{ident}}/close", f"{P}/counts/1/close",
         lambda t: {"by": f"ann{t}"}, "by", open_count),
    Case("POST", f"{P}/counts/{{ident}}/decide", f"{P}/counts/1/decide",
         lambda t: {"keep": "counted", "by": f"lead{t}"}, "by", count_needing_decision),
    Case("POST", f"{P}/counts/{{ident}}/cancel", f"{P}/counts/1/cancel",
         lambda t: {"by": f"ann{t}"}, "by", open_count),
    Case("POST", f"{P}/orders", f"{P}/orders", order_with_lot, "lines[1].lot", items,
         accepted=201),
    Case("POST", f"{P}/orders/{{order_id}}/cancel", f"{P}/orders/SO-1/cancel",
         lambda t: {"by": "ann", "reason": f"called{t}"}, "reason", an_order),
    Case("POST", f"{P}/receipts", f"{P}/receipts",
         lambda t: document(supplier=f"ACME{t}"), "supplier", receipt_items, accepted=201),
    Case("POST", f"{P}/receipts", f"{P}/receipts", epcis_receipt,
         'epcisBody.eventList[0]["example:myField"]', epcis_master_data,
         params={"id": "ASN-E1", "site": SITE, "supplier": "ACME", "location": "DOCK-1"},
         accepted=201, stored=False),  # an EPCIS extension field: read, not kept
    Case("POST", f"{P}/epcis/capture", f"{P}/epcis/capture", epcis_receipt,
         'epcisBody.eventList[0]["example:myField"]', accepted=201),  # kept whole
    Case("POST", f"{P}/receipts/{{ident}}/close", f"{P}/receipts/ASN-1/close",
         lambda t: {"by": f"boss{t}"}, "by", a_receipt),
    Case("POST", "/dashboard/login", "/dashboard/login",
         lambda t: {"token": f"{WRITE_TOKEN}{t}"}, "token", accepted=401, stored=False),
]


def send(client: TestClient, case: Case, text: str, key: str | None = None) -> Any:
    body = case.body(text)
    if case.csv:
        return client.request(case.method, case.url, params=case.params,
                              content=body.encode(), headers={"content-type": "text/csv"})
    if key is not None:
        body = {**body, key: 1}
    return client.request(case.method, case.url, params=case.params, json=body)


def body_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of the app that takes a request body."""
    out: set[tuple[str, str]] = set()
    for route in fastapi.routing.iter_route_contexts(app.routes):
        original = getattr(route, "original_route", route)
        if not isinstance(original, APIRoute):
            continue
        if original.body_field is not None or "requestBody" in (original.openapi_extra or {}):
            out.update((m, str(route.path)) for m in route.methods or () if m != "HEAD")
    return out


def test_every_route_taking_a_body_is_a_case(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "ledger.db"))
    routes = body_routes(app)
    assert len(routes) >= 18 and ("POST", f"{P}/orders") in routes  # the walk finds them
    covered = {(c.method, c.route) for c in CASES} | set(EXEMPT)
    assert routes - covered == set(), "a route taking a body with no NUL case: add one"
    assert covered - routes == set(), "a case for a route that is gone"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_nul_in_a_body_is_422_naming_where_and_nothing_is_stored(
    client: TestClient, store: Store, case: Case
) -> None:
    case.setup(client, store)
    before = snapshot(store)
    problem = nul_problem(send(client, case, NUL))
    assert [e["path"] for e in problem["errors"]] == [case.where]
    assert problem["detail"].startswith(f"{case.where}: ")
    assert snapshot(store) == before
    if not case.csv:  # in a key: named by the key, in JSON's spelling
        keyed = nul_problem(send(client, case, "", key="x\x00y"))
        assert [e["path"] for e in keyed["errors"]] == ['["x\\u0000y"]']
        assert "key" in keyed["errors"][0]["reason"]
        assert snapshot(store) == before
    escaped = send(client, case, ESCAPED)  # no NUL: the text backslash-u0000
    assert escaped.status_code == case.accepted, escaped.text
    assert holds_text(store, ESCAPED) is case.stored
    assert not holds_text(store, NUL)


def test_the_events_route_refuses_nul_itself_and_applies_nothing(
    client: TestClient, store: Store
) -> None:
    """POST /events is not scanned by the guard (the hot path): its decoder refuses NUL as it
    does over MQTT, an event holding one rejected with its reason (recorded), a batch header
    holding one a 400; nothing applied, on both engines."""
    body = payload(SITE, DEV, event("receive", gtin=G, lot=f"L{NUL}1", dst="A"))
    assert b"\\u0000" in body
    answer = client.post(f"{P}/events", content=body, headers=JSON)
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    assert result["status"] == "rejected" and "NUL" in result["reason"]
    header = payload(SITE, DEV, event("receive", gtin=G, dst="A")).replace(
        f'"{DEV}"'.encode(), b'"hh\\u000001"')
    refused = client.post(f"{P}/events", content=header, headers=JSON)
    assert refused.status_code == 400 and "device" in refused.json()["detail"], refused.text
    assert store._query("SELECT COUNT(*) FROM movements")[0][0] == 0
    assert store._query("SELECT COUNT(*) FROM stock")[0][0] == 0
    reasons = sorted(r[0] for r in store._query("SELECT reason FROM rejections"))
    assert len(reasons) == 2 and "NUL" in reasons[1] and "device" in reasons[0], reasons
    assert not holds_text(store, NUL)


def test_many_nuls_are_listed_in_document_order_and_counted(
    client: TestClient, store: Store
) -> None:
    lines = [{"line": n, "item": f"SKU-{NUL}", "qty": 1} for n in range(1, 151)]
    doc = {"id": "SO-1", "site": SITE, "sh\x00ip_to": "x", "lines": lines}
    problem = nul_problem(client.post(f"{P}/orders", json=doc))
    assert problem["total"] == 151 and len(problem["errors"]) == 100
    paths = [e["path"] for e in problem["errors"]]
    assert paths[:3] == ['["sh\\u0000ip_to"]', "lines[0].item", "lines[1].item"]
    assert problem["detail"].endswith("(and 150 more); nothing was done")
    assert store._query("SELECT COUNT(*) FROM orders")[0][0] == 0


@pytest.mark.parametrize("spelling", ["raw byte", "utf-16", "deep"])
def test_a_nul_however_spelled_is_found(client: TestClient, store: Store, spelling: str
                                        ) -> None:
    """A raw 0x00 byte inside a JSON string (invalid JSON, read leniently so no route's parser
    can differ), a UTF-16 body (which ``json.loads`` of bytes reads), a deep document."""
    load_items(store)
    doc = document(supplier="ACME" + NUL)
    if spelling == "raw byte":
        body = json.dumps(doc).replace("\\u0000", "\x00").encode()
        assert b"\x00" in body and b"\\u0000" not in body
    elif spelling == "utf-16":
        body = json.dumps(doc).encode("utf-16")
    else:
        doc = {"wrap": [[[[[{"deep": [NUL]}]]]]] * 1}
        body = json.dumps(doc).encode()
    problem = nul_problem(client.post(f"{P}/receipts", content=body))
    where = "wrap[0][0][0][0][0].deep[0]" if spelling == "deep" else "supplier"
    assert [e["path"] for e in problem["errors"]] == [where]
    assert store._query("SELECT COUNT(*) FROM receipts")[0][0] == 0


def test_a_document_nested_too_deep_to_read_is_left_to_its_route() -> None:
    """The guard cannot read it either (RecursionError): it finds nothing and lets the route
    answer, rather than failing itself."""
    body = b"[" * 100_000 + b'"\\u0000"' + b"]" * 100_000
    assert nulguard.might_hold_nul(body) and not nulguard.in_json(body)
    assert nulguard.in_json(b'[[["\\u0000"]]]').places == (
        nulguard.Nul("[0][0][0]", nulguard.IN_VALUE),)


@pytest.mark.parametrize(("text", "nul"), [
    (b'"\\u0000"', True), (b'"\\\\u0000"', False), (b'"\\\\\\u0000"', True),
    (b'"\\\\\\\\u0000"', False), (b'"a\\\\" , "\\u0000"', True), (b'"\\u00000"', True),
    (b'"\\u0001\\u000"', False), (b'"\x00"', True), (b'"u0000"', False), (b'"\\U0000"', False),
])
def test_the_fast_path_tells_an_escaped_nul_from_escaped_backslashes(text: bytes, nul: bool
                                                                       ) -> None:
    body = b'{"a": [' + text + b"]}"
    assert nulguard.might_hold_nul(body) is nul
    assert bool(nulguard.in_json(body)) is nul


def test_places_are_in_document_order_keys_before_values_and_capped() -> None:
    doc = {"b": [{"k\x00": "v\x00"}], "a": "\x00", "c": {"d": ["x", "\x00"]}}
    found = nulguard.in_json(json.dumps(doc).encode())
    assert [(p.path, p.reason) for p in found.places] == [
        ('b[0]["k\\u0000"]', nulguard.IN_KEY), ('b[0]["k\\u0000"]', nulguard.IN_VALUE),
        ("a", nulguard.IN_VALUE), ("c.d[1]", nulguard.IN_VALUE)]
    many = nulguard.in_json(json.dumps(["\x00"] * 5000).encode())
    assert many.total == 5000 and len(many.places) == nulguard.MAX_LISTED
    assert many.places[-1].path == f"[{nulguard.MAX_LISTED - 1}]"
    text = nulguard.in_text(("a\x00\n" * 100_000).encode(), "utf-8")
    assert text.total == 100_000 and len(text.places) == nulguard.MAX_LISTED
    assert text.places[-1].path == f"line {nulguard.MAX_LISTED}"


def test_escaped_backslashes_are_no_nul(client: TestClient, store: Store) -> None:
    """``\\\\u0000`` is a backslash then u0000; ``\\\\\\u0000`` is a backslash then a NUL."""
    fine = client.post(f"{P}/items", content=b'{"sku": "A-1", "description": "a\\\\u0000"}',
                       headers=JSON)
    assert fine.status_code == 201, fine.text
    assert client.get(f"{P}/items/A-1").json()["description"] == "a\\u0000"
    nul = client.post(f"{P}/items", content=b'{"sku": "A-2", "description": "a\\\\\\u0000"}',
                      headers=JSON)
    assert [e["path"] for e in nul_problem(nul)["errors"]] == ["description"]
    assert client.get(f"{P}/items/A-2").status_code == 404


def test_a_csv_in_utf16_with_a_nul_and_one_without(client: TestClient, store: Store) -> None:
    headers = {"content-type": "text/csv; charset=utf-16"}
    bad = f"sku,description\nA-1,x{NUL}y\n".encode("utf-16")
    problem = nul_problem(client.post(f"{P}/items/import", content=bad, headers=headers))
    assert [e["path"] for e in problem["errors"]] == ["line 2"]
    assert client.get(f"{P}/items/A-1").status_code == 404
    good = "sku,description\nA-1,xy\n".encode("utf-16")
    assert client.post(f"{P}/items/import", content=good, headers=headers).status_code == 200
    assert client.get(f"{P}/items/A-1").json()["description"] == "xy"


# --- the URL: query and path parameters of every route ------------------------------------------


def url_params(app: FastAPI) -> list[tuple[str, str, list[str], list[str]]]:
    """(method, path, its query parameters' names, its path parameters' names) of every route."""
    out: list[tuple[str, str, list[str], list[str]]] = []
    for route in fastapi.routing.iter_route_contexts(app.routes):
        original = getattr(route, "original_route", route)
        if not isinstance(original, APIRoute):
            continue
        query = [p.alias for p in original.dependant.query_params]
        path = [p.alias for p in original.dependant.path_params]
        out.extend((m, str(route.path), query, path) for m in sorted(route.methods or ())
                   if m != "HEAD")
    return out


def test_a_nul_in_any_query_or_path_parameter_is_422(client: TestClient, store: Store) -> None:
    negative_stock(client, store)  # something to find, were the NUL ignored
    before = snapshot(store)
    routes = url_params(client.app)  # type: ignore[arg-type]
    assert sum(len(q) for _, _, q, _ in routes) >= 40  # the walk finds them
    asked = 0
    for method, path, query, names in routes:
        plain = re.sub(r"\{[^}]+\}", "x", path)
        for name in query:
            answer = client.request(method, plain, params={name: f"A{NUL}"})
            problem = nul_problem(answer)
            assert [e["path"] for e in problem["errors"]] == [f"?{name}"], (method, path)
            asked += 1
        if names:
            filled = re.sub(r"\{[^}]+\}", "A%00B", path)
            problem = nul_problem(client.request(method, filled))
            assert [e["path"] for e in problem["errors"]] == ["URL path"], (method, path)
            asked += 1
    assert asked >= 60
    assert snapshot(store) == before
    named = nul_problem(client.get(f"{P}/stock?it%00em=A"))
    assert [e["path"] for e in named["errors"]] == ['?"it\\u0000em"']


def test_query_parameters_without_nul_still_work(client: TestClient, store: Store) -> None:
    negative_stock(client, store)
    answer = client.get(f"{P}/stock", params={"item": G, "location": "A"})
    assert answer.status_code == 200 and answer.json()["items"][0]["quantity"] == -3
    percent = client.get(f"{P}/stock?item=%2500")  # the text %00, not a NUL
    assert percent.status_code == 200 and percent.json()["items"] == []


# --- behind the boundary: the store's own translation -------------------------------------------


def test_postgresql_refusing_nul_is_a_422_not_a_503(pg_url: str, tmp_path: Path) -> None:
    """Were a path to miss the guard: psycopg refuses to send a str holding NUL
    (``psycopg.DataError``, no sqlstate) and the server refuses ``\\u0000`` in json text
    (22P05); the store raises ``Unstorable`` for both (422), writes and reads alike."""
    with Store(pg_url) as store:
        with pytest.raises(Unstorable) as refused:
            cs.open_count(store, SITE, "A", f"ann{NUL}")
        assert refused.value.status == 422 and "NUL" in refused.value.detail
        with pytest.raises(Unstorable):
            store._query("SELECT sku FROM items WHERE sku = ?", (f"A{NUL}",))
        with pytest.raises(Unstorable):
            store._query("SELECT CAST(? AS jsonb)", ('{"a": "\\u0000"}',))
        assert store._query("SELECT COUNT(*) FROM counts")[0][0] == 0
        app = create_app(api_settings(tmp_path / "unused.db"), store=store)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not NulGuard]
        with TestClient(app, headers=bearer(WRITE_TOKEN)) as client:
            answer = client.post(f"{P}/counts", json={"site": SITE, "location": "A",
                                                      "by": f"ann{NUL}"})
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["title"] == "invalid request"
            found = client.get(f"{P}/backorders", params={"item": f"A{NUL}"})
            assert found.status_code == 422, found.text
        assert store._query("SELECT COUNT(*) FROM counts")[0][0] == 0


def test_every_operation_documents_the_422(tmp_path: Path) -> None:
    document = create_app(api_settings(tmp_path / "ledger.db")).openapi()
    operations = [(path, method, op) for path, ops in document["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 40
    for path, method, op in operations:
        assert "422" in op["responses"], (method, path)
        assert "NUL" in op["responses"]["422"]["description"], (method, path)
    imports = document["paths"][f"{P}/items/import"]["post"]["responses"]["422"]
    assert "errors" in imports["content"]["application/problem+json"]["schema"]["properties"]


# --- over real HTTP: uvicorn, chunked bodies, the body limit in front ----------------------------


@pytest.fixture
def served(store: Store, tmp_path: Path) -> Iterator[int]:
    """The real app on ``store`` under uvicorn (bodies limited to 4 KiB); yields its port."""
    settings = api_settings(tmp_path / "ledger.db", max_body_bytes=4096)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1",
                                           port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def exchange(conn: http.client.HTTPConnection, method: str, url: str,
             chunks: list[bytes] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {**bearer(WRITE_TOKEN), "Content-Type": "application/json"}
    if chunks is None:
        conn.request(method, url, headers=headers)
    else:
        conn.request(method, url, body=iter(chunks), headers=headers, encode_chunked=True)
    response = conn.getresponse()
    body = response.read()
    return response.status, json.loads(body) if body else {}


def test_over_http_chunked_bodies_queries_and_the_limit(served: int, store: Store) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    apply(store, event("receive", gtin=G, dst="A", qty=10))
    before = snapshot(store)
    # the NUL's escape cut across two chunks, on a keep-alive connection
    status, problem = exchange(conn, "POST", f"{P}/counts", [
        b'{"site": "wh1", "location": "A", "by": "ann\\u00', b'00"}'])
    assert (status, [e["path"] for e in problem["errors"]]) == (422, ["by"])
    status, problem = exchange(conn, "GET", f"{P}/backorders?item=%00")
    assert (status, [e["path"] for e in problem["errors"]]) == (422, ["?item"])
    status, problem = exchange(conn, "GET", f"{P}/orders/SO%001")
    assert (status, [e["path"] for e in problem["errors"]]) == (422, ["URL path"])
    assert snapshot(store) == before
    conn.close()
    # over the limit: 413 before anything is read for NUL; the request in one write, so the
    # server has read all of it when it answers and closes (no reset racing the answer)
    body = b'{"by": "' + b"x" * 5000 + b'\\u0000"}'
    request = (f"POST {P}/counts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITE_TOKEN}"
               f"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served), timeout=30) as raw:
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, payload_ = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert json.loads(payload_)["limit"] == 4096
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    # without NUL, a chunked body reaches the route whole, the streaming ones too
    status, count = exchange(conn, "POST", f"{P}/counts", [
        b'{"site": "wh1", "location": "A",', b' "by": "ann\\\\u0000"}'])
    assert (status, count["started_by"]) == (201, "ann\\u0000"), count
    with_items(store)
    doc = json.dumps(order_doc("SO-1", ("A", 1))).encode()
    status, order = exchange(conn, "POST", f"{P}/orders", [doc[:10], doc[10:50], doc[50:]])
    assert (status, order["id"]) == (201, "SO-1"), order
    conn.close()
