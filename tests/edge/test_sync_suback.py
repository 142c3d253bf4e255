"""A broker that refuses the edge's acks subscription (its SUBACK), on real brokers that refuse.

Which brokers here really refuse a subscription (checked first, by a raw client):

- mosquitto 2.0 with an ``acl_file`` (deploy's) never does: it grants every SUBSCRIBE and
  filters delivery instead, under MQTT 5 and 3.1.1 alike (its author says so in
  eclipse-mosquitto/mosquitto#2042). A device without read access to its acks is then seen only
  through ack timeouts.
- mosquitto 2.0 with its dynamic security plugin (Debian ships it beside the broker) refuses a
  denied ``subscribeLiteral``: 0x87 "Not authorized" under MQTT 5, 0x80 under 3.1.1.
- nats-server 2.9 (MQTT 3.1.1 only) refuses a subject its user may not subscribe to: 0x80.

The edge on each: one ERROR for the spell however many reconnects, nothing sent while refused
(nothing reaches the central service), ``floorsync edge status`` naming the refusal; then the
broker restarted with the permission back: the backlog drains, nothing lost or doubled.
"""

from __future__ import annotations

import glob
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from paho.mqtt.client import MQTTProtocolVersion

from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.edge import wire
from floorsync.edge.expected import docs_filter
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import Mosquitto
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokerkit import Peer, ProductionBroker
from tests.e2e.conftest import ledger_counts, wait_until
from tests.factories import event

SITE, DEVICE = "wh1", "hh-01"
ACKS, DOCS = wire.acks_topic(SITE, DEVICE), docs_filter(SITE)
LOGGER = "floorsync.edge.sync"
EDGE_LOGIN = (DEVICE, "edge-password-1")
CENTRAL_LOGIN = ("floorsync-central", "central-password-2")


class RefusingBroker(Protocol):
    url: str
    protocol: str  # the edge's and the central service's MQTT version

    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def permit(self, acks: bool, documents: bool = True) -> None:
        """Write the broker's config with these subscriptions allowed to the device; it takes
        effect at the next start."""


def dynsec_plugin() -> str:
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob(
        "/usr/lib/mosquitto_dynamic_security.so")
    if not found:
        pytest.fail("mosquitto's dynamic security plugin is not installed (Debian's mosquitto "
                    "package ships it): these tests need a broker that refuses a subscription")
    return found[0]


class DynsecMosquitto(Mosquitto):
    """A real mosquitto whose dynamic security plugin denies the anonymous clients (the edge
    and the central service here) a subscription to the device's acks or the site's documents."""

    protocol = "5"

    def __init__(self, directory: Path) -> None:
        self.dynsec = directory / "dynsec.json"
        super().__init__(directory / "broker", extra=(
            f"plugin {dynsec_plugin()}\nplugin_opt_config_file {self.dynsec}\n"))
        self.permit(acks=False)

    def permit(self, acks: bool, documents: bool = True) -> None:
        denied = [t for t, allowed in ((ACKS, acks), (DOCS, documents)) if not allowed]
        self.dynsec.write_text(json.dumps({
            "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                                 "subscribe": True, "unsubscribe": True},
            "clients": [],
            "groups": [{"groupname": "anonymous", "roles": [{"rolename": "device"}]}],
            "anonymousGroup": "anonymous",
            "roles": [{"rolename": "device", "acls": [
                {"acltype": "subscribeLiteral", "topic": t, "priority": 0, "allow": False}
                for t in denied]}],
        }))


class PermissionedNats(NatsNode):
    """A real nats-server with its MQTT listener; the device's user may not subscribe to the
    subjects of its acks (or its site's documents) while refused."""

    protocol = "3.1.1"

    def __init__(self, directory: Path) -> None:
        nats_binary()  # fails (EdgeError) when nats-server is missing: never skipped
        super().__init__(directory / "nats", "fs-suback")
        self.base = self.config.read_text()
        self.permit(acks=False)

    @property
    def url(self) -> str:  # type: ignore[override]  # the MQTT listener, for the edge
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def permit(self, acks: bool, documents: bool = True) -> None:
        # MQTT "/" is NATS "."; "a/#" is the subjects "a" and "a.>"
        subjects = ([ACKS.replace("/", ".")] if not acks else []) + (
            [DOCS[:-2].replace("/", "."), DOCS[:-1].replace("/", ".") + ">"]
            if not documents else [])
        deny = ", ".join(f'"{s}"' for s in subjects)
        device = (f'{{user: "{EDGE_LOGIN[0]}", password: "{EDGE_LOGIN[1]}", permissions: '
                  f'{{subscribe: {{deny: [{deny}]}}}}}}' if subjects else
                  f'{{user: "{EDGE_LOGIN[0]}", password: "{EDGE_LOGIN[1]}"}}')
        self.config.write_text(self.base + (
            "authorization {\n  users = [\n"
            f'    {{user: "{CENTRAL_LOGIN[0]}", password: "{CENTRAL_LOGIN[1]}"}},\n'
            f"    {device}\n  ]\n}}\n"))


