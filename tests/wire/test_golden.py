"""Golden messages of the wire contract, checked from both sides.

The edge side builds the events as ``wire.Event`` objects and must encode exactly the golden
JSON; the server side must read every golden message back, and the real HTTP app must apply
the golden batches (then see them as duplicates). The bad cases pin the exact reason texts an
edge gets back in its ack or in a 400.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.devices.codes import interpret, interpret_epc
from floorsync.edge import wire
from floorsync.server.app import create_app
from tests.server.helpers import api_client, api_settings

GOLDEN = Path(__file__).resolve().parent / "golden"
BATCH_FILES = ("batch_handheld.json", "batch_portal.json", "batch_count_adjust.json")

G_LOT = wire.Item(gtin="09501101530003", lot="L2026-47")
SCAN_12 = "]C1010950110153000310L2026-47\x1d3012"  # GS1-128: GTIN, lot, then count 12
SCAN_1 = "]C1010950110153000310L2026-47"

# The golden batches as the edge builds them: workflow and portal output, numbered by the outbox.
EDGE_BATCHES: dict[str, wire.Batch] = {
    "batch_handheld.json": wire.Batch(
        "wh1", "hh-07", "2026-11-22T09:30:00.512Z", (
            wire.Event(
                id="01a20297-038b-731a-9c2d-3e4f5a6b7c8d", seq=1041,
                time="2026-11-22T10:29:41.003+01:00", type="receive", item=G_LOT, qty=12,
                to="RECV-1", operator="op-12",
                read=wire.SourceRead(kind="barcode", raw=SCAN_12, symbology="]C1"),
            ),
            wire.Event(
                id="01a20297-4668-70b2-ae3a-1c2d3e4f5a6b", seq=1042,
                time="2026-11-22T10:29:58.120+01:00", type="putaway", item=G_LOT, qty=12,
                from_="RECV-1", to="A-01-02", operator="op-12",
                read=wire.SourceRead(kind="barcode", raw=SCAN_12, symbology="]C1"),
            ),
            wire.Event(
                id="01a20297-49dc-72c7-8d1e-2f3a4b5c6d7e", seq=1043,
                time="2026-11-22T10:29:59.004+01:00", type="pick", item=G_LOT, qty=1,
                from_="A-01-02", operator="op-12",
                read=wire.SourceRead(kind="barcode", raw=SCAN_1, symbology="]C1"),
            ),
        ), ack_statuses=("held",),  # as this edge sends it (batch_count_adjust: as an older one)
    ),
    "batch_portal.json": wire.Batch(
        "wh1", "door-01", "2026-11-22T09:30:01.020Z", (
            wire.Event(
                id="01a20297-4529-73e1-a468-ace013579bdf", seq=88,
                time="2026-11-22T10:29:57.801+01:00", type="receive",
                item=wire.Item(gtin="80614141123458", serial="6789",
                               epc="urn:epc:id:sgtin:0614141.812345.6789"),
                qty=1, to="DOCK-1",
                read=wire.SourceRead(
                    kind="rfid", tag="3074257BF7194E4000001A85", antenna=2, rssi=-52.5, reads=17,
                    first="2026-11-22T10:29:57.801+01:00", last="2026-11-22T10:29:58.990+01:00",
                ),
            ),
            wire.Event(
                id="01a20297-4728-7177-9357-9bdf02468ace", seq=89,
                time="2026-11-22T10:29:58.312+01:00", type="receive",
                item=wire.Item(epc="urn:epc:id:sscc:0614141.1234567890",
                               sscc="106141412345678908"),
                qty=1, to="DOCK-1",
                read=wire.SourceRead(
                    kind="rfid", tag="3154257BF4499602D2000000", antenna=1, rssi=-61.0, reads=5,
                    first="2026-11-22T10:29:58.312+01:00", last="2026-11-22T10:29:59.640+01:00",
                ),
            ),
        ), ack_statuses=("held",),  # as this edge sends it (batch_count_adjust: as an older one)
    ),
    "batch_count_adjust.json": wire.Batch(
        "wh1", "hh-07", "2026-11-22T09:32:41.105Z", (
            wire.Event(
                id="01a20298-67fa-7145-bf4e-5d6c7b8a9908", seq=1044,
                time="2026-11-22T10:31:12.250+01:00", type="count", item=None, qty=0,
                operator="op-12",
                count=wire.Count("A-01-02", (
                    wire.CountLine(G_LOT, 10),
                    wire.CountLine(wire.Item(gtin="80614141123458"), 3),
                )),
            ),
            wire.Event(
                id="01a20299-c1c9-709d-9a2b-3c4d5e6f7081", seq=1045,
                time="2026-11-22T10:32:40.777+01:00", type="adjust", item=G_LOT, qty=-2,
                to="A-01-02", operator="op-12", read=wire.SourceRead(kind="manual"),
            ),
        ),
    ),
}

EDGE_ACK = wire.Ack("hh-07", (
    wire.Result("01a20297-038b-731a-9c2d-3e4f5a6b7c8d", "applied"),
    wire.Result("01a20297-4668-70b2-ae3a-1c2d3e4f5a6b", "duplicate"),
    wire.Result("01a2029b-e1a0-7200-8123-456789000001", "rejected", "a receive needs 'to'"),
    wire.Result("01a2029c-0f00-7a00-8000-000000000002", "held",
                "late_after_count: its change at 'A-01-02' is held by count 17 (exception 42),"
                " not applied"),
))
EDGE_STATUS = {
    "status_online.json": wire.Status("online", "2026-11-22T09:30:00.600Z", 3, 1043, 0.412,
                                      "2026-11-22T09:30:00.600Z"),
    # a last will: the figures of when the edge connected (measured_at), not of its end
    "status_offline.json": wire.Status("offline", "2026-11-22T09:41:17.032Z", 120, 1163, 31.5,
                                       "2026-11-22T09:40:02.250Z"),
}

# Stock after the three golden batches, in order: 12 received and put away, 1 picked, the
# count finds 10 of the lot (and 3 of another item), then 2 are written off.
STOCK_AFTER = [
    {"item": "09501101530003", "location": "A-01-02", "lot": "L2026-47", "quantity": 8},
    {"item": "106141412345678908", "location": "DOCK-1", "lot": None, "quantity": 1},
    {"item": "80614141123458", "location": "A-01-02", "lot": None, "quantity": 3},
    {"item": "80614141123458", "location": "DOCK-1", "lot": None, "quantity": 1},
]


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def golden_bytes(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def strict(value: Any) -> str:
    """A canonical text of a JSON value: key order ignored, but 1 and 1.0 and true differ."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


