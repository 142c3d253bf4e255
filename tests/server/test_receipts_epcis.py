"""Receipts from a supplier's EPCIS 2.0 document: the GS1 standard's own examples, a despatch
advice that says everything itself, schema errors and receipt errors by their EPCIS JSON path."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from tests.server.helpers import WRITE_TOKEN, api_settings, bearer, payload
from tests.server.receiptfixtures import receive

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "epcis2" / "examples"
PARENT = "106141412345678908"  # urn:epc:id:sscc:0614141.1234567890
SITE_GLN = "0614141000050"  # urn:epc:id:sgln:0614141.00005.0


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return loaded


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    md = MasterData(store)
    md.import_items("sku,gtins,unit\nX1,10614141073464,EA\nX2,70614141123451,EA\n"
                    "Q,04012345987652,EA\nKG,04012345123456,KGM\n")
    md.create_location(LocationSpec("wh1", "wh1", "site", gln=SITE_GLN))
    md.create_location(LocationSpec("wh1", "DOCK-1", "bin", "wh1"))
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as client:
        yield client


def despatch_advice() -> dict[str, Any]:
    """The standard's aggregation as a supplier would send it: what it names for itself."""
    doc = example("Example_9.6.3-AggregationEvent.jsonld")
    event = doc["epcisBody"]["eventList"][0]
    event.update(action="ADD", bizStep="packing", disposition="in_progress")
    event["bizTransactionList"] = [
        {"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141000012:PO-9"},
        {"type": "desadv", "bizTransaction": "urn:epcglobal:cbv:bt:0614141000012:ASN-77"}]
    event["sourceList"] = [{"type": "owning_party", "source": "urn:epc:id:pgln:4012345.00000"}]
    event["destinationList"] = [{"type": "location",
                                 "destination": "urn:epc:id:sgln:0614141.00005.0"}]
    second = copy.deepcopy(event)  # a second pallet, and more on the first
    second["parentID"] = "urn:epc:id:sscc:0614141.1234567891"
    second["childEPCs"] = ["https://id.gs1.org/01/70614141123451/21/1"]
    second["childQuantityList"] = []
    more = copy.deepcopy(event)
    more["childEPCs"] = ["urn:epc:id:sgtin:0614141.107346.2019"]
    more["childQuantityList"] = [{"epcClass": "urn:epc:idpat:sgtin:4012345.098765.*",
                                  "quantity": 5}]
    doc["epcisBody"]["eventList"] += [second, more,
                                      {**copy.deepcopy(event), "action": "DELETE"}]
    return doc


def test_the_standards_aggregation_example_is_a_receipt(api: TestClient) -> None:
    params = {"id": "ASN-E1", "site": "wh1", "supplier": "ACME", "location": "DOCK-1"}
    answer = api.post("/api/v1/receipts", params=params,
                      json=example("Example_9.6.3-AggregationEvent.jsonld"))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["source"], body["expected_date"], body["location"]) == (
        "epcis", "2013-06-08", "DOCK-1")
    (pallet,) = body["pallets"]
    assert (pallet["sscc"], pallet["epcs_expected"]) == (PARENT, 2)
    assert [(ln["sku"], ln["lot"], ln["expected"], ln["sscc"]) for ln in body["lines"]] == [
        ("Q", None, 10, PARENT), ("KG", "998877", 200.5, PARENT)]
    again = api.post("/api/v1/receipts", params=params,
                     json=example("Example_9.6.3-AggregationEvent.jsonld"))
    assert again.status_code == 200 and again.json() == body
    dl = api.post("/api/v1/receipts", params={**params, "id": "ASN-E2"},
                  json=example("Example_9.6.3-AggregationEventWithDigitalLink.jsonld"))
    assert dl.status_code == 201, dl.text
    assert dl.json()["pallets"][0]["missing_epcs"] == [
        "https://id.gs1.org/01/70614141123451/21/2017",
        "https://id.gs1.org/01/70614141123451/21/2018"]


