"""The documents' publisher of a central replica through the hardened site network's NATS cluster.

``floorsync server --replica`` as a process, with deploy/multisite/env/replica-1.env and the
Environment= of floorsync-replica@.service as shipped but for host names, ports and paths: the
NATS client port over TLS as ``floorsync-central`` (FLOORSYNC_NATS_*), and for the documents
FLOORSYNC_BROKER=mqtts://node:8883, FLOORSYNC_MQTT_PROTOCOL=3.1.1,
FLOORSYNC_MQTT_USERNAME=floorsync-central with the same password from the same credential file
(FLOORSYNC_MQTT_PASSWORD_FILE) and FLOORSYNC_MQTT_CA_FILE, on a PostgreSQL store of its own. The
cluster is test_nats_acl's: three nodes of the shipped configuration and users file (real
nats-server 2.9, the test's CA).

What is proven: an order and a receipt accepted into the store reach an enrolled device
subscribed to its site's ``docs/#`` over mqtts, live and as retained messages kept by every
node; a cancelled order and a closed receipt are withdrawn (an empty retained message: a new
subscription gets nothing); at its connection the publisher withdraws a stale document left on
the broker (its ``floorsync/v1/+/docs/#`` subscription under the central user's permissions) and
replaces an older copy of an open one; a device's forged copy or clear of a published document
changes nothing (test_nats_acl checks the device side in general); the nodes log no permission
violation of the central user, and the replica's log neither the password nor a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from floorsync.edge import expected as floor
from floorsync.server import orders
from floorsync.server.errors import ConfigError
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from floorsync.server.settings import Settings
from tests.brokerkit import Got, Peer
from tests.e2e.conftest import wait_until
from tests.security.test_nats_acl import WAIT_S, Cluster, publish_as, retained, started
from tests.server.docfollowkit import receipt_doc
from tests.server.orderkit import SITE, order_doc, with_items

MULTISITE = Path(__file__).resolve().parents[2] / "deploy" / "multisite"
ENV_FILE = MULTISITE / "env" / "replica-1.env"
UNIT = MULTISITE / "systemd" / "floorsync-replica@.service"
CENTRAL = "floorsync-central"
DEVICE = "hh-a"  # enrolled at SITE by the cluster's start (natsusers.add: floorsync enroll's)
ALL_DOCS = f"floorsync/v1/{SITE}/docs/#"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory.mktemp("natsdocs")) as running:
        yield running


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` lines of floorsync-replica@.service."""
    return dict(line.split("=", 2)[1:] for line in UNIT.read_text().splitlines()
                if line.startswith("Environment="))


def replica_env(cluster: Cluster, credentials: Path, database: str, nats_node: int,
                mqtt_node: int) -> dict[str, str]:
    """env/replica-1.env and the unit's Environment= as systemd would give them to the
    replica, with only host names, ports and paths replaced (each replacement must apply: a
    changed file fails here) and the metrics and libpq TLS lines left out (this PostgreSQL
    has no TLS)."""
    env = dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines()
               if line and not line.startswith("#"))
    nodes = ",".join(f"tls://nats{n}.floorsync.example:4222" for n in (1, 2, 3))
    ca = "/etc/floorsync/tls/nats-ca.crt"
    expected = {
        "FLOORSYNC_REPLICA": (nodes, f"tls://localhost:{cluster.nodes[nats_node].port}"),
        "FLOORSYNC_NATS_CA_FILE": (ca, str(cluster.ca.cert)),
        "FLOORSYNC_NATS_USER": (CENTRAL, CENTRAL),
        "FLOORSYNC_BROKER": ("mqtts://nats.floorsync.example:8883",
                             f"mqtts://localhost:{cluster.nodes[mqtt_node].mqtt_port}"),
        "FLOORSYNC_MQTT_PROTOCOL": ("3.1.1", "3.1.1"),
        "FLOORSYNC_MQTT_USERNAME": (CENTRAL, CENTRAL),
        "FLOORSYNC_MQTT_CA_FILE": (ca, str(cluster.ca.cert)),
        "FLOORSYNC_CLIENT_ID": ("floorsync-replica-1", "floorsync-replica-1"),
        "FLOORSYNC_DATABASE": ("postgresql://floorsync@db.floorsync.example:5432/floorsync",
                               database),
    }
    for name, (shipped, ours) in expected.items():
        assert env.get(name) == shipped, (name, env.get(name))
        env[name] = ours
    env = {k: v for k, v in env.items()
           if not k.startswith(("FLOORSYNC_METRICS_", "PGSSL"))}
    unit = unit_environment()
    assert unit["FLOORSYNC_MQTT_PASSWORD_FILE"] == unit["FLOORSYNC_NATS_PASSWORD_FILE"] \
        == "%d/nats-password"  # one credential: the same user's password
    for name, value in unit.items():
        env[name] = value.replace("%d", str(credentials))
    return env


