"""The edge agent with real drivers: pyserial over ptys, a replay file; no broker reachable.

Offline-first: capture goes on while the central service (here: any broker) is unreachable.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty, sgtin96_hex
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import EdgeConfig, PortalConfig, ScannerConfig
from floorsync.edge.sync import SyncSettings
from floorsync.localbroker import free_port
from tests.e2e.conftest import wait_until

DEAD_BROKER = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there


def _config(tmp_path: Path, **kwargs: object) -> EdgeConfig:
    return EdgeConfig(site="wh1", device="edge-1", outbox_path=tmp_path / "outbox.db",
                      sync=SyncSettings(broker=DEAD_BROKER), **kwargs).validate()  # type: ignore[arg-type]


def _events(agent: EdgeAgent) -> list[dict[str, object]]:
    rows = agent.outbox.db.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_serial_scanner_scans_become_durable_events_while_offline(tmp_path: Path) -> None:
    master, slave = open_pty()
    scanner = ScriptedScanner(master)
    config = _config(tmp_path, scanners=(ScannerConfig(name="hh-1", port=slave, operator="op-7"),))
    with EdgeAgent(config) as agent:
        wait_until(lambda: agent.device_online.get("hh-1") is True, 10, "the scanner online")
        for code in ["CMD:PUTAWAY", "LOC:RECV-1", gs1_label("09501101530003", lot="L7", qty=3),
                     "LOC:A-01-02", "%%garbage%%"]:
            scanner.type(code)
        wait_until(lambda: agent.captured == 1 and agent.outbox.stats().pending == 1, 10,
                   "one event captured")
        time.sleep(0.2)
        events = _events(agent)
    os.close(master)
    assert len(events) == 1
    (e,) = events
    assert (e["type"], e["from"], e["to"], e["qty"], e["operator"]) == (
        "putaway", "RECV-1", "A-01-02", 3, "op-7")
    assert e["item"] == {"gtin": "09501101530003", "lot": "L7"}
    assert e["read"]["symbology"] == "]C1"  # type: ignore[index]


def test_serial_rfid_reader_reads_become_one_event_per_tag(tmp_path: Path) -> None:
    master, slave = open_pty()
    tags = [sgtin96_hex("0614141", "812345", n) for n in (1, 2, 3)]
    door = PortalConfig(name="dock-1", location="DOCK-1", reader="serial", port=slave,
                        line_format="{epc},{antenna},{rssi}", quiet_s=0.3, min_reads=2)
    config = _config(tmp_path, portals=(door,))
    with EdgeAgent(config) as agent:
        wait_until(lambda: agent.device_online.get("dock-1") is True, 10, "the reader online")
        for _ in range(5):
            for antenna, tag in enumerate(tags, start=1):
                os.write(master, f"{tag},{antenna},-5{antenna}.5\r\n".encode())
        os.write(master, b"not a tag line\r\n")
        os.write(master, f"{sgtin96_hex('0614141', '812345', 9)},1,-70\r\n".encode())  # a glimpse
        wait_until(lambda: agent.captured == 3, 10, "three receives")
        time.sleep(0.5)
        events = _events(agent)
        bad = agent.bad_reads
    os.close(master)
    assert sorted(e["item"]["serial"] for e in events) == ["1", "2", "3"]  # type: ignore[index]
    assert {e["type"] for e in events} == {"receive"}
    assert all(e["read"]["reads"] == 5 for e in events)  # type: ignore[index]
    assert bad == 1


def test_replayed_door_traffic_becomes_events(tmp_path: Path) -> None:
    tag = sgtin96_hex("0614141", "812345", 42)
    lines = [{"t": 0.01 * i, "reader": "dock-2", "antenna": 1 + i % 2, "epc": tag,
              "rssi": -60 + i % 3} for i in range(10)]
    replay = tmp_path / "door.jsonl"
    replay.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken json\n")
    door = PortalConfig(name="dock-2", location="DOCK-2", reader="replay", path=str(replay),
                        realtime=False, quiet_s=0.2, direction="out")
    with EdgeAgent(_config(tmp_path, portals=(door,))) as agent:
        wait_until(lambda: agent.captured == 1, 10, "one ship")
        events = _events(agent)
    assert [(e["type"], e["from"]) for e in events] == [("ship", "DOCK-2")]
    assert events[0]["read"]["reads"] == 10  # type: ignore[index]


def test_good_read_feedback_follows_the_commit_and_bad_reads_get_theirs(tmp_path: Path) -> None:
    """Honeywell host commands: ESC 7 after the event is on disk, ESC 8 for a refused scan."""
    master, slave = open_pty()
    scanner = ScriptedScanner(master)
    hh = ScannerConfig(name="hh-2", port=slave, good_read="\x1b7", bad_read="\x1b8")
    with EdgeAgent(_config(tmp_path, scanners=(hh,))) as agent:
        wait_until(lambda: agent.device_online.get("hh-2") is True, 10, "the scanner online")
        scanner.type(gs1_label("09501101530003"))  # an item before any location: refused
        wait_until(lambda: b"\x1b8" in scanner.read_host(), 5, "bad-read feedback")
        scanner.type("LOC:DOCK-1")  # receive mode: the location is the destination
        scanner.type(gs1_label("09501101530003"))
        got = b""

        def good_read_seen() -> bool:
            nonlocal got
            got += scanner.read_host()
            return got.count(b"\x1b7") >= 2  # the location scan and the item scan

        wait_until(good_read_seen, 5, "good-read feedback")
        assert agent.outbox.stats().pending == 1  # the item scan was kept, the refused one not
    os.close(master)


def test_config_refuses_a_broken_location_pattern(tmp_path: Path) -> None:
    import pytest

    from floorsync.edge.config import load
    from floorsync.edge.errors import ConfigError

    path = tmp_path / "edge.toml"
    path.write_text('site = "wh1"\ndevice = "hh"\n[workflow]\nlocation_patterns = ["["]\n')
    with pytest.raises(ConfigError, match="location pattern"):
        load(path)


def test_door_movements_refused_by_a_full_outbox_wait_and_are_kept_later(tmp_path: Path) -> None:
    """A tag that passed cannot be read again: a door's refused events are retried, not lost."""
    from floorsync.edge.doorstate import DoorKeeper
    from floorsync.edge.portal import Door
    from tests.edge.test_doorstate import CONFIG
    from tests.factories import events

    config = _config(tmp_path, outbox_cap_mb=0.0001)  # about 100 bytes: no event fits
    clock = [0.0]
    with EdgeAgent(config) as agent:
        keeper = DoorKeeper(agent.outbox, Door(CONFIG), clock=lambda: clock[0])
        made = events(3)
        first, second = made[:2], made[2:]
        assert not agent.keep_door(keeper, first)
        assert not agent.keep_door(keeper, second)
        assert [e.id for e in keeper.backlog] == [e.id for e in first + second]
        assert agent.outbox.stats().pending == 0
        agent.outbox.cap_bytes = 10 * 1024 * 1024  # room again (events acked, say)
        assert not agent.keep_door(keeper, [])  # not tried again before the pause ends
        clock[0] += 1.0
        assert agent.keep_door(keeper, [])
        assert keeper.backlog == []
        assert agent.outbox.stats().pending == 3 and agent.captured == 3