def test_a_despatch_advice_names_its_receipt_site_and_supplier(api: TestClient) -> None:
    answer = api.post("/api/v1/receipts", json=despatch_advice())
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["id"], body["site"], body["supplier"], body["location"]) == (
        "ASN-77", "wh1", "urn:epc:id:pgln:4012345.00000", None)
    assert [(p["sscc"], p["epcs_expected"]) for p in body["pallets"]] == [
        (PARENT, 3), ("106141412345678915", 1)]
    assert [(ln["sku"], ln["expected"]) for ln in body["lines"]] == [("Q", 15), ("KG", 200.5)]
    # the door reads a Digital-Link-listed case by its URN: the same case
    door = receive(doc=None, gtin="70614141123451", serial="1",
                   epc_uri="urn:epc:id:sgtin:0614141.712345.1")
    ack = api.post("/api/v1/events", content=payload("wh1", "door-1", door))
    assert ack.json()["results"][0]["status"] == "applied"
    view = api.get("/api/v1/receipts/ASN-77").json()
    assert view["pallets"][1]["received"] == "epc" and view["pallets"][1]["missing_epcs"] == []


def test_schema_errors_are_named_by_json_path_and_nothing_is_kept(api: TestClient) -> None:
    doc = despatch_advice()
    event = doc["epcisBody"]["eventList"][0]
    del event["action"]
    event["eventTime"] = "08/06/2013 14:58"
    doc["epcisBody"]["eventList"][1]["childEPCs"] = [42]
    answer = api.post("/api/v1/receipts", json=doc)
    assert answer.status_code == 422
    paths = {e["path"] for e in answer.json()["errors"]}
    assert {"$.epcisBody.eventList[0].eventTime", "$.epcisBody.eventList[1].childEPCs[0]"} <= paths
    assert any(p.startswith("$.epcisBody.eventList[0]") and "action" in e["reason"]
               for e in answer.json()["errors"] for p in [e["path"]])
    assert api.get("/api/v1/receipts").json()["items"] == []


def test_receipt_errors_point_into_the_epcis_document(api: TestClient) -> None:
    doc = despatch_advice()
    events = doc["epcisBody"]["eventList"]
    events[0]["childEPCs"].append("urn:epc:id:sgtin:0614141.999999.1")  # GTIN nobody has
    events[0]["childQuantityList"][1]["uom"] = "LTR"  # KG is kept in KGM
    events[1]["parentID"] = "urn:epc:id:sgtin:0614141.107346.9"  # a case is no pallet
    events[2]["childQuantityList"].append({"epcClass": "urn:epc:id:sgtin:0614141.107346.1",
                                           "quantity": 1})
    answer = api.post("/api/v1/receipts", json=doc)
    assert answer.status_code == 422, answer.text
    found = {e["path"]: e["reason"] for e in answer.json()["errors"]}
    assert sorted(found) == [
        "$.epcisBody.eventList[0].childEPCs[2]",
        "$.epcisBody.eventList[0].childQuantityList[1].uom",
        "$.epcisBody.eventList[1].parentID",
        "$.epcisBody.eventList[2].childQuantityList[1].epcClass",
    ]
    assert "not in master data" in found["$.epcisBody.eventList[0].childEPCs[2]"]


def test_what_a_receipt_needs_and_the_document_lacks_is_asked_for(api: TestClient) -> None:
    bare = example("Example_9.6.3-AggregationEvent.jsonld")
    answer = api.post("/api/v1/receipts", json=bare)
    assert answer.status_code == 422
    assert {e["path"] for e in answer.json()["errors"]} == {
        "$.epcisBody.eventList", "$.epcisBody.eventList[0].destinationList",
        "$.epcisBody.eventList[0].sourceList"}
    bad_id = api.post("/api/v1/receipts", json=bare,
                      params={"id": "has space", "site": "wh1", "supplier": "S",
                              "expected_date": "tomorrow"})
    assert {e["path"] for e in bad_id.json()["errors"]} == {"?id", "?expected_date"}
    objects = example("Example_9.6.1-with-comment.jsonld")  # ObjectEvents only
    nothing = api.post("/api/v1/receipts", json=objects, params={"id": "X", "site": "wh1"})
    assert nothing.status_code == 422
    assert "nothing to expect" in nothing.json()["errors"][0]["reason"]
    native = api.post("/api/v1/receipts", params={"site": "wh1"}, json={"id": "N"})
    assert native.status_code == 422 and native.json()["errors"][0]["path"] == "?site"
    assert api.get("/api/v1/receipts").json()["items"] == []
