"""Expected lists to the floor over a real mosquitto: retained per open receipt, withdrawn at
close, and made right again on every reconnection (a broker that lost or kept what it should
not)."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from floorsync.edge import expected as floor
from floorsync.localbroker import Mosquitto
from floorsync.server.app import create_app
from floorsync.server.docpublish import DocumentPublisher
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from tests.server.helpers import WRITE_TOKEN, Edge, api_settings, bearer, payload
from tests.server.receiptfixtures import document, load_items, receive

TOPIC = floor.docs_topic("wh1", "receipt", "ASN-1")


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class Floor:
    """A raw paho client subscribed to a site's documents, as an edge would be."""

    def __init__(self, port: int, site: str = "wh1") -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(floor.docs_filter(site), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def held(self, wait: float = 1.0, expect: int = 0) -> dict[str, bytes]:
        """What arrived within ``wait`` (the retained copies right after subscribing); with
        ``expect``, up to 15 s for that many, then ``wait`` more for any that should not be."""
        out: dict[str, bytes] = {}
        deadline = time.monotonic() + (15.0 if expect else wait)
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, body, _ = self.messages.get(timeout=left)
            except queue.Empty:
                break
            out[topic] = body
            if expect and len(out) == expect:
                deadline, expect = time.monotonic() + wait, 0
        return out

    def next(self, timeout: float = 10.0) -> tuple[str, bytes, bool]:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(mosquitto: Mosquitto, store: Store, tmp_path: Path) -> Iterator[TestClient]:
    load_items(store)
    app = create_app(api_settings(tmp_path / "ledger.db", broker=mosquitto.url), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as client:
        assert app.state.publisher.wait_connected(10)
        yield client


def publisher(central: TestClient) -> DocumentPublisher:
    found: DocumentPublisher = central.app.state.publisher  # type: ignore[attr-defined]
    return found


def test_a_floor_connecting_after_the_receipt_gets_it_and_close_withdraws_it(
    central: TestClient, mosquitto: Mosquitto, store: Store
) -> None:
    live = Floor(mosquitto.port)
    assert central.post("/api/v1/receipts", json=document()).status_code == 201
    assert publisher(central).wait_idle(10)
    topic, body, _ = live.next()
    assert topic == TOPIC and floor.decode_expected(body).id == "ASN-1"
    late = Floor(mosquitto.port)  # an edge that was off when the receipt came
    held = late.held(expect=1)
    assert list(held) == [TOPIC]
    got = floor.decode_expected(held[TOPIC])
    assert got == book_of(store).expected("ASN-1") and got.version == 1
    assert got.labels == ("ASN:ASN-1",) and len(got.pallets[0].epcs) == 3
    # the same document again publishes nothing new
    assert central.post("/api/v1/receipts", json=document()).status_code == 200
    assert publisher(central).wait_idle(10) and live.held(0.5) == {}
    assert central.post("/api/v1/receipts/ASN-1/close", json={"by": "boss"}).status_code == 200
    assert publisher(central).wait_idle(10)
    assert live.next() == (TOPIC, b"", False)  # withdrawn
    assert Floor(mosquitto.port).held() == {}  # and no longer retained
    for c in (live, late):
        c.close()


def test_a_broker_restarted_without_its_retained_store_gets_them_again(
    central: TestClient, mosquitto: Mosquitto
) -> None:
    central.post("/api/v1/receipts", json=document())
    central.post("/api/v1/receipts", json=document("ASN-2"))
    central.post("/api/v1/receipts/ASN-2/close", json={"by": "boss"})
    pub = publisher(central)
    assert pub.wait_idle(10) and pub.rounds == 1
    mosquitto.stop(signal.SIGKILL)
    for kept in mosquitto.directory.glob("*.db"):
        kept.unlink()  # its retained store is gone
    mosquitto.start()
    wait_until(lambda: pub.rounds == 2)
    assert pub.wait_idle(10)
    held = Floor(mosquitto.port).held(expect=1)
    assert list(held) == [TOPIC]
    assert floor.decode_expected(held[TOPIC]).id == "ASN-1"


def test_a_receipt_closed_while_the_broker_was_away_is_withdrawn_on_reconnect(
    central: TestClient, mosquitto: Mosquitto
) -> None:
    central.post("/api/v1/receipts", json=document())
    pub = publisher(central)
    assert pub.wait_idle(10)
    mosquitto.stop()  # SIGTERM: it saves its retained store, ASN-1 included
    wait_until(lambda: not pub.connected)
    assert central.post("/api/v1/receipts/ASN-1/close", json={"by": "boss"}).status_code == 200
    withdrawn = pub.withdrawn
    mosquitto.start()
    wait_until(lambda: pub.withdrawn > withdrawn)
    assert pub.wait_idle(10)
    assert Floor(mosquitto.port).held() == {}


def test_stale_and_garbage_retained_documents_are_put_right_and_others_left_alone(
    mosquitto: Mosquitto, store: Store, tmp_path: Path
) -> None:
    load_items(store)
    book_of(store).accept(document())  # open before the service starts
    other = Client(CallbackAPIVersion.VERSION2)
    other.connect("127.0.0.1", mosquitto.port)
    other.loop_start()
    planted = {
        TOPIC: b"\x00garbage",  # an open receipt's topic: replaced by the real list
        floor.docs_topic("wh1", "receipt", "GHOST"): b'{"v": 1}',  # none such: withdrawn
        floor.docs_topic("wh1", "order", "O-1"): b"an order's",  # not an open order: withdrawn
        "floorsync/v1/wh1/docs/receipt": b"not a document topic",  # left alone
    }
    for topic, body in planted.items():
        other.publish(topic, body, qos=1, retain=True).wait_for_publish(10)
    other.disconnect()
    other.loop_stop()
    app = create_app(api_settings(tmp_path / "ledger.db", broker=mosquitto.url), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)):
        pub: DocumentPublisher = app.state.publisher
        wait_until(lambda: pub.withdrawn == 2)
        assert pub.wait_idle(10)
        edge = Floor(mosquitto.port)
        got = edge.held(expect=2)
        edge.close()
    assert set(got) == {TOPIC, "floorsync/v1/wh1/docs/receipt"}
    assert floor.decode_expected(got[TOPIC]) == book_of(store).expected("ASN-1")


def test_receive_events_over_mqtt_are_checked_against_the_receipt(
    central: TestClient, mosquitto: Mosquitto, store: Store
) -> None:
    central.post("/api/v1/receipts", json=document())
    edge = Edge(mosquitto.port, "wh1", "door-1")
    try:
        over, stray = receive(qty=16), receive(doc="ASN-9")
        edge.publish(payload("wh1", "door-1", over, stray))
        ack = edge.next_ack()
        assert [r.status for r in ack.results] == ["applied", "applied"]
        edge.publish(payload("wh1", "door-1", over, stray))  # a re-send: nothing twice
        assert [r.status for r in edge.next_ack().results] == ["duplicate", "duplicate"]
    finally:
        edge.close()
    kinds = [r[0] for r in store._query("SELECT kind FROM exceptions ORDER BY id")]
    assert kinds == ["receipt_over", "receipt_unknown"]
    view = central.get("/api/v1/receipts/ASN-1").json()
    assert [ln["received"] for ln in view["lines"]] == [10, 0, 6]


def test_a_publisher_needs_a_broker_and_known_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DocumentPublisher(api_settings(tmp_path / "x.db"), {})
    with pytest.raises(ValueError):
        DocumentPublisher(api_settings(tmp_path / "x.db", broker="mqtt://127.0.0.1:1"),
                          {"invoice": lambda: []})
