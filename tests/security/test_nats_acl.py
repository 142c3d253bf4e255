"""The site network's NATS cluster (deploy/multisite/nats) hardened, proven on real nats-server 2.9.

Three nodes run deploy/multisite/nats/nats-{1,2,3}.conf as shipped but for ports, paths and
host names (``render``: every replacement is checked to apply), with the tests' own CA and one
certificate per node, and the shipped users file (floorsync-users.conf) with the central
service's password set and devices added by ``floorsync.natsusers`` (what ``floorsync enroll
--nats-users`` runs). Clients speak MQTT 3.1.1 (NATS refuses 5) over TLS, or core NATS over TLS.

What is proven: a device publishes only its own events and status (another's are dropped,
PUBACKed all the same: MQTT 3.1.1 cannot say no; NATS logs the violation), reads only its own
acks and its own site's documents (SUBACK 0x80 otherwise, wildcards included), cannot overwrite
another's retained presence nor a document, and its will on another's topic is not sent; no
login without a valid password, no device login over core NATS, no plain connection at all;
the real edge refuses a NATS MQTT listener whose certificate names another host; routes accept
only a certificate naming one of their hosts; the central user does all the replica does (the
real Replica class applies an edge's batches and its acks reach the edge) and no more; a device
enrolled with ``floorsync enroll --nats-users`` syncs, and after ``floorsync revoke`` and a
reload it is cut off and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTProtocolVersion

from floorsync import natsusers
from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.cli import main
from floorsync.edge import config as edge_config
from floorsync.edge import wire
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import free_port
from floorsync.server.ledger import Store
from floorsync.server.replica import NatsLogin, Replica
from tests.brokerkit import Peer, tls_context
from tests.e2e.conftest import wait_until
from tests.factories import events
from tests.security.pki import Issued, TestCA

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "multisite" / "nats"
USERS = DEPLOY / "floorsync-users.conf"
V311 = MQTTProtocolVersion.MQTTv311
SITE, OTHER_SITE = "wh1", "wh2"
DEVICES = {"hh-a": SITE, "hh-b": SITE, "hh-c": OTHER_SITE}  # enrolled before the start
REFUSED = 0x80  # a SUBACK's failure code (MQTT 3.1.1)
NOT_AUTHORIZED = 0x87  # CONNACK 5 of MQTT 3.1.1 (not authorized), as paho reports it
WAIT_S = 15.0


def node_certificate(ca: TestCA, name: str, hosts: tuple[str, ...]) -> Issued:
    """A node's certificate as the README asks for one: subjectAltName = its host names,
    extended key usage serverAuth and clientAuth (a route is both)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = ca.directory / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nats.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "nats.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / "nats.key").chmod(0o600)
    shutil.copyfile(ca.cert, directory / "ca.crt")
    return Issued(name, directory / "nats.crt", directory / "nats.key", serial)


