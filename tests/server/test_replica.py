"""Central replicas on NATS JetStream (server/replica.py), with real parts only: nats-server
processes on free loopback ports with their own stores, real PostgreSQL (``pg_url``), replicas
as ``floorsync server --replica`` processes, and real edges (Outbox + Syncer, MQTT 3.1.1: NATS
speaks nothing newer) publishing to the NATS MQTT listener.

nats-server must be installed (CI: deploy/bootstrap.sh); without it these tests fail, on purpose.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import nats  # the cluster extra, in dev
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.chaos import CLUSTER_SCENARIOS, HEADER, _line, run_campaign
from floorsync.chaos.cluster import edge, ledger, mqtt_hello, replicas, wait_until
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.server.replica import subject_of, topic_of
from tests.factories import events

SEED = 20261206


@pytest.fixture(autouse=True)
def _nats_installed() -> None:
    try:
        nats_binary()
    except EdgeError as exc:
        pytest.fail(f"{exc}: the replica tests need nats-server (deploy/bootstrap.sh installs it)")


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


CLUSTER_EVENTS = 3000  # per scenario: tiny; `make chaos` streams 20,000 with 5 faults each


def test_fault_campaign_cluster_scenarios_every_event_once(tmp_path: Path) -> None:
    """The fault campaign's cluster scenarios, tiny (floorsync/chaos/cluster.py): each on its
    own three-node cluster (JetStream R3), two replicas and a PostgreSQL database of its own, a
    real edge streaming 3,000 events to node 1; during the stream a broker node, a replica, both,
    or the replicas' database connections are lost and brought back: every event applied
    exactly once (one movement each, stock matching), the edge's backlog drained."""
    status, results = run_campaign(seed=SEED, scenarios=list(CLUSTER_SCENARIOS), data=tmp_path,
                                   cluster_events=CLUSTER_EVENTS, cluster_faults=1)
    report = "\n".join([HEADER, *(_line(r) for r in results)]
                       + [f"{r.scenario}: {note}" for r in results for note in r.notes]
                       + [f"{r.scenario}: {f}" for r in results for f in r.recovery])
    print(report)
    assert [r.scenario for r in results] == list(CLUSTER_SCENARIOS)
    for r in results:
        assert r.generated == r.applied == CLUSTER_EVENTS, report
        assert r.lost == r.doubled == r.wrong == 0, report
        assert r.injected == 1 and len(r.recovery) == 1, report
        assert r.recovery[0]["recovered_s"] is not None, report
        assert not any("not drained" in note for note in r.notes), report
    assert status == 0, f"logs in {tmp_path}\n{report}"
