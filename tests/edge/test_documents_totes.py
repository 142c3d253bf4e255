"""Picking into an order's totes on a handheld, through the real workflow on a real outbox (and
once through the agent with a serial scanner on a pty): a tote's label selects the open order
naming it, offline (the edge's copy carries the totes); picks then carry the order's doc as
with ORD:; a tote no open order of this edge's site names is a bad read saying why."""

from __future__ import annotations

import json
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
from floorsync.edge.documents import book_for
from floorsync.edge.errors import ConfigError
from floorsync.edge.expected import Expected, decode_expected, encode_expected
from floorsync.edge.outbox import Outbox
from floorsync.edge.workflow import Session
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import GTIN_A, GTIN_B, GTIN_C, SITE, give, line, topic
from tests.edge.test_agent import _config
from tests.edge.test_workflow import Hand

A, B, C = gs1_label(GTIN_A, lot="L1"), gs1_label(GTIN_B), gs1_label(GTIN_C)


def order(doc_id: str, *lines: Any, totes: tuple[str, ...] = (), site: str = SITE,
          version: int = 1) -> Expected:
    return Expected("order", doc_id, site, version, None, tuple(lines), (),
                    (f"ORD:{doc_id}",), totes)


@pytest.fixture
def hand(tmp_path: Path) -> Iterator[Hand]:
    h = Hand(tmp_path / "outbox.db")
    assert give(book_for(h.outbox, SITE),
                order("SO-1", line(2, GTIN_A, location="A-01-01"), totes=("T-1", "T-4")),
                order("SO-2", line(1, GTIN_B), totes=("T-2",))) == ["kept", "kept"]
    yield h
    h.close()


def docs(hand: Hand) -> list[tuple[str, Any, Any, Any]]:
    return [(e["type"], e.get("doc"), e["from"], e["to"]) for e in hand.events()]


def ref(doc_id: str, check: str) -> dict[str, str]:
    return {"kind": "order", "id": doc_id, "check": check}


def test_a_totes_label_selects_its_order_and_the_picks_count_against_it(hand: Hand) -> None:
    chosen = hand.scan_all("CMD:PICK", "tote:T-4")[1]  # the prefix in any case
    assert "order SO-1 tote T-4" in chosen.message and chosen.events == ()
    hand.scan_all("LOC:A-01-01", A, A)
    wrong = hand.scan(C)
    assert not wrong.good and "UNEXPECTED" in wrong.message and len(wrong.events) == 1
    assert docs(hand) == [("pick", ref("SO-1", c), "A-01-01", None)  # `to` stays empty
                          for c in ("expected", "expected", "unexpected")]
    assert hand.exceptions() == []  # the events say it: no refused scan


def test_a_cart_of_totes_switches_orders_and_the_tote_survives_a_restart(hand: Hand) -> None:
    hand.scan_all("CMD:PICK", "LOC:A-01-01", "TOTE:T-1", A, "TOTE:T-2", B)
    assert hand.flow.session.location == "A-01-01"  # the shelf stays; the order changes
    hand.restart()
    session = Session.from_json(hand.saved() or "")
    assert session.doc is not None and (session.doc.id, session.doc.tote) == ("SO-2", "T-2")
    assert not hand.scan(B).good  # SO-2 asks for one B: the restart forgot nothing
    assert [(d["id"], d["check"]) for _, d, _, _ in docs(hand)] == [
        ("SO-1", "expected"), ("SO-2", "expected"), ("SO-2", "over")]


def test_a_tote_of_no_open_order_here_is_a_bad_read_saying_why(hand: Hand) -> None:
    hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01")
    before = hand.flow.session
    free = hand.scan("TOTE:T-99")
    assert not free.good and "tote T-99: no open order of site wh1 names it here" in free.message
    assert "another site's order" in free.message
    # another site's order never reaches this edge's book: its tote is as unknown here
    book = book_for(hand.outbox)
    assert book.receive(topic(order("SO-9", line(1, GTIN_C), totes=("T-9",), site="wh2")),
                        encode_expected(order("SO-9", line(1, GTIN_C), totes=("T-9",),
                                              site="wh2"))) == "refused"
    assert not hand.scan("TOTE:T-9").good
    assert not hand.scan("TOTE:a b").good  # not a tote id
    assert hand.flow.session == before and hand.events() == []
    reasons = [r for r, _ in hand.exceptions()]
    assert len(reasons) == 3 and "without a usable id" in reasons[2]
    # SO-2 ships: its copy is withdrawn, and its tote with it
    assert book.receive(topic(order("SO-2")), b"") == "withdrawn"
    assert not hand.scan("TOTE:T-2").good
    assert hand.scan("TOTE:T-1").good  # the other order's tote still selects it


