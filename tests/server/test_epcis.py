"""The EPCIS 2.0 export through the real app on a real ledger: every event type we write checked
against the GS1 schema, the movement mapping, filters, paging, bad parameters, stable re-export,
and the standard's own examples read in and written out again without loss of meaning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator, FormatChecker

from floorsync.edge import wire
from floorsync.server import epcisjson, epcisread
from floorsync.server.app import create_app
from floorsync.server.epcisread import AggregationEvent, ObjectEvent
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from tests.server.helpers import READ_TOKEN, WRITE_TOKEN, api_settings, bearer, decoded

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "epcis2" / "examples"
URL = "/api/v1/epcis/events"


def _gln(body: str) -> str:
    return body + str(gs1_check_digit(body))


SITE_GLN = _gln("950600013430")
DOCK_GLN = _gln("950600013431")
TSHIRT = "09501101530003"
FLOUR = _gln("0950110153001")
SSCC = _gln("10614141234567890")
SSCC2 = _gln("10614141234567891")
DL = "https://id.gs1.org"
_seq = iter(range(1, 10**9))


def ev(kind: str, minute: int, *, qty: float = 1, src: str | None = None,
       dst: str | None = None, doc: tuple[str, str] | None = None,
       count: wire.Count | None = None, **item: str) -> wire.Event:
    return wire.Event(
        id=wire.new_event_id(), seq=next(_seq),
        time=f"2026-11-22T10:{minute:02d}:00.250+01:00", type=kind,
        item=None if kind == "count" else wire.Item(**item), qty=0 if kind == "count" else qty,
        from_=src, to=dst, count=count,
        doc=None if doc is None else wire.DocRef(doc[0], doc[1], "expected"),
    )


# One of every kind of movement, in ledger order, with what its export must say.
LEDGER: list[tuple[wire.Event, dict[str, Any] | None]] = [
    (ev("receive", 0, qty=5, dst="DOCK-1", doc=("receipt", "ASN-4711"), gtin=TSHIRT, lot="L1"),
     {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "receiving",
      "quantityList": [{"epcClass": f"{DL}/01/{TSHIRT}/10/L1", "quantity": 5}],
      "readPoint": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"},
      "bizLocation": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"},
      "bizTransactionList": [{"type": "desadv",
                              "bizTransaction": f"urn:epcglobal:cbv:bt:{SITE_GLN}:ASN-4711"}]}),
    (ev("receive", 1, dst="DOCK-1", epc="urn:epc:id:sgtin:0614141.812345.6789",
        gtin="80614141123458", serial="6789", doc=("receipt", "ASN-4711")),
     {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "receiving",
      "epcList": [f"{DL}/01/80614141123458/21/6789"]}),
    (ev("putaway", 2, src="DOCK-1", dst="A-01-02", gtin=TSHIRT, lot="L1", qty=5),
     {"bizStep": "storing", "readPoint": {"id": f"{DL}/414/{SITE_GLN}"},
      "bizLocation": {"id": f"{DL}/414/{SITE_GLN}"}}),
    (ev("move", 3, src="A-01-02", dst="dock-label", gtin=TSHIRT, qty=2),
     {"bizStep": "storing", "bizLocation": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"}}),
    (ev("pick", 4, src="A-01-02", doc=("order", "SO-1"), gtin=TSHIRT, lot="L1", qty=2),
     {"bizStep": "picking", "readPoint": {"id": f"{DL}/414/{SITE_GLN}"},
      "bizTransactionList": [{"type": "po",
                              "bizTransaction": f"urn:epcglobal:cbv:bt:{SITE_GLN}:SO-1"}]}),
    (ev("pack", 5, src="PACK-1", gtin=TSHIRT, serial="S/1", sscc=SSCC),
     {"type": "AggregationEvent", "action": "ADD", "bizStep": "packing",
      "parentID": f"{DL}/00/{SSCC}", "childEPCs": [f"{DL}/01/{TSHIRT}/21/S%2F1"]}),
    (ev("pack", 6, src="PACK-1", gtin=TSHIRT, lot="L1", qty=3, sscc=SSCC),
     {"type": "AggregationEvent", "action": "ADD", "parentID": f"{DL}/00/{SSCC}",
      "childQuantityList": [{"epcClass": f"{DL}/01/{TSHIRT}/10/L1", "quantity": 3}]}),
    (ev("ship", 7, src="DOCK-1", sscc=SSCC, doc=("order", "SO-1")),
     {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "shipping",
      "epcList": [f"{DL}/00/{SSCC}"], "readPoint": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"}}),
    (ev("return", 8, dst="DOCK-1", gtin=TSHIRT, serial="S/1"),
     {"bizStep": "receiving", "disposition": "returned", "action": "OBSERVE"}),
    (ev("count", 9, count=wire.Count("A-01-02", (
        wire.CountLine(wire.Item(gtin=TSHIRT, lot="L1"), 2),
        wire.CountLine(wire.Item(gtin=TSHIRT, lot="L1"), 1),
        wire.CountLine(wire.Item(epc="urn:epc:id:sgtin:0614141.812345.6789"), 1),
        wire.CountLine(wire.Item(gtin="80614141123458", serial="6789"), 1),
        wire.CountLine(wire.Item(sku="LOOSE"), 4),
        wire.CountLine(wire.Item(sku="FLOUR-SKU"), 2.5)))),
     {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "cycle_counting",
      "epcList": [f"{DL}/01/80614141123458/21/6789"],
      "quantityList": [{"epcClass": f"{DL}/01/{TSHIRT}/10/L1", "quantity": 3},
                       {"epcClass": f"{DL}/01/{FLOUR}", "quantity": 2.5, "uom": "KGM"}],
      "readPoint": {"id": f"{DL}/414/{SITE_GLN}"}}),
    (ev("observe", 10, dst="DOCK-1", gtin=TSHIRT),
     {"action": "OBSERVE", "readPoint": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"}}),
    (ev("adjust", 11, dst="A-01-02", gtin=TSHIRT, qty=-1), None),
    (ev("receive", 12, dst="DOCK-1", sku="LOOSE"), None),
    (ev("receive", 13, dst="DOCK-1", sku="TSHIRT-SKU", qty=2),
     {"quantityList": [{"epcClass": f"{DL}/01/{TSHIRT}", "quantity": 2}]}),
    (ev("receive", 14, dst="DOCK-1", sku="FLOUR-SKU", lot="F9", qty=12.5),
     {"quantityList": [{"epcClass": f"{DL}/01/{FLOUR}/10/F9", "quantity": 12.5, "uom": "KGM"}]}),
    (ev("receive", 15, dst="DOCK-1", gtin="09501101530004"), None),  # bad check digit
    (ev("pack", 16, src="PACK-1", sku="LOOSE", sscc=SSCC2), None),
    (ev("receive", 17, dst="DOCK-1", gtin=TSHIRT, lot='a"b\\c é'),  # JSON and URI escaping
     {"quantityList": [{"epcClass": f"{DL}/01/{TSHIRT}/10/a%22b%5Cc%20%C3%A9", "quantity": 1}]}),
    (ev("pack", 18, src="PACK-1", gtin=TSHIRT, sscc="123"),  # no SSCC: packed, not aggregated
     {"type": "ObjectEvent", "bizStep": "packing",
      "quantityList": [{"epcClass": f"{DL}/01/{TSHIRT}", "quantity": 1}]}),
    (ev("count", 19, count=wire.Count("DOCK-1", ())),  # nothing there
     {"type": "ObjectEvent", "epcList": [], "bizStep": "cycle_counting",
      "bizLocation": {"id": f"{DL}/414/{DOCK_GLN}/254/D1"}}),
]
# A second site without GLNs in master data: no readPoint, bizLocation or transactions.
OTHER_SITE = [
    (ev("receive", 20, dst="IN", gtin=TSHIRT, doc=("receipt", "R-9")),
     {"type": "ObjectEvent", "bizStep": "receiving"}),
]
WITHOUT_WHERE = ("readPoint", "bizLocation", "bizTransactionList")


def _master(store: Store) -> None:
    md = MasterData(store)
    md.create_location(LocationSpec("wh1", "wh1", "site", gln=SITE_GLN))
    md.create_location(LocationSpec("wh1", "RECV", "zone", "wh1"))
    md.create_location(LocationSpec("wh1", "DOCK-1", "bin", "RECV", barcodes=("dock-label",),
                                    gln=DOCK_GLN, gln_extension="D1"))
    md.create_location(LocationSpec("wh1", "A-01-02", "bin", "RECV"))
    md.create_location(LocationSpec("wh1", "PACK-1", "bin", "RECV"))
    md.create_item(ItemSpec("TSHIRT-SKU", (TSHIRT,)))
    md.create_item(ItemSpec("FLOUR-SKU", (FLOUR,), unit="KGM"))
    md.create_item(ItemSpec("LOOSE"))


@pytest.fixture
def ledger(database: str | Path) -> Iterator[Store]:
    with Store(database) as store:
        _master(store)
        store.apply_batch(decoded("wh1", "hh-01", *(e for e, _ in LEDGER)), source="http")
        store.apply_batch(decoded("wh2", "hh-02", *(e for e, _ in OTHER_SITE)), source="http")
        yield store


@pytest.fixture
def api(ledger: Store, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(api_settings(tmp_path / "ledger.db"), store=ledger)
    with TestClient(app, headers=bearer(READ_TOKEN)) as client:
        yield client


def _get(api: TestClient, **params: Any) -> tuple[dict[str, Any], Any]:
    response = api.get(URL, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/ld+json")
    document = json.loads(response.text)
    assert epcisread.validate(document) == []
    return document, response


def _events(document: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = document["epcisBody"]["eventList"]
    return events


def test_every_movement_maps_as_the_design_says(api: TestClient) -> None:
    document, response = _get(api)
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0"
    assert "link" not in response.headers
    assert document["@context"] == [epcisjson.CONTEXT]
    assert document["type"] == "EPCISDocument" and document["schemaVersion"] == "2.0"
    expected = [(e, want) for e, want in LEDGER + OTHER_SITE if want is not None]
    got = _events(document)
    assert [g["eventID"] for g in got] == [f"urn:uuid:{e.id}" for e, _ in expected]
    for (event, want), out in zip(expected, got, strict=True):
        for key, value in want.items():
            assert out.get(key) == value, (event.type, key, out)
        assert out["eventTime"] == event.time
        assert out["eventTimeZoneOffset"] == "+01:00"
        assert "recordTime" in out
        if event.type not in ("return",):
            assert "disposition" not in out
        if event.type == "observe":
            assert "bizStep" not in out
        if event.type == "ship":
            assert "bizLocation" not in out
    other = got[-1]
    assert not set(WITHOUT_WHERE) & set(other)


def test_every_event_type_we_write_passes_draft7_with_format_checks(api: TestClient) -> None:
    """Each event alone too, as a standalone event with its @context (the schema's top level
    dispatches on its type)."""
    document, _ = _get(api)
    checker = Draft7Validator(epcisread.schema(), format_checker=FormatChecker())
    assert not list(checker.iter_errors(document))
    kinds = set()
    for event in _events(document):
        alone = {"@context": [epcisjson.CONTEXT], **event}
        assert not list(checker.iter_errors(alone)), event
        kinds.add((event["type"], "epcList" in event, "quantityList" in event,
                   "childEPCs" in event, "childQuantityList" in event,
                   "bizTransactionList" in event, "readPoint" in event, "bizLocation" in event))
    assert ("ObjectEvent", True, False, False, False, True, True, True) in kinds
    assert ("ObjectEvent", False, True, False, False, True, True, True) in kinds
    assert ("ObjectEvent", False, True, False, False, False, False, False) in kinds
    assert ("ObjectEvent", True, True, False, False, False, True, True) in kinds
    assert ("AggregationEvent", False, False, True, False, False, True, True) in kinds
    assert ("AggregationEvent", False, False, False, True, False, True, True) in kinds
    assert ("ObjectEvent", True, False, False, False, True, True, False) in kinds


def test_a_reexport_of_the_same_ledger_is_the_same_document(api: TestClient) -> None:
    first, _ = _get(api)
    second, _ = _get(api)
    assert first.pop("creationDate") <= second.pop("creationDate")
    assert first == second
    assert api.get(URL).text.split('"epcisBody"')[1] == api.get(URL).text.split('"epcisBody"')[1]


def test_a_page_is_valid_alone_and_pages_lose_and_repeat_nothing(api: TestClient) -> None:
    whole = [e["eventID"] for e in _events(_get(api)[0])]
    for per_page in (1, 2, 3, 5, 7, 100):
        seen: list[str] = []
        params: dict[str, Any] = {"perPage": per_page}
        pages = 0
        while True:
            document, response = _get(api, **params)
            pages += 1
            assert len(_events(document)) <= per_page
            seen += [e["eventID"] for e in _events(document)]
            link = response.headers.get("link")
            if link is None:
                break
            assert link.endswith('>; rel="next"') and "perPage=" in link
            params = {"perPage": per_page,
                      "nextPageToken": link.split("nextPageToken=")[1].split(">")[0]}
        assert seen == whole, per_page
        assert pages >= len(whole) // per_page


def test_new_events_after_a_page_come_on_the_next_one(api: TestClient, ledger: Store) -> None:
    document, response = _get(api, perPage=10)
    token = response.headers["link"].split("nextPageToken=")[1].split(">")[0]
    late = ev("receive", 30, dst="DOCK-1", gtin=TSHIRT)
    ledger.apply_batch(decoded("wh1", "hh-01", late), source="http")
    rest, response = _get(api, perPage=10, nextPageToken=token)
    assert "link" not in response.headers
    assert _events(rest)[-1]["eventID"] == f"urn:uuid:{late.id}"
    assert not {e["eventID"] for e in _events(rest)} & {e["eventID"] for e in _events(document)}


def _ids(document: dict[str, Any]) -> list[str]:
    return [e["eventID"].removeprefix("urn:uuid:") for e in _events(document)]


def _where(*wanted: str) -> list[str]:
    return [e.id for e, want in LEDGER + OTHER_SITE if want is not None and e.type in wanted]


def test_filters(api: TestClient) -> None:
    packed = [LEDGER[5][0].id, LEDGER[6][0].id]
    assert _ids(_get(api, eventType="AggregationEvent")[0]) == packed
    objects = _ids(_get(api, eventType="ObjectEvent")[0])
    assert set(objects).isdisjoint(packed) and len(objects) == 15
    assert LEDGER[18][0].id in objects
    assert _ids(_get(api, eventType=["AggregationEvent", "ObjectEvent"])[0]) == _ids(
        _get(api)[0])
    assert _ids(_get(api, eventType="TransformationEvent")[0]) == []
    assert _ids(_get(api, EQ_bizStep="storing")[0]) == _where("putaway", "move")
    assert _ids(_get(api, EQ_bizStep="receiving|shipping")[0]) == _where(
        "receive", "return", "ship")
    assert _ids(_get(api, EQ_bizStep=["picking", "https://ref.gs1.org/cbv/BizStep-packing"])[0]
                ) == _where("pick", "pack")
    assert _ids(_get(api, EQ_bizStep="inspecting")[0]) == []
    # 10:02 and 10:04 local (+01:00) are 09:02 and 09:04 UTC
    assert _ids(_get(api, GE_eventTime="2026-11-22T09:02:00.250Z",
                     LT_eventTime="2026-11-22T10:04:00.250+01:00")[0]) == [
        LEDGER[2][0].id, LEDGER[3][0].id]
    assert _ids(_get(api, GE_eventTime="2026-11-22T10:20:00+01:00")[0]) == [OTHER_SITE[0][0].id]
    sgln = "urn:epc:id:sgln:9506000.13431.D1"
    at_dock = _ids(_get(api, EQ_bizLocation=sgln)[0])
    assert at_dock == _ids(_get(api, EQ_bizLocation=f"{DL}/414/{DOCK_GLN}/254/D1")[0])
    assert LEDGER[0][0].id in at_dock and LEDGER[3][0].id in at_dock
    assert LEDGER[2][0].id not in at_dock
    tag = _ids(_get(api, MATCH_anyEPC="urn:epc:id:sgtin:0614141.812345.6789")[0])
    assert tag == [LEDGER[1][0].id, LEDGER[9][0].id]
    assert tag == _ids(_get(api, MATCH_anyEPC=f"{DL}/01/80614141123458/21/6789")[0])
    assert _ids(_get(api, MATCH_anyEPC=f"urn:epc:id:sscc:0614141.{SSCC[0]}{SSCC[8:17]}")[0]
                ) == [LEDGER[i][0].id for i in (5, 6, 7)]
    assert _ids(_get(api, MATCH_anyEPC=f"{DL}/01/{TSHIRT}/21/S%2F1")[0]) == [
        LEDGER[5][0].id, LEDGER[8][0].id]
    both = _ids(_get(api, eventType="ObjectEvent", EQ_bizStep="receiving",
                     EQ_bizLocation=f"{DL}/414/{DOCK_GLN}/254/D1")[0])
    assert both == [LEDGER[i][0].id for i in (0, 1, 8, 13, 14, 17)]


def test_record_time_bounds_give_what_arrived_since(api: TestClient, ledger: Store) -> None:
    before = datetime.now(UTC).isoformat()
    late = ev("receive", 40, dst="DOCK-1", gtin=TSHIRT)
    ledger.apply_batch(decoded("wh1", "hh-01", late), source="http")
    assert _ids(_get(api, GE_recordTime=before)[0]) == [late.id]
    assert late.id not in _ids(_get(api, LT_recordTime=before)[0])


@pytest.mark.parametrize(
    ("params", "status", "names"),
    [
        ({"perPage": 0}, 422, "perPage"),
        ({"perPage": "ten"}, 422, "perPage"),
        ({"perPage": 10**7}, 422, "perPage"),
        ({"nextPageToken": "abc"}, 400, "cursor"),
        ({"nextPageToken": "-1"}, 400, "cursor"),
        ({"GE_eventTime": "yesterday"}, 400, "GE_eventTime"),
        ({"LT_eventTime": "2026-11-22T10:00:00"}, 400, "LT_eventTime"),
        ({"GE_recordTime": "2026-13-40T00:00:00Z"}, 400, "GE_recordTime"),
        ({"eventType": "Object"}, 400, "eventType"),
        ({"EQ_bizStep": "putting_away"}, 400, "bizStep"),
        ({"EQ_bizStep": "urn:epcglobal:cbv:bizstep:loafing"}, 400, "bizStep"),
        ({"EQ_bizLocation": "DOCK 1"}, 400, "EQ_bizLocation"),
        ({"MATCH_anyEPC": "6789"}, 400, "MATCH_anyEPC"),
        ({"MATCH_epc": "urn:epc:id:sgtin:0614141.812345.6789"}, 400, "MATCH_epc"),
        ({"limit": "5"}, 400, "limit"),
    ],
)
def test_bad_parameters_are_answered_with_a_problem(
    api: TestClient, params: dict[str, Any], status: int, names: str
) -> None:
    response = api.get(URL, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert names in response.json()["detail"] + response.json()["title"]


def test_read_scope_is_needed(ledger: Store, tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "ledger.db"), store=ledger)
    with TestClient(app) as anonymous:
        assert anonymous.get(URL).status_code == 401
    with TestClient(app, headers=bearer("not-a-token")) as stranger:
        assert stranger.get(URL).status_code == 401
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as writer:
        assert writer.get(URL).status_code == 200


def test_an_empty_ledger_is_an_empty_valid_document(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as store:
        app = create_app(api_settings(tmp_path / "empty.db"), store=store)
        with TestClient(app, headers=bearer(READ_TOKEN)) as client:
            document, response = _get(client)
    assert _events(document) == [] and "link" not in response.headers


def test_the_export_reads_back_as_it_was_written(api: TestClient) -> None:
    document, _ = _get(api)
    read = epcisread.read(document)
    assert len(read.events) == len(_events(document))
    for event, out in zip(read.events, _events(document), strict=True):
        again = epcisjson.event_json(event)
        assert set(again) == set(out) and epcisread.read_event(again) == event
        assert {k: v for k, v in again.items() if not k.endswith("Time")} == {
            k: v for k, v in out.items() if not k.endswith("Time")}
    pack = read.aggregations()[0]
    assert pack.parent is not None and pack.parent.key is not None
    assert pack.parent.key.sscc == SSCC


# --- the standard's examples: in, out, and in again ----------------------------------------

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.jsonld"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_read_and_write_again_without_loss_of_meaning(path: Path) -> None:
    """Meaning, compared on what ``epcisread`` reads: every identifier in one form (EPC URIs and
    Digital Links of the same GS1 key are the same), eventTime as an instant and its offset,
    eventID, action, bizStep, disposition (CBV words), readPoint, bizLocation, business
    transactions (type and id), source and destination lists, quantities (class, amount,
    uom), parent and children. Not compared here: what ``epcisread`` does not read (sensor
    data, ilmd, extensions, certification info, error declarations, persistent dispositions);
    the capture keeps all of it, compared as RDF in tests/server/test_epcis_roundtrip.py."""
    source = json.loads(path.read_text())
    first = epcisread.read(source)
    written = epcisjson.document(first.events, datetime(2026, 1, 1, tzinfo=UTC))
    assert epcisread.validate(written) == []
    again = epcisread.read(written)
    assert again.events == first.events
    events_in = epcisread.event_list(source)[1]
    handled = [e for e in events_in if e.get("type") in epcisread.READ_TYPES]
    assert len(first.events) == len(handled)
    for raw, event in zip(handled, first.events, strict=True):
        assert epcisjson.event_json(event)["eventTimeZoneOffset"] == raw["eventTimeZoneOffset"]
        assert len(event.biz_transactions) == len(raw.get("bizTransactionList", []))
        if isinstance(event, ObjectEvent):
            assert len(event.epcs) == len(raw.get("epcList", []))
            assert len(event.quantities) == len(raw.get("quantityList", []))
        else:
            assert isinstance(event, AggregationEvent)
            assert len(event.child_epcs) == len(raw.get("childEPCs", []))
            assert len(event.child_quantities) == len(raw.get("childQuantityList", []))
