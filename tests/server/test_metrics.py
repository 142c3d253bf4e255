"""GET /metrics on the real app: every scrape parsed by prometheus-client's own text parser.

Batches go in over HTTP (both engines) and over a real mosquitto (MQTT ingest); the counters
must move as events are applied, replayed (duplicate) and refused, and the scrape-time figures
(open exceptions, database size, devices' presence and backlog, ingest's queue) must be read
from the store itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from floorsync.edge import wire
from floorsync.server import metrics as central_metrics
from floorsync.server.app import create_app
from floorsync.server.ledger import Incoming, Store
from floorsync.server.settings import Settings
from tests.brokers import Mosquitto
from tests.server.helpers import (
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    Edge,
    api_settings,
    batch,
    bearer,
    event,
    payload,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, token: str = READ_TOKEN) -> Samples:
    """Every sample of one scrape, by (name, labels), through prometheus-client's parser."""
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"sample {key} twice"
            out[key] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def events(samples: Samples, site: str, device: str, result: str) -> float:
    return value(samples, "floorsync_events_total", site=site, device=device,
                 result=result) or 0.0


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(tmp_path / "ledger.db"), store=store)) as c:
        yield c


def post(client: TestClient, body: bytes) -> int:
    return client.post("/api/v1/events", content=body, headers=bearer(WRITE_TOKEN)).status_code


def test_http_batches_are_counted_as_applied_duplicate_and_rejected(
    client: TestClient, store: Store
) -> None:
    first = scrape(client)
    assert events(first, "wh1", "hh-01", "applied") == 0
    body = payload("wh1", "hh-01", event("receive", qty=3), event("pick", qty=5, src="DOCK-1",
                                                                  dst=None))
    assert post(client, body) == 200
    after = scrape(client)
    assert events(after, "wh1", "hh-01", "applied") == 2
    assert value(after, "floorsync_batch_apply_seconds_count", source="http") == 1
    assert value(after, "floorsync_exceptions_open", kind="negative_stock") == 1  # 3 in, 5 out

    assert post(client, body) == 200  # the edge sends it again: duplicates, nothing applied
    replayed = scrape(client)
    assert events(replayed, "wh1", "hh-01", "applied") == 2
    assert events(replayed, "wh1", "hh-01", "duplicate") == 2
    assert value(replayed, "floorsync_batch_apply_seconds_count", source="http") == 2

    # a bad event beside a good one: one rejected under its device, the other applied
    good = event("receive", qty=1)
    mixed = wire.encode_batch(batch("wh1", "hh-01", good)).replace(
        b'"events":[', b'"events":[{"id":"' + wire.new_event_id().encode() + b'","seq":1},')
    assert post(client, mixed) == 200
    # garbage: refused whole, counted by source (no device can be named)
    assert post(client, b'{"v": 1, "site": "wh1", "dev') == 400
    last = scrape(client)
    assert events(last, "wh1", "hh-01", "applied") == 3
    assert events(last, "wh1", "hh-01", "rejected") == 1
    assert value(last, "floorsync_rejected_messages_total", source="http") == 1
    assert value(last, "floorsync_exceptions_open", kind="rejected") == 2
    assert value(last, "floorsync_database_up") == 1
    size = value(last, "floorsync_database_bytes")
    assert size is not None and size > 0
    assert value(last, "floorsync_device_online", site="wh1", device="hh-01") == 1
    seen = value(last, "floorsync_device_last_seen_timestamp_seconds", site="wh1",
                 device="hh-01")
    assert seen is not None and abs(seen - time.time()) < 60
    assert value(last, "floorsync_ingest_queue_depth") is None  # no MQTT ingest here