def test_a_tote_label_in_another_mode_asks_for_pick_mode(hand: Hand) -> None:
    hand.scan_all("CMD:RECEIVE", "LOC:DOCK-1")
    wrong = hand.scan("TOTE:T-1")
    assert not wrong.good and "scan CMD:PICK first" in wrong.message


def test_an_edge_from_before_totes_reads_the_message_as_it_did(hand: Hand) -> None:
    """Decoding reads the keys it knows: the message of an order with totes, less the field, is
    the message such an edge acted on; and the field itself is checked as any other."""
    doc = order("SO-1", line(2, GTIN_A), totes=("T-1",))
    data = json.loads(encode_expected(doc))
    assert data["totes"] == ["T-1"]
    assert decode_expected(json.dumps(data)) == doc
    del data["totes"]
    assert decode_expected(json.dumps(data)) == replace(doc, totes=())
    assert "totes" not in json.loads(encode_expected(replace(doc, totes=())))
    with pytest.raises(Exception, match=r"totes\[0\]"):
        decode_expected(json.dumps({**data, "totes": ["a/b"]}))


def test_the_tote_prefix_comes_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[workflow]\ntote_label_prefix = "BOX#"\n')
    assert load(path).tote_label_prefix == "BOX#" and load(None).tote_label_prefix == "TOTE:"
    path.write_text('[workflow]\ntote_label_prefix = "ord:"\n')
    with pytest.raises(ConfigError, match="must differ"):
        load(path)
    path.write_text('[workflow]\ntote_label_prefix = 3\n')
    with pytest.raises(ConfigError, match="tote_label_prefix must be text"):
        load(path)


def test_the_agent_beeps_good_for_a_tote_and_bad_for_a_free_one(tmp_path: Path) -> None:
    """A serial scanner on a pty, the agent's own config ([workflow] tote_label_prefix), the
    order kept before it started and no broker at all: offline."""
    outbox_path = tmp_path / "outbox.db"
    with Outbox(outbox_path) as outbox:
        give(book_for(outbox, SITE), order("SO-1", line(1, GTIN_B), totes=("T-1",)))
    master, slave = open_pty()
    scanner = ScriptedScanner(master)
    hh = ScannerConfig(name="hh-9", port=slave, mode="pick", good_read="\x1b7",
                       bad_read="\x1b8")
    config = replace(_config(tmp_path, scanners=(hh,)), site=SITE, tote_label_prefix="BOX#")
    heard = b""

    def heard_all(good: int, bad: int) -> bool:
        nonlocal heard
        if select.select([master], [], [], 0.05)[0]:
            heard += scanner.read_host()
        return heard.count(b"\x1b7") >= good and heard.count(b"\x1b8") >= bad

    with EdgeAgent(config) as agent:
        wait_until(lambda: agent.device_online.get("hh-9") is True, 10, "the scanner online")
        for code in ("BOX#T-1", "LOC:B-01", B):
            scanner.type(code)
            time.sleep(0.1)
        wait_until(lambda: heard_all(3, 0), 5, "three good reads")
        scanner.type("BOX#T-7")
        wait_until(lambda: heard_all(3, 1), 5, "a bad read")
        wait_until(lambda: agent.outbox.stats().pending == 1, 5, "the pick kept")
        rows = agent.outbox.db.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    os.close(master)
    (pick,) = [json.loads(p) for (p,) in rows]
    assert (pick["type"], pick["doc"], pick["from"]) == (
        "pick", {"kind": "order", "id": "SO-1", "check": "expected"}, "B-01")
