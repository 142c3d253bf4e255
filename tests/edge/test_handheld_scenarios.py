"""Scripted handheld sessions: restarts in the middle of work, a count round, and a put-away
through the whole agent (pyserial over a pty, a real outbox, no broker reachable)."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path
from typing import Any

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty
from floorsync.edge import wire
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import EdgeConfig, ScannerConfig
from floorsync.edge.sync import SyncSettings
from floorsync.edge.workflow import Session
from floorsync.localbroker import free_port
from tests.e2e.conftest import wait_until
from tests.edge.test_workflow import A_L7, CASE_OF_12, GTIN_A, ITEM_A, ITEM_B, B, Hand, brief


def test_a_restart_in_the_middle_of_a_putaway_loses_nothing(tmp_path: Path) -> None:
    hand = Hand(tmp_path / "outbox.db")
    try:
        hand.scan_all("CMD:PUTAWAY", "LOC:RECV-1", ITEM_A, "QTY:2", ITEM_B)
        hand.restart()  # the agent stops after two good reads, before the destination
        assert hand.flow.session.mode == "putaway"  # the saved session wins over config mode
        (outcome,) = hand.scan_all("LOC:A-01-02")
        assert [brief(e) for e in hand.events()] == [
            ("putaway", "RECV-1", "A-01-02", 1, A_L7, "op-7", "]C1"),
            ("putaway", "RECV-1", "A-01-02", 2, B, "op-7", "]C1"),
        ]
        assert len(outcome.events) == 2
        hand.restart()  # and the destination is not replayed: the pending items went with it
        assert hand.flow.session == Session("putaway", "RECV-1", sent=2)
        assert len(hand.events()) == 2
    finally:
        hand.close()


def test_a_quantity_label_and_undo_survive_a_restart_too(tmp_path: Path) -> None:
    hand = Hand(tmp_path / "outbox.db")
    try:
        hand.scan_all("LOC:DOCK-1", ITEM_A, "QTY:4")
        hand.restart()
        hand.scan_all(ITEM_B, "CMD:UNDO")  # x4 from the label saved before the restart, undone
        assert [(e["type"], e["qty"], e["to"]) for e in hand.events()] == [
            ("receive", 1, "DOCK-1"), ("receive", 4, "DOCK-1"), ("adjust", -4, "DOCK-1")]
    finally:
        hand.close()


def test_a_count_round_sends_one_count_per_location_with_the_full_set(tmp_path: Path) -> None:
    hand = Hand(tmp_path / "outbox.db")
    try:
        hand.scan_all(
            "CMD:COUNT", "LOC:A-01-01",
            ITEM_A, ITEM_A, ITEM_A,  # by repetition: 3
            ITEM_B, "CMD:UNDO",  # scanned by mistake, taken back
            CASE_OF_12,  # AI 37: 12 of GTIN A without a lot (another stock line than A/L7)
            "QTY:5", ITEM_B,  # by label: 5
        )
        assert hand.events() == []  # nothing leaves before the count is done
        hand.restart()  # a count survives a restart like a put-away
        hand.scan_all(ITEM_B, "CMD:DONE",
                      "LOC:A-01-02",  # empty: a count of zero, closed by the next location
                      "LOC:A-01-03", ITEM_A, "LOC:A-01-03", ITEM_A, "CMD:DONE")
        events = hand.events()
        assert [(e["type"], e["item"], e["qty"], e["operator"]) for e in events] == [
            ("count", None, 0, "op-7")] * 3
        assert [e["count"] for e in events] == [
            {"location": "A-01-01", "seen": [{"item": A_L7, "qty": 3},
                                             {"item": {"gtin": GTIN_A}, "qty": 12},
                                             {"item": B, "qty": 6}]},
            {"location": "A-01-02", "seen": []},
            # the location scanned again while counting it: no new count, the scans go on
            {"location": "A-01-03", "seen": [{"item": A_L7, "qty": 2}]},
        ]
        counted = wire.event_from_dict(events[0]).count
        assert counted is not None and counted.seen[2] == wire.CountLine(wire.Item(gtin=
                                                                         "04012345000009"), 6)
        refused = hand.scan("CMD:UNDO")
        assert not refused.good and refused.message.startswith("already sent")
    finally:
        hand.close()


# --- through the agent --------------------------------------------------------------------


def _agent_config(tmp_path: Path, port: str) -> EdgeConfig:
    scanner = ScannerConfig(name="hh-1", port=port, operator="op-7", good_read="\x1b7",
                            bad_read="\x1b8")
    return EdgeConfig(site="wh1", device="edge-1", outbox_path=tmp_path / "outbox.db",
                      sync=SyncSettings(broker=f"mqtt://127.0.0.1:{free_port()}"),
                      scanners=(scanner,)).validate()


def _outbox_events(agent: EdgeAgent) -> list[dict[str, Any]]:
    rows = agent.outbox.db.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    return [json.loads(r[0]) for r in rows]


class _Feedback:
    """Counts what the agent sent back to the scanner: ESC 7 good reads, ESC 8 bad reads."""

    def __init__(self, scanner: ScriptedScanner) -> None:
        self.scanner = scanner
        self.got = b""

    def wait(self, good: int, bad: int = 0) -> None:
        def seen() -> bool:
            if select.select([self.scanner.master_fd], [], [], 0.05)[0]:  # never block
                self.got += self.scanner.read_host()
            return self.got.count(b"\x1b7") >= good and self.got.count(b"\x1b8") >= bad
        wait_until(seen, 10, f"{good} good and {bad} bad reads")
        assert (self.got.count(b"\x1b7"), self.got.count(b"\x1b8")) == (good, bad)


def test_a_putaway_through_the_agent_over_a_pty_with_a_restart_in_between(tmp_path: Path
                                                                          ) -> None:
    master, slave = open_pty()
    config = _agent_config(tmp_path, slave)
    scanner = ScriptedScanner(master)
    feedback = _Feedback(scanner)
    try:
        with EdgeAgent(config) as agent:
            wait_until(lambda: agent.device_online.get("hh-1") is True, 10, "the scanner online")
            scanner.type(ITEM_A)  # an item before anything: bad read
            for code in ["CMD:PUTAWAY", "LOC:RECV-1", ITEM_A]:
                scanner.type(code)
            scanner.type(ITEM_A)  # the scanner's double read, within the window: ignored
            feedback.wait(good=4, bad=1)
            assert agent.captured == 0 and agent.outbox.stats().pending == 0
        # the agent stopped with one item pending; a new one picks the session up
        with EdgeAgent(config) as agent:
            wait_until(lambda: agent.device_online.get("hh-1") is True, 10, "the scanner online")
            for code in [gs1_label(GTIN_A, lot="L7", qty=4), "LOC:A-01-02"]:
                scanner.type(code)
            feedback.wait(good=6, bad=1)
            wait_until(lambda: agent.captured == 1, 5, "the put-away captured")
            events = _outbox_events(agent)
            exceptions = agent.outbox.exceptions()
    finally:
        os.close(master)
    assert [brief(e) for e in events] == [
        ("putaway", "RECV-1", "A-01-02", 5, A_L7, "op-7", "]C1")]
    assert [(source, reason) for _, source, reason, _ in exceptions] == [
        ("hh-1", "receive: scan the destination before items")]
