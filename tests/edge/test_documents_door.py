"""A dock door against the receipts open at its location, with the real door logic, journal,
outbox and document book: receives get ``doc`` and the edge's check where they are committed,
tallies per door and receipt, a log line per over or unexpected case; a door rebuilt from its
journal after a crash gives the same events with the same docs and counts nothing twice."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from floorsync.devices.sim import open_pty, sgtin96_hex
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import PortalConfig
from floorsync.edge.documents import DocumentBook, book_for, read_tallies
from floorsync.edge.doorstate import DoorKeeper
from floorsync.edge.expected import ExpectedPallet
from floorsync.edge.journal import DoorJournal
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import (
    DOOR_GTIN,
    SITE,
    attributions,
    case_uri,
    give,
    line,
    pallet_tag,
    payloads,
    receipt,
)
from tests.edge.test_agent import _config
from tests.edge.test_door_scenarios import Floor, at, case, door, run

CONFIG = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in")
OTHER = sgtin96_hex("0614141", "812346", 1)  # the same supplier, an item no receipt names
PALLET_HEX, PALLET_SSCC = pallet_tag(1)


def asn(doc_id: str = "ASN-1", location: str | None = "DOCK-A", version: int = 1) -> Any:
    """Three cases by GTIN, two more by EPC on a pallet whose own tag is read too."""
    return receipt(doc_id, line(3, DOOR_GTIN), location=location, version=version,
                   pallets=(ExpectedPallet(PALLET_SSCC, (case_uri(10), case_uri(11))),))


def truck() -> Floor:
    """Cases 1-4 (one more than the receipt's three), the pallet and its two listed cases, then
    a case of an item no receipt names: each in its own pass through the door."""
    floor = Floor()
    for n, tag in enumerate([case(1), case(2), case(3), case(4), PALLET_HEX, case(10),
                             case(11), OTHER]):
        floor.sweep("door-a", tag, 1, 1.0 + 2 * n, 1.5 + 2 * n)
    return floor


def checks(path: Path) -> dict[str, tuple[str, Any]]:
    """Per tag: (event id, doc) of its receive."""
    return {e["read"]["tag"]: (i, e.get("doc")) for i, e in payloads(path).items()}


def test_receives_at_a_door_get_the_receipt_and_the_check(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="floorsync.edge.doorstate")
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        book = book_for(outbox, SITE)
        give(book, asn())
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert keeper.keep(run([keeper.door], truck(), until=40).events) == (8, True)
    found = {tag: (d or {}).get("check") for tag, (_, d) in checks(path).items()}
    assert found == {case(1): "expected", case(2): "expected", case(3): "expected",
                     case(4): "over", PALLET_HEX: "expected", case(10): "expected",
                     case(11): "expected", OTHER: "unexpected"}
    assert {d["id"] for _, d in checks(path).values()} == {"ASN-1"}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "OVER" in said[0] and "UNEXPECTED" in said[1]
    assert all(m.startswith("door door-a: receipt ASN-1:") for m in said)
    (tally,) = read_tallies(path)
    assert {k: tally[k] for k in ("expected", "received", "over", "unexpected", "short",
                                  "epcs", "epcs_seen", "pallets", "pallets_seen")} == {
        "expected": 3, "received": 3, "over": 1, "unexpected": 1, "short": 0,
        "epcs": 2, "epcs_seen": 2, "pallets": 1, "pallets_seen": 1}
    assert tally["by"] == {"door:door-a": {"received": 3, "over": 1, "unexpected": 1}}


@pytest.mark.parametrize(("location", "gets_doc"), [("DOCK-A", True), (None, True),
                                                    ("DOCK-B", False)])
def test_only_receipts_at_the_doors_location_or_at_any_apply(
        tmp_path: Path, location: str | None, gets_doc: bool) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        give(book_for(outbox, SITE), asn(location=location))
        keeper = DoorKeeper(outbox, Door(CONFIG))
        keeper.keep(run([keeper.door], truck(), until=40).events)
    docs = [d for _, d in checks(path).values()]
    assert len(docs) == 8 and all((d is not None) is gets_doc for d in docs)


def test_with_several_receipts_a_case_goes_to_the_one_expecting_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        book = book_for(outbox, SITE)
        give(book, receipt("ASN-0", line(5, "04012345000009"), location="DOCK-A"),  # first here
             receipt("ASN-1", line(2, DOOR_GTIN)))  # at any door
        keeper = DoorKeeper(outbox, Door(CONFIG))
        floor = Floor()
        for n, tag in enumerate([case(1), case(2), case(3), OTHER]):
            floor.sweep("door-a", tag, 1, 1.0 + 2 * n, 1.5 + 2 * n)
        keeper.keep(run([keeper.door], floor, until=20).events)
    found = {tag: (d["id"], d["check"]) for tag, (_, d) in checks(path).items()}
    assert found == {case(1): ("ASN-1", "expected"), case(2): ("ASN-1", "expected"),
                     case(3): ("ASN-1", "over"),
                     OTHER: ("ASN-1", "unexpected")}  # to the receipt this door is receiving


def test_a_door_rebuilt_after_a_crash_gives_the_same_docs_and_counts_once(
        tmp_path: Path) -> None:
    reads = sorted(truck().reads, key=lambda r: r.at)

    # the reference: no crash
    with Outbox(tmp_path / "ref.db") as outbox:
        give(book_for(outbox, SITE), asn())
        keeper = DoorKeeper(outbox, Door(CONFIG))
        for r in reads:
            keeper.door.add(r)
        every = keeper.door.advance(at(40))
        keeper.keep(every)
        reference = attributions(outbox)

    # the same truck; the edge dies after the first passes were kept, the journal untrimmed
    path = tmp_path / "outbox.db"
    journal_path = tmp_path / "journal" / "door-a.db"
    with Outbox(path) as outbox:
        give(book_for(outbox, SITE), asn())
        journal = DoorJournal(journal_path, "door-a")
        keeper = DoorKeeper(outbox, Door(CONFIG))
        for r in reads:
            journal.put(r)
        journal.commit()
        for r in reads:
            keeper.door.add(r)
        assert keeper.keep(keeper.door.advance(at(8.6))) == (4, True)  # cases 1-4 decided
        journal.close()  # the crash: the door's memory is gone, its journal is not
    with Outbox(path) as outbox:  # the agent starts again
        book = book_for(outbox)
        keeper = DoorKeeper(outbox, Door(CONFIG), documents=book)
        with DoorJournal(journal_path, "door-a") as again:
            for _, entry in again.entries():
                keeper.door.add(entry)  # type: ignore[arg-type]
        rebuilt = keeper.door.advance(at(40))
        assert len(rebuilt) == 4  # the four kept before are held (the saved hold list)
        assert keeper.keep(rebuilt) == (4, True)
        # a pass given again with the id it had (the hold list lost, a replay): not kept,
        # not counted again
        assert {e.id for e in every} == set(payloads(path))  # the same eight ids
        assert keeper.keep(every) == (0, True)
        crashed = attributions(outbox)
    assert checks(path) == checks(tmp_path / "ref.db")  # same ids, same docs
    assert sorted(crashed) == sorted(reference)  # one row each: nothing counted twice
    assert len({row[0] for row in crashed}) == 8


def test_movements_refused_while_full_are_checked_when_they_go_in(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, cap_bytes=100) as outbox:
        give(book_for(outbox, SITE), asn())
        keeper = DoorKeeper(outbox, Door(CONFIG), clock=lambda: 0.0)
        assert keeper.keep(run([keeper.door], truck(), until=40).events) == (0, False)
        assert attributions(outbox) == []  # nothing kept, nothing counted
    with Outbox(path) as outbox:  # restarted with room: the backlog goes in, checked
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert keeper.keep([]) == (8, True)
    found = sorted((d or {}).get("check", "") for _, d in checks(path).values())
    assert found == ["expected"] * 6 + ["over", "unexpected"]


def test_edge_status_shows_each_receipts_tallies_per_door(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        book = DocumentBook(outbox, SITE)
        give(book, asn(), receipt("ASN-2", line(5, DOOR_GTIN), location="DOCK-B"))
        keeper = DoorKeeper(outbox, Door(CONFIG), documents=book)
        keeper.keep(run([keeper.door], truck(), until=40).events)
    done = subprocess.run([sys.executable, "-m", "floorsync", "edge", "status", "--outbox",
                           str(path), "--json"], capture_output=True, text=True, timeout=30)
    one, two = json.loads(done.stdout)["documents"]
    assert (one["id"], one["location"], one["short"], one["by"]) == (
        "ASN-1", "DOCK-A", 0, {"door:door-a": {"received": 3, "over": 1, "unexpected": 1}})
    assert (two["id"], two["expected"], two["received"], two["short"], two["by"]) == (
        "ASN-2", 5, 0, 5, {})
    text = subprocess.run([sys.executable, "-m", "floorsync", "edge", "status", "--outbox",
                           str(path)], capture_output=True, text=True, timeout=30).stdout
    assert ("receipt     ASN-1 v1 at DOCK-A: expected 3, received 3, over 1, unexpected 1,"
            " short 0; epcs 2 of 2; pallets 1 of 1 (received/over/unexpected:"
            " door:door-a 3/1/1)") in text
    assert "ASN-2 v1 at DOCK-B: expected 5, received 0, over 0, unexpected 0, short 5" in text


def test_a_door_without_open_receipts_makes_the_events_it_made_before(
        tmp_path: Path) -> None:
    """The door's own logic is untouched: without documents its events are what they were."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        keeper = DoorKeeper(outbox, Door(CONFIG))
        events = run([keeper.door], truck(), until=40).events
        keeper.keep(events)
    assert all(e.doc is None for e in events)
    assert all("doc" not in p for p in payloads(path).values())


def test_the_agents_door_checks_against_what_the_syncer_kept(tmp_path: Path) -> None:
    """The whole agent: a serial RFID reader on a pty, its door at DOCK-1, the receipt kept in
    the outbox before the agent started (the broker is unreachable)."""
    with Outbox(tmp_path / "outbox.db") as outbox:
        give(book_for(outbox, SITE), receipt("ASN-7", line(1, DOOR_GTIN), location="DOCK-1"))
    master, slave = open_pty()
    portal = PortalConfig(name="dock-1", location="DOCK-1", reader="serial", port=slave,
                          line_format="{epc},{antenna},{rssi}", quiet_s=0.3, min_reads=2)
    with EdgeAgent(_config(tmp_path, portals=(portal,))) as agent:
        wait_until(lambda: agent.device_online.get("dock-1") is True, 10, "the reader online")
        for _ in range(5):
            for tag in (case(1), case(2), OTHER):
                os.write(master, f"{tag},1,-55\r\n".encode())
        wait_until(lambda: agent.captured == 3, 10, "three receives")
    os.close(master)
    found = sorted((d["id"], d["check"]) for _, d in checks(tmp_path / "outbox.db").values())
    assert found == [("ASN-7", "expected"), ("ASN-7", "over"), ("ASN-7", "unexpected")]
