"""The embedded amqtt broker (MQTT 3.1.1 only) carries a batch to ingest and its ack back."""

from __future__ import annotations

from pathlib import Path

from paho.mqtt.client import MQTTProtocolVersion

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
