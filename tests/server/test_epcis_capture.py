"""``POST /api/v1/epcis/capture`` on both engines: events kept whole, idempotent by eventID
(error declarations beside the event they declare), one transaction per document, every bad
place named; and ``GET /epcis/events`` giving them back beside the movements, filtered and paged
with them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server import epcisjson, epcisread
from floorsync.server.app import create_app
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from tests.server.helpers import READ_TOKEN, WRITE_TOKEN, api_settings, bearer, decoded

CAPTURE = "/api/v1/epcis/capture"
EVENTS = "/api/v1/epcis/events"
LD = {"Content-Type": "application/ld+json"}
GLN = "950600013431" + str(gs1_check_digit("950600013431"))
SGLN = "urn:epc:id:sgln:9506000.13431.0"
SITE_GLN = "950600013430" + str(gs1_check_digit("950600013430"))
TSHIRT = "09501101530003"
_ids = iter(range(1, 10**6))


def _event(kind: str = "ObjectEvent", minute: int = 0, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind,
                           "eventID": f"urn:uuid:00000000-0000-4000-8000-{next(_ids):012d}",
                           "eventTime": f"2026-03-01T10:{minute:02d}:00.000+01:00",
                           "eventTimeZoneOffset": "+01:00"}
    if kind in ("ObjectEvent", "AggregationEvent", "TransactionEvent", "AssociationEvent"):
        out["action"] = "OBSERVE"
    if kind == "ObjectEvent":
        out["epcList"] = ["urn:epc:id:sgtin:0614141.107346.1"]
    out.update(fields)
    return out


def _document(*events: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return {"@context": context or [epcisjson.CONTEXT, {"example": "http://ns.example.com/epcis/"}],
            "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-03-01T12:00:00Z", "epcisBody": {"eventList": list(events)}}


def _count(store: Store, table: str) -> int:
    return int(store._query(f"SELECT COUNT(*) FROM {table}")[0][0])


def _exported(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    answer = client.get(EVENTS, params=params)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert epcisread.validate(document) == []
    events: list[dict[str, Any]] = document["epcisBody"]["eventList"]
    return events


def _ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e.get("eventID", "") for e in events]


def test_captured_events_come_back_whole_with_our_record_time(client: TestClient,
                                                              store: Store) -> None:
    sensor = _event(minute=1, readPoint={"id": SGLN}, sensorElementList=[{
        "sensorMetadata": {"time": "2026-03-01T09:00:00Z"},
        "sensorReport": [{"type": "Temperature", "value": 4.50, "uom": "CEL"}]}],
        **{"example:myField": {"example:nested": [1, "two", None, True]}})
    transform = _event("TransformationEvent", 2, inputEPCList=["urn:epc:id:sgtin:0614141.107346.9"],
                       outputQuantityList=[{"epcClass": "urn:epc:class:lgtin:4012345.044444.L1",
                                            "quantity": 1.50, "uom": "KGM"}],
                       ilmd={"example:bestBefore": "2026-12-31"}, recordTime="2000-01-01T00:00:00Z")
    text = json.dumps(_document(sensor, transform))
    text = text.replace('"value": 4.5', '"value": 4.50').replace('"quantity": 1.5',
                                                                 '"quantity": 1.50')
    answer = client.post(CAPTURE, content=text.encode(), headers=LD)
    assert answer.status_code == 201, answer.text
    done = answer.json()
    assert done["events"] == 2 and done["captured"] == 2 and done["unchanged"] == 0
    assert done["capture_id"] == 1 and answer.headers["GS1-EPCIS-Version"] == "2.0.0"
    exported = client.get(EVENTS).text
    assert '"value":4.50' in exported and '"quantity":1.50' in exported  # numbers as written
    out = _exported(client)
    assert _ids_of(out) == [sensor["eventID"], transform["eventID"]]
    for given, back in zip((sensor, transform), out, strict=True):
        assert back["recordTime"] == done["recorded_at"] != given.get("recordTime")
        assert back["@context"] == [{"example": "http://ns.example.com/epcis/"}]
        assert {k: v for k, v in back.items() if k not in ("recordTime", "@context")} == {
            k: v for k, v in given.items() if k != "recordTime"}
    row = store._query("SELECT sent_record_time, type, event_time, read_point FROM epcis_events"
                       " ORDER BY id")
    assert row[1][:3] == ("2000-01-01T00:00:00Z", "TransformationEvent",
                          "2026-03-01T09:02:00.000000+00:00")
    assert row[0][3] == f"https://id.gs1.org/414/{GLN}"


def test_the_same_document_again_changes_nothing(client: TestClient, store: Store) -> None:
    document = _document(_event(minute=1), _event(minute=2))
    del document["epcisBody"]["eventList"][1]["eventID"]  # without one: its content is its key
    assert client.post(CAPTURE, json=document).status_code == 201
    before = [_count(store, t) for t in ("epcis_captures", "epcis_events", "epcis_event_epcs")]
    exported = _exported(client)
    # the same events, their keys in another order and recordTime another: the same events
    again = copy.deepcopy(document)
    again["epcisBody"]["eventList"] = [
        dict(reversed(list(e.items())), recordTime="2030-01-01T00:00:00Z")
        for e in again["epcisBody"]["eventList"]]
    for body in (document, again):
        answer = client.post(CAPTURE, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"capture_id": None, "events": 2, "captured": 0, "unchanged": 2,
                                 "recorded_at": None}
    assert [_count(store, t) for t in ("epcis_captures", "epcis_events",
                                       "epcis_event_epcs")] == before
    assert _exported(client) == exported


def test_other_content_under_a_kept_event_id_is_a_409_and_nothing_of_the_document_is_kept(
    client: TestClient, store: Store
) -> None:
    kept = _event(minute=1, bizStep="shipping")
    assert client.post(CAPTURE, json=_document(kept)).status_code == 201
    new = _event(minute=2)
    changed = {**kept, "bizStep": "receiving"}
    answer = client.post(CAPTURE, json=_document(new, changed))
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["total"] == 1 and problem["errors"][0]["path"] == "$.epcisBody.eventList[1]"
    assert kept["eventID"] in problem["errors"][0]["reason"]
    assert _count(store, "epcis_events") == 1 and _count(store, "epcis_captures") == 1
    assert _ids_of(_exported(client)) == [kept["eventID"]]
    # within one document too
    twice = client.post(CAPTURE, json=_document(new, {**new, "bizStep": "receiving"}))
    assert twice.status_code == 409 and twice.json()["errors"][0]["path"].endswith("[1]")
    assert _count(store, "epcis_events") == 1


def test_an_error_declaration_is_kept_beside_the_event_it_declares(client: TestClient,
                                                                   store: Store) -> None:
    original = _event(minute=1, bizStep="shipping")
    declaration = {**original, "errorDeclaration": {
        "declarationTime": "2026-03-02T08:00:00Z", "reason": "incorrect_data",
        "correctiveEventIDs": ["urn:uuid:11111111-1111-4111-8111-111111111111"]}}
    corrective = _event(minute=1, bizStep="receiving",
                        eventID="urn:uuid:11111111-1111-4111-8111-111111111111")
    assert client.post(CAPTURE, json=_document(original)).status_code == 201
    answer = client.post(CAPTURE, json=_document(declaration, corrective))
    assert answer.status_code == 201, answer.text
    assert answer.json()["captured"] == 2
    out = _exported(client)
    assert _ids_of(out) == [original["eventID"]] * 2 + [corrective["eventID"]]
    assert "errorDeclaration" not in out[0] and out[1]["errorDeclaration"]["reason"] == (
        "incorrect_data")
    assert out[1]["recordTime"] > out[0]["recordTime"]  # GE_recordTime finds the declaration
    assert _ids_of(_exported(client, GE_recordTime=out[1]["recordTime"])) == [
        original["eventID"], corrective["eventID"]]
    # again: unchanged; a second, other declaration: 409; one not repeating its event: 409
    assert client.post(CAPTURE, json=_document(declaration)).status_code == 200
    other = {**declaration, "errorDeclaration": {"declarationTime": "2026-03-03T08:00:00Z"}}
    answer = client.post(CAPTURE, json=_document(other))
    assert answer.status_code == 409 and "other content" in answer.json()["errors"][0]["reason"]
    wrong = {**corrective, "bizStep": "shipping",
             "errorDeclaration": {"declarationTime": "2026-03-03T08:00:00Z"}}
    answer = client.post(CAPTURE, json=_document(wrong))
    assert answer.status_code == 409 and "repeat the event" in answer.json()["errors"][0]["reason"]
    assert _count(store, "epcis_events") == 3


def test_a_declaration_may_come_first_but_not_for_another_event(client: TestClient) -> None:
    original = _event(minute=1)
    declaration = {**original, "errorDeclaration": {"declarationTime": "2026-03-02T08:00:00Z"}}
    assert client.post(CAPTURE, json=_document(declaration)).status_code == 201
    assert client.post(CAPTURE, json=_document({**original, "action": "ADD"})).status_code == 409
    assert client.post(CAPTURE, json=_document(original)).status_code == 201


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["epcisBody"]["eventList"][1].pop("eventTime"), "$.epcisBody.eventList[1]"),
        (lambda d: d["epcisBody"]["eventList"][0].update(bizStep="loafing"),
         "$.epcisBody.eventList[0].bizStep"),
        (lambda d: d["epcisBody"]["eventList"][1].update(eventTime="yesterday"),
         "$.epcisBody.eventList[1].eventTime"),
        (lambda d: d["epcisBody"]["eventList"][0].update(readPoint={"id": "not a uri"}),
         "$.epcisBody.eventList[0].readPoint.id"),
        (lambda d: d["epcisBody"]["eventList"][1].update(eventTime="0001-01-01T00:00:00+01:00"),
         "$.epcisBody.eventList[1].eventTime"),
        (lambda d: d.pop("schemaVersion"), "$"),
        (lambda d: d.update(type="ObjectEvent"), "$"),
    ],
)
def test_a_bad_document_is_a_422_naming_the_place_and_nothing_is_kept(
    client: TestClient, store: Store, change: Any, path: str
) -> None:
    document = _document(_event(minute=1), _event(minute=2))
    change(document)
    answer = client.post(CAPTURE, json=document)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert path in [e["path"] for e in problem["errors"]], problem
    assert problem["total"] >= 1
    assert _count(store, "epcis_events") == 0 and _count(store, "epcis_captures") == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, ""),
        (json.dumps({"@context": epcisjson.CONTEXT, "type": "EPCISDocument"}).encode(), ""),
    ],
)
def test_what_is_no_epcis_document_is_a_422(client: TestClient, store: Store, body: bytes,
                                            reason: str) -> None:
    answer = client.post(CAPTURE, content=body, headers=LD)
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["errors"][0]["reason"]
    assert _count(store, "epcis_events") == 0


def test_a_nul_is_refused_before_anything_is_stored(client: TestClient, store: Store) -> None:
    document = _document(_event(minute=1, **{"example:note": "a\u0000b"}))
    answer = client.post(CAPTURE, content=json.dumps(document).encode(), headers=LD)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["path"] == 'epcisBody.eventList[0]["example:note"]'
    assert _count(store, "epcis_events") == 0


def test_the_write_scope_is_needed(store: Store, tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    body = _document(_event())
    with TestClient(app) as anonymous:
        assert anonymous.post(CAPTURE, json=body).status_code == 401
    with TestClient(app, headers=bearer(READ_TOKEN)) as reader:
        assert reader.post(CAPTURE, json=body).status_code == 403
    assert _count(store, "epcis_events") == 0


def test_a_body_over_the_document_limit_is_a_413(store: Store, tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "ledger.db", max_body_bytes=4096,
                                  max_document_bytes=4096), store=store)
    big = _document(*(_event(minute=n % 60) for n in range(40)))
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as client:
        answer = client.post(CAPTURE, json=big)
        assert answer.status_code == 413, answer.text
        assert client.post(CAPTURE, json=_document(_event())).status_code == 201


# --- beside the movements: filters and pages ---------------------------------------------


@pytest.fixture
def mixed(store: Store, client: TestClient) -> Iterator[tuple[TestClient, list[str], list[str]]]:
    """A ledger of 7 movements (site and dock with GLNs) and 6 captured events of every type."""
    md = MasterData(store)
    md.create_location(LocationSpec("wh1", "wh1", "site", gln=SITE_GLN))
    md.create_location(LocationSpec("wh1", "DOCK-1", "bin", "wh1", gln=GLN))
    md.create_item(ItemSpec("TSHIRT-SKU", (TSHIRT,)))
    moves = [wire.Event(wire.new_event_id(), n + 1, f"2026-03-01T10:{n:02d}:30.000+01:00",
                        "receive", wire.Item(gtin=TSHIRT, lot="L1"), 1, None, "DOCK-1")
             for n in range(7)]
    store.apply_batch(decoded("wh1", "hh-01", *moves), source="http")
    at_dock = {"id": SGLN}
    captured = [
        _event(minute=0, bizStep="receiving", bizLocation=at_dock, readPoint=at_dock),
        _event("AggregationEvent", 1, parentID="urn:epc:id:sscc:0614141.1234567890",
               childEPCs=["urn:epc:id:sgtin:0614141.107346.7"], bizStep="packing"),
        _event("TransformationEvent", 2, inputEPCList=["urn:epc:id:sgtin:0614141.107346.8"],
               outputEPCList=["urn:epc:id:sgtin:0614141.107346.9"]),
        _event("TransactionEvent", 3, bizTransactionList=[
            {"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141073467:1"}],
            epcList=["urn:epc:id:sgtin:0614141.107346.10"], bizStep="shipping"),
        _event("AssociationEvent", 4, parentID="urn:epc:id:grai:4012345.55555.1",
               childEPCs=["urn:epc:id:giai:4000001.12345"], readPoint=at_dock),
        _event(minute=5, bizStep="receiving", epcList=[f"https://id.gs1.org/01/{TSHIRT}/21/X"]),
    ]
    answer = client.post(CAPTURE, json=_document(*captured))
    assert answer.status_code == 201, answer.text
    yield client, [f"urn:uuid:{m.id}" for m in moves], [e["eventID"] for e in captured]


def test_movements_then_captured_events_and_the_filters_judge_both(
    mixed: tuple[TestClient, list[str], list[str]]
) -> None:
    client, moves, cap = mixed
    assert _ids_of(_exported(client)) == moves + cap
    assert _ids_of(_exported(client, eventType="TransformationEvent")) == [cap[2]]
    assert _ids_of(_exported(client, eventType="AggregationEvent|AssociationEvent")) == [
        cap[1], cap[4]]
    assert _ids_of(_exported(client, eventType="ObjectEvent")) == [*moves, cap[0], cap[5]]
    assert _ids_of(_exported(client, EQ_bizStep="receiving")) == [*moves, cap[0], cap[5]]
    assert _ids_of(_exported(client, EQ_bizStep="urn:epcglobal:cbv:bizstep:shipping")) == [
        cap[3]]
    for form in (SGLN, f"https://id.gs1.org/414/{GLN}"):
        assert _ids_of(_exported(client, EQ_bizLocation=form)) == [*moves, cap[0]]
        assert _ids_of(_exported(client, EQ_readPoint=form)) == [*moves, cap[0], cap[4]]
    for epc, found in (("urn:epc:id:sgtin:0614141.107346.8", [cap[2]]),
                       ("https://id.gs1.org/01/10614141073464/21/9", [cap[2]]),
                       ("urn:epc:id:sscc:0614141.1234567890", [cap[1]]),
                       ("urn:epc:id:giai:4000001.12345", [cap[4]]),
                       ("urn:epc:id:sgtin:9501101.053000.X", [cap[5]])):
        assert _ids_of(_exported(client, MATCH_anyEPC=epc)) == found, epc
    # 10:02 and 10:04 local (+01:00): 09:02 and 09:04 UTC, both kinds
    assert _ids_of(_exported(client, GE_eventTime="2026-03-01T09:02:00Z",
                             LT_eventTime="2026-03-01T10:04:00+01:00")) == [
        moves[2], moves[3], cap[2], cap[3]]
    recorded = _exported(client)[-1]["recordTime"]
    assert _ids_of(_exported(client, GE_recordTime=recorded)) == cap
    assert _ids_of(_exported(client, LT_recordTime=recorded)) == moves


@pytest.mark.parametrize("params", [{}, {"EQ_bizLocation": SGLN},
                                    {"GE_eventTime": "2026-03-01T09:03:00Z"}])
def test_pages_over_both_lose_and_repeat_nothing(
    mixed: tuple[TestClient, list[str], list[str]], params: dict[str, Any]
) -> None:
    client, _, _ = mixed
    whole = _ids_of(_exported(client, **params))
    for per_page in (1, 2, 3, 5, 6, 7, 8, 13, 100):
        seen: list[str] = []
        query: dict[str, Any] = {**params, "perPage": per_page}
        for _ in range(100):
            answer = client.get(EVENTS, params=query)
            assert answer.status_code == 200
            page = answer.json()["epcisBody"]["eventList"]
            assert len(page) <= per_page
            seen += _ids_of(page)
            link = answer.headers.get("link")
            if link is None:
                break
            query = {**params, "perPage": per_page,
                     "nextPageToken": link.split("nextPageToken=")[1].split(">")[0]}
        assert seen == whole, (per_page, params)


def test_events_captured_after_a_page_come_on_a_later_one(
    mixed: tuple[TestClient, list[str], list[str]]
) -> None:
    client, moves, cap = mixed
    answer = client.get(EVENTS, params={"perPage": 10})
    token = answer.headers["link"].split("nextPageToken=")[1].split(">")[0]
    assert token == f"7.{3}"  # the ledger's 7 rows, then 3 captured events
    late = _event(minute=30)
    assert client.post(CAPTURE, json=_document(late)).status_code == 201
    rest = client.get(EVENTS, params={"perPage": 10, "nextPageToken": token})
    assert _ids_of(rest.json()["epcisBody"]["eventList"]) == [*cap[3:], late["eventID"]]
    # a bare rowid, as tokens were before events were captured: the ledger past it, then all
    old = client.get(EVENTS, params={"nextPageToken": "5"}).json()["epcisBody"]["eventList"]
    assert _ids_of(old) == moves[5:] + cap + [late["eventID"]]


@pytest.mark.parametrize("token", ["1.x", "1.2.3", "-1", ".5", "5.", "1" * 19 + ".1"])
def test_a_token_we_did_not_issue_is_a_400(client: TestClient, token: str) -> None:
    answer = client.get(EVENTS, params={"nextPageToken": token})
    assert answer.status_code == 400, answer.text
    assert "cursor" in answer.json()["title"]
