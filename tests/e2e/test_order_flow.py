"""An outbound order end to end through real parts: a real mosquitto, ``floorsync server`` in its
own process (master data, stock and orders through its HTTP API), and ``floorsync edge`` in its
own process with a serial scanner on a pty read through pyserial, typed into as an operator
would, its feedback bytes heard on the pty.

The order's floor copy goes out on the broker (retained) and reaches the edge; the operator picks
against it by ``ORD:{id}`` (a second order by ``TOTE:{tote}``), one wrong item among the picks
(bad-read bytes on the pty, an exception centrally); a receive fills the backorder of the line
that was short, the put-away moves it to a shelf, the operator picks it and ships both orders
(``CMD:SHIP``, the order's label, the dock, the items). The edge stages its picks at the shipping
door (``[workflow] pick_to``), so the ships take the goods off the books once: nothing goes below
zero there. Centrally: lines picked and shipped, the orders closed, the backorder filled with
its fill recorded, the exception tied to the order, the backlog empty of them, and the floor
copies withdrawn from the broker (empty retained messages), on the edge too. Without
``pick_to``, a pick takes the goods off the books and the ship after it again: raised as
``order_ship_off_books`` on the order."""

from __future__ import annotations

import json
import os
import queue
import select
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty
from floorsync.edge.expected import decode_expected, docs_filter, docs_topic
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import CentralProcess, wait_until

GTIN_A, GTIN_B, GTIN_C = "09501101530003", "04012345000009", "04000000000006"
A, B, C = gs1_label(GTIN_A), gs1_label(GTIN_B), gs1_label(GTIN_C)
GOOD, BAD = b"\x1b7", b"\x1b8"  # Honeywell's good and bad read (ESC 7, ESC 8)
ITEMS_CSV = f"sku,gtins\nITEM-A,{GTIN_A}\nITEM-B,{GTIN_B}\nITEM-C,{GTIN_C}\n"
WAIT_S = 30.0  # only ever waited out when something is wrong


def locations_csv(site: str) -> str:
    return ("site,code,kind,parent,name,barcodes\n"
            f"{site},{site},site,,Warehouse,\n{site},DOCKS,zone,,Docks,\n"
            f"{site},DOCK-1,bin,DOCKS,Receiving door,LOC:DOCK-1\n"
            f"{site},SHIP-1,bin,DOCKS,Shipping door,LOC:SHIP-1\n"
            f"{site},Z1,zone,,Zone 1,\n{site},A-01,aisle,Z1,,\n"
            + "".join(f"{site},A-01-0{n},bin,A-01,,LOC:A-01-0{n}\n" for n in (1, 2, 3)))