BAD_EVENTS: list[dict[str, Any]] = golden("bad/events.json")["cases"]
BAD_ENVELOPES: list[dict[str, Any]] = golden("bad/envelopes.json")["cases"]
DECODERS = {"decode_batch": wire.decode_batch, "decode_ack": wire.decode_ack,
            "decode_status": wire.decode_status}


def test_golden_directory_holds_what_these_tests_check() -> None:
    """Guards the parametrised tests below against silently running over nothing."""
    names = {p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*.json")}
    assert names == {*BATCH_FILES, "ack.json", *EDGE_STATUS, "bad/events.json",
                     "bad/envelopes.json"}
    assert set(EDGE_BATCHES) == set(BATCH_FILES)
    assert len(BAD_EVENTS) >= 25 and len(BAD_ENVELOPES) >= 15
    assert len({c["case"] for c in BAD_EVENTS + BAD_ENVELOPES}) == len(BAD_EVENTS + BAD_ENVELOPES)
    assert {c["decoder"] for c in BAD_ENVELOPES} == set(DECODERS)


# --- the edge side: encoding ------------------------------------------------------------


@pytest.mark.parametrize("name", BATCH_FILES)
def test_edge_encodes_the_golden_batch(name: str) -> None:
    encoded = json.loads(wire.encode_batch(EDGE_BATCHES[name]))
    assert encoded == golden(name)
    assert strict(encoded) == strict(golden(name))


@pytest.mark.parametrize("name", BATCH_FILES)
def test_edge_fast_path_from_outbox_payloads_matches(name: str) -> None:
    """The outbox stores ``encode_event`` text; the batch built from it is the golden one."""
    batch = EDGE_BATCHES[name]
    payloads = [wire.encode_event(e) for e in batch.events]
    assert all(p == json.dumps(json.loads(p), separators=(",", ":"), ensure_ascii=False)
               for p in payloads)  # compact, as stored
    body = wire.encode_batch_payloads(batch.site, batch.device, batch.sent_at, payloads,
                                      batch.ack_statuses)
    assert strict(json.loads(body)) == strict(golden(name))


def test_edge_encodes_the_golden_ack_and_statuses() -> None:
    assert strict(json.loads(wire.encode_ack(EDGE_ACK))) == strict(golden("ack.json"))
    for name, status in EDGE_STATUS.items():
        assert strict(json.loads(wire.encode_status(status))) == strict(golden(name)), name


# --- the server side: decoding ----------------------------------------------------------


@pytest.mark.parametrize("name", BATCH_FILES)
def test_server_decodes_the_golden_batch(name: str) -> None:
    data = golden(name)
    batch = wire.decode_batch(golden_bytes(name))
    assert batch.invalid == ()
    assert (batch.site, batch.device, batch.sent_at) == (data["site"], data["device"],
                                                         data["sent_at"])
    assert len(batch.events) == len(data["events"]) > 0
    assert batch.events == EDGE_BATCHES[name].events  # both sides mean the same events
    assert batch.ack_statuses == EDGE_BATCHES[name].ack_statuses == tuple(
        data.get("ack_statuses", ()))
    for raw in data["events"]:
        assert json.loads(wire.encode_event(wire.event_from_dict(raw))) == raw


def test_ack_round_trips() -> None:
    data = golden("ack.json")
    ack = wire.decode_ack(golden_bytes("ack.json"))
    assert ack == EDGE_ACK
    assert {r.status for r in ack.results} == wire.RESULT_STATUSES
    assert json.loads(wire.encode_ack(ack)) == data


def test_an_ack_result_with_a_status_this_edge_does_not_know_leaves_its_neighbours() -> None:
    """A newer service may say more; this edge keeps the result unsettled (it re-sends, the
    answer is then ``duplicate``) instead of dropping the whole ack."""
    ack = wire.decode_ack(b'{"v":1,"device":"hh-07","results":[{"id":"a","status":"later"},'
                          b'{"id":"b","status":"applied","reason":null}]}')
    assert [r.status for r in ack.results] == ["later", "applied"]
    assert "later" not in wire.SETTLED_STATUSES


def test_an_older_status_without_the_new_figures_still_reads() -> None:
    status = wire.decode_status(b'{"v":1,"state":"online","at":"2026-11-22T09:30:00.600Z",'
                                b'"backlog":3,"last_seq":1043}')
    assert status == wire.Status("online", "2026-11-22T09:30:00.600Z", 3, 1043)
    odd = wire.decode_status(b'{"v":1,"state":"offline","at":"2026-11-22T09:30:00.600Z",'
                             b'"backlog":-1,"oldest_unsynced_s":"x","measured_at":"yesterday"}')
    assert (odd.backlog, odd.oldest_unsynced_s, odd.measured_at) == (None, None, None)


@pytest.mark.parametrize("name", sorted(EDGE_STATUS))
def test_status_round_trips(name: str) -> None:
    status = wire.decode_status(golden_bytes(name))
    assert status == EDGE_STATUS[name]
    assert json.loads(wire.encode_status(status)) == golden(name)


def _v7_millis(event_id: str) -> int:
    value = uuid.UUID(event_id)
    assert str(value) == event_id and value.version == 7 and value.variant == uuid.RFC_4122
    return value.int >> 80


@pytest.mark.parametrize("name", BATCH_FILES)
def test_golden_events_follow_the_conventions(name: str) -> None:
    """Lower-case UUIDv7 ids stamped with the event's time, rising seq, local offsets."""
    events = golden(name)["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    for e in events:
        moment = datetime.fromisoformat(e["time"])
        assert e["time"].endswith("+01:00") and moment.utcoffset() is not None
        assert _v7_millis(e["id"]) == int(moment.timestamp() * 1000)
    hh07 = [e["seq"] for n in BATCH_FILES if golden(n)["device"] == "hh-07"
            for e in golden(n)["events"]]
    assert hh07 == sorted(set(hh07)) and len(hh07) == 5


@pytest.mark.parametrize("name", ["batch_handheld.json", "batch_portal.json"])
def test_golden_items_say_what_their_reads_say(name: str) -> None:
    """Each item is what its barcode or tag decodes to, so the examples are real-world ones."""
    checked = 0
    for e in golden(name)["events"]:
        read = e.get("read")
        if read is None or read["kind"] == "manual":
            continue
        if read["kind"] == "barcode":
            sym = read["symbology"]
            assert read["raw"].startswith(sym)
            identity = interpret(read["raw"][len(sym):], sym)
            assert (identity.quantity or 1) == e["qty"]
        else:
            identity = interpret_epc(read["tag"])
            assert e["time"] == read["first"] <= read["last"]
        fields = {f: getattr(identity, f, None) for f in wire.ITEM_FIELDS}
        assert {k: v for k, v in fields.items() if v is not None} == e["item"]
        checked += 1
    assert checked == len(golden(name)["events"])


# --- bad messages: the exact reasons ----------------------------------------------------


@pytest.mark.parametrize("case", BAD_EVENTS, ids=[c["case"] for c in BAD_EVENTS])
def test_bad_event_gives_its_reason(case: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.event_from_dict(case["event"])
    assert str(caught.value) == case["reason"]
    assert wire.readable_id(case["event"]) == case["rejected_id"]


@pytest.mark.parametrize("case", BAD_EVENTS, ids=[c["case"] for c in BAD_EVENTS])
def test_bad_event_lands_in_invalid_beside_a_good_one(case: dict[str, Any]) -> None:
    good = golden("batch_handheld.json")
    good["events"] = [good["events"][0], case["event"], good["events"][1]]
    batch = wire.decode_batch(json.dumps(good))
    assert [e.id for e in batch.events] == [good["events"][0]["id"], good["events"][2]["id"]]
    assert batch.invalid == (wire.Invalid(case["rejected_id"], case["reason"]),)


@pytest.mark.parametrize("case", BAD_ENVELOPES, ids=[c["case"] for c in BAD_ENVELOPES])
def test_bad_envelope_gives_its_reason(case: dict[str, Any]) -> None:
    payload = case["payload_text"] if "payload_text" in case else json.dumps(case["payload"])
    with pytest.raises(wire.WireError) as caught:
        DECODERS[case["decoder"]](payload.encode())
    assert str(caught.value) == case["reason"]


# --- the real central service over HTTP -------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(api_settings(tmp_path / "c.db"))
    with api_client(app) as c:
        yield c


def _post(client: TestClient, body: bytes) -> Any:
    return client.post("/api/v1/events", content=body,
                       headers={"content-type": "application/json"})


def test_http_applies_golden_batches_once(client: TestClient) -> None:
    for status in ("applied", "duplicate"):
        for name in BATCH_FILES:
            response = _post(client, golden_bytes(name))
            assert response.status_code == 200, response.text
            ack = response.json()
            assert ack["v"] == 1 and ack["device"] == golden(name)["device"]
            assert ack["results"] == [
                {"id": e["id"], "status": status, "reason": None}
                for e in golden(name)["events"]
            ]
    no_master_data = [{"site": "wh1", **line, "sku": None} for line in STOCK_AFTER]
    assert client.get("/api/v1/stock").json() == {"items": no_master_data, "next_cursor": None}
    summary = client.get("/api/v1/summary").json()
    assert summary["events"] == 7 and summary["rejections"] == 0 and summary["devices"] == 2


def test_http_rejects_each_bad_event_with_its_reason(client: TestClient) -> None:
    good = golden("batch_handheld.json")
    good["events"] = [case["event"] for case in BAD_EVENTS]
    response = _post(client, json.dumps(good).encode())
    assert response.status_code == 200, response.text
    expected = [{"id": c["rejected_id"], "status": "rejected", "reason": c["reason"]}
                for c in BAD_EVENTS if c["rejected_id"] is not None]
    assert len(expected) >= 20
    assert response.json()["results"] == expected
    assert client.get("/api/v1/summary").json()["rejections"] == len(BAD_EVENTS)


@pytest.mark.parametrize(
    "case",
    [c for c in BAD_ENVELOPES if c["decoder"] == "decode_batch"],
    ids=[c["case"] for c in BAD_ENVELOPES if c["decoder"] == "decode_batch"],
)
def test_http_refuses_bad_envelope_with_its_reason(client: TestClient, case: dict[str, Any]
                                                   ) -> None:
    payload = case["payload_text"] if "payload_text" in case else json.dumps(case["payload"])
    response = _post(client, payload.encode())
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == case["reason"]
