"""The central service's Prometheus metrics: counted where batches are applied, read at scrape.

One registry per ``CentralMetrics`` (one per app, see ``server.api.metrics``), never
prometheus_client's global one, so two apps in one process count apart.

Counted on the apply path: ``Store`` tells its observers after each commit, whichever way the
batch came (MQTT ingest, the NATS replicas, ``POST /events``): events by site, device and
result, whole messages refused by source, the apply transaction's seconds; MQTT ingest adds
each application ack's seconds from the commit. Read at scrape time, with cheap queries on
SQLite and PostgreSQL alike: open exceptions by kind, the database's bytes, each device's
presence and reported backlog, ingest's queue depth and broker connection.

Labels are site and device (bounded by the fleet; past ``MAX_DEVICES`` pairs further ones are
counted under ``_other``), result, source, kind; never an event id.
"""

from __future__ import annotations

import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from floorsync.edge import wire
from floorsync.server import checks
from floorsync.server.api.devices import is_online  # the rule GET /devices applies
from floorsync.server.errors import StoreError
from floorsync.server.ledger import SOURCES, Incoming, Store

log = logging.getLogger(__name__)

MAX_DEVICES = 5000  # distinct (site, device) label pairs; more are counted as _other
OTHER = "_other"
RESULTS = ("applied", "duplicate", "held", "rejected")
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class IngestView(Protocol):
    """What the scrape reads of MQTT ingest (``server.ingest.MqttIngest``)."""

    @property
    def pending(self) -> int: ...

    @property
    def connected(self) -> bool: ...


_STATUS, _REASON = attrgetter("status"), attrgetter("reason")