def drop_block(text: str, key: str) -> str:
    """``text`` without the top-level block ``key { ... }`` (nested braces counted)."""
    start = re.search(rf"^{key} {{$", text, re.MULTILINE)
    assert start is not None, key
    depth, at = 0, start.start()
    for at in range(start.start(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0 and text[at] == "}":
            break
    return text[:start.start()] + text[at + 2:]


class Node(NatsNode):
    """A node running deploy/multisite/nats/nats-N.conf, moved onto free loopback ports."""

    def __init__(self, directory: Path, number: int) -> None:
        super().__init__(directory, f"floorsync-{number}")  # ports; the config is ours
        self.number = number
        self.cluster_port, self.monitor_port = free_port(), free_port()

    def render(self, peers: list[Node], users: Path, certificate: Issued,
               standalone: bool = False) -> None:
        """The shipped file with only ports, paths and host names replaced (each replacement
        must apply as many times as expected: a changed file fails here, not silently), the
        users file linked where its include looks (``nats/floorsync-users.conf``, relative to
        the configuration), and a monitoring port (tests only) to read its routes."""
        text = "".join(line for line in (DEPLOY / f"nats-{self.number}.conf").read_text()
                       .splitlines(keepends=True) if not line.lstrip().startswith("#"))
        host = f"nats{self.number}.floorsync.example"
        replace = [
            ("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{self.port}", 1),
            ("listen: 0.0.0.0:8883", f"listen: 127.0.0.1:{self.mqtt_port}", 1),
            ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{self.cluster_port}", 1),
            (f"advertise: {host}:6222", f"advertise: localhost:{self.cluster_port}", 1),
            ('"/var/lib/nats/jetstream"', f'"{self.directory / "js"}"', 1),
            ("/etc/nats/tls/nats.crt", str(certificate.cert), 3),
            ("/etc/nats/tls/nats.key", str(certificate.key), 3),
            ("/etc/nats/tls/ca.crt", str(certificate.cert.parent / "ca.crt"), 3),
        ]
        others = [n for n in range(1, 4) if n != self.number]
        for other in others:
            port = next((p.cluster_port for p in peers if p.number == other), free_port())
            replace.append((f"nats-route://nats{other}.floorsync.example:6222",
                            f"nats-route://localhost:{port}", 1))
        for old, new, count in replace:
            assert text.count(old) == count, f"nats-{self.number}.conf: {old!r} x{count}"
            text = text.replace(old, new)
        assert 'include "nats/floorsync-users.conf"' in text
        if standalone:
            text = drop_block(text, "cluster")
            text = text.replace("  stream_replicas: 3\n", "")
        (self.directory / "nats").mkdir(exist_ok=True)
        link = self.directory / "nats" / "floorsync-users.conf"
        link.unlink(missing_ok=True)
        link.symlink_to(users)
        self.config.write_text(text + f"http: 127.0.0.1:{self.monitor_port}\n")

    def monitor(self, what: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/{what}",
                                    timeout=5) as answer:
            found: dict[str, Any] = json.load(answer)
            return found

    def log(self) -> str:
        path = self.directory / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def reload(self) -> None:
        """As the README says: ``nats-server --signal reload=PID`` (systemctl reload: SIGHUP)."""
        assert self.process is not None
        subprocess.run([nats_binary(), "--signal", f"reload={self.process.pid}"], check=True,
                       capture_output=True, timeout=30)


@dataclass
class Cluster:
    ca: TestCA
    nodes: list[Node]
    users: Path
    passwords: dict[str, str]  # user -> password
    root: Path

    def peer(self, user: str, node: int = 0, password: str | None = None,
             name: str = "peer") -> Peer:
        """An MQTT 3.1.1 client over TLS, logged in (connected: its CONNACK code)."""
        login = (user, self.passwords[user] if password is None else password)
        return Peer(self.nodes[node].mqtt_port, login, protocol=V311,
                    tls=tls_context(self.ca.cert), name=name)

    def reload(self) -> None:
        for node in self.nodes:
            node.reload()

    def sync(self, device: str, node: int = 0, **kw: Any) -> SyncSettings:
        values: dict[str, Any] = {
            "broker": f"mqtts://localhost:{self.nodes[node].mqtt_port}", "protocol": "3.1.1",
            "ca_file": str(self.ca.cert), "username": device,
            "password": self.passwords.get(device), "ack_timeout_s": 5.0}
        values.update(kw)
        return SyncSettings(**values)

    def nats_url(self, node: int = 0, user: str | None = "floorsync-central",
                 scheme: str = "tls") -> str:
        login = f"{user}:{self.passwords[user]}@" if user else ""
        return f"{scheme}://{login}localhost:{self.nodes[node].port}"


@contextmanager
def started(root: Path) -> Iterator[Cluster]:
    """Three nodes of the shipped configuration, the users file shared by them."""
    nats_binary()  # fails (EdgeError) when nats-server is missing: never skipped
    ca = TestCA.create(root / "ca", name="floorsync site CA")
    users = root / "etc-nats" / "floorsync-users.conf"
    users.parent.mkdir()
    shutil.copyfile(USERS, users)
    users.chmod(0o640)
    passwords = {"floorsync-central": natsusers.set_password(users)}
    for device, site in DEVICES.items():
        passwords[device] = f"{device}-{uuid.uuid4().hex}"
        natsusers.add(users, device, site, passwords[device])
    nodes = [Node(root / f"node{n}", n) for n in range(1, 4)]
    for node in nodes:
        node.render(nodes, users, node_certificate(ca, f"node{node.number}", ("localhost",)))
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait()
        for node in nodes:  # the full mesh, over verified TLS
            wait_until(lambda n=node: n.monitor("routez")["num_routes"] == 2, 30, "routes")
        yield Cluster(ca, nodes, users, passwords, root)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory.mktemp("natsacl")) as running:
        yield running


def publish_as(cluster: Cluster, user: str, topic: str, payload: bytes,
               retain: bool = False) -> None:
    peer = cluster.peer(user, name=user)
    try:
        assert peer.connected.get(timeout=WAIT_S) == 0
        assert peer.publish(topic, payload, retain=retain) == 0  # 3.1.1: PUBACKed regardless
    finally:
        peer.close()


def retained(cluster: Cluster, user: str, topic_filter: str, node: int = 0
             ) -> list[tuple[str, bytes]]:
    """What a new subscription of ``user`` gets at once: the retained messages."""
    peer = cluster.peer(user, node=node, name="reader")
    try:
        assert peer.connected.get(timeout=WAIT_S) == 0
        assert peer.subscribe(topic_filter) == [1]
        return peer.drain(1.0)
    finally:
        peer.close()


# --- the configuration ----------------------------------------------------------------------


def test_the_cluster_formed_over_verified_tls_routes(cluster: Cluster) -> None:
    for node in cluster.nodes:
        routes = node.monitor("routez")
        assert routes["num_routes"] == 2, routes
        varz = node.monitor("varz")
        assert varz["tls_required"] and not varz.get("tls_verify")  # clients: a password
        assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"], varz["cluster"]
        assert varz["mqtt"]["tls_timeout"] == 5, varz["mqtt"]


@pytest.mark.parametrize("intruder", ["same CA, another host", "another CA"])
def test_a_route_must_present_a_certificate_naming_one_of_the_routes_hosts(
        cluster: Cluster, tmp_path: Path, intruder: str) -> None:
    """A fourth server configured as node 3 (its routes point at nodes 1 and 2) but holding
    a certificate of the site CA for another host (a device's or a stolen server's), or one of
    another CA, joins nothing: nodes 1 and 2 keep their two routes, it has none."""
    other = TestCA.create(tmp_path / "other", name="Other CA")
    certificate = (node_certificate(cluster.ca, "intruder", ("intruder.example",))
                   if intruder.startswith("same") else
                   node_certificate(other, "intruder", ("localhost",)))
    if intruder == "another CA":  # it trusts the site CA, to get as far as its certificate
        shutil.copyfile(cluster.ca.cert, certificate.cert.parent / "ca.crt")
    node = Node(tmp_path / "intruder", 3)
    node.render(cluster.nodes, cluster.users, certificate)
    seen = [len(member.log()) for member in cluster.nodes[:2]]
    node.start(wait=False)
    try:
        from floorsync.localbroker import wait_for_port

        wait_for_port(node.monitor_port, 20)
        wait_until(lambda: "route" in node.log().lower() and "error" in node.log().lower(), 20,
                   "the intruder's route attempts to fail")
        time.sleep(1.0)
        assert node.monitor("routez")["num_routes"] == 0
        for member in cluster.nodes:
            assert member.monitor("routez")["num_routes"] == 2
    finally:
        node.stop()
    assert "intruder" not in json.dumps([m.monitor("routez") for m in cluster.nodes])
    why = ("Router connection closed: Authentication Failure" if intruder.startswith("same")
           else "TLS route handshake error")  # the check of known URLs; the CA
    for member, start in zip(cluster.nodes[:2], seen, strict=True):
        assert why in member.log()[start:], member.log()[start:][-2000:]


# --- logins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["wrong password", "unknown user", "no password",
                                   "the placeholder of the shipped file"])
