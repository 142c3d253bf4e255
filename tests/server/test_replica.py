"""Central replicas on NATS JetStream (server/replica.py), with real parts only: nats-server
processes on free loopback ports with their own stores, real PostgreSQL (``pg_url``), replicas
as ``floorsync server --replica`` processes, and real edges (Outbox + Syncer, MQTT 3.1.1: NATS
speaks nothing newer) publishing to the NATS MQTT listener.

nats-server must be installed (CI: deploy/bootstrap.sh); without it these tests fail, on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import nats  # the cluster extra, in dev
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import free_port
from floorsync.server.replica import subject_of, topic_of
from tests.factories import events


@pytest.fixture(autouse=True)
def _nats_installed() -> None:
    try:
        nats_binary()
    except EdgeError as exc:
        pytest.fail(f"{exc}: the replica tests need nats-server (deploy/bootstrap.sh installs it)")


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mqtt_hello(port: int, timeout: float = 30) -> None:
    """An MQTT 3.1.1 connection the server accepts (CONNACK 0): nats-server creates its MQTT
    streams then, and a cluster accepts one only once JetStream has its leaders."""
    deadline = time.monotonic() + timeout
    while True:
        accepted = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hello-{port}",
                             protocol=mqtt.MQTTv311)
        client.on_connect = lambda _c, _u, _f, reason, _p, done=accepted: (
            None if reason.is_failure else done.set())
        try:
            client.connect("127.0.0.1", port)
            client.loop_start()
            if accepted.wait(5):
                return
        except OSError:
            pass
        finally:
            client.disconnect()
            client.loop_stop()
        assert time.monotonic() < deadline, f"NATS MQTT on port {port} accepted no connection"
        time.sleep(0.5)


class ReplicaProcess:
    """``floorsync server --replica`` in its own process, to be killed like a real one."""

    def __init__(self, directory: Path, name: str, servers: Sequence[str], database: str
                 ) -> None:
        self.log = directory / f"{name}.log"
        self.servers, self.database = ",".join(servers), database
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ReplicaProcess:
        mark = self.log.read_text().count("replica consuming") if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync.cli", "server", "--replica", self.servers,
                 "--db", self.database], stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        process = self.process
        wait_until(lambda: process.poll() is not None
                   or self.log.read_text().count("replica consuming") > mark, 60, "a replica")
        assert process.poll() is None, self.log.read_text()[-3000:]
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> dict[str, float]:
        """SIGTERM; its figures from the log line it writes at the end ({} if it had none)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        lines = [ln for ln in self.log.read_text().splitlines() if "replica stopped: " in ln]
        return json.loads(lines[-1].split("replica stopped: ", 1)[1]) if lines else {}


@contextlib.contextmanager
def replicas(directory: Path, count: int, servers: Sequence[str], database: str
             ) -> Iterator[list[ReplicaProcess]]:
    running = [ReplicaProcess(directory, f"replica-{i}", servers, database).start()
               for i in range(count)]
    try:
        yield running
    finally:
        for replica in running:
            replica.stop()


@contextlib.contextmanager
def edge(directory: Path, site: str, device: str, mqtt_port: int
         ) -> Iterator[tuple[Outbox, Syncer]]:
    """A real edge: outbox and syncer, the one config change NATS needs (MQTT 3.1.1)."""
    with Outbox(directory / f"{device}-outbox.db") as outbox:
        syncer = Syncer(outbox, site, device, SyncSettings(
            broker=f"mqtt://127.0.0.1:{mqtt_port}", protocol="3.1.1")).start()
        try:
            yield outbox, syncer
        finally:
            syncer.stop()