class CentralMetrics:
    """The registry and the counters; an ``ApplyObserver`` of the store (``Store.add_observer``)
    and a listener of MQTT ingest's acks (``MqttIngest.ack_listeners``)."""

    def __init__(self, store: Callable[[], Store | None],
                 ingest: Callable[[], IngestView | None] = lambda: None,
                 online_after_s: float = 60.0, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._events = Counter(
            "floorsync_events", "Events of received batches by what became of them: applied,"
            " duplicate (applied before), held (a count held its change), rejected",
            ["site", "device", "result"], registry=self.registry)
        self._messages = Counter(
            "floorsync_rejected_messages", "Whole messages or requests refused (malformed,"
            " spoofed topic, not storable), by source (mqtt, http)",
            ["source"], registry=self.registry)
        self._apply = Histogram(
            "floorsync_batch_apply_seconds", "One apply transaction, lock wait included: a batch"
            " over HTTP, a group of up to 5,000 events over MQTT, a fetch on a replica",
            ["source"], buckets=APPLY_BUCKETS, registry=self.registry)
        self._ack = Histogram(
            "floorsync_ack_publish_seconds", "From the commit to the application ack handed to"
            " the broker connection, per message (MQTT ingest)",
            buckets=ACK_BUCKETS, registry=self.registry)
        for source in SOURCES:  # at 0 from the start, so rate() and alerts see them
            self._messages.labels(source)
        self._apply_by = {source: self._apply.labels(source) for source in SOURCES}
        self._children: dict[tuple[str, str, str], Any] = {}
        self._pairs: set[tuple[str, str]] = set()
        self.registry.register(_ScrapeCollector(store, ingest, online_after_s))
        if process:
            ProcessCollector(registry=self.registry)

    # --- ApplyObserver (the writing thread, after the commit) ------------------------------

    def applied(self, incoming: Sequence[Incoming], results: Sequence[tuple[wire.Result, ...]],
                seconds: float) -> None:
        """Counted by result; ``held`` also for an older edge's ``applied`` with a count's
        reason (it cannot hear ``held``)."""
        if not incoming:
            return
        self._apply_by[incoming[0].source].observe(seconds)
        for one, result in zip(incoming, results, strict=True):
            batch = one.batch
            counts = Tally(map(_STATUS, result))  # counted in C: ~0.1 us an event
            if counts.get("applied") and any(map(_REASON, result)):  # rare: look closer
                held = sum(1 for r in result if r.status == "applied" and r.reason is not None)
                counts["applied"] -= held
                counts["held"] += held
            for what, n in counts.items():
                if n:
                    self._count(batch.site, batch.device, what, n)

    def rejected(self, source: str, site: str | None, device: str | None, events: int) -> None:
        self._messages.labels(source).inc()
        if site and device and events:
            self._count(site, device, "rejected", events)

    def acked(self, seconds: list[float]) -> None:
        for one in seconds:
            self._ack.observe(one)

    def _count(self, site: str, device: str, result: str, n: int) -> None:
        key = (site, device, result)
        child = self._children.get(key)
        if child is None:
            if (site, device) not in self._pairs and len(self._pairs) >= MAX_DEVICES:
                child = self._events.labels(OTHER, OTHER, result)  # not kept: memory bounded
            else:
                self._pairs.add((site, device))
                child = self._children[key] = self._events.labels(site, device, result)
        child.inc(n)

    # --- exposition ------------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type (OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _ScrapeCollector:
    """What is read when Prometheus scrapes: a failed read says ``floorsync_database_up 0``
    and leaves the rest out, never failing the whole scrape."""

    def __init__(self, store: Callable[[], Store | None], ingest: Callable[[], IngestView | None],
                 online_after_s: float) -> None:
        self._store = store
        self._ingest = ingest
        self._online_after_s = online_after_s

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only: nothing to check against the counters' names

    def collect(self) -> Iterator[Metric]:
        ingest = self._ingest()
        if ingest is not None:
            yield _gauge("floorsync_ingest_queue_depth",
                         "MQTT messages received and not yet applied and acknowledged",
                         ingest.pending)
            yield _gauge("floorsync_mqtt_connected",
                         "1 while MQTT ingest is connected and subscribed", int(ingest.connected))
        store = self._store()
        if store is None:
            return
        try:
            families = list(_store_families(store, self._online_after_s))
        except (StoreError, OSError) as exc:
            log.warning("metrics: reading the store failed: %s", exc)
            yield _gauge("floorsync_database_up", "1 when the scrape's reads succeeded", 0)
            return
        yield _gauge("floorsync_database_up", "1 when the scrape's reads succeeded", 1)
        yield from families


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _store_families(store: Store, online_after_s: float) -> Iterator[Metric]:
    open_by_kind = dict.fromkeys(checks.KINDS, 0)
    for kind, n in store._query(
            "SELECT kind, COUNT(*) FROM exceptions WHERE status = 'open' GROUP BY kind"):
        open_by_kind[kind] = int(n)
    exceptions = GaugeMetricFamily("floorsync_exceptions_open", "Open exceptions by kind",
                                   labels=["kind"])
    for kind, n in open_by_kind.items():
        exceptions.add_metric([kind], n)
    yield exceptions
    yield _gauge("floorsync_database_bytes", "The database's size (SQLite: file and WAL;"
                 " PostgreSQL: pg_database_size)", database_bytes(store))
    yield from _device_families(store, online_after_s)


def database_bytes(store: Store) -> int:
    if store.engine == "postgresql":
        ((size,),) = store._query("SELECT pg_database_size(current_database())")
        return int(size)
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{store.path}{suffix}").st_size
        except FileNotFoundError:
            continue
    return total


def _device_families(store: Store, online_after_s: float) -> Iterator[Metric]:
    labels = ["site", "device"]
    online = GaugeMetricFamily(
        "floorsync_device_online", "1 while the device's retained presence says online (or,"
        " without presence, it was heard within FLOORSYNC_ONLINE_AFTER_S)", labels=labels)
    seen = GaugeMetricFamily(
        "floorsync_device_last_seen_timestamp_seconds", "When a batch of the device last"
        " arrived (Unix time)", labels=labels)
    backlog = GaugeMetricFamily(
        "floorsync_device_backlog_events", "Events the device had not had confirmed, as its"
        " presence last reported", labels=labels)
    oldest = GaugeMetricFamily(
        "floorsync_device_oldest_unsynced_seconds", "Age of the device's oldest unconfirmed"
        " event: as reported, plus the time since the report while it reported a backlog",
        labels=labels)
    now = datetime.now(UTC)
    for row in store.devices():
        key = [row.site, row.device]
        online.add_metric(key, int(is_online(row, online_after_s, now)))
        if row.last_seen is not None:
            seen.add_metric(key, _epoch(row.last_seen))
        if row.backlog is not None:
            backlog.add_metric(key, row.backlog)
        if row.oldest_unsynced_s is not None:
            age = row.oldest_unsynced_s
            if row.backlog and row.backlog_at is not None:
                age += max(0.0, now.timestamp() - _epoch(row.backlog_at))
            oldest.add_metric(key, age)
    yield from (online, seen, backlog, oldest)


def _epoch(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
