"""An order's pick list to the floor over a real mosquitto: retained while the order is open, a
new version with each change the floor's events make, withdrawn when it ships or is cancelled,
and sent again from the database when the publisher republishes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from floorsync.edge import expected as floor
from floorsync.edge import wire
from floorsync.localbroker import Mosquitto
from floorsync.server import picking
from floorsync.server.app import create_app
from floorsync.server.docpublish import DocumentPublisher
from floorsync.server.ledger import Store
from tests.server.helpers import WRITE_TOKEN, api_settings, bearer
from tests.server.orderkit import SITE, apply, order_doc, pick, receive, ship, with_items

TOPIC = floor.docs_topic(SITE, "order", "SO-1")


class Floor:
    """A raw paho client subscribed to the site's documents, as an edge would be."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(floor.docs_filter(SITE), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload)))

    def next(self, timeout: float = 10.0) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def held(self, wait: float = 1.0) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, body = self.messages.get(timeout=left)
            except queue.Empty:
                break
            out[topic] = body
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(mosquitto: Mosquitto, store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with_items(store)
    apply(store, receive("A", 5, "A-01"), receive("B", 5, "B-01"))
    app = create_app(api_settings(tmp_path / "ledger.db", broker=mosquitto.url), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as client:
        assert app.state.publisher.wait_connected(10)
        yield client


def settled(central: TestClient, store: Store) -> None:
    """The desk has told the publisher, and the publisher has sent it."""
    assert picking.install(store).wait_idle(10)
    publisher: DocumentPublisher = central.app.state.publisher  # type: ignore[attr-defined]
    assert publisher.wait_idle(10)


def post_events(central: TestClient, *events: wire.Event) -> None:
    body = wire.encode_batch(wire.Batch(SITE, "hh-01", wire.utc_now(), events))
    answer = central.post("/api/v1/events", content=body,
                          headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text


def test_an_order_is_on_the_floor_while_open_and_follows_its_picks(
    central: TestClient, mosquitto: Mosquitto, store: Store
) -> None:
    live = Floor(mosquitto.port)
    assert central.post("/api/v1/orders", json=order_doc("SO-1", ("A", 3), ("B", 2))
                        ).status_code == 201
    settled(central, store)
    topic, body = live.next()
    first = floor.decode_expected(body)
    assert topic == TOPIC and first.labels == ("ORD:SO-1",)
    assert first.version == central.get("/api/v1/orders/SO-1").json()["version"]
    assert sorted((ln.item.sku, ln.qty, ln.location) for ln in first.lines) == [
        ("SKU-A", 3, "A-01"), ("SKU-B", 2, "B-01")]

    post_events(central, pick("SO-1", "A", 3, "A-01"))
    settled(central, store)
    _, body = live.next()
    after = floor.decode_expected(body)
    assert after.version > first.version
    assert [(ln.item.sku, ln.qty) for ln in after.lines] == [("SKU-B", 2)]

    late = Floor(mosquitto.port)  # an edge that was off: gets the latest, retained
    assert floor.decode_expected(late.held()[TOPIC]) == after

    post_events(central, pick("SO-1", "B", 2, "B-01"), ship("SO-1", "A", 3), ship("SO-1", "B", 2))
    settled(central, store)
    assert central.get("/api/v1/orders/SO-1").json()["status"] == "closed"
    assert live.held()[TOPIC] == b""  # withdrawn
    assert Floor(mosquitto.port).held() == {}
    for c in (live, late):
        c.close()


def test_a_cancelled_order_is_withdrawn_and_republishing_sends_the_open_ones(
    central: TestClient, mosquitto: Mosquitto, store: Store
) -> None:
    central.post("/api/v1/orders", json=order_doc("SO-1", ("A", 1)))
    central.post("/api/v1/orders", json=order_doc("SO-2", ("B", 1)))
    assert central.post("/api/v1/orders/SO-1/cancel", json={"by": "ann"}).status_code == 200
    settled(central, store)
    held = Floor(mosquitto.port).held()
    assert list(held) == [floor.docs_topic(SITE, "order", "SO-2")]
    publisher: DocumentPublisher = central.app.state.publisher  # type: ignore[attr-defined]
    rounds = publisher.rounds
    publisher.republish()  # as at a reconnection: from the providers, orders included
    deadline = time.monotonic() + 10
    while publisher.rounds == rounds and time.monotonic() < deadline:
        time.sleep(0.02)
    assert publisher.rounds > rounds and publisher.wait_idle(10)
    again = Floor(mosquitto.port).held()
    assert list(again) == [floor.docs_topic(SITE, "order", "SO-2")]
    assert floor.decode_expected(again[floor.docs_topic(SITE, "order", "SO-2")]).id == "SO-2"