def test_no_mqtt_login_without_a_valid_password(cluster: Cluster, login: str) -> None:
    user, password = {
        "wrong password": ("hh-a", "wrong"),
        "unknown user": ("hh-z", "anything"),
        "no password": ("hh-a", ""),
        "the placeholder of the shipped file": ("floorsync-central", re.search(
            r'password: "([^"]+)"', USERS.read_text()).group(1)),  # type: ignore[union-attr]
    }[login]
    peer = cluster.peer(user, password=password, name="intruder")
    try:
        assert peer.connected.get(timeout=WAIT_S) == NOT_AUTHORIZED
    finally:
        peer.close()


def test_the_shipped_central_password_is_a_placeholder_that_matches_nothing() -> None:
    found = re.findall(r'password: "([^"]*)"', USERS.read_text())
    assert len(found) == 1 and found[0].startswith("$2b$11$CHANGE-ME")
    assert not re.match(r"^\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}$", found[0])  # not a real hash


def test_no_anonymous_plain_or_device_connection_on_the_client_port(cluster: Cluster) -> None:
    async def attempt(url: str) -> str:
        context = ssl.create_default_context(cafile=str(cluster.ca.cert))
        try:
            nc = await nats.connect(url, tls=context if url.startswith("tls") else None,
                                    allow_reconnect=False, connect_timeout=5,
                                    max_reconnect_attempts=0)
        except Exception as exc:  # the refusal is the point
            return f"{type(exc).__name__}: {exc}"
        await nc.close()
        return "connected"

    port = cluster.nodes[0].port
    assert "uthorization" in asyncio.run(attempt(f"tls://localhost:{port}"))  # anonymous
    assert "uthorization" in asyncio.run(attempt(cluster.nats_url(user="hh-a")))  # MQTT only
    assert asyncio.run(attempt(cluster.nats_url())) == "connected"
    # in clear: the server says TLS is required and answers a plain CONNECT with no PONG
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        info = raw.recv(4096).decode()
        assert info.startswith("INFO ") and json.loads(info[5:])["tls_required"] is True
        raw.sendall(b'CONNECT {"user":"floorsync-central","pass":"x","verbose":false}\r\n'
                    b"PING\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := raw.recv(4096):
                answer += chunk
        assert b"PONG" not in answer, answer


def test_no_plain_mqtt(cluster: Cluster) -> None:
    """The MQTT listener speaks TLS only: a plain CONNECT gets no CONNACK."""
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"plain-{uuid.uuid4().hex[:8]}",
                    protocol=V311)
    client.username_pw_set("hh-a", cluster.passwords["hh-a"])
    result: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    try:
        client.connect("127.0.0.1", cluster.nodes[0].mqtt_port, 5)
        deadline = time.monotonic() + 5
        while not result and time.monotonic() < deadline and client.loop(0.1) == 0:
            pass
    except OSError:
        pass
    finally:
        client.disconnect()
    assert result == []


