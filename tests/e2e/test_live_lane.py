"""An edge back online with a backlog: scans made meanwhile reach the central service ahead of
it, unless the backlog holds what they depend on (real SQLite outbox, mosquitto, central ingest).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from floorsync.edge import wire
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import central, ledger_counts
from tests.factories import event

BACKLOG = 8_000


def test_live_scans_go_ahead_of_a_backlog_and_wait_for_what_they_depend_on(
        tmp_path: Path, mosquitto: Mosquitto, site: str) -> None:
    backlog = [event(i, type="receive", to="DOCK-1") for i in range(BACKLOG)]
    backlog[6_000] = event(type="receive", to="DOCK-9")  # far behind the first window
    order: list[str] = []  # event ids in the order their acks came
    live: list[wire.Event] = []
    captured = threading.Event()
    with central(tmp_path / "central.db", mosquitto.url) as store, \
            Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(0, BACKLOG, 1000):  # kept while the edge was offline
            outbox.add(backlog[i:i + 1000])

        def on_ack(results: tuple[wire.Result, ...]) -> None:
            order.extend(r.id for r in results)
            if not captured.is_set():  # the operator scans while the backlog drains
                captured.set()
                live.extend(outbox.add([
                    event(type="receive", to="DOCK-2"),
                    event(type="putaway", from_="DOCK-9", to="A-01-01"),  # needs the DOCK-9 one
                ]))

        settings = SyncSettings(broker=mosquitto.url, batch_size=100)
        syncer = Syncer(outbox, site, "hh-1", settings)
        syncer.ack_listeners.append(on_ack)
        with syncer:
            assert syncer.wait_synced(60), f"backlog {outbox.stats()}"
        stock = {(r.location, r.item): r.quantity for r in store.stock()}
    independent, dependent = (order.index(e.id) for e in live)
    dock9 = order.index(backlog[6_000].id)
    print(f"acked at: independent {independent}, DOCK-9 receive {dock9}, dependent {dependent}")
    assert independent < BACKLOG // 2, "the independent scan waited for the backlog"
    assert dock9 < dependent, "the put-away from DOCK-9 went before the stock it takes"
    assert stock == {("DOCK-1", "09501101530003"): BACKLOG - 1,
                     ("DOCK-2", "09501101530003"): 1, ("A-01-01", "09501101530003"): 1}
    counts = ledger_counts(tmp_path / "central.db")
    assert counts["events"] == counts["distinct"] == BACKLOG + 2
    with sqlite3.connect(tmp_path / "central.db") as db:
        assert db.execute("SELECT kind, detail FROM exceptions").fetchall() == []