def ledger(database: str) -> dict[str, object]:
    """Straight from PostgreSQL: events, movements, and ids seen more than once in either."""
    with psycopg.connect(database) as conn:
        (events_n,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()  # type: ignore[misc]
        (movements,) = conn.execute(  # type: ignore[misc]
            "SELECT COUNT(*) FROM movements").fetchone()
        doubled = conn.execute(
            "SELECT event_id FROM movements GROUP BY event_id HAVING COUNT(*) <> 1").fetchall()
        ids = {row[0] for row in conn.execute("SELECT id FROM events")}
    return {"events": events_n, "movements": movements, "doubled": len(doubled), "ids": ids}


def test_topics_and_subjects_map_as_nats_maps_them() -> None:
    assert topic_of("$MQTT.msgs.floorsync.v1.wh1.dock-1.events") == "floorsync/v1/wh1/dock-1/events"
    assert subject_of("floorsync/v1/wh1/dock-1/acks") == "floorsync.v1.wh1.dock-1.acks"


def test_two_replicas_one_node_apply_two_edges_exactly_once(
        tmp_path: Path, pg_url: str, site: str) -> None:
    """Two replica processes on one database, one NATS node; two real edges each get every
    batch acked, whichever replica applied it."""
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    try:
        mqtt_hello(node.mqtt_port)  # the MQTT stream exists from the first MQTT connection
        with replicas(tmp_path, 2, [node.url], pg_url) as running:
            sent: set[str] = set()
            with edge(tmp_path, site, "dock-1", node.mqtt_port) as (box1, _s1), \
                    edge(tmp_path, site, "dock-2", node.mqtt_port) as (box2, _s2):
                for _ in range(10):
                    for box in (box1, box2):
                        sent.update(e.id for e in box.add(events(150)))
                wait_until(lambda: box1.stats().backlog == 0 and box2.stats().backlog == 0,
                           90, "every event acked by a replica")
                assert box1.stats().acked == box2.stats().acked == 1500
            found = ledger(pg_url)
            assert found["events"] == found["movements"] == 3000
            assert found["doubled"] == 0
            assert found["ids"] == sent
            stats = [r.stop() for r in running]
        assert sum(s["events"] for s in stats) >= 3000
        assert all(s["messages"] > 0 for s in stats), f"one replica did all the work: {stats}"
    finally:
        node.stop()


def test_replica_ack_reaches_a_paho_311_subscriber_through_the_mqtt_listener(
        tmp_path: Path) -> None:
    """What a replica publishes (core NATS, subject of the acks topic) arrives over MQTT."""
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-acks",
                         protocol=mqtt.MQTTv311)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    topic = wire.acks_topic("wh1", "dock-2")
    try:
        client.connect("127.0.0.1", node.mqtt_port)
        client.subscribe(topic, qos=1)
        client.loop_start()
        assert subscribed.wait(10)
        ack = wire.encode_ack(wire.Ack("dock-2", wire.results_for(["a"], "applied", "")))

        async def publish() -> None:
            nc = await nats.connect(node.url)
            await nc.publish(subject_of(topic), ack)
            await nc.flush()
            await nc.close()

        asyncio.run(publish())
        wait_until(lambda: got, 10, "the ack over MQTT")
        assert got == [(topic, ack)]
    finally:
        client.disconnect()
        client.loop_stop()
        node.stop()


def test_store_going_away_mid_stream_acks_nothing_and_redelivers(
        tmp_path: Path, pg_url: str, site: str) -> None:
    """The replica's database connections are terminated while batches flow: the group in hand
    is not acknowledged, the store reopened, the broker redelivers; every event once."""
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    try:
        mqtt_hello(node.mqtt_port)
        with replicas(tmp_path, 1, [node.url], pg_url) as running, \
                edge(tmp_path, site, "dock-1", node.mqtt_port) as (box, _sync):
            sent: set[str] = set()
            name = pg_url.rsplit("/", 1)[1]
            admin = pg_url.rsplit("/", 1)[0] + "/postgres"
            for round_ in range(6):
                sent.update(e.id for e in box.add(events(300)))
                if round_ in (2, 4):
                    wait_until(lambda: box.stats().acked > 0, 60, "first acks")
                    with psycopg.connect(admin, autocommit=True) as conn:
                        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            wait_until(lambda: box.stats().backlog == 0, 90, "every event acked")
            found = ledger(pg_url)
            assert found["events"] == found["movements"] == 1800
            assert found["doubled"] == 0 and found["ids"] == sent
            log = running[0].log.read_text()
        assert "replica consuming" in log
    finally:
        node.stop()


def _cluster(directory: Path) -> list[NatsNode]:
    ports = [free_port() for _ in range(3)]
    return [NatsNode(directory / f"nats-c{i + 1}", f"fs-c{i + 1}", ports[i],
                     [f"127.0.0.1:{p}" for j, p in enumerate(ports) if j != i])
            for i in range(3)]


def test_fault_three_node_cluster_node_and_replica_killed_every_event_once(
        tmp_path: Path, pg_url: str, site: str) -> None:
    """A 3-node NATS cluster (JetStream R3, MQTT on each node), two replicas, a real edge
    sending 20,000 events in 500-event batches. During the stream one broker node and one
    replica are SIGKILLed and both brought back: every event is applied exactly once and the
    edge sees every batch acked (it re-sends what was not, as it always does)."""
    nodes = _cluster(tmp_path)
    for node in nodes:
        node.start(wait=False)
    try:
        for node in nodes:
            node.wait()
        urls = [n.url for n in nodes]
        mqtt_hello(nodes[0].mqtt_port, 60)  # the MQTT streams need a JetStream leader first
        sent: set[str] = set()
        notes: list[str] = []
        with replicas(tmp_path, 2, urls, pg_url) as running, \
                edge(tmp_path, site, "dock-1", nodes[0].mqtt_port) as (box, sync):
            for chunk in range(40):
                sent.update(e.id for e in box.add(events(500)))
                if chunk == 12:
                    wait_until(lambda: box.stats().acked >= 3000, 60, "acks before the faults")
                    nodes[2].stop(signal.SIGKILL)
                    running[1].kill()
                    notes.append(f"node 3 and replica 1 SIGKILLed at {box.stats().acked} acked")
                if chunk == 24:
                    nodes[2].start(wait=False)
                    running[1].start()
                    notes.append(f"both back at {box.stats().acked} acked")
            wait_until(lambda: box.stats().backlog == 0, 120, "every event acked")
            assert box.stats().acked == 20000
            resent = sync.stats.resent
        found = ledger(pg_url)
        assert found["events"] == found["movements"] == 20000, notes
        assert found["doubled"] == 0
        assert found["ids"] == sent
        print(f"fault test: {notes}; edge re-sent {resent} event(s)")
    finally:
        for node in nodes:
            node.stop()