# --- the edge and TLS -------------------------------------------------------------------------


def refused(tmp_path: Path, device: str, sync: SyncSettings) -> str:
    """A real syncer tries three times; each refused; its events stay in its outbox."""
    with Outbox(tmp_path / f"{uuid.uuid4().hex}.db") as outbox:
        outbox.add(events(5))
        syncer = Syncer(outbox, DEVICES.get(device, SITE), device, sync).start()
        try:
            wait_until(lambda: syncer.stats.connect_attempts >= 3, 30, "three attempts")
            assert syncer.stats.connects == 0 and not syncer.connected
            error = syncer.stats.last_error or ""
        finally:
            syncer.stop()
        assert outbox.stats().backlog == 5
    return error


def test_edge_refuses_a_nats_mqtt_listener_whose_certificate_names_another_host(
        cluster: Cluster, tmp_path: Path) -> None:
    """Node 1's configuration on a server of its own whose certificate (of the site CA the
    edge trusts) is for another host: the edge does not send its password there."""
    node = Node(tmp_path / "elsewhere", 1)
    node.render([], cluster.users, node_certificate(cluster.ca, "elsewhere",
                                                     ("elsewhere.example",)), standalone=True)
    node.start()
    try:
        sync = cluster.sync("hh-a", broker=f"mqtts://localhost:{node.mqtt_port}")
        error = refused(tmp_path, "hh-a", sync)
        assert "not trusted" in error and "mismatch" in error.lower(), error
        assert "hh-a" not in node.log()  # never logged in
    finally:
        node.stop()


