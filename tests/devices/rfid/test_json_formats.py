"""Impinj IoT device interface and Zebra IoT Connector JSON, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.zebra import parse_zebra

DATA = Path(__file__).parent / "data"
EPC = "3074257BF7194E4000001A85"


def test_impinj_stream_reads_and_errors() -> None:
    parsed = parse_impinj((DATA / "impinj_stream.jsonl").read_bytes())
    reads = parsed.reads
    assert [(r.reader, r.epc, r.antenna, r.rssi) for r in reads] == [
        ("impinj-13-f8-f5", "E2801190A5021F80055817CA", 1, -26.5),  # Impinj's own example
        ("impinj-14-1f-23", EPC, 2, -61.5),
        ("impinj-14-1f-23", EPC, 3, -48.0),  # only base64 "epc" enabled
        ("impinj-14-1f-23", EPC, 1, -51.0),
    ]
    assert reads[0].at == datetime(2021, 7, 9, 23, 35, 59, 278427, tzinfo=UTC)
    assert reads[1].at == datetime(2023, 5, 9, 15, 4, 12, 305000, tzinfo=UTC)  # lastSeenTime
    assert reads[2].at == datetime(2023, 5, 9, 15, 4, 12, 400000, tzinfo=UTC)  # envelope time
    reasons = [e.reason for e in parsed.errors]  # inventoryStatus is skipped, not an error
    assert len(reasons) == 4
    assert "not hex" in reasons[0]
    assert "neither epcHex nor epc" in reasons[1]
    assert "invalid JSON" in reasons[2]
    assert "truncated JSON" in reasons[3]
    assert parsed.errors[2].raw == b"this line is not json at all"


def test_impinj_webhook_array_and_configured_name() -> None:
    body = (
        b'[{"timestamp":"2023-05-09T15:04:12Z","eventType":"tagInventory",'
        b'"tagInventoryEvent":{"epcHex":"e280"}},'
        b'{"timestamp":"2023-05-09T15:04:13Z","eventType":"antennaConnected",'
        b'"antennaConnectedEvent":{"antennaPort":1}}, 42]'
    )
    parsed = parse_impinj(body, reader="dock-3")
    assert [(r.reader, r.epc, r.antenna, r.rssi) for r in parsed.reads] == [
        ("dock-3", "E280", 0, None)
    ]
    assert len(parsed.errors) == 1 and "not an object" in parsed.errors[0].reason


def test_impinj_missing_or_bad_fields() -> None:
    cases = {
        b'{"tagInventoryEvent":{"epcHex":"E280"}}': "no timestamp",
        b'{"timestamp":"x","tagInventoryEvent":{"epcHex":"E280"}}': "ISO 8601",
        b'{"timestamp":"2023-05-09T15:04:12Z","tagInventoryEvent":{"epc":"***"}}': "base64",
        b'{"timestamp":"2023-05-09T15:04:12Z","tagInventoryEvent":{"epcHex":"E280",'
        b'"peakRssiCdbm":"loud"}}': "peakRssiCdbm",
        b'{"timestamp":"2023-05-09T15:04:12Z","tagInventoryEvent":"E280"}': "not an object",
        b'{"hello":"world"}': "not an Impinj event",
        b"": None,
    }
    for body, reason in cases.items():
        parsed = parse_impinj(body)
        assert parsed.reads == [], body
        if reason is None:
            assert parsed.errors == []
        else:
            assert len(parsed.errors) == 1 and reason in parsed.errors[0].reason, body


def test_zebra_concatenated_lines_and_batches() -> None:
    parsed = parse_zebra((DATA / "zebra_stream.json").read_bytes())
    assert [(r.reader, r.epc, r.antenna, r.rssi, r.seen) for r in parsed.reads] == [
        ("84:24:8D:FF:FF:FF", "E28011606000020A1B2C3D4E", 1, -61.0, 2),
        ("84:24:8D:FF:FF:FF", EPC, 3, -48.5, 1),
        ("zebra", EPC, 4, -55.0, 5),
    ]
    assert parsed.reads[0].at == datetime(2025, 5, 9, 15, 4, 12, 310000, tzinfo=UTC)
    reasons = [e.reason for e in parsed.errors]
    assert len(reasons) == 3
    assert "no data.idHex" in reasons[0]
    assert "antenna" in reasons[1]
    assert "no timestamp" in reasons[2]


def test_zebra_garbage_and_truncation() -> None:
    good = b'{"timestamp":"2025-05-09T15:04:12Z","data":{"idHex":"E280","antenna":1}}'
    parsed = parse_zebra(b"garbage\n" + good + b"\n" + good[:30])
    assert [r.epc for r in parsed.reads] == ["E280"]
    assert parsed.reads[0].reader == "zebra"
    assert ["invalid" in e.reason or "truncated" in e.reason for e in parsed.errors] == [
        True,
        True,
    ]
    assert parse_zebra(b'{"data": "x"}').errors[0].reason.startswith("not a Zebra")
    assert parse_zebra(good, reader="door-2").reads[0].reader == "door-2"
