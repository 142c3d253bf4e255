"""A replica's metrics (FLOORSYNC_METRICS_PORT): a real ``floorsync server --replica`` process on
a real NATS node and PostgreSQL, a real edge streaming through the NATS MQTT listener; its
/metrics scraped over HTTP and read by prometheus-client's parser. The counters are the same
store observers the HTTP service uses, so applies on a replica are counted there."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from floorsync.bench.cluster import NatsNode
from floorsync.chaos.cluster import edge, mqtt_hello, replicas, wait_until
from floorsync.localbroker import free_port
from floorsync.server.errors import ConfigError
from floorsync.server.settings import Settings
from tests.factories import events


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_replica_counts_what_it_applies_and_acks(
        tmp_path: Path, pg_url: str, site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("FLOORSYNC_METRICS_PORT", str(port))  # the replica process inherits it
    node = NatsNode(tmp_path / "nats", "fs-1").start()
    try:
        mqtt_hello(node.mqtt_port)
        with replicas(tmp_path, 1, [node.url], pg_url), \
                edge(tmp_path, site, "dock-1", node.mqtt_port) as (box, _syncer):
            start = scrape(port)
            assert start[("floorsync_database_up", frozenset())] == 1
            box.add(events(300))
            wait_until(lambda: box.stats().backlog == 0, 60, "every event acked")
            done = scrape(port)
    finally:
        node.stop()
    applied = frozenset({("site", site), ("device", "dock-1"), ("result", "applied")})
    assert done[("floorsync_events_total", applied)] == 300
    assert done[("floorsync_batch_apply_seconds_count", frozenset({("source", "mqtt")}))] >= 1
    assert done[("floorsync_ack_publish_seconds_count", frozenset())] >= 1
    assert done[("floorsync_device_last_seen_timestamp_seconds",
                 frozenset({("site", site), ("device", "dock-1")}))] > 0
    assert ("floorsync_ingest_queue_depth", frozenset()) not in done  # no MQTT ingest here


def test_metrics_port_is_a_tcp_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOORSYNC_METRICS_PORT", "9108")
    assert Settings.from_env().metrics_port == 9108
    monkeypatch.setenv("FLOORSYNC_METRICS_PORT", "70000")
    with pytest.raises(ConfigError, match="metrics_port"):
        Settings.from_env()
    monkeypatch.setenv("FLOORSYNC_METRICS_PORT", "nine")
    with pytest.raises(ConfigError, match="not a number"):
        Settings.from_env()
