"""Items and locations over HTTP: TestClient with the lifespan, a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.server.api import items as items_api
from floorsync.server.app import create_app
from floorsync.server.locations import VIRTUAL
from tests.server.helpers import api_client, api_settings

DATA = Path(__file__).parent / "data"
API = "/api/v1"
CSV = {"content-type": "text/csv"}
PROBLEM_KEYS = {"type", "title", "status", "detail"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(api_settings(tmp_path / "master.db"))
    with api_client(app) as c:
        yield c


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and set(body) >= PROBLEM_KEYS
    return body


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def make_site(client: TestClient, name: str = "wh1") -> None:
    ok(client.post(f"{API}/locations", json={"site": name, "code": name, "kind": "site"}), 201)


def make(client: TestClient, code: str, kind: str, parent: str | None = None,
         **fields: Any) -> dict[str, Any]:
    body = {"site": "wh1", "code": code, "kind": kind, "parent": parent, **fields}
    return ok(client.post(f"{API}/locations", json=body), 201)


# --- items ----------------------------------------------------------------------------------


def test_item_lifecycle(client: TestClient) -> None:
    created = ok(client.post(f"{API}/items", json={
        "sku": "TSHIRT-M", "gtins": ["9501101530003"], "description": "T-shirt", "tracking": "lot"
    }), 201)
    assert created["gtins"] == ["09501101530003"] and created["unit"] == "EA"
    assert ok(client.get(f"{API}/items/TSHIRT-M")) == created
    assert ok(client.get(f"{API}/items/by-gtin/09501101530003"))["sku"] == "TSHIRT-M"
    updated = ok(client.put(f"{API}/items/TSHIRT-M", json={
        "gtins": ["4006381333931"], "description": "T-shirt M", "tracking": "serial", "unit": "PCE"
    }))
    assert updated["gtins"] == ["04006381333931"] and updated["tracking"] == "serial"
    assert updated["created_at"] == created["created_at"]
    problem(client.get(f"{API}/items/by-gtin/09501101530003"), 404)


def test_item_problems(client: TestClient) -> None:
    ok(client.post(f"{API}/items", json={"sku": "A", "gtins": ["09501101530003"]}), 201)
    again = problem(client.post(f"{API}/items", json={"sku": "A"}), 409)
    assert again["title"] == "item exists"
    taken = problem(client.post(f"{API}/items", json={"sku": "B", "gtins": ["09501101530003"]}),
                    409)
    assert taken == {"type": "about:blank", "title": "GTIN in use", "status": 409,
                     "detail": "GTIN 09501101530003 belongs to SKU A"}
    bad = problem(client.post(f"{API}/items", json={"sku": "B", "gtins": ["09501101530004"]}),
                  400)
    assert bad["title"] == "invalid GTIN" and "check digit" in bad["detail"]
    assert problem(client.get(f"{API}/items/by-gtin/12345"), 400)["title"] == "invalid GTIN"
    assert problem(client.get(f"{API}/items/nope"), 404)["title"] == "unknown item"
    problem(client.put(f"{API}/items/nope", json={}), 404)
    problem(client.post(f"{API}/items", json={"sku": "C", "tracking": "batch"}), 422)
    problem(client.post(f"{API}/items", json={"sku": "C", "colour": "red"}), 422)
    assert ok(client.get(f"{API}/items"))["items"][0]["sku"] == "A"  # B and C never made


def test_items_pagination(client: TestClient) -> None:
    skus = [f"SKU-{n:02d}" for n in range(7)]
    for sku in reversed(skus):
        ok(client.post(f"{API}/items", json={"sku": sku}), 201)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = ok(client.get(f"{API}/items", params=params))
        seen += [i["sku"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == skus and pages == 3
    assert ok(client.get(f"{API}/items", params={"limit": 7}))["next_cursor"] is None
    assert problem(client.get(f"{API}/items", params={"cursor": "zz"}), 400)["title"] == (
        "bad cursor")
    problem(client.get(f"{API}/items", params={"limit": 0}), 422)


def test_items_import_over_http(client: TestClient) -> None:
    body = (DATA / "items_good.csv").read_bytes()
    assert ok(client.post(f"{API}/items/import", content=body, headers=CSV)) == {
        "created": 4, "updated": 0}
    assert ok(client.post(f"{API}/items/import", content=body, headers=CSV)) == {
        "created": 0, "updated": 4}
    assert ok(client.get(f"{API}/items/by-gtin/96385074"))["sku"] == "SENSOR-X"
    listed = ok(client.get(f"{API}/items", params={"tracking": "lot"}))["items"]
    assert [i["sku"] for i in listed] == ["FLOUR-25", "TSHIRT-M"]


def test_bad_items_import_lists_rows_and_imports_nothing(client: TestClient) -> None:
    response = client.post(f"{API}/items/import", content=(DATA / "items_bad.csv").read_bytes(),
                           headers=CSV)
    body = problem(response, 400)
    assert body["title"] == "import rejected" and "nothing was imported" in body["detail"]
    assert [e["line"] for e in body["errors"]] == [3, 5, 6, 7, 9, 10, 11]
    assert set(body["errors"][0]) == {"line", "reason"}
    assert "bad check digit" in body["errors"][0]["reason"]
    assert ok(client.get(f"{API}/items"))["items"] == []  # GOOD-1..3 were not imported either


def test_import_bodies(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{API}/items/import"
    wrong = problem(client.post(url, json=[{"sku": "A"}]), 415)
    assert "text/csv" in wrong["detail"]
    latin1 = "sku,description\nCAFE,Café crème\n".encode("latin-1")
    problem(client.post(url, content=latin1, headers=CSV), 400)  # not UTF-8
    ok(client.post(url, content=latin1, headers={"content-type": "text/csv; charset=latin-1"}))
    assert ok(client.get(f"{API}/items/CAFE"))["description"] == "Café crème"
    bom = "\ufeffsku;description\r\nBOM;excel\r\n".encode()
    assert ok(client.post(url, content=bom, headers=CSV))["created"] == 1
    header_only = problem(client.post(url, content=b"", headers=CSV), 400)
    assert header_only["errors"][0]["line"] == 1
    monkeypatch.setattr(items_api, "MAX_CSV_BYTES", 64)
    problem(client.post(url, content=b"sku\n" + b"A\n" * 100, headers=CSV), 413)


# --- locations ------------------------------------------------------------------------------


def test_location_tree_over_http(client: TestClient) -> None:
    unknown_site = problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "Z1", "kind": "zone"}), 404)
    assert unknown_site["title"] == "unknown site"
    make_site(client)
    zone = make(client, "Z1", "zone", name="Zone 1")
    assert zone["parent"] == "wh1" and zone["barcodes"] == [] and zone["gln"] is None
    make(client, "A-01", "aisle", "Z1")
    for n in (1, 2, 3):
        make(client, f"A-01-0{n}", "bin", "A-01", barcodes=[f"LOC:A-01-0{n}"])
    unknown = problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "B-1", "kind": "bin", "parent": "NOPE"}), 404)
    assert unknown["title"] == "unknown parent"
    assert problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "Z9", "kind": "zone", "parent": "A-01-01"}), 409)["title"] == (
        "invalid parent")
    assert problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "Z1", "kind": "zone"}), 409)["title"] == "location exists"
    assert problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "Z9", "kind": "zone", "gln": "0614141123453"}), 400)["title"] == (
        "invalid GLN")

    path = ok(client.get(f"{API}/locations/wh1/A-01-02/path"))
    assert [p["code"] for p in path] == ["wh1", "Z1", "A-01", "A-01-02"]
    first = ok(client.get(f"{API}/locations/wh1/A-01/children", params={"limit": 2}))
    rest = ok(client.get(f"{API}/locations/wh1/A-01/children",
                         params={"cursor": first["next_cursor"]}))
    assert [c["code"] for c in first["items"] + rest["items"]] == [
        "A-01-01", "A-01-02", "A-01-03"]
    assert rest["next_cursor"] is None
    assert ok(client.get(f"{API}/locations/wh1/A-01-03"))["barcodes"] == ["LOC:A-01-03"]
    problem(client.get(f"{API}/locations/wh1/nope"), 404)
    problem(client.get(f"{API}/locations/wh1/nope/children"), 404)
    problem(client.get(f"{API}/locations/wh1/nope/path"), 404)


def test_moving_a_location_into_itself_is_409(client: TestClient) -> None:
    make_site(client)
    make(client, "Z1", "zone")
    make(client, "Z2", "zone", "Z1")
    cycle = problem(client.put(f"{API}/locations/wh1/Z1", json={"kind": "zone", "parent": "Z2"}),
                    409)
    assert cycle["title"] == "cycle" and "Z1 in Z2 in Z1" in cycle["detail"]
    moved = ok(client.put(f"{API}/locations/wh1/Z2", json={"kind": "zone", "name": "top"}))
    assert moved["parent"] == "wh1" and moved["name"] == "top"
    problem(client.put(f"{API}/locations/wh1/Z7", json={"kind": "zone"}), 404)


def test_virtual_locations(client: TestClient) -> None:
    made = ok(client.post(f"{API}/locations/wh5/virtual"))
    assert sorted(v["code"] for v in made) == sorted(VIRTUAL)
    assert ok(client.post(f"{API}/locations/wh5/virtual")) == made
    assert ok(client.get(f"{API}/locations/wh5/lost"))["kind"] == "virtual"
    assert problem(client.post(f"{API}/locations", json={
        "site": "wh5", "code": "dock", "kind": "virtual"}), 400)["title"] == (
        "invalid virtual location")
    assert problem(client.post(f"{API}/locations", json={
        "site": "wh5", "code": "B-1", "kind": "bin", "parent": "receiving"}), 409)["title"] == (
        "invalid parent")
    reserved = problem(client.post(f"{API}/locations/by-barcode/virtual"), 400)
    assert reserved["detail"] == "'by-barcode' is reserved"  # no site shadows the lookup


def test_lookup_by_label(client: TestClient) -> None:
    make_site(client)
    make_site(client, "wh2")
    make(client, "A-01-02", "bin", barcodes=["LOC:A-01-02", "https://labels.example/A/01/02"])
    make(client, "DOCK-1", "bin", sgln="urn:epc:id:sgln:0614141.12345.400")
    ok(client.post(f"{API}/locations", json={"site": "wh2", "code": "A-01-02", "kind": "bin"}),
       201)
    assert ok(client.get(f"{API}/locations/wh1/DOCK-1"))["gln"] == "0614141123452"
    found = ok(client.get(f"{API}/locations/by-barcode/LOC:A-01-02"))
    assert (found["site"], found["code"]) == ("wh1", "A-01-02")
    assert ok(client.get(f"{API}/locations/by-barcode/https://labels.example/A/01/02"))[
        "code"] == "A-01-02"
    for label in ("(414)0614141123452(254)400", "urn:epc:id:sgln:0614141.12345.400",
                  "https://id.gs1.org/414/0614141123452/254/400"):
        assert ok(client.get(f"{API}/locations/by-barcode/{label}"))["code"] == "DOCK-1"
    ambiguous = problem(client.get(f"{API}/locations/by-barcode/A-01-02"), 409)
    assert ambiguous["title"] == "ambiguous label"
    assert ok(client.get(f"{API}/locations/by-barcode/A-01-02", params={"site": "wh2"}))[
        "site"] == "wh2"
    assert problem(client.get(f"{API}/locations/by-barcode/LOC:nothing"), 404)["title"] == (
        "unknown label")
    taken = problem(client.post(f"{API}/locations", json={
        "site": "wh1", "code": "B-2", "kind": "bin", "barcodes": ["LOC:A-01-02"]}), 409)
    assert taken["detail"] == "barcode 'LOC:A-01-02' labels wh1/A-01-02"
    assert problem(client.post(f"{API}/locations", json={
        "site": "by-barcode", "code": "by-barcode", "kind": "site"}), 400)["title"] == (
        "invalid site")


def test_location_listing_filters_and_pages(client: TestClient) -> None:
    body = (DATA / "locations_good.csv").read_bytes()
    assert ok(client.post(f"{API}/locations/import", content=body, headers=CSV)) == {
        "created": 8, "updated": 0}
    bins = ok(client.get(f"{API}/locations", params={"kind": "bin"}))["items"]
    assert [(b["site"], b["code"]) for b in bins] == [
        ("wh1", "A-01-02"), ("wh1", "DOCK-1"), ("wh2", "A-01-02")]
    in_z1 = ok(client.get(f"{API}/locations", params={"site": "wh1", "parent": "Z1"}))["items"]
    assert [x["code"] for x in in_z1] == ["A-01"]
    everything = ok(client.get(f"{API}/locations", params={"limit": 1000}))["items"]
    assert len(everything) == 2 + 2 * len(VIRTUAL) + 5  # sites, virtual, the file's others
    paged: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = ok(client.get(f"{API}/locations", params=params))
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything
    problem(client.get(f"{API}/locations", params={"kind": "shelf"}), 422)
    problem(client.get(f"{API}/locations", params={"cursor": "WyJhIl0"}), 400)  # ["a"]


def test_bad_locations_import_lists_rows_and_imports_nothing(client: TestClient) -> None:
    response = client.post(f"{API}/locations/import",
                           content=(DATA / "locations_bad.csv").read_bytes(), headers=CSV)
    body = problem(response, 400)
    assert [e["line"] for e in body["errors"]] == [4, 5, 6, 7, 10, 11, 12, 13, 14, 15]
    reasons = {e["line"]: e["reason"] for e in body["errors"]}
    assert reasons[4] == "parent wh1/NOPE does not exist"
    assert "would sit inside itself" in reasons[5]
    assert ok(client.get(f"{API}/locations"))["items"] == []


def test_openapi_documents_master_data(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/items", "post"), ("/items", "get"), ("/items/{sku}", "get"), ("/items/{sku}", "put"),
        ("/items/by-gtin/{gtin}", "get"), ("/items/import", "post"), ("/locations", "post"),
        ("/locations", "get"), ("/locations/{site}/{code}", "get"),
        ("/locations/{site}/{code}", "put"), ("/locations/{site}/{code}/children", "get"),
        ("/locations/{site}/{code}/path", "get"), ("/locations/by-barcode/{text}", "get"),
        ("/locations/import", "post"), ("/locations/{site}/virtual", "post"),
    }
    for path, method in expected:
        operation = paths[API + path][method]
        responses = operation["responses"]
        success = responses.get("200") or responses["201"]
        assert "schema" in success["content"]["application/json"], (path, method)
        problems = [code for code in responses if code.startswith("4") and code != "422"]
        assert problems, (path, method)
        for code in problems:
            schema = responses[code]["content"]["application/problem+json"]["schema"]
            assert {"title", "status", "detail"} <= set(schema["properties"])
    imported = paths[f"{API}/items/import"]["post"]
    assert "text/csv" in imported["requestBody"]["content"]
    assert "sku (required)" in imported["requestBody"]["description"]
    rejected = imported["responses"]["400"]["content"]["application/problem+json"]["schema"]
    assert rejected["properties"]["errors"]["items"]["properties"].keys() == {"line", "reason"}
    assert paths[f"{API}/items"]["post"]["responses"]["409"]["description"]