def test_a_scrape_needs_a_read_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers=bearer("not-a-token"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "floorsync_" not in wrong.text
    truncated = client.get("/metrics", headers=bearer(READ_TOKEN[:-1]))
    assert truncated.status_code == 401
    assert scrape(client, WRITE_TOKEN)  # write implies read
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_openmetrics_when_the_scraper_asks_for_it(client: TestClient) -> None:
    response = client.get("/metrics", headers={
        **bearer(READ_TOKEN), "Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_open_without_auth_when_the_api_is(tmp_path: Path) -> None:
    settings = Settings(database=tmp_path / "open.db", broker=None, auth=False)
    with TestClient(create_app(settings)) as c:
        response = c.get("/metrics")
        assert response.status_code == 200
        assert any(f.name == "floorsync_database_up"
                   for f in text_string_to_metric_families(response.text))


def test_two_apps_in_one_process_count_apart(tmp_path: Path) -> None:
    one = create_app(api_settings(tmp_path / "one.db"))
    two = create_app(api_settings(tmp_path / "two.db"))
    with TestClient(one) as a, TestClient(two) as b:
        assert post(a, payload("wh1", "hh-01", event(), event())) == 200
        assert post(b, payload("wh2", "hh-02", event())) == 200
        sa, sb = scrape(a), scrape(b)
    assert events(sa, "wh1", "hh-01", "applied") == 2
    assert events(sa, "wh2", "hh-02", "applied") == 0
    assert events(sb, "wh2", "hh-02", "applied") == 1
    assert events(sb, "wh1", "hh-01", "applied") == 0


def test_a_restarted_app_leaves_no_observer_behind(store: Store, tmp_path: Path) -> None:
    """The store outlives the app (it was given): the app's counters go with it."""
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app):
        assert len(store._observers) == 1
    assert store._observers == []
    with TestClient(app) as again:
        assert events(scrape(again), "wh1", "hh-01", "applied") == 0


def test_a_failing_observer_never_fails_the_apply(store: Store) -> None:
    class Broken:
        def applied(self, *args: object) -> None:
            raise RuntimeError("metrics bug")

        def rejected(self, *args: object) -> None:
            raise RuntimeError("metrics bug")

    store.add_observer(Broken())
    one = event()
    (result,) = store.apply_batch(batch("wh1", "hh-01", one), source="http")
    assert result.status == "applied"
    store.record_rejection(source="http", reason="garbage", payload=b"x")
    assert store.summary()["events"] == 1


def test_the_database_failing_at_scrape_time_is_a_gauge_not_a_500(tmp_path: Path) -> None:
    store = Store(tmp_path / "gone.db").open()
    metrics = central_metrics.CentralMetrics(lambda: store, process=False)
    store.close()  # every read now fails
    samples = {s.name: s.value for f in text_string_to_metric_families(
        metrics.render(None)[0].decode()) for s in f.samples}
    assert samples["floorsync_database_up"] == 0
    assert "floorsync_database_bytes" not in samples


def test_device_labels_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(central_metrics, "MAX_DEVICES", 2)
    metrics = central_metrics.CentralMetrics(lambda: None, process=False)
    for n in range(4):
        b = batch("wh1", f"hh-{n}", event())
        metrics.applied([Incoming(b, "http")], [(wire.Result(b.events[0].id, "applied"),)],
                        0.001)
    text = metrics.render(None)[0].decode()
    devices = {s.labels["device"]: s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "floorsync_events_total"}
    assert devices == {"hh-0": 1, "hh-1": 1, "_other": 2}
    assert len(metrics._children) == 2  # the devices past the cap are not remembered either


# --- MQTT ingest through a real mosquitto -----------------------------------------------------


@pytest.fixture
def mqtt_client(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database=tmp_path / "ledger.db", broker=mosquitto.url,
                        client_id=f"central-{uuid.uuid4().hex[:8]}", tokens=TOKENS)
    with TestClient(create_app(settings)) as c:
        ingest = c.app.state.ingest  # type: ignore[attr-defined]
        assert ingest.wait_ready(10)
        yield c


def wait_for(client: TestClient, check: object, timeout: float = 10.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if check(samples) or time.monotonic() > deadline:  # type: ignore[operator]
            return samples
        time.sleep(0.05)


def test_mqtt_ingest_counts_acks_queue_and_presence(
    mqtt_client: TestClient, mosquitto: Mosquitto, site: str
) -> None:
    edge = Edge(mosquitto.port, site, "dock-1")
    try:
        start = scrape(mqtt_client)
        assert value(start, "floorsync_mqtt_connected") == 1
        assert value(start, "floorsync_ingest_queue_depth") == 0
        body = payload(site, "dock-1", event(), event(), event())
        edge.publish(body)
        assert {r.status for r in edge.next_ack().results} == {"applied"}
        edge.publish(body)  # replayed: the broker or the edge sent it again
        assert {r.status for r in edge.next_ack().results} == {"duplicate"}
        # spoofed: the payload names another device than the topic's; counted on the sender
        edge.publish(payload(site, "dock-9", event()))
        assert {r.status for r in edge.next_ack().results} == {"rejected"}
        edge.publish(b"\x00 not json")  # garbage: no ids to ack, refused whole
        edge.publish(wire.encode_status(wire.Status(
            "online", wire.utc_now(), backlog=40, last_seq=3, oldest_unsynced_s=12.5,
            measured_at=wire.utc_now())), topic=wire.status_topic(site, "dock-1"))
        got = wait_for(mqtt_client, lambda s: value(
            s, "floorsync_rejected_messages_total", source="mqtt") == 2 and value(
            s, "floorsync_device_backlog_events", site=site, device="dock-1") == 40 and value(
            s, "floorsync_ingest_queue_depth") == 0)
    finally:
        edge.close()
    assert events(got, site, "dock-1", "applied") == 3
    assert events(got, site, "dock-1", "duplicate") == 3
    assert events(got, site, "dock-1", "rejected") == 1
    assert events(got, site, "dock-9", "rejected") == 0
    assert value(got, "floorsync_rejected_messages_total", source="mqtt") == 2
    assert value(got, "floorsync_batch_apply_seconds_count", source="mqtt") == 2
    assert value(got, "floorsync_ack_publish_seconds_count") == 3  # applied, duplicate, spoof
    assert value(got, "floorsync_ingest_queue_depth") == 0
    oldest = value(got, "floorsync_device_oldest_unsynced_seconds", site=site, device="dock-1")
    assert oldest is not None and 12.5 <= oldest < 12.5 + 30  # plus the time since the report
    assert value(got, "floorsync_device_online", site=site, device="dock-1") == 1


def test_the_ingest_queue_depth_counts_what_waits_for_the_writer(
    mqtt_client: TestClient, mosquitto: Mosquitto, site: str
) -> None:
    """The database held by someone else (a long transaction): messages wait, counted."""
    store = mqtt_client.app.state.store  # type: ignore[attr-defined]
    edge = Edge(mosquitto.port, site, "hh-02")
    try:
        with store._lock:  # the writer's lock: no apply can begin
            for _ in range(3):
                edge.send(event())
            waiting = wait_for(mqtt_client,
                               lambda s: value(s, "floorsync_ingest_queue_depth") == 3)
            assert value(waiting, "floorsync_ingest_queue_depth") == 3
            assert events(waiting, site, "hh-02", "applied") == 0
        for _ in range(3):
            edge.next_ack()
        done = wait_for(mqtt_client, lambda s: value(s, "floorsync_ingest_queue_depth") == 0)
    finally:
        edge.close()
    assert value(done, "floorsync_ingest_queue_depth") == 0
    assert events(done, site, "hh-02", "applied") == 3


def test_held_events_are_told_apart_from_applied_ones() -> None:
    """An older edge hears ``applied`` with the count's reason; the metric says held."""
    metrics = central_metrics.CentralMetrics(lambda: None, process=False)
    b = batch("wh1", "hh-01", event(), event(), event(), event())
    ids = [e.id for e in b.events]
    results = (wire.Result(ids[0], "applied"),
               wire.Result(ids[1], "applied", "late_after_count: A-01 counted later"),
               wire.Result(ids[2], "held", "late_after_count: A-01 counted later"),
               wire.Result(ids[3], "rejected", "qty: not a number"))
    metrics.applied([Incoming(b, "mqtt")], [results], 0.002)
    metrics.applied([Incoming(b, "mqtt")], [tuple(wire.Result(i, "duplicate") for i in ids)],
                    0.001)
    text = metrics.render(None)[0].decode()
    got = {s.labels["result"]: s.value for f in text_string_to_metric_families(text)
           for s in f.samples if s.name == "floorsync_events_total"}
    assert got == {"applied": 1, "held": 2, "rejected": 1, "duplicate": 4}