@pytest.fixture(params=["mosquitto-dynsec", "nats"])
def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RefusingBroker]:
    broker: RefusingBroker = (DynsecMosquitto(tmp_path) if request.param == "mosquitto-dynsec"
                              else PermissionedNats(tmp_path))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def logins(broker: RefusingBroker) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(edge, central) credentials: NATS has users, the dynsec mosquitto anonymous clients."""
    return (EDGE_LOGIN, CENTRAL_LOGIN) if isinstance(broker, PermissionedNats) else (None, None)


@contextmanager
def central(database: Path, broker: RefusingBroker) -> Iterator[Store]:
    """The central ingest in this process, on the broker's protocol and with its login."""
    login = logins(broker)[1]
    settings = Settings(database=database, broker=broker.url, mqtt_protocol=broker.protocol,
                        client_id=f"central-{uuid.uuid4().hex[:8]}",
                        mqtt_username=login[0] if login else None,
                        mqtt_password=login[1] if login else None)
    with Store(database) as store:
        ingest = MqttIngest(store, settings).start()
        try:
            assert ingest.wait_ready(30), "central ingest did not connect"
            yield store
        finally:
            ingest.stop()


@contextmanager
def edge(directory: Path, broker: RefusingBroker) -> Iterator[tuple[Outbox, Syncer]]:
    login = logins(broker)[0]
    settings = SyncSettings(broker=broker.url, protocol=broker.protocol, backoff_max_s=0.3,
                            ack_timeout_s=2.0, username=login[0] if login else None,
                            password=login[1] if login else None)
    with Outbox(directory / "outbox.db") as outbox, \
            Syncer(outbox, SITE, DEVICE, settings) as syncer:
        yield outbox, syncer


def edge_status(outbox: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "status", "--outbox", str(outbox), *extra],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


# --- the brokers themselves ---------------------------------------------------------------

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
def test_mosquitto_acl_file_grants_a_denied_subscription(
        tmp_path: Path, protocol: MQTTProtocolVersion) -> None:
    """deploy's acl_file: the device may not read another device's acks, yet its SUBACK grants
    QoS 1 (delivery is what the ACL stops): no SUBACK refusal to see with this config."""
    with ProductionBroker.build(tmp_path, {DEVICE: "pw-1"}, {DEVICE: SITE}) as broker:
        peer = Peer(broker.port, (DEVICE, "pw-1"), protocol=protocol)
        try:
            assert peer.connected.get(timeout=10) == 0
            assert peer.subscribe(wire.acks_topic(SITE, "hh-02")) == [1]
            assert peer.subscribe(ACKS) == [1]
        finally:
            peer.close()


@pytest.mark.parametrize(("kind", "protocol", "code"), [
    ("mosquitto-dynsec", V5, 0x87), ("mosquitto-dynsec", V311, 0x80), ("nats", V311, 0x80)],
    ids=["mosquitto-dynsec-mqtt5", "mosquitto-dynsec-mqtt311", "nats-mqtt311"])
def test_these_brokers_refuse_a_denied_subscription(
        tmp_path: Path, kind: str, protocol: MQTTProtocolVersion, code: int) -> None:
    broker: RefusingBroker = (DynsecMosquitto(tmp_path) if kind == "mosquitto-dynsec"
                              else PermissionedNats(tmp_path))
    broker.permit(acks=False, documents=True)
    broker.start()
    try:
        port = broker.mqtt_port if isinstance(broker, PermissionedNats) else broker.port
        peer = Peer(port, logins(broker)[0], protocol=protocol)
        try:
            assert peer.connected.get(timeout=20) == 0
            assert peer.subscribe(ACKS) == [code]
            assert peer.subscribe(DOCS) == [1]
        finally:
            peer.close()
    finally:
        broker.stop()


# --- the edge -----------------------------------------------------------------------------