def test_edge_with_a_wrong_password_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    error = refused(tmp_path, "hh-a", cluster.sync("hh-a", password="wrong"))
    assert "refused" in error and "authori" in error.lower(), error


# --- what a device may do ---------------------------------------------------------------------


def test_a_device_publishes_only_its_own_events_and_status(cluster: Cluster) -> None:
    central = cluster.peer("floorsync-central", node=1, name="central")
    try:
        assert central.connected.get(timeout=WAIT_S) == 0
        assert central.subscribe("floorsync/v1/+/+/events", "floorsync/v1/+/+/status") == [1, 1]
        mark = uuid.uuid4().hex.encode()
        for topic in (wire.events_topic(SITE, "hh-b"), wire.status_topic(SITE, "hh-b"),
                      wire.events_topic(OTHER_SITE, "hh-a"), wire.acks_topic(SITE, "hh-b"),
                      "floorsync/v1/wh1/docs/receipt/R-1"):
            publish_as(cluster, "hh-a", topic, b"forged " + mark)
        publish_as(cluster, "hh-a", wire.events_topic(SITE, "hh-a"), b"mine " + mark)
        publish_as(cluster, "hh-a", wire.status_topic(SITE, "hh-a"), b"status " + mark)
        got = central.until(wire.status_topic(SITE, "hh-a"), b"status " + mark)
        assert [(g.topic, g.payload) for g in got if mark in g.payload] == [
            (wire.events_topic(SITE, "hh-a"), b"mine " + mark),
            (wire.status_topic(SITE, "hh-a"), b"status " + mark)]
        assert not [t for t, p in central.drain() if mark in p]
    finally:
        central.close()
    log = "".join(n.log() for n in cluster.nodes)
    for subject in ("floorsync.v1.wh1.hh-b.events", "floorsync.v1.wh1.hh-b.status",
                    "floorsync.v1.wh2.hh-a.events", "floorsync.v1.wh1.hh-b.acks",
                    "floorsync.v1.wh1.docs.receipt.R-1"):
        assert f'Publish Violation - User "hh-a", Subject "{subject}"' in log, subject


@pytest.mark.parametrize("topic_filter", [
    "floorsync/v1/wh1/hh-b/acks", "floorsync/v1/wh1/+/acks", "floorsync/v1/+/+/acks",
    "floorsync/v1/wh1/hh-b/#", "floorsync/v1/#", "#", "+/+/+/+/+",
    "floorsync/v1/wh2/docs/#", "floorsync/v1/wh1/hh-b/events", "floorsync/v1/+/+/status",
    "floorsync/v1/wh1/*/acks", "floorsync/v1/wh1/>", "$MQTT/sub/#", "$MQTT/#", "$JS/#",
])
def test_a_device_cannot_subscribe_beyond_its_own(cluster: Cluster, topic_filter: str) -> None:
    peer = cluster.peer("hh-a", name="hh-a")
    try:
        assert peer.connected.get(timeout=WAIT_S) == 0
        assert peer.subscribe(topic_filter) == [REFUSED]
    finally:
        peer.close()