class ReplicaProcess:
    """``floorsync server --replica`` set as env/replica-1.env and the unit set it, its own
    log; the central user's password in its credential file (what LoadCredential= hands over)."""

    def __init__(self, cluster: Cluster, directory: Path, database: str, *,
                 nats_node: int = 2, mqtt_node: int = 1) -> None:
        credentials = directory / "credentials"  # %d
        credentials.mkdir(mode=0o700)
        password = credentials / "nats-password"
        password.write_text(cluster.passwords[CENTRAL] + "\n")
        password.chmod(0o600)
        self.log = directory / "replica.log"
        self.password = cluster.passwords[CENTRAL]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FLOORSYNC_", "PG"))}
        self.env.update(replica_env(cluster, credentials, database, nats_node, mqtt_node))
        self.process: subprocess.Popen[bytes] | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @contextmanager
    def running(self) -> Iterator[ReplicaProcess]:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync.cli", "server", "--replica"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.process is not None and (
                self.process.poll() is not None or (
                    "replica consuming" in self.text()
                    and "document publisher: leading" in self.text()
                    and "open document(s) published" in self.text())),
                60, "the replica consuming and its publisher connected")
            assert self.process.poll() is None, self.text()[-3000:]
            yield self
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)


def live_device(cluster: Cluster) -> Peer:
    peer = cluster.peer(DEVICE, node=0, name=DEVICE)
    assert peer.connected.get(timeout=WAIT_S) == 0
    assert peer.subscribe(ALL_DOCS) == [1]
    return peer


def heard(peer: Peer, wanted: dict[str, bool]) -> dict[str, Got]:
    """The first message on each topic of ``wanted`` whose payload is empty (True) or not."""
    found: dict[str, Got] = {}
    deadline = time.monotonic() + WAIT_S
    while set(found) != set(wanted):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never heard {set(wanted) - set(found)}; heard {found}"
        try:
            got = peer.received.get(timeout=remaining)
        except queue.Empty:
            continue
        if got.topic in wanted and (got.payload == b"") == wanted[got.topic]:
            found.setdefault(got.topic, got)
    return found


def kept(cluster: Cluster, topic: str) -> list[list[tuple[str, bytes]]]:
    """The retained messages the device's new subscription to ``topic`` gets, on each node."""
    peers = [cluster.peer(DEVICE, node=node, name="reader") for node in range(3)]
    try:
        for peer in peers:
            assert peer.connected.get(timeout=WAIT_S) == 0
            assert peer.subscribe(topic) == [1]
        time.sleep(0.3)
        found = []
        for peer in peers:
            got = []
            with contextlib.suppress(queue.Empty):
                while True:
                    got.append(peer.received.get(timeout=0.2))
            # only what the broker keeps: a live message (a change made meanwhile) is not
            found.append([(g.topic, g.payload) for g in got if g.retain])
        return found
    finally:
        for peer in peers:
            peer.close()


def version_of(store: Store, table: str, ident: str) -> int:
    return int(store._query(f"SELECT version FROM {table} WHERE id = ?", (ident,))[0][0])