def test_a_refused_acks_subscription_sends_nothing_says_so_once_and_drains_when_granted(
        tmp_path: Path, refusing: RefusingBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    reason = "Not authorized (0x87)" if refusing.protocol == "5" else (
        "failure (0x80; MQTT 3.1.1 gives no reason)")
    database = tmp_path / "central.db"
    with central(database, refusing), edge(tmp_path, refusing) as (outbox, syncer):
        kept = outbox.add([event(i) for i in range(20)])
        wait_until(lambda: syncer.stats.connects >= 3, 30, "three refused connections")
        kept += outbox.add([event(i) for i in range(20, 25)])  # captured during the spell
        wait_until(lambda: syncer.stats.connects >= 5, 30, "five refused connections")
        assert syncer.state == "refused" and not syncer.connected
        assert syncer.acks_refused == reason
        # nothing sent into the void: the central service has seen none of it
        assert syncer.stats.events_sent == 0 and syncer.stats.messages_sent == 0
        assert ledger_counts(database)["events"] == 0
        assert outbox.stats().pending == 25

        time.sleep(1.2)  # the status file is written at most once a second
        found = json.loads(edge_status(outbox.path, "--json"))
        assert found["broker"]["state"] == "refused"
        assert found["broker"]["acks_refused"] == reason
        assert found["broker"]["acks_topic"] == ACKS
        assert found["broker"]["last_error"] == f"acks subscription refused: {reason} ({ACKS})"
        assert found["outbox"]["backlog"] == 25
        text = edge_status(outbox.path)
        assert f"acks subscription refused: {reason} ({ACKS})" in text
        assert "broker      refused since" in text

        # the permission back, as an operator would: the broker restarted with a new config
        refusing.stop()
        refusing.permit(acks=True)
        refusing.start()
        assert syncer.wait_synced(60), outbox.stats()
        assert syncer.state == "connected" and syncer.connected and syncer.acks_refused is None
        time.sleep(1.2)
        found = json.loads(edge_status(outbox.path, "--json"))
        assert found["broker"]["state"] == "connected"
        assert found["broker"]["acks_refused"] is None
        text = edge_status(outbox.path)
        assert "broker      connected since" in text and "refused     " not in text
        refusals = syncer.stats.connects
        assert outbox.stats().acked == 25 and outbox.stats().backlog == 0

    # nothing lost, nothing doubled
    counts = ledger_counts(database)
    assert counts["events"] == counts["distinct"] == 25, counts
    assert counts["movements"] == 25
    assert {e.id for e in kept} == ids_in(database)

    errors = said(caplog, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert ACKS in message and reason in message and "nothing is sent" in message
    assert vars(errors[0])["state"] == "refused"
    # each later refusal at DEBUG only; the spell's end said once
    assert sum(r.getMessage().startswith("acks subscription refused again")
               for r in said(caplog, logging.DEBUG)) >= 4
    again = [r.getMessage() for r in said(caplog, logging.INFO)
             if r.getMessage().startswith("the broker grants the acks subscription")]
    assert len(again) == 1 and ACKS in again[0], again
    # connected only once granted: one "connected" line for the whole test
    connected = [r for r in caplog.records if r.name == LOGGER
                 and r.getMessage().startswith("connected to ")]
    assert len(connected) == 1 and refusals >= 6, (connected, refusals)
    assert "sending 25 event(s)" in connected[0].getMessage()


def ids_in(database: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def test_refusals_are_retried_with_the_backoff_not_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A refusal comes after a CONNACK: it must not count as a connection that worked (which
    reconnects at once), or a refusing broker is asked in a tight loop."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = DynsecMosquitto(tmp_path)
    with broker, edge(tmp_path, broker) as (_outbox, syncer):
        wait_until(lambda: syncer.stats.connects >= 1, 15, "a first refusal")
        first, started = syncer.stats.connects, time.monotonic()
        time.sleep(3.0)
        made, elapsed = syncer.stats.connects - first, time.monotonic() - started
        assert syncer.state == "refused"
    # waits of 50 ms doubling to 0.3 s, each 0.5-1.0 of that: at most ~3/0.15 + a few
    assert 3 <= made <= elapsed / 0.15 + 5, made
    assert len(said(caplog, logging.ERROR)) == 1


def test_a_refused_documents_subscription_is_a_warning_once_and_events_still_flow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    broker = DynsecMosquitto(tmp_path)
    broker.permit(acks=True, documents=False)
    database = tmp_path / "central.db"
    with broker, central(database, broker), edge(tmp_path, broker) as (outbox, syncer):
        outbox.add([event(i) for i in range(10)])
        assert syncer.wait_synced(20), outbox.stats()
        assert syncer.documents_refused == "Not authorized (0x87)"
        for _ in range(2):  # two more connections, each refused its documents again
            connects = syncer.stats.connects
            broker.restart()
            wait_until(lambda c=connects: syncer.stats.connects > c and syncer.connected, 20,
                       "reconnected")
        outbox.add([event(i) for i in range(10, 15)])
        assert syncer.wait_synced(20), outbox.stats()
        time.sleep(1.2)
        found = json.loads(edge_status(outbox.path, "--json"))
        assert found["broker"]["state"] == "connected"
        assert found["broker"]["documents_refused"] == "Not authorized (0x87)"
        assert found["broker"]["acks_refused"] is None
        assert (f"documents subscription refused: Not authorized (0x87) ({DOCS})"
                in edge_status(outbox.path))

        broker.stop()
        broker.permit(acks=True, documents=True)
        broker.start()
        wait_until(lambda: syncer.documents_refused is None, 20, "documents granted")
    assert ledger_counts(database)["distinct"] == 15
    warnings = [r for r in said(caplog, logging.WARNING) if DOCS in r.getMessage()]
    assert len(warnings) == 1 and "Events still flow" in warnings[0].getMessage()
    assert said(caplog, logging.ERROR) == []
    assert sum(r.getMessage().startswith("the broker grants the documents subscription")
               for r in said(caplog, logging.INFO)) == 1