def test_a_device_reads_its_own_acks_and_its_sites_documents_only(cluster: Cluster) -> None:
    """The acks come as the replica sends them (core NATS, from another node)."""
    mark = uuid.uuid4().hex
    device = cluster.peer("hh-a", name="hh-a")
    try:
        assert device.connected.get(timeout=WAIT_S) == 0
        assert device.subscribe(wire.acks_topic(SITE, "hh-a"), f"floorsync/v1/{SITE}/docs/#") \
            == [1, 1]

        async def central() -> None:
            nc = await nats.connect(cluster.nats_url(node=2),
                                    tls=ssl.create_default_context(cafile=str(cluster.ca.cert)))
            for site, device_ in ((SITE, "hh-b"), (OTHER_SITE, "hh-c"), (SITE, "hh-a")):
                await nc.publish(f"floorsync.v1.{site}.{device_}.acks",
                                 f"{device_} {mark}".encode())
            await nc.publish(f"floorsync.v1.{OTHER_SITE}.docs.receipt.R-9", mark.encode())
            await nc.publish(f"floorsync.v1.{SITE}.docs.receipt.R-9", mark.encode())
            await nc.flush()
            await nc.close()

        asyncio.run(central())
        got = device.until(f"floorsync/v1/{SITE}/docs/receipt/R-9", mark.encode())
        got_all = [(g.topic, g.payload) for g in got] + device.drain()
        assert [x for x in got_all if mark.encode() in x[1]] == [
            (wire.acks_topic(SITE, "hh-a"), f"hh-a {mark}".encode()),
            (f"floorsync/v1/{SITE}/docs/receipt/R-9", mark.encode())]
    finally:
        device.close()


def test_a_device_cannot_overwrite_anothers_presence_nor_a_document(cluster: Cluster) -> None:
    mark = uuid.uuid4().hex.encode()
    doc = f"floorsync/v1/{SITE}/docs/receipt/R-{mark.decode()[:8]}"
    publish_as(cluster, "hh-b", wire.status_topic(SITE, "hh-b"), b"online " + mark, retain=True)
    publish_as(cluster, "floorsync-central", doc, b"expected " + mark, retain=True)
    publish_as(cluster, "hh-a", wire.status_topic(SITE, "hh-b"), b"offline forged", retain=True)
    publish_as(cluster, "hh-a", wire.status_topic(SITE, "hh-b"), b"", retain=True)  # a clear
    publish_as(cluster, "hh-a", doc, b"forged", retain=True)
    publish_as(cluster, "hh-a", doc, b"", retain=True)
    time.sleep(0.5)
    for node in range(3):  # the retained store is the cluster's
        assert retained(cluster, "floorsync-central", wire.status_topic(SITE, "hh-b"),
                        node) == [(wire.status_topic(SITE, "hh-b"), b"online " + mark)]
        assert retained(cluster, "hh-b", doc, node) == [(doc, b"expected " + mark)]


def test_a_devices_will_on_anothers_topic_is_not_sent(cluster: Cluster) -> None:
    """The will is checked when the server sends it: a forged last will of hh-b's presence,
    left by hh-a's dropped connection, reaches no one and replaces nothing."""
    mark = uuid.uuid4().hex.encode()
    publish_as(cluster, "hh-b", wire.status_topic(SITE, "hh-b"), b"online " + mark, retain=True)
    watcher = cluster.peer("floorsync-central", name="central")
    try:
        assert watcher.connected.get(timeout=WAIT_S) == 0
        assert watcher.subscribe(wire.status_topic(SITE, "hh-b"),
                                 wire.status_topic(SITE, "hh-a")) == [1, 1]
        watcher.drain(0.5)
        for topic in (wire.status_topic(SITE, "hh-b"), wire.status_topic(SITE, "hh-a")):
            client = Client(CallbackAPIVersion.VERSION2, client_id=f"hh-a-{uuid.uuid4().hex[:6]}",
                            protocol=V311)
            client.tls_set_context(tls_context(cluster.ca.cert))
            client.username_pw_set("hh-a", cluster.passwords["hh-a"])
            client.will_set(topic, b"will " + mark, qos=1, retain=True)
            connected = threading.Event()
            client.on_connect = lambda c, u, f, rc, p, done=connected: done.set()
            client.connect("localhost", cluster.nodes[0].mqtt_port)
            client.loop_start()
            assert connected.wait(WAIT_S)
            client.loop_stop()
            sock = client.socket()
            assert sock is not None
            sock.close()  # dropped, not disconnected: the server sends the will
        got = watcher.until(wire.status_topic(SITE, "hh-a"), b"will " + mark)
        assert [(g.topic, g.payload) for g in got if mark in g.payload] == [
            (wire.status_topic(SITE, "hh-a"), b"will " + mark)]  # its own will only
    finally:
        watcher.close()
    assert retained(cluster, "floorsync-central", wire.status_topic(SITE, "hh-b")) == [
        (wire.status_topic(SITE, "hh-b"), b"online " + mark)]


