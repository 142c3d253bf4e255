"""The edge agent's Prometheus metrics: an HTTP endpoint and/or a node_exporter textfile.

Everything is read when scraped (or when the textfile is written), from what the agent keeps
anyway: the outbox's figures (one grouped count on its state index and two index probes, the
same ``Outbox.stats`` the presence message uses), each open door journal's row count (kept in
memory), the readers' counters (``agent.ReaderCounts``), the syncer's state and counters. No
hot path does more than bump a counter. One registry per agent, never prometheus-client's
global one. Every family carries ``site`` and ``device`` labels, so alerts and dashboards
name the host's device without relabelling.

Configured by ``[metrics]`` (``edge.config.MetricsSettings``): ``port`` (0: off) on ``host``
(127.0.0.1), HTTPS with ``cert_file`` and ``key_file`` (``client_ca_file``: client certificates
of that CA required), ``textfile`` (``*.prom``, replaced atomically by prometheus-client's
``write_to_textfile``: a temporary file beside it, then rename) every ``textfile_interval_s``.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from floorsync.edge.config import EdgeConfig, MetricsSettings
from floorsync.edge.errors import ConfigError, EdgeError
from floorsync.edge.journal import DoorJournal
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer

log = logging.getLogger(__name__)


class Counts(Protocol):
    @property
    def reads(self) -> int: ...

    @property
    def bad(self) -> int: ...


class AgentView(Protocol):
    """What the metrics read of ``edge.agent.EdgeAgent`` (which imports this module lazily)."""

    config: EdgeConfig
    outbox: Outbox
    syncer: Syncer
    journals: dict[str, DoorJournal]
    device_online: dict[str, bool]
    refused: int
    refused_reads: int

    @property
    def reader_counts(self) -> Mapping[tuple[str, str], Counts]: ...  # by (kind, name)


# "refused": connected, but the broker refused the acks subscription (edge.sync)
BROKER_STATES = ("starting", "connecting", "connected", "refused", "retrying", "disconnected",
                 "stopped")
OUTBOX_STATES = ("pending", "sent", "acked", "rejected")


class EdgeCollector:
    """Reads the agent at scrape time. A failed outbox read says ``floorsync_edge_outbox_up 0``
    and leaves the outbox's figures out; the scrape itself never fails."""

    def __init__(self, agent: AgentView) -> None:
        self._agent = agent
        self._names = ["site", "device"]
        self._values = [agent.config.site, agent.config.device]

    def describe(self) -> list[Metric]:
        return []

    def _gauge(self, name: str, doc: str, value: float | None = None,
               labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=[*self._names, *labels])
        if value is not None:
            family.add_metric(self._values, value)
        return family

    def _counter(self, name: str, doc: str, value: float | None = None,
                 labels: tuple[str, ...] = ()) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=[*self._names, *labels])
        if value is not None:
            family.add_metric(self._values, value)
        return family

    def collect(self) -> Iterator[Metric]:
        yield from self._outbox()
        yield from self._journals()
        yield from self._readers()
        yield from self._door_alerts()
        yield from self._sync()

    def _outbox(self) -> Iterator[Metric]:
        try:
            stats = self._agent.outbox.stats()
        except (EdgeError, sqlite3.Error) as exc:  # closed at stop, or the disk failing
            log.warning("metrics: cannot read the outbox: %s", exc)
            yield self._gauge("floorsync_edge_outbox_up", "1 when the outbox could be read", 0)
            return
        yield self._gauge("floorsync_edge_outbox_up", "1 when the outbox could be read", 1)
        events = self._gauge("floorsync_edge_outbox_events", "Outbox rows by state",
                             labels=("state",))
        counts = {"pending": stats.pending, "sent": stats.sent, "acked": stats.acked,
                  "rejected": stats.rejected}
        for state in OUTBOX_STATES:
            events.add_metric([*self._values, state], counts[state])
        yield events
        yield self._gauge("floorsync_edge_backlog_events", "Events the central service has not"
                          " yet confirmed (pending + sent)", stats.backlog)
        yield self._gauge("floorsync_edge_outbox_bytes", "Estimated stored bytes of the outbox",
                          stats.bytes)
        yield self._gauge("floorsync_edge_outbox_cap_bytes", "The outbox's byte cap: capture is"
                          " refused at it, warned of at 80 %", stats.cap_bytes)
        yield self._gauge("floorsync_edge_oldest_unsynced_seconds", "Age of the oldest event"
                          " not yet confirmed (0: none)", stats.oldest_unsynced_age() or 0.0)
        yield self._counter("floorsync_edge_captures_refused", "Events refused because the"
                            " outbox was full (the operator heard a bad read)",
                            self._agent.refused)

    def _journals(self) -> Iterator[Metric]:
        reads = self._gauge("floorsync_edge_journal_reads", "Reads kept in a door's journal"
                            " (not yet movements in the outbox, or of passes still going)",
                            labels=("door",))
        size = self._gauge("floorsync_edge_journal_bytes", "A door journal's estimated bytes",
                           labels=("door",))
        cap = self._gauge("floorsync_edge_journal_cap_bytes", "A door journal's cap: reads are"
                          " refused at it, never evicted", labels=("door",))
        for door, journal in sorted(dict(self._agent.journals).items()):
            key = [*self._values, door]
            reads.add_metric(key, journal.depth)
            size.add_metric(key, journal.depth_bytes)
            cap.add_metric(key, journal.cap_bytes)
        yield from (reads, size, cap)
        yield self._counter("floorsync_edge_journal_refused", "Reads a full journal lost (readers"
                            " that cannot be told to send again)", self._agent.refused_reads)

    def _readers(self) -> Iterator[Metric]:
        labels = ("reader", "kind")
        reads = self._counter("floorsync_edge_reads", "Reads a scanner or door reader delivered"
                              " (rate() gives reads/s)", labels=labels)
        bad = self._counter("floorsync_edge_bad_reads", "Reads refused or unreadable: a bad scan,"
                            " a tag read out of bounds, an unreadable reader report",
                            labels=labels)
        online = self._gauge("floorsync_edge_reader_online", "1 while the scanner or reader is"
                             " connected", labels=labels)
        for (kind, name), counts in sorted(self._agent.reader_counts.items()):
            key = [*self._values, name, kind]
            reads.add_metric(key, counts.reads)
            bad.add_metric(key, counts.bad)
            online.add_metric(key, int(self._agent.device_online.get(name, False)))
        yield from (reads, bad, online)

    def _door_alerts(self) -> Iterator[Metric]:
        """Each door's alerts (``edge.dooralert``): raised per check, given per outcome."""
        raised = self._counter("floorsync_edge_door_alerts", "Door alerts raised: movements"
                               " whose check the portal's alert_on names", labels=("door", "check"))
        given = self._counter("floorsync_edge_door_alert_outputs", "Door alerts given to the"
                              " portal's output: sent, failed (refused, or past"
                              " alert_timeout_s) or dropped (its queue full)",
                              labels=("door", "outcome"))
        for door, alerter in sorted(getattr(self._agent, "door_alerts", {}).items()):
            checks, outcomes = alerter.counts()
            for check, n in sorted(checks.items()):
                raised.add_metric([*self._values, door, check], n)
            for outcome, n in sorted(outcomes.items()):
                given.add_metric([*self._values, door, outcome], n)
        yield from (raised, given)

    def _sync(self) -> Iterator[Metric]:
        syncer = self._agent.syncer
        state = self._gauge("floorsync_edge_broker_state", "1 for the broker connection's state"
                            " now", labels=("state",))
        for name in BROKER_STATES:
            state.add_metric([*self._values, name], int(syncer.state == name))
        yield state
        yield self._gauge("floorsync_edge_broker_connected", "1 while connected to the broker",
                          int(syncer.state == "connected"))
        yield self._gauge("floorsync_edge_broker_state_since_timestamp_seconds", "When the"
                          " broker connection entered its state (Unix time)", syncer.state_since)
        stats = syncer.stats
        if stats.last_ack_at is not None:
            yield self._gauge("floorsync_edge_last_ack_timestamp_seconds", "When the last"
                              " application ack was settled (Unix time)", stats.last_ack_at)
        yield self._counter("floorsync_edge_events_sent", "Events published (re-sends included)",
                            stats.events_sent)
        yield self._counter("floorsync_edge_events_acked", "Events the central service"
                            " confirmed", stats.events_acked)
        yield self._counter("floorsync_edge_events_resent", "Events sent again (ack timeout or"
                            " reconnection)", stats.resent)
        yield self._counter("floorsync_edge_broker_connects", "Connections made to the broker",
                            stats.connects)


