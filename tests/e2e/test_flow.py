"""Scan-to-ledger through real parts: SQLite outbox, paho, a real broker, the central ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.broker import EmbeddedBroker
from floorsync.edge import wire
from floorsync.edge.outbox import Outbox
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import central, edge, ledger_counts, wait_until
from tests.factories import event


def _mixed(count: int) -> list[wire.Event]:
    """Receive everything at the dock, put half of it away, pick a quarter."""
    out = [event(i, type="receive", to="DOCK-1") for i in range(count)]
    out += [event(i, type="putaway", from_="DOCK-1", to="A-01-02") for i in range(count // 2)]
    out += [event(i, type="pick", from_="A-01-02") for i in range(count // 4)]
    return out


def _check_flow(tmp_path: Path, broker_url: str, protocol: str, site: str) -> None:
    events = _mixed(400)
    with central(tmp_path / "central.db", broker_url, protocol) as store, \
            edge(tmp_path, site, "hh-1", broker_url, protocol=protocol, batch_size=50) as (
                outbox, syncer):
        for i in range(0, len(events), 25):
            outbox.add(events[i:i + 25])
        assert syncer.wait_synced(30), f"backlog {outbox.stats()}"
        stock = {(r.location, r.item): r.quantity for r in store.stock()}
        devices = store.devices()
        assert outbox.stats().acked == len(events)
    assert stock == {("DOCK-1", "09501101530003"): 200, ("A-01-02", "09501101530003"): 100}
    counts = ledger_counts(tmp_path / "central.db")
    assert counts["events"] == counts["distinct"] == len(events)
    assert counts["movements"] == 400 + 2 * 200 + 100
    assert [(d.site, d.device, d.last_seq) for d in devices] == [(site, "hh-1", len(events))]


def test_events_flow_from_outbox_to_ledger_through_mosquitto(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    _check_flow(tmp_path, mosquitto.url, "5", site)


def test_events_flow_through_the_embedded_amqtt_broker(tmp_path: Path, site: str) -> None:
    with EmbeddedBroker() as broker:
        _check_flow(tmp_path, broker.url, "3.1.1", site)


def test_outbox_rows_end_acked_and_presence_is_seen(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    with central(tmp_path / "central.db", mosquitto.url) as store, \
            edge(tmp_path, site, "hh-2", mosquitto.url, status_interval_s=0.2) as (outbox, syncer):
        outbox.add(_mixed(8))
        assert syncer.wait_synced(20)
        stats = outbox.stats()
        assert (stats.acked, stats.pending, stats.sent, stats.rejected) == (14, 0, 0, 0)
        wait_until(lambda: any(d.online for d in store.devices()), 10, "presence online")
    # after a clean stop the retained status says offline (the central service saw it)


def test_rejected_event_is_settled_and_not_resent(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """An event the central service cannot read is acked as rejected and leaves the backlog."""
    good = event(0)
    bad = wire.Event(**{**{f: getattr(good, f) for f in good.__slots__},  # type: ignore[attr-defined]
                        "id": wire.new_event_id(), "qty": -5})
    with central(tmp_path / "central.db", mosquitto.url) as store, \
            edge(tmp_path, site, "hh-3", mosquitto.url) as (outbox, syncer):
        outbox.add([good, bad])
        assert syncer.wait_synced(20)
        assert outbox.stats().rejected == 1
        assert "qty must be positive" in (outbox.rejected()[0][1] or "")
        assert store.summary()["events"] == 1


@pytest.mark.parametrize("copies", [2, 5])
def test_resent_batches_are_applied_once(
    tmp_path: Path, mosquitto: Mosquitto, site: str, copies: int
) -> None:
    """The edge re-sends whatever it has no ack for; the ledger applies each id once."""
    events = _mixed(40)
    with central(tmp_path / "central.db", mosquitto.url) as store:
        with edge(tmp_path, site, "hh-4", mosquitto.url) as (outbox, syncer):
            outbox.add(events)
            assert syncer.wait_synced(20)
        for _ in range(copies - 1):  # force re-sends of everything, as after lost acks
            with edge(tmp_path, site, "hh-4", mosquitto.url) as (outbox, syncer):
                outbox.db.conn.execute("UPDATE outbox SET state = 'pending'")
                syncer.notify()
                assert syncer.wait_synced(20)
        summary = store.summary()
    assert summary["events"] == len(events)
    counts = ledger_counts(tmp_path / "central.db")
    assert counts["movements"] == 40 + 2 * 20 + 10


@pytest.mark.parametrize(("drain_s", "settled"), [(5.0, True), (0.0, False)])
def test_an_agent_stopping_while_connected_waits_for_its_last_acks(
    tmp_path: Path, mosquitto: Mosquitto, site: str, drain_s: float, settled: bool
) -> None:
    """A door's last passes are captured at stop: with drain_s they reach the ledger before the
    agent exits; without it they wait in the outbox for the next start (nothing lost)."""
    from floorsync.edge.agent import EdgeAgent
    from floorsync.edge.config import EdgeConfig
    from floorsync.edge.sync import SyncSettings

    config = EdgeConfig(site=site, device="door-9", outbox_path=tmp_path / "outbox.db",
                        sync=SyncSettings(broker=mosquitto.url, drain_s=drain_s,
                                          linger_s=0.2)).validate()
    with central(tmp_path / "central.db", mosquitto.url):
        agent = EdgeAgent(config).start()
        wait_until(lambda: agent.syncer.connected, 15, "the edge connected")
        last = _mixed(5)
        assert agent.capture(last)  # as a door's finish() would, right before the stop
        agent.stop()
        with Outbox(tmp_path / "outbox.db") as outbox:
            assert outbox.settled() is settled
            assert outbox.stats().last_seq == len(last)  # kept either way