def test_a_replica_publishes_and_withdraws_the_documents_through_the_hardened_cluster(
        cluster: Cluster, tmp_path: Path, pg_url: str) -> None:
    mark = uuid.uuid4().hex[:8]
    order, receipt, gone, old = f"SO-{mark}", f"ASN-{mark}", f"SO-gone-{mark}", f"SO-old-{mark}"
    order_topic = floor.docs_topic(SITE, "order", order)
    receipt_topic = floor.docs_topic(SITE, "receipt", receipt)
    gone_topic = floor.docs_topic(SITE, "order", gone)
    old_topic = floor.docs_topic(SITE, "order", old)
    seen_logs = [len(node.log()) for node in cluster.nodes]
    with Store(pg_url) as central:
        with_items(central)
        orders.accept(central, order_doc(old, ("B", 2)))  # open before the replica starts
        # left on the broker by an earlier publisher: a document no longer open, an older copy
        for ident, topic, version in ((gone, gone_topic, 1), (old, old_topic, 0)):
            publish_as(cluster, CENTRAL, topic, floor.encode_expected(
                floor.Expected("order", ident, SITE, version)), retain=True)
        wait_until(lambda: all(kept(cluster, gone_topic)), 10, "the stale copy on every node")
        replica = ReplicaProcess(cluster, tmp_path, pg_url)
        with replica.running():
            # at its connection: the stale one withdrawn, the open one's current copy published
            wait_until(lambda: kept(cluster, gone_topic) == [[]] * 3, 15,
                       "the stale document withdrawn")
            current = version_of(central, "orders", old)
            wait_until(lambda: all(len(k) == 1 and floor.decode_expected(k[0][1]).version
                                   == current for k in kept(cluster, old_topic)), 15,
                       "the open order's current copy")

            device = live_device(cluster)
            try:
                device.drain(1.0)
                orders.accept(central, order_doc(order, ("A", 5)))
                book_of(central).accept(receipt_doc(receipt, ("C", 3)))
                got = heard(device, {order_topic: False, receipt_topic: False})
                copy = floor.decode_expected(got[order_topic].payload)
                assert (copy.kind, copy.id, copy.site, copy.version) == (
                    "order", order, SITE, version_of(central, "orders", order))
                copy = floor.decode_expected(got[receipt_topic].payload)
                assert (copy.kind, copy.id, copy.version) == (
                    "receipt", receipt, version_of(central, "receipts", receipt))
                for topic in (order_topic, receipt_topic):  # retained, on every node
                    assert kept(cluster, topic) == [[(topic, got[topic].payload)]] * 3

                # what the publisher published, a device can neither replace nor clear
                publish_as(cluster, DEVICE, order_topic, b"forged", retain=True)
                publish_as(cluster, DEVICE, order_topic, b"", retain=True)
                time.sleep(0.5)
                assert kept(cluster, order_topic) == [[(order_topic, got[order_topic].payload)]] * 3

                # a cancel and a close withdraw them: empty retained messages, nothing kept
                orders.cancel(central, order, "test", None)
                book_of(central).close(receipt, by="test")
                heard(device, {order_topic: True, receipt_topic: True})
                for topic in (order_topic, receipt_topic):
                    assert kept(cluster, topic) == [[]] * 3
                assert [t for t, _p in retained(cluster, DEVICE, ALL_DOCS)
                        if mark in t] == [old_topic]
            finally:
                device.close()
        log = replica.text()
    assert "Traceback" not in log and "refused" not in log.lower(), log[-3000:]
    assert replica.password not in log
    assert f"withdrawing {gone_topic}, which is not open" in log, log[-3000:]
    nats_logs = "".join(n.log()[at:] for n, at in zip(cluster.nodes, seen_logs, strict=True))
    assert f'User "{CENTRAL}"' not in nats_logs, [
        line for line in nats_logs.splitlines() if CENTRAL in line]


# --- FLOORSYNC_MQTT_PASSWORD_FILE ---------------------------------------------------------


def test_the_mqtt_password_comes_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    secret = tmp_path / "nats-password"
    secret.write_text("from-the-credential\n")
    for key in [k for k in os.environ if k.startswith("FLOORSYNC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FLOORSYNC_MQTT_USERNAME", CENTRAL)
    monkeypatch.setenv("FLOORSYNC_MQTT_PASSWORD_FILE", str(secret))
    found = Settings.from_env()
    assert (found.mqtt_username, found.mqtt_password) == (CENTRAL, "from-the-credential")
    assert found.mqtt_password_file == secret
    assert "from-the-credential" not in repr(found)
    again = dataclasses.replace(found, mqtt_protocol="3.1.1")  # read again, the same password
    assert again.mqtt_password == "from-the-credential"


@pytest.mark.parametrize("case", ["both", "empty", "missing", "no user"])
def test_a_mqtt_password_file_that_cannot_be_used_is_refused(tmp_path: Path, case: str) -> None:
    secret = tmp_path / "nats-password"
    secret.write_text("\n" if case == "empty" else "pw-1\n")
    values: dict[str, object] = {"mqtt_username": CENTRAL, "mqtt_password_file": secret}
    message = {"both": "give one", "empty": "is empty", "missing": "cannot read",
               "no user": "needs FLOORSYNC_MQTT_USERNAME"}[case]
    if case == "both":
        values["mqtt_password"] = "pw-2"
    elif case == "missing":
        values["mqtt_password_file"] = tmp_path / "absent"
    elif case == "no user":
        del values["mqtt_username"]
    with pytest.raises(ConfigError, match=message) as raised:
        Settings(**values)  # type: ignore[arg-type]
    assert "pw-" not in str(raised.value)
