"""MqttTagReader against a real mosquitto: Impinj/Zebra JSON, garbage, a broker restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.mqtt_reader import MqttTagReader
from floorsync.devices.rfid.zebra import parse_zebra
from tests.brokers import Mosquitto
from tests.devices.rfid.running import Running

EPC = "3074257BF7194E4000001A85"


def impinj_event(epc: str, antenna: int = 1) -> bytes:
    return json.dumps(
        {
            "timestamp": "2026-01-02T03:04:05.123456789Z",
            "hostname": "impinj-14-1f-23",
            "eventType": "tagInventory",
            "tagInventoryEvent": {"epcHex": epc, "antennaPort": antenna, "peakRssiCdbm": -5325},
        }
    ).encode()


@contextmanager
def publisher(broker: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)


def test_reads_from_impinj_events_and_garbage_reported(mosquitto: Mosquitto, site: str) -> None:
    topic = f"{site}/impinj/dock-1/events"
    running = Running(MqttTagReader(mosquitto.url, topic, parse_impinj, name="dock-1"))
    try:
        assert running.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            publish(pub, topic, impinj_event(EPC, 2))
            publish(pub, topic, b'{"timestamp": "2026-01-02T03:04:05Z", "tagInv')
            publish(pub, topic, b"\x00\x01 binary junk")
            publish(pub, topic, impinj_event(EPC, 2))  # a repeat read is a read
        reads = [running.reads.get(timeout=10) for _ in range(2)]
        errors = [running.errors.get(timeout=10) for _ in range(2)]
    finally:
        running.close()
    assert [(r.reader, r.epc, r.antenna, r.rssi) for r in reads] == [
        ("impinj-14-1f-23", EPC, 2, -53.25)
    ] * 2
    assert "truncated JSON" in errors[0][0]
    assert "invalid JSON" in errors[1][0]


def test_zebra_reader_survives_a_broker_restart(mosquitto: Mosquitto, site: str) -> None:
    topic = f"{site}/zebra/fx9600/data"
    reader = MqttTagReader(
        mosquitto.url, topic, lambda b: parse_zebra(b, "fx-1"), name="fx-1",
        min_backoff=0.05, max_backoff=0.5,
    )

    def zebra_event(n: int) -> bytes:
        return json.dumps(
            {"type": "SIMPLE", "timestamp": "2026-01-02T03:04:05.000+0000",
             "data": {"idHex": EPC, "antenna": 1, "eventNum": n, "peakRssi": -50, "reads": n}}
        ).encode()

    running = Running(reader)
    try:
        assert running.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            publish(pub, topic, zebra_event(1))
        assert running.reads.get(timeout=10).seen == 1
        mosquitto.restart()
        assert running.states.get(timeout=10) is False
        assert running.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            publish(pub, topic, zebra_event(2))
        after = running.reads.get(timeout=10)
    finally:
        running.close()
    assert (after.reader, after.epc, after.seen) == ("fx-1", EPC, 2)
    assert running.states.empty()
    assert running.errors.empty()


def test_session_keeps_reads_published_while_the_reader_was_away(
    mosquitto: Mosquitto, site: str
) -> None:
    """QoS 1 + persistent session: the broker queues what came while the reader host was down."""
    topic = f"{site}/impinj/dock-2/events"
    client_id = f"{site}-reader"
    first = Running(
        MqttTagReader(mosquitto.url, topic, parse_impinj, name="d", client_id=client_id)
    )
    assert first.states.get(timeout=10) is True
    first.close()
    with publisher(mosquitto) as pub:
        publish(pub, topic, impinj_event("E280", 3))
    second = Running(
        MqttTagReader(mosquitto.url, topic, parse_impinj, name="d", client_id=client_id)
    )
    try:
        read = second.reads.get(timeout=10)
    finally:
        second.close()
    assert (read.epc, read.antenna) == ("E280", 3)


def test_a_read_the_consumer_did_not_take_is_delivered_again(
    mosquitto: Mosquitto, site: str
) -> None:
    """PUBACK only after on_read returned: a consumer crash means redelivery, not loss."""
    topic = f"{site}/impinj/dock-3/events"
    client_id = f"{site}-crashy"
    failures: list[BaseException] = []
    online = threading.Event()

    def crash(read: TagRead) -> None:
        raise RuntimeError("consumer died before committing")

    def run_crashing() -> None:
        reader = MqttTagReader(mosquitto.url, topic, parse_impinj, name="d", client_id=client_id)
        try:
            reader.run(crash, threading.Event(), lambda up: up and online.set())
        except RuntimeError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run_crashing)
    thread.start()
    assert online.wait(10)
    with publisher(mosquitto) as pub:
        publish(pub, topic, impinj_event("E2801160", 1))
    thread.join(timeout=10)
    assert not thread.is_alive() and len(failures) == 1
    again = Running(
        MqttTagReader(mosquitto.url, topic, parse_impinj, name="d", client_id=client_id)
    )
    try:
        read = again.reads.get(timeout=10)
    finally:
        again.close()
    assert read.epc == "E2801160"
