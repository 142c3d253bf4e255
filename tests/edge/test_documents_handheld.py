"""Handheld receiving and picking against documents, through the real workflow on a real outbox
(and once through the agent with a serial scanner on a pty): the label selects, items are
checked, over and unexpected are kept with bad-read feedback, an unknown document is kept as
unknown, and all of it survives a restart."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import ScannerConfig, load
from floorsync.edge.documents import book_for, read_tallies
from floorsync.edge.errors import ConfigError
from floorsync.edge.expected import ExpectedPallet
from floorsync.edge.outbox import Outbox
from floorsync.edge.workflow import Session
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import (
    GTIN_A,
    GTIN_B,
    GTIN_C,
    SITE,
    give,
    line,
    order,
    pallet_tag,
    receipt,
)
from tests.edge.test_agent import _config
from tests.edge.test_workflow import Hand

A = gs1_label(GTIN_A, lot="L1")
B = gs1_label(GTIN_B)
C = gs1_label(GTIN_C)
SSCC = pallet_tag(5)[1]


@pytest.fixture
def hand(tmp_path: Path) -> Iterator[Hand]:
    h = Hand(tmp_path / "outbox.db")
    give(book_for(h.outbox, SITE),
         receipt("ASN-1", line(2, GTIN_A), line(1, GTIN_B), location="DOCK-1"),
         receipt("ASN-2", pallets=(ExpectedPallet(SSCC, (), (line(3, GTIN_C),)),),
                 labels=("PO-778812",)),
         order("SO-1", line(2, GTIN_A, location="A-01-01"), line(1, GTIN_B)))
    yield h
    h.close()


def docs(hand: Hand) -> list[tuple[str, Any]]:
    """(type, doc) of every event in the outbox, as it goes on the wire."""
    return [(e["type"], e.get("doc")) for e in hand.events()]


def ref(kind: str, doc_id: str, check: str) -> dict[str, str]:
    return {"kind": kind, "id": doc_id, "check": check}


def test_receiving_against_an_asn_expected_over_unexpected(hand: Hand) -> None:
    selected = hand.scan_all("CMD:RECEIVE", "ASN:ASN-1")[1]
    assert hand.flow.session.location == "DOCK-1"  # the receipt's door: no location scan needed
    assert "receipt ASN-1" in selected.message and selected.events == ()
    outcomes = [hand.scan(code) for code in (A, B, A, B, C)]
    assert [o.good for o in outcomes] == [True, True, True, False, False]
    assert "OVER" in outcomes[3].message and "UNEXPECTED" in outcomes[4].message
    assert outcomes[3].message.endswith("(kept: do not scan it again)")
    assert all(len(o.events) == 1 for o in outcomes)  # bad feedback, yet every scan is kept
    assert docs(hand) == [("receive", ref("receipt", "ASN-1", c)) for c in
                          ("expected", "expected", "expected", "over", "unexpected")]
    assert all(e["to"] == "DOCK-1" for e in hand.events())
    assert [r for r, _ in hand.exceptions()] == []  # not refused scans: the events say it
    (tally,) = [t for t in read_tallies(hand.path) if t["id"] == "ASN-1"]
    assert (tally["expected"], tally["received"], tally["over"], tally["unexpected"],
            tally["short"]) == (3, 3, 1, 1, 0)
    assert tally["by"] == {"hh-1": {"received": 3, "over": 1, "unexpected": 1}}


def test_an_asn_this_edge_has_no_copy_of_is_received_as_unknown(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "LOC:DOCK-3", "asn:ASN-77")  # the prefix in any case
    (outcome,) = hand.scan_all(C)
    assert "not known here" in outcome.message
    assert docs(hand) == [("receive", ref("receipt", "ASN-77", "unknown"))]


def test_a_pallets_sscc_or_a_documents_own_label_selects_its_receipt(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "LOC:DOCK-2")
    (picked,) = hand.scan_all("]C100" + SSCC)  # the pallet label: selects, receives nothing
    assert picked.events == () and f"pallet {SSCC}" in picked.message
    assert hand.flow.session.doc is not None and hand.flow.session.doc.id == "ASN-2"
    assert hand.scan("QTY:3").good and hand.scan(C).good
    hand.scan_all("CMD:DONE", "LOC:DOCK-2", "PO-778812")
    assert not hand.scan(C).good
    assert docs(hand) == [("receive", ref("receipt", "ASN-2", "expected")),
                          ("receive", ref("receipt", "ASN-2", "over"))]
    hand.scan_all("CMD:DONE", "LOC:DOCK-2", "]C100" + pallet_tag(9)[1])  # no receipt's pallet
    assert hand.events()[-1]["item"] == {"sscc": pallet_tag(9)[1]} and docs(hand)[-1][1] is None


def test_picking_against_an_order_a_wrong_item_is_a_bad_read_and_kept(hand: Hand) -> None:
    hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01", A, A)
    wrong = hand.scan(C)
    assert not wrong.good and "UNEXPECTED" in wrong.message and len(wrong.events) == 1
    assert not hand.scan(A).good  # a third of a line of two: over
    assert docs(hand) == [("pick", ref("order", "SO-1", c)) for c in
                          ("expected", "expected", "unexpected", "over")]
    assert {e["from"] for e in hand.events()} == {"A-01-01"}


def test_shipping_against_an_order_carries_its_doc_unchecked(hand: Hand) -> None:
    """In ship mode ORD:{id} selects the order too: the ships carry its doc with no check of
    the edge's (its copy says what is left to pick), counted against nothing here."""
    selected = hand.scan_all("CMD:SHIP", "ORD:SO-1")[1]
    assert selected.good and "order SO-1 (checked centrally)" in selected.message
    outcomes = hand.scan_all("LOC:DOCK-9", A, A, C)
    assert all(o.good for o in outcomes)  # nothing over or unexpected is said for a ship
    assert docs(hand) == [("ship", {"kind": "order", "id": "SO-1"})] * 3
    assert {e["from"] for e in hand.events()} == {"DOCK-9"}
    (tally,) = [t for t in read_tallies(hand.path) if t["id"] == "SO-1"]
    assert tally["picked"] == 0  # a ship is no pick against the copy
    hand.scan_all("CMD:DONE", "LOC:DOCK-9", C)
    assert docs(hand)[-1] == ("ship", None)  # the selection ended with CMD:DONE
    hand.restart()
    hand.scan_all("ORD:SO-9", "LOC:DOCK-9", B)  # an order with no copy here: the same
    assert docs(hand)[-1] == ("ship", {"kind": "order", "id": "SO-9"})
    assert hand.exceptions() == []


