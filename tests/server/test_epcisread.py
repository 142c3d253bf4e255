"""Reading EPCIS 2.0: the GS1 schema on the standard's own examples and on broken documents,
AggregationEvents in URN and Digital Link forms, and the GS1 key conversions under them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from floorsync.server import epcisread
from floorsync.server.epcisread import AggregationEvent, Identifier, InvalidEPCIS, ObjectEvent
from floorsync.server.gs1 import GS1Key, canonical_uri, gtin_uri, parse_gs1_uri

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "epcis2" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.jsonld"))


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return loaded


def test_there_are_examples_of_each_kind() -> None:
    assert len(EXAMPLE_FILES) >= 40
    names = " ".join(p.name for p in EXAMPLE_FILES)
    for kind in ("ObjectEvent", "AggregationEvent", "TransformationEvent", "Association"):
        assert kind in names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_validates_with_and_without_format_checks(path: Path) -> None:
    document = json.loads(path.read_text())
    assert epcisread.validate(document) == []
    assert not list(Draft7Validator(epcisread.schema()).iter_errors(document))


def test_the_format_checks_are_really_on() -> None:
    """The server extra installs the checkers; without them 'uri' and 'date-time' pass all."""
    document = load("Example_9.6.3-AggregationEventWithDigitalLink.jsonld")
    event = document["epcisBody"]["eventList"][0]
    event["parentID"] = "not a uri"
    event["eventTime"] = "yesterday at noon"
    assert epcisread.validate(document) == [
        "epcisBody.eventList[0].eventTime: 'yesterday at noon' is not a 'date-time'",
        "epcisBody.eventList[0].parentID: 'not a uri' is not a 'uri'",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.update(action="PACK"),
         "epcisBody.eventList[0].action: 'PACK' is not one of ['OBSERVE', 'ADD', 'DELETE']"),
        (lambda e: e.pop("eventTimeZoneOffset"),
         "epcisBody.eventList[0]: 'eventTimeZoneOffset' is a required property"),
        (lambda e: e.update(eventTimeZoneOffset="+15:00"),
         "epcisBody.eventList[0].eventTimeZoneOffset: '+15:00' does not match"),
        (lambda e: e["childQuantityList"][1].update(uom="kilo"),
         "epcisBody.eventList[0].childQuantityList[1].uom: 'kilo' does not match"),
        (lambda e: e["childQuantityList"][0].update(quantity="ten"),
         "epcisBody.eventList[0].childQuantityList[0].quantity: 'ten' is not of type 'number'"),
        (lambda e: e.update(bizStep="urn:epcglobal:cbv:bizstep:packing"),
         "epcisBody.eventList[0].bizStep: 'urn:epcglobal:cbv:bizstep:packing'"),
        (lambda e: e.update(bizTransactionList=[{"type": "po"}]),
         "epcisBody.eventList[0].bizTransactionList[0]: 'bizTransaction' is a required property"),
    ],
)
def test_a_broken_event_is_named_by_its_json_path(change: Any, expected: str) -> None:
    document = load("Example_9.6.3-AggregationEventWithDigitalLink.jsonld")
    change(document["epcisBody"]["eventList"][0])
    errors = epcisread.validate(document)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors
    with pytest.raises(InvalidEPCIS) as caught:
        epcisread.read(document)
    assert caught.value.errors == errors


@pytest.mark.parametrize(
    "document",
    [None, [], "EPCISDocument", 42, {}, {"type": "EPCISDocument"},
     {"type": "EPCISDocument", "@context": [], "schemaVersion": "2.0",
      "creationDate": "2026-01-01T00:00:00Z", "epcisBody": {"eventList": [{"type": 7}]}}],
)
def test_garbage_is_refused_with_reasons(document: object) -> None:
    with pytest.raises(InvalidEPCIS) as caught:
        epcisread.read(document)
    assert caught.value.errors
    assert all(": " in e for e in caught.value.errors)


def test_a_lone_event_is_valid_but_not_a_document_to_read() -> None:
    event = load("Example_9.6.3-AggregationEvent.jsonld")["epcisBody"]["eventList"][0]
    event["@context"] = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    assert epcisread.validate(event) == []
    with pytest.raises(InvalidEPCIS, match="not an EPCISDocument"):
        epcisread.read(event)


def test_aggregation_in_urn_and_digital_link_forms_read_alike() -> None:
    urn = epcisread.read(load("Example_9.6.3-AggregationEvent.jsonld")).aggregations()
    link = epcisread.read(load("Example_9.6.3-AggregationEventWithDigitalLink.jsonld"))
    (a,), (b,) = urn, link.aggregations()
    assert a.parent == b.parent == Identifier(
        "https://id.gs1.org/00/106141412345678908", GS1Key("sscc", sscc="106141412345678908"))
    assert [c.key for c in a.child_epcs] == [
        GS1Key("sgtin", gtin="10614141073464", serial="2017"),
        GS1Key("sgtin", gtin="10614141073464", serial="2018"),
    ]
    assert a.event_time == b.event_time == datetime(2013, 6, 8, 14, 58, 56, 591000, UTC)
    assert a.time_zone_offset == "+02:00"
    assert (a.action, a.biz_step, a.disposition) == ("OBSERVE", "receiving", "in_progress")
    assert a.read_point is not None and a.read_point.uri == "https://id.gs1.org/414/0614141007776"
    assert a.biz_location == b.biz_location
    assert [(q.epc_class.uri, q.quantity, q.uom) for q in b.child_quantities] == [
        ("https://id.gs1.org/01/04012345987652", 10.0, None),
        ("https://id.gs1.org/01/04012345123456/10/998877", 200.5, "KGM"),
    ]


def test_cbv_words_in_uri_forms_are_kept_bare() -> None:
    document = load("Example_9.6.3-AggregationEventWithDigitalLink.jsonld")
    event = document["epcisBody"]["eventList"][0]
    event["bizStep"] = "https://ref.gs1.org/cbv/BizStep-packing"
    event["disposition"] = "https://ref.gs1.org/cbv/Disp-container_closed"
    event["bizTransactionList"] = [
        {"type": "https://ref.gs1.org/cbv/BTT-desadv",
         "bizTransaction": "urn:epcglobal:cbv:bt:0614141000005:ASN-1"},
        {"bizTransaction": "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"},
    ]
    (agg,) = epcisread.read(document).aggregations()
    assert (agg.biz_step, agg.disposition) == ("packing", "container_closed")
    assert [(t.type, t.id) for t in agg.biz_transactions] == [
        ("desadv", "urn:epcglobal:cbv:bt:0614141000005:ASN-1"),
        (None, "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
    ]


def test_other_event_types_are_listed_as_skipped() -> None:
    read = epcisread.read(load("Example_9.6.4-TransformationEvent.jsonld"))
    assert read.events == ()
    assert [(s.path, s.type) for s in read.skipped] == [
        ("epcisBody.eventList[0]", "TransformationEvent")]


def test_a_query_document_gives_its_events() -> None:
    read = epcisread.read(load("EPCISQueryDocument.jsonld"))
    assert len(read.events) == 2 and all(isinstance(e, ObjectEvent) for e in read.events)


def test_every_example_of_ours_reads() -> None:
    kinds: dict[str, int] = {}
    for path in EXAMPLE_FILES:
        for event in epcisread.read(json.loads(path.read_text())).events:
            kinds[type(event).__name__] = kinds.get(type(event).__name__, 0) + 1
    assert kinds["ObjectEvent"] >= 25 and kinds["AggregationEvent"] >= 3
    assert AggregationEvent.__name__ in kinds


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("urn:epc:id:sgtin:0614141.812345.6789",
         GS1Key("sgtin", gtin="80614141123458", serial="6789")),
        ("urn:epc:id:sgtin:0614141.812345.A%2FB", GS1Key("sgtin", gtin="80614141123458",
                                                         serial="A/B")),
        ("urn:epc:class:lgtin:4012345.012345.998877",
         GS1Key("lgtin", gtin="04012345123456", lot="998877")),
        ("urn:epc:idpat:sgtin:4012345.044444.*", GS1Key("gtin", gtin="04012345444445")),
        ("urn:epc:id:sscc:0614141.1234567890", GS1Key("sscc", sscc="106141412345678908")),
        ("urn:epc:id:sgln:0614141.07346.1234",
         GS1Key("sgln", gln="0614141073467", extension="1234")),
        ("urn:epc:id:sgln:0614141.07346.0", GS1Key("sgln", gln="0614141073467")),
        ("https://id.gs1.org/01/09506000134352/21/abc", GS1Key("sgtin", gtin="09506000134352",
                                                               serial="abc")),
        ("https://example.com/shop/01/9506000134352/10/L1?17=201225",
         GS1Key("lgtin", gtin="09506000134352", lot="L1")),
        ("https://id.gs1.org/00/106141412345678908", GS1Key("sscc", sscc="106141412345678908")),
        ("https://id.gs1.org/414/9506000134307/254/B%2F1",
         GS1Key("sgln", gln="9506000134307", extension="B/1")),
    ],
)
def test_gs1_uris_read_into_keys_and_back(text: str, key: GS1Key) -> None:
    assert parse_gs1_uri(text) == key
    assert parse_gs1_uri(key.digital_link()) == key


@pytest.mark.parametrize(
    "text",
    ["urn:epc:id:sgtin:0614141.81234.6789",  # 12 digits: a wrong company prefix split
     "urn:epc:idpat:sgtin:4012345.044444.12",
     "urn:epc:id:sscc:0614141.123456789",
     "https://id.gs1.org/01/09506000134353/21/abc",  # bad check digit
     "https://id.gs1.org/00/106141412345678909",
     "urn:epc:id:grai:4012345.55555.987", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
     "", "https://id.gs1.org/"],
)
def test_what_is_not_a_gs1_key_we_read_stays_as_given(text: str) -> None:
    assert parse_gs1_uri(text) is None
    assert canonical_uri(text) == text


def test_digital_link_escapes_what_a_path_segment_cannot_hold() -> None:
    uri = gtin_uri("09506000134352", serial='a/b?c%d "e"')
    assert uri == "https://id.gs1.org/01/09506000134352/21/a%2Fb%3Fc%25d%20%22e%22"
    assert parse_gs1_uri(uri) == GS1Key("sgtin", gtin="09506000134352", serial='a/b?c%d "e"')


def test_read_does_not_change_the_document() -> None:
    document = load("Example_9.6.3-AggregationEvent.jsonld")
    before = copy.deepcopy(document)
    epcisread.read(document)
    assert document == before
