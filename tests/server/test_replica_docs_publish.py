"""Central replicas publish the documents they change (server/docfollow.py, wired into
server/replica.py): with no HTTP service at all, an edge on NATS's MQTT listener gets an order's
new copy when a replica applies the edge's receive that fills the order's backorder; one replica
publishes, and when it is SIGKILLed the other takes over.

Real parts: a nats-server (JetStream, MQTT listener), two ``floorsync server --replica``
processes on a PostgreSQL database of this test's own (FLOORSYNC_BROKER names NATS's MQTT
listener, protocol 3.1.1: what NATS speaks), a real edge (outbox and syncer) that keeps the
documents it is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.chaos.cluster import ReplicaProcess, edge, mqtt_hello, replicas, wait_until
from floorsync.edge import expected as floor
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import Outbox
from floorsync.server import orders
from floorsync.server.ledger import Store
from tests.server.orderkit import SITE, order_doc, receive, with_items


@pytest.fixture(autouse=True)
def _nats_installed() -> None:
    try:
        nats_binary()
    except EdgeError as exc:
        pytest.fail(f"{exc}: the replica tests need nats-server (deploy/bootstrap.sh installs it)")


def copy_of(box: Outbox, doc_id: str) -> floor.Expected | None:
    for doc in box.documents():
        if doc.kind == "order" and doc.id == doc_id:
            return floor.decode_expected(doc.payload.encode())
    return None


def leader(running: list[ReplicaProcess]) -> list[ReplicaProcess]:
    return [r for r in running if r.log.exists()
            and r.log.read_text().count("document publisher: leading") > 0]


def test_a_replica_filling_a_backorder_sends_the_order_to_the_edge(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    try:
        mqtt_hello(node.mqtt_port)
        monkeypatch.setenv("FLOORSYNC_BROKER", f"mqtt://127.0.0.1:{node.mqtt_port}")
        monkeypatch.setenv("FLOORSYNC_MQTT_PROTOCOL", "3.1.1")
        with Store(pg_url) as central:
            with_items(central)
            (line,) = orders.accept(central, order_doc("SO-R1", ("A", 5)))[0].lines
            assert (line.allocated, line.backordered) == (0, 5)  # nothing in stock yet
            with replicas(tmp_path, 2, [node.url], pg_url) as running, \
                    edge(tmp_path, SITE, "door-1", node.mqtt_port) as (box, _sync):
                wait_until(lambda: copy_of(box, "SO-R1") is not None, 20,
                           "the open order's copy on the edge")
                first = copy_of(box, "SO-R1")
                assert first is not None and first.version == 1 and first.lines == ()
                assert len(leader(running)) == 1, [r.log.read_text() for r in running]
                box.add([receive("A", 5, "A-01")])  # the edge's receive, applied by a replica
                wait_until(lambda: box.stats().backlog == 0, 30, "the receive acked")
                (line,) = orders.get_order(central, "SO-R1").lines
                assert (line.allocated, line.backordered) == (5, 0)
                version = orders.get_order(central, "SO-R1").version
                wait_until(lambda: (c := copy_of(box, "SO-R1")) is not None
                           and c.version == version, 5, "the filled order's copy on the edge")
                filled = copy_of(box, "SO-R1")
                assert filled is not None
                assert [(ln.item.sku, ln.qty, ln.location) for ln in filled.lines] == [
                    ("SKU-A", 5, "A-01")]
                # the publishing replica dies; the other takes over and publishes what follows
                (publishing,) = leader(running)
                publishing.kill()
                other = next(r for r in running if r is not publishing)
                wait_until(lambda: leader([other]) == [other], 15, "the other replica leads")
                orders.cancel(central, "SO-R1", "test", None)
                wait_until(lambda: copy_of(box, "SO-R1") is None, 10,
                           "the cancelled order withdrawn from the edge")
            logs = "\n".join(r.log.read_text() for r in running)
            assert "Traceback" not in logs, logs[-3000:]
    finally:
        node.stop()


def test_a_replica_without_a_broker_says_it_does_not_publish(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    try:
        mqtt_hello(node.mqtt_port)
        monkeypatch.delenv("FLOORSYNC_BROKER", raising=False)
        with replicas(tmp_path, 1, [node.url], pg_url) as running:
            pass
        text = running[0].log.read_text()
        assert "FLOORSYNC_BROKER is not set, so this replica does not publish" in text, text
        assert "document publisher" not in text
    finally:
        node.stop()
