"""MqttTagReader over TLS, against deploy/mosquitto/reader-broker.conf on a real mosquitto.

The reader (the edge's subscriber) and a publishing "reader device" connect to the broker's
TLS listener with the test CA; a broker presenting another CA's certificate, or one issued for
another host name, is refused, and so is a wrong login: the reader stays offline with its
reason logged once while it keeps retrying (no crash, no tight loop), and stops cleanly.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.devices.base import DeviceError
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.mqtt_reader import MqttTagReader, broker_address
from floorsync.localbroker import Mosquitto
from tests.devices.rfid import running
from tests.devices.rfid.readerbroker import reader_broker
from tests.security.pki import Issued, TestCA

EPC = "3074257BF7194E4000001A85"
TOPIC = "wh1/impinj/door-01/events"
LOGINS = {"edge-door-01": "edge-pw-1", "impinj-door-01": "reader-pw-1"}


def event(antenna: int) -> bytes:
    return json.dumps({
        "timestamp": "2026-01-02T03:04:05Z", "hostname": "impinj-14-1f-23",
        "eventType": "tagInventory",
        "tagInventoryEvent": {"epcHex": EPC, "antennaPort": antenna, "peakRssiCdbm": -5000},
    }).encode()


class Running(running.Running[MqttTagReader]):
    join_s = 15.0


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


def tls_broker(tmp_path: Path, ca: TestCA, cert: Issued) -> Iterator[tuple[Mosquitto, int]]:
    broker, tls_port = reader_broker(tmp_path / "broker", LOGINS, tls=(ca, cert))
    with broker:
        yield broker, tls_port


@pytest.fixture
def broker(tmp_path: Path, ca: TestCA) -> Iterator[tuple[Mosquitto, int]]:
    yield from tls_broker(tmp_path, ca, ca.server("reader-broker"))


def publish_over_tls(port: int, ca: TestCA, payloads: list[bytes]) -> None:
    """The reader device: logs in over TLS, publishes at QoS 1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="impinj-door-01",
                         protocol=mqtt.MQTTv311)
    client.username_pw_set("impinj-door-01", LOGINS["impinj-door-01"])
    client.tls_set_context(ssl.create_default_context(cafile=str(ca.cert)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def edge_reader(port: int, ca: TestCA | None, **kwargs: object) -> MqttTagReader:
    options: dict[str, object] = {"username": "edge-door-01", "password": LOGINS["edge-door-01"],
                                  "min_backoff": 0.05, "max_backoff": 0.2,
                                  "client_id": "floorsync-wh1-door-01-door-01"}
    options.update(kwargs)
    return MqttTagReader(f"mqtts://127.0.0.1:{port}", TOPIC, parse_impinj, name="door-01",
                         ca_file=str(ca.cert) if ca else None, **options)  # type: ignore[arg-type]


def test_reads_over_tls_garbage_reported_and_a_replay_is_a_duplicate(
    broker: tuple[Mosquitto, int], ca: TestCA
) -> None:
    _, tls_port = broker
    running = Running(edge_reader(tls_port, ca))
    try:
        assert running.states.get(timeout=15) is True
        publish_over_tls(tls_port, ca, [event(1), b'{"timestamp": "2026-01-0', event(2),
                                        event(2)])
        reads = [running.reads.get(timeout=10) for _ in range(3)]
        reason, raw = running.errors.get(timeout=10)
    finally:
        running.close()
    assert [(r.epc, r.antenna) for r in reads] == [(EPC, 1), (EPC, 2), (EPC, 2)]
    assert "truncated JSON" in reason and raw.startswith(b'{"timestamp"')


def offline_with_one_reason(running: Running, broker: Mosquitto, caplog: pytest.LogCaptureFixture,
                            attempts: int = 3, reasons: int = 1) -> str:
    """The reader reported offline once, retried ``attempts`` times (the broker saw them), and
    logged its reason once (up to ``reasons`` different ones); it is still running."""
    assert running.states.get(timeout=15) is False
    log = broker.directory / "mosquitto.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        # an attempt is logged as a new connection, or (a TLS handshake failing first) only as
        # a failed one: each kind counts an attempt once at most
        seen = max(text.count("New connection from 127.0.0.1"),
                   text.count("Client connection from 127.0.0.1 failed"))
        if seen >= attempts:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the reader did not retry: {log.read_text()}")
    assert running.thread.is_alive() and running.states.empty() and running.reads.empty()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.getMessage().startswith("door-01:")]
    assert 1 <= len(warnings) <= reasons, warnings  # once per reason, not once per retry
    return "\n".join(warnings)


def test_a_broker_of_another_ca_is_refused(tmp_path: Path, ca: TestCA,
                                           caplog: pytest.LogCaptureFixture) -> None:
    impostor = TestCA.create(tmp_path / "impostor", name="Impostor CA")
    caplog.set_level(logging.WARNING)
    for broker, tls_port in tls_broker(tmp_path, impostor, impostor.server("reader-broker")):
        running = Running(edge_reader(tls_port, ca))
        try:
            message = offline_with_one_reason(running, broker, caplog)
        finally:
            running.close()
    assert "TLS: the peer's certificate was refused" in message
    assert "certificate in certificate chain" in message and "check ca_file" in message


def test_a_broker_certificate_for_another_host_is_refused(
    tmp_path: Path, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    wrong_name = ca.server("elsewhere", hosts=("broker.elsewhere.example",))
    for broker, tls_port in tls_broker(tmp_path, ca, wrong_name):
        running = Running(edge_reader(tls_port, ca))
        try:
            message = offline_with_one_reason(running, broker, caplog)
        finally:
            running.close()
    assert "Hostname mismatch" in message or "IP address mismatch" in message


def test_a_wrong_login_is_refused_with_its_reason(
    broker: tuple[Mosquitto, int], ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    mosquitto, tls_port = broker
    running = Running(edge_reader(tls_port, ca, password="not-the-password"))
    try:
        message = offline_with_one_reason(running, mosquitto, caplog)
    finally:
        running.close()
    assert "broker refused" in message and "check the portal's username and password" in message
    assert "not-the-password" not in caplog.text


def test_plain_mqtt_to_the_tls_listener_never_comes_online(
    broker: tuple[Mosquitto, int], ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    mosquitto, tls_port = broker
    plain = MqttTagReader(f"mqtt://127.0.0.1:{tls_port}", TOPIC, parse_impinj, name="door-01",
                          username="edge-door-01", password=LOGINS["edge-door-01"],
                          min_backoff=0.05, max_backoff=0.2, keepalive=2)
    running = Running(plain)
    try:
        # the broker's reset may also hit the CONNECT being sent: a second reason at most
        message = offline_with_one_reason(running, mosquitto, caplog, reasons=2)
    finally:
        running.close()
    assert "closed the connection before answering the login" in message
    assert "check mqtt:// or mqtts://" in message


def test_tls_settings_are_checked_when_the_reader_is_built(tmp_path: Path, ca: TestCA) -> None:
    assert broker_address("mqtts://reader-broker.dock") == ("reader-broker.dock", 8883, True)
    assert broker_address("mqtt://127.0.0.1") == ("127.0.0.1", 1883, False)
    with pytest.raises(DeviceError, match=r"need an mqtts:// broker"):
        MqttTagReader("mqtt://127.0.0.1:1883", TOPIC, parse_impinj, name="d",
                      ca_file=str(ca.cert))
    with pytest.raises(DeviceError, match="no such CA file"):
        MqttTagReader("mqtts://127.0.0.1", TOPIC, parse_impinj, name="d",
                      ca_file=str(tmp_path / "missing.crt"))
    other = ca.client("edge-door-01")
    mismatched = ca.client("someone-else")
    with pytest.raises(DeviceError, match="cannot use certificate"):
        MqttTagReader("mqtts://127.0.0.1", TOPIC, parse_impinj, name="d",
                      ca_file=str(ca.cert), cert_file=str(other.cert),
                      key_file=str(mismatched.key))
    with pytest.raises(DeviceError, match="bad port"):
        broker_address("mqtts://host:notaport")


def test_client_certificate_when_the_broker_requires_one(tmp_path: Path, ca: TestCA) -> None:
    """``require_certificate true`` on the TLS listener: the edge presents cert_file/key_file."""
    broker, tls_port = reader_broker(tmp_path / "broker", LOGINS,
                                     tls=(ca, ca.server("reader-broker")))
    text = broker.config.read_text().replace(
        f"keyfile {tmp_path}", f"require_certificate true\nkeyfile {tmp_path}", 1)
    broker.config.write_text(text)
    device = ca.client("edge-door-01")
    with broker:
        running = Running(edge_reader(tls_port, ca, cert_file=str(device.cert),
                                      key_file=str(device.key)))
        without = Running(edge_reader(tls_port, ca, client_id="no-cert"))
        try:
            assert running.states.get(timeout=15) is True
            assert without.states.get(timeout=15) is False  # handshake refused, offline
            assert running.states.empty()  # the one with its certificate stays online
        finally:
            running.close()
            without.close()
