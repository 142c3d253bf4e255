"""Staged picks (``[workflow] pick_to``), through the real workflow on a real outbox: every pick
made in pick mode names the staging lane as its ``to`` (against an order or not), nothing else
does, an undo takes the unit out of the lane as well as back at the source, and the lane is
read from the edge's config (off by default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floorsync.devices.sim import gs1_label
from floorsync.edge.config import load
from floorsync.edge.documents import book_for, read_tallies
from floorsync.edge.errors import ConfigError
from tests.edge.docfixtures import GTIN_A, GTIN_B, SITE, give, line, order
from tests.edge.test_workflow import Hand

A = gs1_label(GTIN_A, lot="L1")
B = gs1_label(GTIN_B)
LANE = "STAGE-OUT"


@pytest.fixture
def hand(tmp_path: Path) -> Iterator[Hand]:
    h = Hand(tmp_path / "outbox.db", pick_to=LANE)
    give(book_for(h.outbox, SITE), order("SO-1", line(2, GTIN_A), line(1, GTIN_B)))
    yield h
    h.close()


def moves(hand: Hand) -> list[tuple[Any, ...]]:
    """(type, from, to, qty, doc check) of every event in the outbox."""
    return [(e["type"], e.get("from"), e.get("to"), e["qty"], (e.get("doc") or {}).get("check"))
            for e in hand.events()]


def test_picks_against_an_order_or_not_go_to_the_lane(hand: Hand) -> None:
    outcomes = hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01", A, "QTY:1", B)
    assert outcomes[-1].message.startswith(f"pick {GTIN_B} x1 from A-01-01 to {LANE};")
    hand.scan_all("CMD:DONE", "LOC:A-01-02", B)  # no order selected: staged all the same
    assert moves(hand) == [("pick", "A-01-01", LANE, 1, "expected"),
                           ("pick", "A-01-01", LANE, 1, "expected"),
                           ("pick", "A-01-02", LANE, 1, None)]


def test_other_modes_name_no_lane(hand: Hand) -> None:
    hand.scan_all("CMD:SHIP", "ORD:SO-1", f"LOC:{LANE}", A, "CMD:PACK", "LOC:P-1", B,
                  "CMD:MOVE", "LOC:A-01-01", B, "LOC:A-01-09")
    assert moves(hand) == [("ship", LANE, None, 1, None), ("pack", "P-1", None, 1, None),
                           ("move", "A-01-01", "A-01-09", 1, None)]


def test_undo_of_a_staged_pick_takes_it_out_of_the_lane_too(hand: Hand) -> None:
    hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01", A, A)
    hand.restart()  # the last pick's lane is in the saved session
    (undone,) = hand.scan_all("CMD:UNDO")
    assert f"adjust +1 at A-01-01, adjust -1 at {LANE} kept" in undone.message
    assert moves(hand)[2:] == [("adjust", None, "A-01-01", 1, "expected"),
                               ("adjust", None, LANE, -1, None)]
    assert hand.scan(A).good  # the edge's count was taken back: expected again, not over
    (tally,) = [t for t in read_tallies(hand.path) if t["id"] == "SO-1"]
    assert tally["picked"] == 2


def test_without_a_lane_a_pick_names_no_to(tmp_path: Path) -> None:
    h = Hand(tmp_path / "outbox.db")
    try:
        give(book_for(h.outbox, SITE), order("SO-1", line(2, GTIN_A)))
        h.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01", A, "CMD:UNDO")
        assert moves(h) == [("pick", "A-01-01", None, 1, "expected"),
                            ("adjust", None, "A-01-01", 1, "expected")]
    finally:
        h.close()


def test_the_lane_comes_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    assert load(None).pick_to == ""  # off by default
    path.write_text(f'[workflow]\npick_to = "{LANE}"\n')
    assert load(path).pick_to == LANE
    for bad, why in (("3", "pick_to must be text"), ('" STAGE"', "pick_to must be a location"),
                     ('"' + "S" * 257 + '"', "pick_to must be a location")):
        path.write_text(f"[workflow]\npick_to = {bad}\n")
        with pytest.raises(ConfigError, match=why):
            load(path)