def _tls_options(settings: MetricsSettings) -> dict[str, Any]:
    """prometheus-client's HTTPS options of ``[metrics]`` (none: plain HTTP)."""
    if settings.cert_file is None:
        return {}
    tls: dict[str, Any] = {"certfile": settings.cert_file, "keyfile": settings.key_file,
                           "tls_min_version": ssl.TLSVersion.TLSv1_2}
    if settings.client_ca_file is not None:
        tls.update(client_cafile=settings.client_ca_file, client_auth_required=True)
    return tls


class EdgeMetrics:
    """The registry, the HTTP endpoint and the textfile writer of one agent."""

    def __init__(self, agent: AgentView, settings: MetricsSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.registry.register(EdgeCollector(agent))
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._write_failed = False
        self.address: tuple[str, int] | None = None  # where the HTTP endpoint listens

    def start(self) -> EdgeMetrics:
        """Open the port and write the first textfile; ConfigError if either cannot be."""
        textfile = self.settings.textfile
        if textfile is not None and not Path(textfile).parent.is_dir():
            raise ConfigError(f"[metrics] textfile {textfile}: no such directory")
        if self.settings.port:
            tls = _tls_options(self.settings)
            try:
                self._server, self._server_thread = start_http_server(
                    self.settings.port, addr=self.settings.host, registry=self.registry, **tls)
            except OSError as exc:  # ssl.SSLError too: a certificate and key that do not match
                raise ConfigError(f"[metrics] cannot listen on {self.settings.host}:"
                                  f"{self.settings.port}: {exc.strerror or exc}") from None
            self.address = self._server.server_address[:2]
            log.info("metrics on %s://%s:%s/metrics%s", "https" if tls else "http",
                     *self.address, " (client certificates required)"
                     if self.settings.client_ca_file else "")
        if textfile is not None:
            self.write()
            self._writer = threading.Thread(target=self._write_loop, name="metrics-textfile",
                                            daemon=True)
            self._writer.start()
        return self

    def stop(self) -> None:
        """The endpoint closed; the textfile written one last time (the state at stop)."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(10)
            self._writer = None
            self.write()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def write(self) -> bool:
        """The textfile, replaced whole; a failure is logged once until it works again."""
        assert self.settings.textfile is not None
        try:
            write_to_textfile(self.settings.textfile, self.registry)
        except OSError as exc:
            if not self._write_failed:
                log.error("metrics: cannot write %s: %s", self.settings.textfile, exc)
            self._write_failed = True
            return False
        if self._write_failed:
            log.info("metrics: %s written again", self.settings.textfile)
        self._write_failed = False
        return True

    def _write_loop(self) -> None:
        while not self._stop.wait(self.settings.textfile_interval_s):
            self.write()