def test_a_document_label_in_the_wrong_mode_or_without_an_id_is_refused(hand: Hand) -> None:
    hand.scan_all("CMD:PICK")
    refused = hand.scan("ASN:ASN-1")
    assert not refused.good and "scan CMD:RECEIVE first" in refused.message
    hand.scan_all("CMD:RECEIVE")
    assert not hand.scan("ORD:SO-1").good
    bad = hand.scan("ASN:a b/c")
    assert not bad.good and "without a usable id" in bad.message
    assert hand.events() == [] and len(hand.exceptions()) == 3


def test_the_selection_and_the_tallies_survive_a_restart(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "ASN:ASN-1", A)
    hand.restart()
    session = Session.from_json(hand.saved() or "")
    assert session.doc is not None and (session.doc.kind, session.doc.id) == ("receipt", "ASN-1")
    assert hand.scan(A).good and not hand.scan(A).good  # the restart forgot no unit
    assert [d["check"] for _, d in docs(hand)] == ["expected", "expected", "over"]


def test_undo_takes_back_the_count_with_the_receive(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "ASN:ASN-1", B)
    (undone,) = hand.scan_all("CMD:UNDO")
    assert docs(hand)[-1] == ("adjust", ref("receipt", "ASN-1", "expected"))
    assert "taken back" in undone.message
    assert hand.scan(B).good  # the unit is free again: expected, not over
    (tally,) = [t for t in read_tallies(hand.path) if t["id"] == "ASN-1"]
    assert tally["received"] == 1


def test_done_clear_or_another_mode_ends_the_selection(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "ASN:ASN-1", "CMD:DONE", "LOC:DOCK-1", C)
    hand.scan_all("ASN:ASN-1", "CMD:CLEAR", "LOC:DOCK-1", C, "CMD:PUTAWAY")
    assert docs(hand) == [("receive", None), ("receive", None)]
    assert hand.flow.session.doc is None


def test_the_agent_gives_bad_read_feedback_for_an_over_receive(tmp_path: Path) -> None:
    """A serial scanner on a pty, Honeywell feedback bytes: ESC 7 for each good scan, ESC 8 for
    the over one, whose event is kept all the same; the documents were kept before it started."""
    config_path = tmp_path / "outbox.db"
    with Outbox(config_path) as outbox:
        give(book_for(outbox, SITE), receipt("ASN-1", line(1, GTIN_B), location="DOCK-1"))
    master, slave = open_pty()
    scanner = ScriptedScanner(master)
    hh = ScannerConfig(name="hh-9", port=slave, good_read="\x1b7", bad_read="\x1b8")
    config = replace(_config(tmp_path, scanners=(hh,)), site=SITE)
    heard = b""

    def heard_all(good: int, bad: int) -> bool:
        nonlocal heard
        if select.select([master], [], [], 0.05)[0]:  # read_host blocks when nothing came
            heard += scanner.read_host()
        return heard.count(b"\x1b7") >= good and heard.count(b"\x1b8") >= bad

    with EdgeAgent(config) as agent:
        wait_until(lambda: agent.device_online.get("hh-9") is True, 10, "the scanner online")
        for code in ("ASN:ASN-1", B):  # receive mode: the ASN, then the item
            scanner.type(code)
        wait_until(lambda: heard_all(2, 0), 5, "two good reads")
        time.sleep(0.6)  # past the duplicate window: a second case, not the same scan again
        scanner.type(B)
        wait_until(lambda: heard_all(2, 1), 5, "a bad read")
        wait_until(lambda: agent.outbox.stats().pending == 2, 5, "both receives kept")
        rows = agent.outbox.db.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    os.close(master)
    assert [p.count('"check":"over"') for (p,) in rows] == [0, 1]


def test_the_label_prefixes_come_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('site = "wh1"\ndevice = "hh"\n[workflow]\nreceipt_label_prefix = "PO#"\n'
                    'order_label_prefix = ""\n')
    config = load(path)
    assert (config.receipt_label_prefix, config.order_label_prefix) == ("PO#", "")
    assert load(None).receipt_label_prefix == "ASN:" and load(None).order_label_prefix == "ORD:"
    path.write_text('[workflow]\nreceipt_label_prefix = "X:"\norder_label_prefix = "x:"\n')
    with pytest.raises(ConfigError, match="must differ"):
        load(path)
    h = Hand(tmp_path / "outbox.db", receipt_label_prefix="PO#", order_label_prefix="")
    try:
        h.scan_all("CMD:RECEIVE", "LOC:DOCK-1", "PO#4711", C)
        h.scan_all("CMD:PICK", "LOC:A-01-01")
        assert not h.scan("ORD:SO-1").good  # no order prefix: not a label this flow knows
        assert docs(h) == [("receive", ref("receipt", "4711", "unknown"))]
    finally:
        h.close()
