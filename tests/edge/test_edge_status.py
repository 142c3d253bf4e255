"""``floorsync edge status`` and the syncer's log lines, with the broker down, up and gone, and
with the agent stopped: a real outbox, a real mosquitto, the real command in its own process."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import Mosquitto, free_port
from tests.e2e.conftest import central, wait_until
from tests.factories import events


def edge_status(outbox: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "status", "--outbox", str(outbox), *extra],
        capture_output=True, text=True, timeout=30,
    )
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout


def status_json(outbox: Path) -> tuple[int, dict[str, Any]]:
    code, out = edge_status(outbox, "--json")
    return code, json.loads(out)


def test_broker_unreachable_status_and_logs_say_what_is_true(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="floorsync.edge.sync")
    path = tmp_path / "outbox.db"
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    with Outbox(path, cap_bytes=10 * 1024 * 1024) as outbox:
        syncer = Syncer(outbox, "wh1", "hh-01", SyncSettings(broker=dead, backoff_max_s=0.2))
        with syncer:
            outbox.add(events(3))
            outbox.add(events(2))
            wait_until(lambda: syncer.stats.connect_attempts >= 4, 10, "several attempts")
            time.sleep(1.2)  # the status file is written at most once a second
            code, found = status_json(path)
            assert code == 0
            assert found["agent"]["running"] is True
            assert found["broker"]["state"] == "retrying"
            assert "Connection refused" in found["broker"]["last_error"]
            assert found["last_ack_at"] is None
            o = found["outbox"]
            assert (o["pending"], o["sent"], o["acked"], o["rejected"], o["backlog"]) == (
                5, 0, 0, 0, 5)
            assert o["cap_bytes"] == 10 * 1024 * 1024 and 0 < o["bytes"] < o["cap_bytes"]
            assert found["oldest_unsynced"]["seq"] == 1
            assert 0 <= found["oldest_unsynced"]["age_s"] < 30
            assert "journal" in found  # the door journal's place (edge/journal.py fills it)
            code, text = edge_status(path)
            assert code == 0 and "broker      retrying since" in text
            assert "5 pending" in text and "oldest      seq 1, captured" in text
        lines = [(r.levelname, r.getMessage()) for r in caplog.records
                 if r.name == "floorsync.edge.sync" and r.levelno >= logging.INFO]
    # one line per state change, however many attempts; nothing "sent" while offline
    assert [m.split(" ")[0] for _, m in lines].count("connecting") == 1
    retrying = [m for lvl, m in lines if "retrying in" in m]
    assert len(retrying) == 1 and "Connection refused" in retrying[0], lines
    assert "events are kept meanwhile" in retrying[0]
    queued = [m for _, m in lines if m.startswith("not connected to the broker")]
    assert len(queued) == 1, lines
    assert not any(re.search(r"\bsent \d", m) for _, m in lines), lines
    assert syncer.stats.events_sent == 0

    # the agent is gone: the command says so, and when it last wrote its state
    code, found = status_json(path)
    assert code == 1
    assert found["agent"]["running"] is False
    assert found["agent"]["status_written_at"] is not None
    assert found["broker"]["state"] == "not running"
    assert found["outbox"]["pending"] == 5
    code, text = edge_status(path)
    assert code == 1 and "agent       not running (it last wrote its state at" in text


def test_connected_then_broker_gone(tmp_path: Path, mosquitto: Mosquitto, site: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="floorsync.edge.sync")
    path = tmp_path / "outbox.db"
    with central(tmp_path / "central.db", mosquitto.url), Outbox(path) as outbox, \
            Syncer(outbox, site, "hh-02", SyncSettings(broker=mosquitto.url,
                                                       backoff_max_s=0.2)) as syncer:
        outbox.add(events(10))
        assert syncer.wait_synced(10)
        time.sleep(1.2)
        code, found = status_json(path)
        assert code == 0 and found["broker"]["state"] == "connected"
        assert found["last_ack_at"] is not None and found["oldest_unsynced"] is None
        assert found["outbox"]["acked"] == 10 and found["outbox"]["backlog"] == 0
        assert "oldest      none: every event is acked" in edge_status(path)[1]
        mosquitto.stop()
        wait_until(lambda: syncer.state == "retrying", 10, "retrying")
        time.sleep(1.2)
        code, found = status_json(path)
        assert found["broker"]["state"] == "retrying" and found["agent"]["running"]
        assert found["last_ack_at"] is not None  # the last one, kept
    messages = [r.getMessage() for r in caplog.records if r.name == "floorsync.edge.sync"]
    assert sum(m.startswith("connected to ") for m in messages) == 1, messages
    assert sum(m.startswith("disconnected from ") for m in messages) == 1, messages


def test_no_outbox_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "status", "--outbox",
         str(tmp_path / "none.db")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "no outbox at" in done.stderr
    assert not (tmp_path / "none.db").exists()  # read-only: nothing made


def test_status_shows_each_doors_journal(tmp_path: Path) -> None:
    """With a config naming journaled doors: the reads each keeps, read while nothing runs."""
    from datetime import UTC, datetime

    from floorsync.devices.base import TagRead
    from floorsync.edge.journal import DoorJournal, journal_path

    outbox = tmp_path / "dock-outbox.db"
    Outbox(outbox).close()
    config = tmp_path / "dock.toml"
    config.write_text(
        f'site = "s"\ndevice = "dock-9"\n[outbox]\npath = "{outbox}"\n'
        '[[portals]]\nname = "door-1"\nlocation = "DOCK-1"\nreader = "impinj-http"\n'
        '[[portals]]\nname = "door-2"\nlocation = "DOCK-2"\nreader = "impinj-http"\n'
    )
    at = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    with DoorJournal(journal_path(tmp_path / "dock-outbox-journal", "door-1"), "door-1") as j:
        for n in range(3):
            j.put(TagRead("door-1", f"3074257BF7194E400000000{n}", 1, -50.0, at))
        j.commit()
    done = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=30)
    journal = json.loads(done.stdout)["journal"]
    assert journal["door-2"] is None
    assert journal["door-1"]["reads"] == 3
    assert journal["door-1"]["oldest"].startswith("2026-11-22T09:30:00")
    text = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=30).stdout
    assert "journal     door-1: 3 read(s) kept" in text and "door-2: none yet" in text
