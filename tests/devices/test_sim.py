"""Simulated devices: labels, EPC encoding and portal streams feed the real decoders."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from floorsync.devices.codes import interpret, interpret_epc
from floorsync.devices.framing import split_aim
from floorsync.devices.sim import ScriptedPortal, gs1_label, sgtin96_hex, sscc96_hex


def test_gs1_label_round_trips_through_interpret() -> None:
    label = gs1_label("9501101530003", lot="L1", serial="S2", qty=5, expiry=date(2027, 3, 31))
    assert label.startswith("]C1010950110153000317270331")
    assert not label.endswith("\x1d")
    symbology, text = split_aim(label)
    ident = interpret(text, symbology)
    assert (ident.kind, ident.gtin, ident.lot, ident.serial, ident.quantity, ident.expiry) == (
        "item",
        "09501101530003",
        "L1",
        "S2",
        5,
        "2027-03-31",
    )


def test_sgtin96_hex_round_trips_through_interpret_epc() -> None:
    hex_epc = sgtin96_hex("0614141", "812345", 6789)
    assert hex_epc == "3034257BF7194E4000001A85"
    ident = interpret_epc(hex_epc)
    assert (ident.kind, ident.gtin, ident.serial) == ("item", "80614141123458", "6789")
    assert ident.epc == "urn:epc:id:sgtin:0614141.812345.6789"


def test_sscc96_hex_round_trips() -> None:
    ident = interpret_epc(sscc96_hex("0614141", "1234567890"))
    assert (ident.kind, ident.sscc) == ("container", "106141412345678908")


def test_pallet_pass_is_realistic_and_seeded() -> None:
    tags = [sgtin96_hex("0614141", "812345", n) for n in range(1, 6)]
    start = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    reads = ScriptedPortal("door-1", rng_seed=7).pallet_pass(tags, start)
    again = ScriptedPortal("door-1", rng_seed=7).pallet_pass(tags, start)
    assert reads == again
    assert [r.at for r in reads] == sorted(r.at for r in reads)
    assert {r.epc for r in reads} == set(tags)
    per_tag_antenna = Counter((r.epc, r.antenna) for r in reads)
    assert set(per_tag_antenna) == {(t, a) for t in tags for a in (1, 2)}
    assert all(5 <= n <= 20 for n in per_tag_antenna.values())
    assert all(r.rssi is not None and -85 <= r.rssi <= -35 for r in reads)
    assert all(start <= r.at <= start + timedelta(seconds=3) for r in reads)
    assert all(r.reader == "door-1" and r.seen == 1 for r in reads)
    # The outside antenna sees each tag first, so direction can be told.
    for tag in tags:
        first = {a: min(r.at for r in reads if r.epc == tag and r.antenna == a) for a in (1, 2)}
        last = {a: max(r.at for r in reads if r.epc == tag and r.antenna == a) for a in (1, 2)}
        assert first[1] <= last[2]
