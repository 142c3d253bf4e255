"""Faults with real processes: SIGKILLed edge, stopped broker, restarted central service.

The promise under test: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from floorsync.edge.outbox import Outbox
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import CentralProcess, central, edge, ledger_counts, wait_until
from tests.factories import event


def _edge_process(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "floorsync", "edge", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=open(config.with_suffix(".log"), "ab"),
    )


def test_edge_killed_during_sync_applies_everything_exactly_once(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    total = 6000
    outbox_path = tmp_path / "hh-outbox.db"
    with Outbox(outbox_path) as outbox:
        for i in range(0, total, 100):
            outbox.add([event(i + k) for k in range(100)])
    config = tmp_path / "edge.toml"
    config.write_text(
        f'site = "{site}"\ndevice = "hh-kill"\n[outbox]\npath = "{outbox_path}"\n'
        f'[sync]\nbroker = "{mosquitto.url}"\nbatch_size = 20\nwindow = 2\n'
    )
    database = tmp_path / "central.db"
    with central(database, mosquitto.url) as store:
        kills = 0
        for _ in range(3):  # kill it three times mid-stream
            process = _edge_process(config)
            applied_before = store.summary()["events"]
            wait_until(lambda b=applied_before: store.summary()["events"] > b + 200, 30,
                       "edge to make progress")
            if store.summary()["events"] >= total:
                break
            wait_until(lambda: any(d.online for d in store.devices()), 10, "presence online")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            kills += 1
            # the broker sees the dead connection and publishes the retained last will
            wait_until(lambda: not any(d.online for d in store.devices()), 10,
                       "the last will to say offline")
        process = _edge_process(config)
        try:
            wait_until(lambda: store.summary()["events"] >= total, 60, "all events applied")
            with Outbox(outbox_path) as outbox:
                wait_until(lambda: outbox.stats().backlog == 0, 30, "edge backlog to drain")
        finally:
            process.terminate()
            process.wait(10)
    assert kills >= 1, "the edge finished before it could be killed: make the run longer"
    counts = ledger_counts(database)
    assert counts == {"events": total, "distinct": total, "movements": total, "on_hand": total}


def _steady_capture(outbox: Outbox, stop: threading.Event, every: float = 0.01) -> list[str]:
    ids: list[str] = []

    def run() -> None:
        n = 0
        while not stop.is_set():
            kept = outbox.add([event(n + k) for k in range(5)])
            ids.extend(e.id for e in kept)
            n += 5
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stop.thread = thread  # type: ignore[attr-defined]
    return ids


def test_broker_stopped_and_restarted_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    database = tmp_path / "central.db"
    with central(database, mosquitto.url) as store, \
            edge(tmp_path, site, "hh-b", mosquitto.url, ack_timeout_s=3) as (outbox, syncer):
        stop = threading.Event()
        ids = _steady_capture(outbox, stop)
        time.sleep(1.0)
        mosquitto.stop()  # capture goes on while the broker is away
        time.sleep(2.0)
        during = len(ids)
        mosquitto.start()
        back = time.monotonic()
        applied_at_return = store.summary()["events"]
        wait_until(lambda: store.summary()["events"] > applied_at_return, 10,
                   "deliveries to resume")
        resumed_after = time.monotonic() - back
        time.sleep(1.0)
        stop.set()
        stop.thread.join(5)  # type: ignore[attr-defined]
        assert syncer.wait_synced(60), outbox.stats()
        applied = store.summary()["events"]
    print(f"deliveries resumed {resumed_after:.2f} s after the broker returned")
    assert during > 0 and len(ids) > during
    counts = ledger_counts(database)
    assert applied == counts["events"] == counts["distinct"] == len(set(ids)) == len(ids)
    assert resumed_after < 2.0  # both sides retry at least once a second


def test_broker_killed_with_sigkill_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """A crashed broker loses what it held in memory; the outbox re-sends it after the timeout."""
    database = tmp_path / "central.db"
    with central(database, mosquitto.url) as store, \
            edge(tmp_path, site, "hh-k", mosquitto.url, ack_timeout_s=2) as (outbox, syncer):
        stop = threading.Event()
        ids = _steady_capture(outbox, stop)
        time.sleep(1.0)
        mosquitto.stop(signal.SIGKILL)
        time.sleep(1.0)
        mosquitto.start()
        time.sleep(1.0)
        stop.set()
        stop.thread.join(5)  # type: ignore[attr-defined]
        assert syncer.wait_synced(60), outbox.stats()
        assert store.summary()["events"] == len(ids)
    counts = ledger_counts(database)
    assert counts["events"] == counts["distinct"] == len(ids)


def test_central_restarted_mid_stream_loses_nothing_and_applies_once(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    database = tmp_path / "central.db"
    service = CentralProcess(database, mosquitto.url).start()
    try:
        with edge(tmp_path, site, "hh-c", mosquitto.url, ack_timeout_s=2) as (outbox, syncer):
            stop = threading.Event()
            ids = _steady_capture(outbox, stop)
            wait_until(lambda: service.get("summary")["events"] > 100, 20, "first events")
            service.kill()  # SIGKILL: whatever it had not committed must come again
            time.sleep(1.5)
            service.start()
            time.sleep(1.0)
            service.stop()  # and a clean stop too
            service.start()
            time.sleep(0.5)
            stop.set()
            stop.thread.join(5)  # type: ignore[attr-defined]
            assert syncer.wait_synced(60), outbox.stats()
            resent = syncer.stats.resent
        applied = service.get("summary")["events"]
    finally:
        service.stop()
    counts = ledger_counts(database)
    assert applied == counts["events"] == counts["distinct"] == len(ids)
    assert counts["movements"] == len(ids)
    print(f"{len(ids)} events, {resent} re-sent after ack timeouts, applied once each")


def test_sync_survives_outbox_errors_and_catches_up(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """The outbox locked by another writer (as on a full or failing disk): sync waits it out."""
    import sqlite3

    from floorsync.edge.sync import Syncer, SyncSettings

    database = tmp_path / "central.db"
    with central(database, mosquitto.url) as store, \
            Outbox(tmp_path / "o.db", busy_timeout_s=0.1) as outbox:
        kept = outbox.add([event(n) for n in range(50)])
        blocker = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        syncer = Syncer(outbox, site, "hh-lock", SyncSettings(broker=mosquitto.url)).start()
        try:
            wait_until(lambda: syncer.stats.last_error is not None, 10, "the outbox error")
            assert "locked" in (syncer.stats.last_error or "")
            blocker.execute("ROLLBACK")
            assert syncer.wait_synced(20), outbox.stats()
            assert store.summary()["events"] == len(kept)
        finally:
            blocker.close()
            syncer.stop()
