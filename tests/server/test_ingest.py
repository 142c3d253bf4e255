"""MQTT ingest against a real mosquitto: acks after commit, rejections, restarts, redelivery."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from floorsync.edge import wire
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokers import Mosquitto
from tests.server.helpers import Edge, event, payload, refuse_writes

DEV = "hh-01"
G = "09501101530003"


def settings_for(broker: Mosquitto, **extra: object) -> Settings:
    return Settings.from_env(
        broker=broker.url, client_id=f"central-{uuid.uuid4().hex[:8]}", **extra
    )


@pytest.fixture
def ingest(store: Store, mosquitto: Mosquitto) -> Iterator[MqttIngest]:
    with MqttIngest(store, settings_for(mosquitto)) as consumer:
        assert consumer.wait_ready(10)
        yield consumer


@pytest.fixture
def edge(mosquitto: Mosquitto, site: str) -> Iterator[Edge]:
    e = Edge(mosquitto.port, site, DEV)
    yield e
    e.close()


def stock(store: Store) -> dict[str, float]:
    return {r.location: r.quantity for r in store.stock()}


def assert_still_applies(edge: Edge, store: Store) -> None:
    before = store.summary()["events"]
    ids = edge.send(event("receive", qty=1, dst="LATER"))
    ack = edge.next_ack()
    assert [(r.id, r.status) for r in ack.results] == [(ids[0], "applied")]
    assert store.summary()["events"] == before + 1


def test_batch_applied_and_acked_after_commit(
    ingest: MqttIngest, edge: Edge, store: Store
) -> None:
    ids = edge.send(event("receive", qty=5, dst="DOCK-1"), event("putaway", qty=2, src="DOCK-1",
                                                                 dst="A-01"))
    ack = edge.next_ack()
    # The ack is published after COMMIT: by now a fresh reader sees everything.
    assert ack.device == DEV
    assert [(r.id, r.status, r.reason) for r in ack.results] == [
        (ids[0], "applied", None), (ids[1], "applied", None)
    ]
    assert stock(store) == {"DOCK-1": 3, "A-01": 2}
    (dev,) = store.devices()
    assert dev.device == DEV and dev.events == 2


def test_resent_batch_is_duplicate_and_changes_nothing(
    ingest: MqttIngest, edge: Edge, store: Store
) -> None:
    events = (event("receive", qty=5), event("receive", qty=1))
    body = payload(edge.site, DEV, *events)
    edge.publish(body)
    assert {r.status for r in edge.next_ack().results} == {"applied"}
    before = (stock(store), store.summary())
    edge.publish(body)
    assert [r.status for r in edge.next_ack().results] == ["duplicate", "duplicate"]
    assert (stock(store), store.summary()) == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"this is { not json", "not JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
    ],
)
def test_unreadable_payload_is_recorded_and_consumer_keeps_running(
    ingest: MqttIngest, edge: Edge, store: Store, body: bytes, reason: str
) -> None:
    edge.publish(body)
    assert edge.no_ack(0.5)  # no id to ack
    assert_still_applies(edge, store)
    (rejection,) = store.rejections()
    assert reason in rejection.reason
    assert rejection.event_id is None and rejection.device == DEV
    assert rejection.topic == wire.events_topic(edge.site, DEV)


def test_wrong_version_is_acked_rejected_for_salvaged_ids(
    ingest: MqttIngest, edge: Edge, store: Store
) -> None:
    e = event("receive")
    body = json.dumps({"v": 99, "site": edge.site, "device": DEV, "sent_at": wire.utc_now(),
                       "events": [wire.event_to_dict(e)]}).encode()
    edge.publish(body)
    (result,) = edge.next_ack().results
    assert (result.id, result.status) == (e.id, "rejected")
    assert "unsupported version 99" in (result.reason or "")
    assert [r.event_id for r in store.rejections()] == [e.id]
    assert store.stock() == []
    assert_still_applies(edge, store)


def test_bad_event_beside_good_ones(ingest: MqttIngest, edge: Edge, store: Store) -> None:
    good = event("receive", qty=3, dst="DOCK-1")
    bad_id = wire.new_event_id()
    bad = {**wire.event_to_dict(event("receive")), "id": bad_id, "qty": -4}
    body = json.dumps({"v": 1, "site": edge.site, "device": DEV, "sent_at": wire.utc_now(),
                       "events": [wire.event_to_dict(good), bad]}).encode()
    edge.publish(body)
    results = {r.id: (r.status, r.reason) for r in edge.next_ack().results}
    assert results[good.id] == ("applied", None)
    assert results[bad_id][0] == "rejected"
    assert "qty must be positive" in (results[bad_id][1] or "")
    assert stock(store) == {"DOCK-1": 3}
    assert [r.event_id for r in store.rejections()] == [bad_id]
    assert_still_applies(edge, store)


def test_spoofed_device_is_rejected(ingest: MqttIngest, edge: Edge, store: Store,
                                    caplog: pytest.LogCaptureFixture) -> None:
    e = event("receive", qty=9)
    caplog.set_level(logging.WARNING, logger="floorsync.server.ingest")
    edge.publish(payload(edge.site, "hh-99", e))  # claims another device, on our topic
    (result,) = edge.next_ack().results
    assert (result.id, result.status) == (e.id, "rejected")
    assert (result.reason or "").startswith("spoofed: payload device")
    assert "hh-99" in (result.reason or "")
    assert store.stock() == []
    (rejection,) = store.rejections()
    assert rejection.event_id == e.id and rejection.device == DEV
    # listed beside the ledger's exceptions, open until a person dismisses it
    assert store._query("SELECT kind, status, rejection_id, event_id FROM exceptions") == [
        ("rejected", "open", rejection.id, e.id)]
    # counted on the device the topic names (the sender), logged with what the payload claimed
    (row,) = [r for r in store.devices() if r.device == DEV]
    assert row.topic_mismatches == 1 and row.topic_mismatch_at == rejection.received_at
    assert [r for r in store.devices() if r.device == "hh-99"] == []
    (line,) = [r.getMessage() for r in caplog.records if "mismatch" in r.getMessage()]
    assert f"on {wire.events_topic(edge.site, DEV)}" in line
    assert f"claims site {edge.site} device hh-99" in line and e.id not in line
    assert_still_applies(edge, store)


def test_events_the_warehouse_disagrees_with_are_applied_and_raised(
    ingest: MqttIngest, edge: Edge, store: Store
) -> None:
    """Over MQTT as over HTTP: applied (acked 'applied'), and an exception raised."""
    e = event("pick", src="BIN-EMPTY", dst=None, qty=2)
    edge.publish(payload(edge.site, DEV, e))
    (result,) = edge.next_ack().results
    assert (result.id, result.status) == (e.id, "applied")
    assert stock(store) == {"BIN-EMPTY": -2}
    assert store._query("SELECT kind, location, quantity, event_id FROM exceptions") == [
        ("negative_stock", "BIN-EMPTY", -2, e.id)]
    assert_still_applies(edge, store)


def test_presence_updates_devices(ingest: MqttIngest, edge: Edge, store: Store) -> None:
    status = wire.Status("online", wire.utc_now(), backlog=12, last_seq=40)
    edge.publish(wire.encode_status(status), topic=wire.status_topic(edge.site, DEV), retain=True)
    deadline = time.monotonic() + 10
    while not store.devices() and time.monotonic() < deadline:
        time.sleep(0.05)
    (dev,) = store.devices()
    assert (dev.online, dev.backlog, dev.last_seq, dev.status_at) == (True, 12, 40, status.at)


def test_broker_restart_reconnects_and_resubscribes(
    ingest: MqttIngest, mosquitto: Mosquitto, store: Store, site: str
) -> None:
    with_edge = Edge(mosquitto.port, site, DEV)
    with_edge.send(event("receive", qty=1))
    assert with_edge.next_ack().results[0].status == "applied"
    with_edge.close()
    mosquitto.restart()
    later = Edge(mosquitto.port, site, DEV)
    try:
        ids = later.send(event("receive", qty=2))
        ack = later.next_ack(timeout=20)
        if ack.results and ack.results[0].id not in ids:
            # the first edge's ack again: QoS 1 to the same session, saved by the broker before
            # that PUBACK reached it (at least once); an edge settles acks by event id
            ack = later.next_ack(timeout=20)
        assert [r.id for r in ack.results] == ids
        assert ingest.wait_ready(10)
        assert_still_applies(later, store)
    finally:
        later.close()
    assert stock(store) == {"DOCK-1": 3, "LATER": 1}


def test_shared_subscription_survives_restart(
    store: Store, mosquitto: Mosquitto, site: str
) -> None:
    settings = settings_for(mosquitto, shared_group="central")
    with MqttIngest(store, settings) as consumer:
        assert consumer.wait_ready(10)
        mosquitto.restart()
        deadline = time.monotonic() + 15
        while consumer.connected and time.monotonic() < deadline:
            time.sleep(0.02)  # until paho notices the restart
        assert consumer.wait_ready(15)
        edge = Edge(mosquitto.port, site, DEV)
        try:
            assert_still_applies(edge, store)
        finally:
            edge.close()


def test_store_failure_is_not_acked_and_is_redelivered(
    ingest: MqttIngest, edge: Edge, store: Store
) -> None:
    assert store._writer is not None
    refuse_writes(store, True)  # a real database write failure
    ids = edge.send(event("receive", qty=4))
    assert edge.no_ack(1.5)
    assert store.summary()["events"] == 0
    refuse_writes(store, False)
    # Not PUBACKed, so the broker redelivers it once ingest has reconnected.
    ack = edge.next_ack(timeout=15)
    assert [(r.id, r.status) for r in ack.results] == [(ids[0], "applied")]
    assert stock(store) == {"DOCK-1": 4}