# --- what the central user may do -------------------------------------------------------------


def test_the_central_user_may_not_act_as_a_device_nor_touch_the_streams(cluster: Cluster) -> None:
    """Least privilege: beyond its consumer it has no JetStream API, and it cannot publish a
    batch under a device's name."""
    async def probe() -> dict[str, str]:
        context = ssl.create_default_context(cafile=str(cluster.ca.cert))
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(cluster.nats_url(), tls=context, error_cb=on_error)
        found: dict[str, str] = {}
        for name, subject in (
                ("delete the stream", "$JS.API.STREAM.DELETE.$MQTT_msgs"),
                ("read sessions", "$JS.API.STREAM.MSG.GET.$MQTT_sess"),
                ("another consumer", "$JS.API.CONSUMER.DURABLE.CREATE.$MQTT_msgs.other"),
                ("delete its consumer", "$JS.API.CONSUMER.DELETE.$MQTT_msgs.floorsync-replicas"),
                ("a device's batch", "floorsync.v1.wh1.hh-a.events"),
                ("store a batch", "$MQTT.msgs.floorsync.v1.wh1.hh-a.events")):
            errors.clear()
            await nc.publish(subject, b"{}")
            await nc.flush()
            await asyncio.sleep(0.2)
            found[name] = " ".join(errors)
        await nc.close()
        return found

    found = asyncio.run(probe())
    for name, error in found.items():
        assert "permissions violation for publish" in error.lower(), (name, error)


def replica_for(cluster: Cluster, node: int, database: Path) -> Replica:
    """The real Replica class, logged in as floorsync-central over TLS (FLOORSYNC_NATS_*)."""
    login = NatsLogin(ca_file=cluster.ca.cert, user="floorsync-central",
                      password=cluster.passwords["floorsync-central"], tls_required=True)
    return Replica([cluster.nats_url(node, user=None)], str(database), login=login)


@contextmanager
def running(replica: Replica) -> Iterator[Replica]:
    ready, failed = threading.Event(), []
    control: dict[str, Any] = {}

    def run() -> None:
        async def go() -> None:
            control["loop"], control["stop"] = asyncio.get_running_loop(), asyncio.Event()
            await replica.run(control["stop"], ready.set)

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by the test
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60) and not failed, failed
    try:
        yield replica
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(30)
        assert not thread.is_alive() and not failed, failed