def test_a_door_that_fails_is_started_again_from_its_journal(
    tmp_path: Path, monkeypatch: object
) -> None:
    """A bug in the door logic (injected: its first advance after reads raises) does not end
    the door: it is started again, rebuilt from its journal, and the crossing is kept once."""
    import pytest

    from floorsync.devices.base import TagRead, now
    from floorsync.devices.rfid.simreader import post_impinj
    from floorsync.edge.portal import Door

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    port = free_port()
    door = PortalConfig(name="door-1", location="DOCK-1", reader="impinj-http", http_port=port,
                        direction="in", min_reads=1, quiet_s=0.1, latency_s=0.05)
    real_advance = Door.advance
    failed: list[bool] = []

    def advance_once_broken(self: Door, moment: object) -> object:
        if self._pending and not failed:
            failed.append(True)
            raise RuntimeError("a bug in the door logic")
        return real_advance(self, moment)  # type: ignore[arg-type]

    monkeypatch.setattr(Door, "advance", advance_once_broken)
    with EdgeAgent(_config(tmp_path, portals=(door,))) as agent:
        wait_until(lambda: agent.device_online.get("door-1") is True, 10, "the receiver")
        tag = sgtin96_hex("0614141", "812345", 4242)
        post_impinj(f"http://127.0.0.1:{port}/", [TagRead("door-1", tag, 1, -50.0, now())])
        wait_until(lambda: len(_events(agent)) == 1, 20, "the movement after the restart")
        assert failed and agent.door_restarts == 1
        time.sleep(0.5)
        assert [e["read"]["tag"] for e in _events(agent)] == [tag]  # type: ignore[index]
