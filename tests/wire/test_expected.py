"""The documents' expected lists sent to the floor: round trip, topics, garbage and truncation."""

from __future__ import annotations

import json

import pytest

from floorsync.edge import expected, wire

ASN = expected.Expected(
    kind="receipt", id="ASN-4711", site="wh1", version=3, location="DOCK-1",
    lines=(expected.ExpectedLine(wire.Item(gtin="09501101530003", lot="L1"), 24),
           expected.ExpectedLine(wire.Item(epc="urn:epc:id:sgtin:0614141.812345.6789"), 1)),
    pallets=(expected.ExpectedPallet(
        "106141411234567897", epcs=("urn:epc:id:sgtin:0614141.812345.6790",),
        lines=(expected.ExpectedLine(wire.Item(gtin="09501101530003"), 12),)),),
    labels=("ASN:ASN-4711",),
)


def test_a_document_round_trips() -> None:
    assert expected.decode_expected(expected.encode_expected(ASN)) == ASN
    order = expected.Expected(
        kind="order", id="SO-1", site="wh1", version=1,
        lines=(expected.ExpectedLine(wire.Item(sku="SKU-9"), 2, location="A-01-02"),))
    assert expected.decode_expected(expected.encode_expected(order)) == order


def test_topics() -> None:
    topic = expected.docs_topic("wh1", "receipt", "ASN-4711")
    assert topic == "floorsync/v1/wh1/docs/receipt/ASN-4711"
    assert expected.parse_docs_topic(topic) == ("wh1", "receipt", "ASN-4711")
    assert expected.docs_filter("wh1") == "floorsync/v1/wh1/docs/#"
    for bad in ("floorsync/v1/wh1/docs/invoice/X", "floorsync/v1/wh1/hh-1/events",
                "floorsync/v1/wh1/docs/receipt/a b", "floorsync/v2/wh1/docs/receipt/X"):
        with pytest.raises(wire.WireError):
            expected.parse_docs_topic(bad)
    with pytest.raises(wire.WireError):
        expected.docs_topic("wh1", "receipt", "ASN/1")


def _with(**changes: object) -> bytes:
    data = json.loads(expected.encode_expected(ASN))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "must be an object"),
    (_with(v=2), "unsupported document version"),
    (_with(kind="invoice"), "kind must be one of"),
    (_with(version=0), "version must be a positive integer"),
    (_with(version=True), "version must be a positive integer"),
    (_with(id="A/B"), "document id must be"),
    (_with(lines="x"), "lines must be a list"),
    (_with(lines=[{"item": {"gtin": "09501101530003"}, "qty": -1}]), "lines[0].qty"),
    (_with(lines=[{"item": {"gtin": "09501101530003"}, "qty": float("nan")}]), "lines[0].qty"),
    (_with(lines=[{"item": {}, "qty": 1}]), "lines[0].item"),
    (_with(pallets=[{"epcs": []}]), "pallets[0].sscc"),
    (_with(pallets=[{"sscc": "1", "epcs": [7]}]), "pallets[0].epcs"),
    (_with(labels=[""]), "labels must be"),
])
def test_garbage_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        expected.decode_expected(payload)
    assert reason in str(caught.value)


def test_every_truncation_is_refused_never_half_read() -> None:
    whole = expected.encode_expected(ASN)
    for cut in range(len(whole)):
        with pytest.raises(wire.WireError):
            expected.decode_expected(whole[:cut])
