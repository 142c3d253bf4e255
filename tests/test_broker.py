"""The embedded amqtt broker (MQTT 3.1.1 only) carries a batch to ingest and its ack back."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.client import MQTTProtocolVersion

import floorsync.broker
from floorsync.broker import EmbeddedBroker
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.server.helpers import Edge, event


def test_paho_311_batch_through_embedded_broker_is_acked(tmp_path: Path, site: str) -> None:
    with EmbeddedBroker() as broker, Store(tmp_path / "ledger.db") as store:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        settings = Settings(broker=broker.url, mqtt_protocol="3.1.1", client_id="central-amqtt")
        with MqttIngest(store, settings) as ingest:
            assert ingest.wait_ready(10)
            edge = Edge(broker.port, site, "rf-door-1", protocol=MQTTProtocolVersion.MQTTv311)
            try:
                ids = edge.send(event("receive", qty=2, dst="DOOR-1"), event("observe"))
                ack = edge.next_ack()
            finally:
                edge.close()
    assert [(r.id, r.status) for r in ack.results] == [(i, "applied") for i in ids]
    with Store(tmp_path / "ledger.db") as store:
        assert [(r.location, r.quantity) for r in store.stock()] == [("DOOR-1", 2)]


def test_embedded_broker_restarts_on_a_fixed_port() -> None:
    with EmbeddedBroker() as first:
        port = first.port
    with EmbeddedBroker(port=port) as again:
        assert again.port == port


def _resume_while_another_subscribes(reconnects: int) -> list[str]:
    """A persistent session with 50 subscriptions and 300 retained messages reconnects over and
    over while another client subscribes to new filters and drops them: amqtt walks its
    subscriptions, awaiting, each time it resumes the session. The broker's log lines about a
    dict changed during iteration, as they happened."""
    errors: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
            if "changed size during iteration" in text:
                errors.append(text)

    def connected(client_id: str, *, clean: bool = True) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean, protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        return client

    def churn() -> None:
        other, n = connected("churn"), 0
        while not stop.is_set():
            other.subscribe(f"x/{n}", qos=1)
            n += 1
            if n % 20 == 0:
                other.unsubscribe([f"x/{k}" for k in range(n - 20, n)])
            time.sleep(0.0005)
        other.loop_stop()
        other.disconnect()

    catch, root = Catch(), logging.getLogger()
    root.addHandler(catch)
    stop = threading.Event()
    try:
        with EmbeddedBroker() as broker:
            publisher = connected("publisher")
            for i in range(300):
                publisher.publish(f"r/{i}", b"x" * 10, qos=1, retain=True).wait_for_publish(5)
            handheld = connected("hh-01", clean=False)
            for i in range(50):
                handheld.subscribe(f"r/{i}/#", qos=1)
            time.sleep(0.5)
            worker = threading.Thread(target=churn)
            worker.start()
            try:
                for _ in range(reconnects):
                    handheld.disconnect()
                    handheld.loop_stop()
                    handheld = connected("hh-01", clean=False)
                    time.sleep(0.1)
                    if errors:
                        break
            finally:
                stop.set()
                worker.join(10)
                handheld.loop_stop()
                publisher.loop_stop()
    finally:
        root.removeHandler(catch)
    return errors


def test_amqtt_walks_its_subscriptions_while_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug the snapshot works around (seen in the demo as a handheld's failed reconnection).
    Should amqtt fix it, this fails: then _Subscriptions can go."""
    monkeypatch.setattr(floorsync.broker, "SNAPSHOT_SUBSCRIPTIONS", False)
    assert _resume_while_another_subscribes(60), "amqtt no longer shows the bug"


def test_the_snapshot_keeps_resumed_sessions_and_broadcasts_whole() -> None:
    assert _resume_while_another_subscribes(60) == []