def test_an_enrolled_device_syncs_through_the_replica_and_is_refused_after_revoke_and_reload(
        cluster: Cluster, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """``floorsync enroll --nats-users`` (the CLI) writes the user and the edge TOML; after a
    reload of every node the edge, with that TOML as is, syncs to node 1 while the real
    Replica, logged in as floorsync-central on node 3, applies the batches and answers with
    the acks; ``floorsync revoke --nats-users`` and a reload cut the edge off and refuse it."""
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "hh-new"
    code = main(["enroll", "hh-new", "--site", SITE, "--nats-users", str(cluster.users),
                 "--broker", f"mqtts://localhost:{cluster.nodes[0].mqtt_port}",
                 "--ca-file", str(cluster.ca.cert), "--out", str(out), "--device-dir", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    password = next(line.split(": ", 1)[1] for line in text.splitlines()
                    if "password (shown once" in line)
    assert password not in cluster.users.read_text() and '"hh-new"' in cluster.users.read_text()
    assert "reload" in text and "nats-server" in text
    config = edge_config.load(out / "edge.toml")
    assert (config.sync.protocol, config.sync.username) == ("3.1.1", "hh-new")

    before = refused(tmp_path, "hh-new", config.sync)  # not yet: the nodes have not reloaded
    assert "authori" in before.lower(), before
    cluster.reload()
    database = tmp_path / "central.db"
    Store(database).open().close()
    with running(replica_for(cluster, 2, database)), \
            Outbox(tmp_path / "outbox.db") as outbox:
        sent = {e.id for e in outbox.add(events(120))}
        syncer = Syncer(outbox, config.site, config.device, config.sync).start()
        try:
            assert syncer.wait_synced(60), syncer.stats.last_error
            assert syncer.stats.events_acked == 120
            with Store(database) as store:
                assert store.summary()["events"] == 120
                ids = {r[0] for r in store._query("SELECT id FROM events")}
                assert ids == sent

            code = main(["revoke", "hh-new", "--nats-users", str(cluster.users)])
            text = capsys.readouterr().out
            assert code == 0 and "its NATS user (site wh1) revoked" in text, text
            assert natsusers.read_users(cluster.users).entries["hh-new"].revoked
            assert "# floorsync revoked: hh-new" in cluster.users.read_text()
            cluster.reload()
            wait_until(lambda: not syncer.connected and syncer.stats.connect_attempts > 1, 30,
                       "the revoked device cut off at the reload")
            wait_until(lambda: "authori" in (syncer.stats.last_error or "").lower(), 30,
                       "its next connect refused")
            assert syncer.stats.connects == 1, syncer.stats
        finally:
            syncer.stop()
    after = refused(tmp_path, "hh-new", config.sync)
    assert "authori" in after.lower(), after
    assert not [r for r in caplog.records if password in r.getMessage()]
    cluster.reload()  # again: the revoked device's retained presence does not upset a node
    time.sleep(1.0)
    assert all(node.process is not None and node.process.poll() is None
               for node in cluster.nodes)


def test_a_reload_keeps_the_others_connected(cluster: Cluster) -> None:
    """Enrolling or revoking one device, then reloading, does not disturb the others."""
    peer = cluster.peer("hh-b", name="hh-b")
    try:
        assert peer.connected.get(timeout=WAIT_S) == 0
        natsusers.add(cluster.users, "hh-tmp", SITE, "pw-tmp-1234567890")
        cluster.reload()
        natsusers.remove(cluster.users, "hh-tmp")
        cluster.reload()
        time.sleep(1.0)
        assert peer.client.is_connected()
        assert peer.publish(wire.events_topic(SITE, "hh-b"), b"still here") == 0
    finally:
        peer.close()
    assert all(node.process is not None and node.process.poll() is None
               for node in cluster.nodes)


# --- why revoke keeps the entry ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["user removed", "floorsync revoke"])
def test_nats_2_9_crashes_on_a_reload_that_removed_a_user_with_retained_presence(
        tmp_path: Path, how: str) -> None:
    """A device's retained presence stored, its user then removed from the file: node 1's
    reload deletes the message and tells the other nodes, and node 2's reload crashes (a nil
    pointer panic in mqttCheckPubRetainedPerms, every NATS 2.9 release). What ``floorsync
    revoke --nats-users`` does instead (the entry kept, its password dead) passes the same
    steps with every node up, and the device refused."""
    version = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    assert "v2.9." in version, f"{version}: see whether revoke must still keep NATS users"
    with started(tmp_path) as cluster:
        status = wire.status_topic(SITE, "hh-a")
        publish_as(cluster, "hh-a", status, b"online", retain=True)
        for node in (1, 2):
            wait_until(lambda n=node: retained(cluster, "floorsync-central", status, n)
                       == [(status, b"online")], 15, "the presence on every node")
        if how == "user removed":
            natsusers.remove(cluster.users, "hh-a")
        else:
            natsusers.revoke(cluster.users, "hh-a")
        first, second = cluster.nodes[0], cluster.nodes[1]
        first.reload()
        time.sleep(1.5)
        second.reload()
        time.sleep(1.5)
        alive = [n.process is not None and n.process.poll() is None for n in cluster.nodes]
        if how == "user removed":
            assert alive[1] is False, "node 2 survived: NATS may have fixed it (see natsusers)"
            assert "panic: runtime error: invalid memory address" in second.log()
            assert "mqttCheckPubRetainedPerms" in second.log()
        else:
            assert alive == [True, True, True]
            peer = cluster.peer("hh-a", node=1, name="hh-a")
            try:
                assert peer.connected.get(timeout=WAIT_S) == NOT_AUTHORIZED
            finally:
                peer.close()