class Api:
    """The central service's HTTP API with its admin token."""

    def __init__(self, central: CentralProcess) -> None:
        self.central = central

    def get(self, path: str, **query: str) -> Any:
        return self.central.get(path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def post(self, path: str, body: str | bytes, content_type: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.central.api}/{path}", data=body.encode() if isinstance(body, str) else body,
            method="POST", headers={"Content-Type": content_type,
                                    "Authorization": f"Bearer {self.central.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self.post(path, json.dumps(body), "application/json")

    def stock(self) -> dict[tuple[str, str], float]:
        return {(r["location"], r["item"]): r["quantity"]
                for r in self.get("stock", limit="1000")["items"] if r["quantity"]}


class Watcher:
    """A paho client on the site's documents, as an edge subscribes: every message kept, with
    its retain flag (a retained one came from the broker's store)."""

    def __init__(self, port: int, site: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.seen: list[tuple[str, bytes, bool]] = []
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(docs_filter(site), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK for the documents"

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def drain(self, wait: float = 0.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + wait
        while True:
            try:
                self.seen.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return self.seen

    def last(self, topic: str) -> bytes | None:
        found = [body for t, body, _ in self.drain() if t == topic]
        return found[-1] if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Operator:
    """Types labels into the scanner's pty, one at a time, and hears each one's feedback."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.scanner = ScriptedScanner(master)
        self.heard = b""
        self.log: list[tuple[str, bool]] = []

    def _feedback(self) -> bool:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for signal, good in ((GOOD, True), (BAD, False)):
                if self.heard.startswith(signal):
                    self.heard = self.heard[len(signal):]
                    return good
            assert not self.heard or GOOD.startswith(self.heard) or BAD.startswith(self.heard), (
                f"unexpected bytes from the host: {self.heard!r}")
            if select.select([self.master], [], [], 0.1)[0]:
                self.heard += self.scanner.read_host()
        raise AssertionError(f"no feedback for the scan after {self.log[-1:]}")

    def scan(self, code: str) -> bool:
        """One label; True for a good read, False for a bad one."""
        self.scanner.type(code)
        good = self._feedback()
        self.log.append((code, good))
        return good

    def scan_all(self, *codes: str) -> list[bool]:
        return [self.scan(code) for code in codes]


@pytest.fixture
def central(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[CentralProcess]:
    server = CentralProcess(tmp_path / "central.db", mosquitto.url).start()
    try:
        yield server
    finally:
        server.stop()


class Edge:
    """``floorsync edge --config`` in its own process, its scanner on a pty."""

    def __init__(self, directory: Path, site: str, broker: str, pick_to: str | None = None
                 ) -> None:
        self.master, slave = open_pty()
        self.outbox = directory / "hh-1-outbox.db"
        self.config = directory / "hh-1.toml"
        self.log = directory / "hh-1.log"
        self.config.write_text(
            f'site = "{site}"\ndevice = "hh-1"\n\n[outbox]\npath = "{self.outbox}"\n\n'
            f'[sync]\nbroker = "{broker}"\nprotocol = "5"\n\n'
            + ("" if pick_to is None else f'[workflow]\npick_to = "{pick_to}"\n\n')
            + f'[[scanners]]\nname = "hh-1"\nport = "{slave}"\nmode = "receive"\n'
            'operator = "op-1"\ngood_read = "\\u001b7"\nbad_read = "\\u001b8"\n')
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync", "--log-level", "INFO", "edge", "--config",
                 str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        self.operator = Operator(self.master)
        try:
            wait_until(lambda: self._alive() and "scanner hh-1 online" in self.log.read_text(),
                       WAIT_S, "the edge's scanner online")
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        return True

    def status(self) -> dict[str, Any]:
        """``floorsync edge status --json``: the outbox and the documents' tallies."""
        done = subprocess.run(
            [sys.executable, "-m", "floorsync", "edge", "status", "--json", "--config",
             str(self.config)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr  # 1: the agent is not running
        return dict(json.loads(done.stdout))

    def tally(self, order_id: str) -> dict[str, Any] | None:
        found = [d for d in self.status()["documents"] if (d["kind"], d["id"]) ==
                 ("order", order_id)]
        return found[0] if found else None

    def copy(self, order_id: str) -> tuple[int, bytes | None] | None:
        """The edge's stored copy of an order: (version, payload; None once withdrawn)."""
        with sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT version, payload FROM documents WHERE kind = 'order'"
                               " AND id = ?", (order_id,)).fetchone()
        return None if row is None else (row[0], None if row[1] is None else row[1].encode())

    def events(self) -> list[dict[str, Any]]:
        with sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5) as conn:
            return [json.loads(p) for (p,) in
                    conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()]

    def synced(self) -> bool:
        outbox = self.status()["outbox"]
        return bool(outbox["pending"] == outbox["sent"] == outbox["rejected"] == 0
                    and outbox["acked"] == len(self.events()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        os.close(self.master)


def lines_of(api: Api, order_id: str) -> dict[int, tuple[float, ...]]:
    """Per line: (ordered, allocated, picked, shipped, backordered) and its status."""
    return {ln["line"]: (ln["ordered"], ln["allocated"], ln["picked"], ln["shipped"],
                         ln["backordered"], ln["status"])
            for ln in api.get(f"orders/{order_id}")["lines"]}


def test_an_order_is_picked_filled_and_shipped_through_the_broker_and_a_handheld(
        tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str) -> None:
    api = Api(central)
    assert api.post("items/import", ITEMS_CSV, "text/csv")[0] == 200
    assert api.post("locations/import", locations_csv(site), "text/csv")[0] == 200
    watcher = Watcher(mosquitto.port, site)
    edge = Edge(tmp_path, site, mosquitto.url, pick_to="SHIP-1")  # picks go to the door
    hand = edge.operator
    try:
        # stock arrives: ten A and five C on A-01-01, one B on A-01-02, ten C on A-01-03
        assert all(hand.scan_all(
            "CMD:RECEIVE", "LOC:A-01-01", "QTY:10", A, "QTY:5", C,
            "LOC:A-01-02", B, "LOC:A-01-03", "QTY:10", C))
        wait_until(lambda: api.stock() == {("A-01-01", GTIN_A): 10, ("A-01-01", GTIN_C): 5,
                                           ("A-01-02", GTIN_B): 1, ("A-01-03", GTIN_C): 10},
                   WAIT_S, "the receives applied centrally")

        # two orders: SO-1 (three A in stock, four B of which one in stock) and SO-2 (two C)
        status, so1 = api.post_json("orders", {
            "id": "SO-1", "site": site, "ship_to": "Corner Shop, Leeds", "priority": 2,
            "due": "2030-01-31", "totes": ["T-1"],
            "lines": [{"line": 1, "item": "ITEM-A", "qty": 3},
                      {"line": 2, "item": GTIN_B, "qty": 4}]})
        assert status == 201, so1
        assert [(ln["allocated"], ln["backordered"]) for ln in so1["lines"]] == [(3, 0), (1, 3)]
        status, so2 = api.post_json("orders", {
            "id": "SO-2", "site": site, "ship_to": "Mill Lane Deli, York", "due": "2030-02-01",
            "totes": ["T-2"], "lines": [{"line": 1, "item": "ITEM-C", "qty": 2}]})
        assert status == 201 and so2["lines"][0]["allocated"] == 2, so2
        (backorder,) = api.get("backorders", order="SO-1")["items"]
        assert (backorder["line"], backorder["open_qty"], backorder["status"]) == (2, 3, "open")

        # the floor copies come over the broker, retained, and the edge keeps them
        topic1, topic2 = docs_topic(site, "order", "SO-1"), docs_topic(site, "order", "SO-2")
        wait_until(lambda: edge.tally("SO-1") is not None and edge.tally("SO-2") is not None,
                   WAIT_S, "both orders' copies on the edge")
        first = edge.tally("SO-1")
        assert first is not None and (first["expected"], first["picked"]) == (4, 0)  # 3 A, 1 B
        copy = edge.copy("SO-1")
        assert copy is not None and copy[1] is not None
        sheet = decode_expected(copy[1])
        assert (sheet.version, sheet.totes, sheet.labels) == (so1["version"], ("T-1",),
                                                              ("ORD:SO-1",))
        assert sorted((ln.item.sku, ln.qty, ln.location) for ln in sheet.lines) == [
            ("ITEM-A", 3, "A-01-01"), ("ITEM-B", 1, "A-01-02")]  # what is allocated: to pick
        assert watcher.last(topic1) == copy[1]
        retained = Watcher(mosquitto.port, site)  # the broker keeps them for an edge not yet on
        try:
            assert {t: r for t, _, r in retained.drain(1.0)} == {topic1: True, topic2: True}
        finally:
            retained.close()

        # pick SO-1 by its label: three A, one C by mistake (bad read, kept), the one B there
        assert hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-01", "QTY:3", A) == [True] * 5
        assert hand.scan(C) is False  # the wrong item: ESC 8 on the scanner
        assert hand.scan_all("LOC:A-01-02", B) == [True, True]
        # pick SO-2 by its tote's label, from the shelf its copy names
        assert hand.scan_all("TOTE:T-2", "LOC:A-01-03", "QTY:2", C) == [True] * 4
        picks = [e for e in edge.events() if e["type"] == "pick"]
        wrong = [e for e in picks if e["item"] == {"gtin": GTIN_C} and e["from"] == "A-01-01"]
        assert len(picks) == 4 and len(wrong) == 1
        assert {e["to"] for e in picks} == {"SHIP-1"}  # staged at the door, the wrong C too
        assert wrong[0]["doc"] == {"kind": "order", "id": "SO-1", "check": "unexpected"}
        wait_until(edge.synced, WAIT_S, "the picks acked")
        wait_until(lambda: lines_of(api, "SO-1")[2][2] == 1 and lines_of(api, "SO-2")[1][2] == 2,
                   WAIT_S, "the picks applied to the orders")
        assert lines_of(api, "SO-1") == {1: (3, 0, 3, 0, 0, "open"), 2: (4, 0, 1, 0, 3, "open")}
        order = api.get("orders/SO-1")
        (raised,) = [api.get(f"exceptions/{i}") for i in order["exceptions"]]
        assert (raised["kind"], raised["event_id"], raised["status"]) == (
            "order_unexpected", wrong[0]["id"], "open"), raised
        assert api.get("orders/SO-2")["exceptions"] == []

        # the missing three B come in at the door: the backorder is filled from them, then put
        # away to A-01-02, where the reservation follows them
        assert all(hand.scan_all("CMD:RECEIVE", "LOC:DOCK-1", "QTY:3", B))
        receive_b = [e for e in edge.events() if e["type"] == "receive"][-1]
        wait_until(edge.synced, WAIT_S, "the receive acked")
        (filled,) = api.get("backorders", order="SO-1", status="all")["items"]
        assert (filled["status"], filled["open_qty"], filled["qty"]) == ("filled", 0, 3), filled
        assert [(f["qty"], f["how"], f["event_id"], f["location"]) for f in filled["fills"]] == [
            (3, "allocated", receive_b["id"], "DOCK-1")], filled
        assert filled["closed_at"] == filled["fills"][0]["filled_at"]
        assert api.get("backorders", order="SO-1")["items"] == []  # open ones: none
        assert lines_of(api, "SO-1")[2] == (4, 3, 1, 0, 0, "open")
        assert all(hand.scan_all("CMD:PUTAWAY", "LOC:DOCK-1", "QTY:3", B, "LOC:A-01-02",
                                 "CMD:DONE"))
        wait_until(edge.synced, WAIT_S, "the put-away acked")
        wait_until(lambda: [(r["location"], r["qty"], r["staged"]) for r in
                            api.get("orders/SO-1")["lines"][1]["reserved"]] == [
                                ("SHIP-1", 1, True), ("A-01-02", 3, False)],
                   WAIT_S, "the reservation moved with the stock (the picked B staged)")
        assert api.get("backorders", order="SO-1", status="all")["items"] == [filled]
        # a new version of the copy reaches the edge: three B left to pick at A-01-02
        wait_until(lambda: (edge.tally("SO-1") or {}).get("expected") == 3, WAIT_S,
                   "SO-1's new copy on the edge")
        copy = edge.copy("SO-1")
        assert copy is not None and copy[1] is not None and copy[0] > sheet.version
        assert [(ln.qty, ln.location) for ln in decode_expected(copy[1]).lines] == [
            (3, "A-01-02")]

        # pick the filled line, then ship both orders at the shipping door
        assert hand.scan_all("CMD:PICK", "ORD:SO-1", "LOC:A-01-02", "QTY:3", B) == [True] * 5
        assert edge.events()[-1]["doc"] == {"kind": "order", "id": "SO-1", "check": "expected"}
        assert hand.scan_all("CMD:SHIP", "TOTE:T-1", "LOC:SHIP-1", "QTY:3", A, "QTY:4",
                             B) == [True] * 7
        assert hand.scan_all("TOTE:T-2", "QTY:2", C) == [True] * 3
        ships = [e for e in edge.events() if e["type"] == "ship"]
        assert [(e["doc"], e["qty"], e["from"]) for e in ships] == [
            ({"kind": "order", "id": "SO-1"}, 3, "SHIP-1"),
            ({"kind": "order", "id": "SO-1"}, 4, "SHIP-1"),
            ({"kind": "order", "id": "SO-2"}, 2, "SHIP-1")]
        wait_until(edge.synced, WAIT_S, "the ships acked")
        wait_until(lambda: api.get("orders/SO-2")["status"] == "closed", WAIT_S,
                   "SO-2 closed")

        # centrally: every line picked and shipped, both orders closed
        one = api.get("orders/SO-1")
        assert one["status"] == "closed" and one["closed_at"] is not None
        assert lines_of(api, "SO-1") == {1: (3, 0, 3, 3, 0, "closed"),
                                         2: (4, 0, 4, 4, 0, "closed")}
        assert lines_of(api, "SO-2") == {1: (2, 0, 2, 2, 0, "closed")}
        # the wrong item's exception stays with the order, the backorder filled
        assert one["exceptions"] == order["exceptions"]
        assert api.get("exceptions", kind="order_unexpected")["items"][0]["event_id"] == \
            wrong[0]["id"]
        assert api.get("backorders", order="SO-1", status="filled")["items"] == [filled]
        # the backlog has no line of them left (allocated or picked-not-shipped)
        backlog = api.get("backlog", site=site)
        assert [ln for ln in backlog["order_lines"] if ln["order_id"] in ("SO-1", "SO-2")] == []
        # the shelves gave what was picked (A-01-01 the wrong C too)
        stock = api.stock()
        shelves = {k: v for k, v in stock.items() if k[0] != "SHIP-1"}
        assert shelves == {("A-01-01", GTIN_A): 7, ("A-01-01", GTIN_C): 4,
                           ("A-01-03", GTIN_C): 8}, stock
        # the picks put the goods at the door and the ships took them from there, once: no
        # negative stock, no double removal; the wrong C the picker brought stays at the door
        assert {k: v for k, v in stock.items() if k[0] == "SHIP-1"} == {
            ("SHIP-1", GTIN_C): 1}
        assert min(stock.values()) > 0
        assert sorted((e["kind"], e["location"]) for e in
                      api.get("exceptions", status="open")["items"]) == [
            ("order_unexpected", "A-01-01")]

        # the floor copies are withdrawn: an empty retained message for each, none kept
        wait_until(lambda: watcher.last(topic1) == b"" and watcher.last(topic2) == b"",
                   WAIT_S, "both copies withdrawn on the broker")
        late = Watcher(mosquitto.port, site)  # a subscriber now gets no retained copy
        try:
            assert [t for t, _, _ in late.drain(1.0) if t in (topic1, topic2)] == []
        finally:
            late.close()
        # and on the edge: its copies gone (their versions kept as tombstones)
        wait_until(lambda: edge.tally("SO-1") is None and edge.tally("SO-2") is None, WAIT_S,
                   "the edge's copies withdrawn")
        tombstones = [edge.copy(o) for o in ("SO-1", "SO-2")]
        assert [None if c is None else c[1] for c in tombstones] == [None, None]
        assert all(c is not None for c in tombstones), tombstones
        assert [good for _, good in hand.log].count(False) == 1  # the wrong item, nothing else
    finally:
        edge.stop()
        watcher.close()


def test_without_pick_to_a_ship_after_a_pick_is_raised_as_a_double_removal(
        tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str) -> None:
    """The handheld's pick names no ``to`` (no staging lane configured): it takes the goods off
    the books, and the ship at the door takes them off again. The ledger keeps both as the
    floor said; the order gets an ``order_ship_off_books`` naming the line, quantity, ship and
    pick, so the double removal is never silent."""
    api = Api(central)
    assert api.post("items/import", ITEMS_CSV, "text/csv")[0] == 200
    assert api.post("locations/import", locations_csv(site), "text/csv")[0] == 200
    edge = Edge(tmp_path, site, mosquitto.url)
    hand = edge.operator
    try:
        assert all(hand.scan_all("CMD:RECEIVE", "LOC:A-01-01", "QTY:5", A,
                                 "LOC:SHIP-1", "QTY:4", A))  # the door holds four of its own
        status, body = api.post_json("orders", {
            "id": "SO-9", "site": site, "ship_to": "Corner Shop, Leeds", "due": "2030-01-31",
            "lines": [{"line": 1, "item": "ITEM-A", "qty": 2}]})
        assert status == 201, body
        wait_until(lambda: edge.tally("SO-9") is not None, WAIT_S, "SO-9's copy on the edge")
        assert hand.scan_all("CMD:PICK", "ORD:SO-9", "LOC:A-01-01", "QTY:2", A,
                             "CMD:SHIP", "ORD:SO-9", "LOC:SHIP-1", "QTY:2", A) == [True] * 10
        pick_ev, ship_ev = [e for e in edge.events() if e["type"] in ("pick", "ship")]
        assert pick_ev.get("to") is None
        wait_until(edge.synced, WAIT_S, "the pick and ship acked")
        wait_until(lambda: api.get("orders/SO-9")["status"] == "closed", WAIT_S, "SO-9 closed")
        assert api.stock() == {("A-01-01", GTIN_A): 3, ("SHIP-1", GTIN_A): 2}  # two too low
        (raised,) = [api.get(f"exceptions/{i}") for i in api.get("orders/SO-9")["exceptions"]]
        assert (raised["kind"], raised["event_id"], raised["quantity"], raised["location"],
                raised["status"]) == ("order_ship_off_books", ship_ev["id"], 2, "SHIP-1",
                                      "open"), raised
        assert pick_ev["id"] in raised["detail"] and "order SO-9 line 1" in raised["detail"]
    finally:
        edge.stop()
