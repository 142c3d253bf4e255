"""Reconnects with real mosquitto: everything in flight is sent again at once, presence keeps the
last backlog through an outage, and a held event settles at the edge."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from floorsync.edge import wire
from floorsync.edge.outbox import Outbox, read_stats
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import CentralProcess, central, edge, ledger_counts, wait_until
from tests.factories import event


def test_after_a_broker_restart_in_flight_events_are_acked_well_before_the_ack_timeout(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """Events PUBACKed by the broker, not yet applied, lost with it (SIGKILL): the edge must not
    wait ack_timeout_s (10 s) for them; it sends everything in flight again on connect, and once
    more soon after if the central service was not subscribed yet (the broker forgot it too)."""
    database = tmp_path / "central.db"
    with edge(tmp_path, site, "hh-r", mosquitto.url, ack_timeout_s=10.0,
              batch_size=20) as (outbox, syncer):
        with central(database, mosquitto.url):
            outbox.add([event(i) for i in range(100)])
            assert syncer.wait_synced(10)
        # the central service is away: the broker takes these (PUBACK) and holds them
        outbox.add([event(100 + i) for i in range(300)])
        wait_until(lambda: outbox.stats().sent == 300, 10, "all 300 events sent")
        mosquitto.stop(signal.SIGKILL)  # and loses them
        mosquitto.start()
        back = time.monotonic()
        with central(database, mosquitto.url) as store:
            assert syncer.wait_synced(9.0), outbox.stats()
            took = time.monotonic() - back
            assert store.summary()["events"] == 400
        assert syncer.stats.resent >= 300
    print(f"broker back -> all 300 lost events acked: {took:.2f} s (ack_timeout_s 10)")
    assert took < 5.0
    counts = ledger_counts(database)
    assert counts["events"] == counts["distinct"] == 400


def test_a_broker_back_with_our_session_but_not_the_centrals_subscription(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """A broker whose process was down restores what its last save holds: our session (session
    present) but no subscription of the central service, which is not back yet. What the edge
    sends then is PUBACKed and dropped. The connections refused while it was down tell the edge
    so: it sends again after FORGOT_ACK_TIMEOUT_S (1.5 s), not ack_timeout_s (10 s)."""
    database = tmp_path / "central.db"
    with edge(tmp_path, site, "hh-p", mosquitto.url, ack_timeout_s=10.0,
              batch_size=20) as (outbox, syncer):
        wait_until(lambda: syncer.state == "connected", 10, "edge connected")
        mosquitto.stop(signal.SIGTERM)  # saves our session, and no other
        outbox.add([event(i) for i in range(40)])
        wait_until(lambda: syncer.stats.connect_attempts >= 2, 10, "connections refused")
        mosquitto.start()
        wait_until(lambda: outbox.stats().sent == 40, 10, "40 events sent, nobody subscribed")
        back = time.monotonic()
        with central(database, mosquitto.url) as store:
            assert syncer.wait_synced(9.0), outbox.stats()
            took = time.monotonic() - back
            assert store.summary()["events"] == 40
    print(f"central back -> the 40 dropped events acked: {took:.2f} s (ack_timeout_s 10)")
    assert took < 5.0


def test_an_ack_kept_from_before_the_restart_proves_nothing_about_the_central(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """Back from a restart, the broker may deliver an ack it kept for us from before (for events
    that we send again now): it says nothing of whether the central service is subscribed yet.
    A later message the broker took before that first ack and dropped (nobody subscribed) must
    still go again after FORGOT_ACK_TIMEOUT_S, not after ack_timeout_s. The kept ack is
    published here by the test, as the restored broker would deliver it."""
    database = tmp_path / "central.db"
    with edge(tmp_path, site, "hh-k", mosquitto.url, ack_timeout_s=10.0,
              batch_size=20) as (outbox, syncer):
        wait_until(lambda: syncer.state == "connected", 10, "edge connected")
        mosquitto.stop(signal.SIGTERM)
        first = [e.id for e in outbox.add([event(i) for i in range(20)])]
        outbox.add([event(20 + i) for i in range(20)])
        wait_until(lambda: syncer.stats.connect_attempts >= 2, 10, "connections refused")
        mosquitto.start()
        wait_until(lambda: outbox.stats().sent == 40, 10, "40 events sent, nobody subscribed")
        kept = wire.encode_ack(wire.Ack("hh-k", tuple(wire.Result(i, "applied") for i in first)))
        publish = subprocess.run(
            [sys.executable, "-c", "import sys, paho.mqtt.publish as p; p.single(sys.argv[1],"
             " sys.argv[2].encode(), qos=1, hostname='127.0.0.1', port=int(sys.argv[3]))",
             wire.acks_topic(site, "hh-k"), kept.decode(), str(mosquitto.port)],
            capture_output=True, text=True, timeout=30)
        assert publish.returncode == 0, publish.stderr
        wait_until(lambda: outbox.stats().acked == 20, 10, "the kept ack settled")
        back = time.monotonic()
        with central(database, mosquitto.url) as store:
            assert syncer.wait_synced(9.0), outbox.stats()
            took = time.monotonic() - back
            assert store.summary()["events"] == 20  # the second batch, sent again
    print(f"central back -> the dropped batch acked: {took:.2f} s (ack_timeout_s 10)")
    assert took < 5.0


def test_a_steady_stream_through_broker_restarts_is_acked_soon_after_each(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    database = tmp_path / "central.db"
    timings = []
    with central(database, mosquitto.url) as store, \
            edge(tmp_path, site, "hh-s", mosquitto.url, ack_timeout_s=10.0,
                 window=4, batch_size=20) as (outbox, syncer):
        for _ in range(3):
            stop, ids = threading.Event(), list[str]()
            thread = _capture(outbox, stop, ids)
            time.sleep(0.8)
            mosquitto.stop(signal.SIGKILL)
            stop.set()
            thread.join(5)
            time.sleep(0.3)
            mosquitto.start()
            back = time.monotonic()
            assert syncer.wait_synced(9.0), outbox.stats()
            timings.append(time.monotonic() - back)
        applied = store.summary()["events"]
    print("broker back -> every event acked: " + ", ".join(f"{t:.2f} s" for t in timings))
    assert all(took < 5.0 for took in timings), timings  # ack_timeout_s is 10
    counts = ledger_counts(database)
    assert applied == counts["events"] == counts["distinct"]


def _capture(outbox: Outbox, stop: threading.Event, ids: list[str]) -> threading.Thread:
    def run() -> None:
        n = 0
        while not stop.is_set():
            ids.extend(e.id for e in outbox.add([event(n + k) for k in range(20)]))
            n += 20
            stop.wait(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_presence_keeps_the_last_backlog_while_the_edge_is_gone(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """An edge killed with a backlog: its last will says offline, GET /devices still shows the
    backlog it last reported, and when that was measured."""
    outbox_path = tmp_path / "hh-outbox.db"
    with Outbox(outbox_path) as outbox:
        for i in range(0, 20_000, 500):
            outbox.add([event(i + k) for k in range(500)])
    config = tmp_path / "edge.toml"
    config.write_text(
        f'site = "{site}"\ndevice = "hh-p"\n[outbox]\npath = "{outbox_path}"\n'
        f'[sync]\nbroker = "{mosquitto.url}"\nbatch_size = 10\nwindow = 1\n'
        "status_interval_s = 0.2\n"
    )
    server = CentralProcess(tmp_path / "central.db", mosquitto.url).start()
    process = subprocess.Popen([sys.executable, "-m", "floorsync", "edge", "--config", str(config)],
                               stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "edge.log", "ab"))  # noqa: SIM115
    try:
        def reported() -> dict[str, object] | None:
            found = [d for d in server.get("devices") if d["device"] == "hh-p"]
            return found[0] if found else None

        wait_until(lambda: (d := reported()) is not None and d["online"]
                   and (d["backlog"] or 0) > 0 and d["oldest_unsynced_s"] is not None, 20,
                   "presence with a backlog")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        wait_until(lambda: (d := reported()) is not None and not d["online"], 15,
                   "the last will")
        gone = reported()
        assert gone is not None
        assert isinstance(gone["backlog"], int) and gone["backlog"] > 0, gone
        assert gone["backlog_at"] is not None and gone["oldest_unsynced_s"] is not None
        assert gone["status_at"] != gone["backlog_at"]  # offline now, figures from before
        left = read_stats(outbox_path, 1 << 30).backlog
        assert left <= gone["backlog"]  # what it last said, not less than what is left
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()


def test_an_event_held_by_a_count_settles_at_the_edge_as_held(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    database = tmp_path / "central.db"
    with central(database, mosquitto.url) as store, \
            edge(tmp_path, site, "hh-h", mosquitto.url) as (outbox, syncer):
        counted = event(0, type="count", time="2026-03-01T10:00:00.000Z")
        counted = wire.Event(counted.id, 1, counted.time, "count", None, 0,
                             count=wire.Count("A-01-01", ()))
        late = event(1, type="pick", qty=1, time="2026-03-01T09:00:00.000Z")
        outbox.add([counted])
        assert syncer.wait_synced(10)
        outbox.add([late])
        assert syncer.wait_synced(10)
        stats = read_stats(outbox.path, outbox.cap_bytes)
        assert (stats.acked, stats.held, stats.backlog) == (2, 1, 0)
        (reason,) = outbox.db.conn.execute(
            "SELECT reason FROM outbox WHERE id = ?", (late.id,)).fetchone()
        (count_id,) = store._query("SELECT id FROM counts")[0]
        assert reason.startswith("late_after_count: its change at 'A-01-01' is held by count"
                                 f" {count_id} (exception ")
