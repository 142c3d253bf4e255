"""The edge agent's metrics: a real agent (pty scanner, pty RFID reader, real outbox and door
journal), scraped over HTTP and read from its node_exporter textfile, every time through
prometheus-client's own text parser; then synced through a real mosquitto to a real central
ingest, where the backlog must drain in the figures."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty, sgtin96_hex
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import EdgeConfig, MetricsSettings, PortalConfig, ScannerConfig, load
from floorsync.edge.errors import ConfigError
from floorsync.edge.sync import SyncSettings
from floorsync.localbroker import free_port
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokers import Mosquitto
from tests.e2e.conftest import wait_until
from tests.factories import events

DEAD_BROKER = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
SITE, DEVICE = "wh1", "edge-7"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert (labels.pop("site"), labels.pop("device")) == (SITE, DEVICE), sample
            key = (sample.name, frozenset(labels.items()))
            assert key not in out, f"sample {key} twice"
            out[key] = sample.value
    return out


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def config(tmp_path: Path, broker: str = DEAD_BROKER, **kwargs: object) -> EdgeConfig:
    return EdgeConfig(site=SITE, device=DEVICE, outbox_path=tmp_path / "outbox.db",
                      sync=SyncSettings(broker=broker), **kwargs).validate()  # type: ignore[arg-type]


@pytest.fixture
def pty_scanner() -> Iterator[tuple[ScriptedScanner, str]]:
    master, slave = open_pty()
    yield ScriptedScanner(master), slave
    os.close(master)


def test_offline_agent_reports_reads_backlog_journal_and_broker_state(
    tmp_path: Path, pty_scanner: tuple[ScriptedScanner, str]
) -> None:
    scanner, scanner_port = pty_scanner
    reader_master, reader_port = open_pty()
    port = free_port()
    door = PortalConfig(name="dock-3", location="DOCK-3", reader="serial", port=reader_port,
                        quiet_s=60, min_reads=2)  # the pass stays open: its reads stay kept
    cfg = config(tmp_path, scanners=(ScannerConfig(name="hh-1", port=scanner_port),),
                 portals=(door,), metrics=MetricsSettings(port=port))
    try:
        with EdgeAgent(cfg) as agent:
            wait_until(lambda: agent.device_online.get("hh-1") and agent.device_online.get(
                "dock-3"), 10, "scanner and reader online")
            first = scrape(port)
            assert value(first, "floorsync_edge_reads_total", reader="hh-1", kind="scanner") == 0
            assert value(first, "floorsync_edge_backlog_events") == 0
            assert value(first, "floorsync_edge_oldest_unsynced_seconds") == 0
            assert value(first, "floorsync_edge_reader_online", reader="dock-3", kind="door") == 1

            for code in ["LOC:DOCK-1", gs1_label("09501101530003"), gs1_label("09501101530003",
                                                                              lot="L1")]:
                scanner.type(code)
            scanner.type("%%garbage%%")
            tags = [sgtin96_hex("0614141", "812345", n) for n in (1, 2)]
            for _ in range(3):
                for tag in tags:
                    os.write(reader_master, f"{tag},1,-50\r\n".encode())
            os.write(reader_master, b"not a tag line\r\n")
            wait_until(lambda: agent.outbox.stats().pending == 2 and agent.journals.get(
                "dock-3") is not None and agent.journals["dock-3"].depth == 6, 10,
                "two scans kept, six reads journaled")
            time.sleep(0.05)
            after = scrape(port)
    finally:
        os.close(reader_master)
    assert value(after, "floorsync_edge_reads_total", reader="hh-1", kind="scanner") == 4
    assert value(after, "floorsync_edge_bad_reads_total", reader="hh-1", kind="scanner") == 1
    assert value(after, "floorsync_edge_reads_total", reader="dock-3", kind="door") == 7
    assert value(after, "floorsync_edge_bad_reads_total", reader="dock-3", kind="door") == 1
    assert value(after, "floorsync_edge_outbox_events", state="pending") == 2
    assert value(after, "floorsync_edge_backlog_events") == 2
    outbox_bytes = value(after, "floorsync_edge_outbox_bytes")
    assert outbox_bytes is not None and outbox_bytes > 0
    assert value(after, "floorsync_edge_outbox_cap_bytes") == 256 * 1024 * 1024
    oldest = value(after, "floorsync_edge_oldest_unsynced_seconds")
    assert oldest is not None and 0 < oldest < 30
    assert value(after, "floorsync_edge_journal_reads", door="dock-3") == 6
    journal_bytes = value(after, "floorsync_edge_journal_bytes", door="dock-3")
    assert journal_bytes is not None and journal_bytes > 0
    assert value(after, "floorsync_edge_broker_connected") == 0
    assert value(after, "floorsync_edge_broker_state", state="connected") == 0
    assert sum(value(after, "floorsync_edge_broker_state", state=s) or 0
               for s in ("connecting", "retrying")) == 1
    assert value(after, "floorsync_edge_outbox_up") == 1


def test_the_endpoint_is_closed_when_the_agent_stops(tmp_path: Path) -> None:
    port = free_port()
    with EdgeAgent(config(tmp_path, metrics=MetricsSettings(port=port))):
        assert value(scrape(port), "floorsync_edge_outbox_up") == 1
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_a_port_in_use_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    port = free_port()
    with EdgeAgent(config(tmp_path / "a", metrics=MetricsSettings(port=port))):
        agent = EdgeAgent(config(tmp_path / "b", metrics=MetricsSettings(port=port)))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            agent.start()
        assert agent.syncer.state == "starting"  # the syncer was never started
        agent.outbox.close()


def test_textfile_is_replaced_whole_and_says_stopped_at_the_end(tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "floorsync.prom"
    prom.parent.mkdir()
    settings = MetricsSettings(textfile=str(prom), textfile_interval_s=1)
    with EdgeAgent(config(tmp_path, metrics=settings)) as agent:
        first = parse(prom.read_text())  # written at start
        assert value(first, "floorsync_edge_backlog_events") == 0
        agent.capture(events(3))
        wait_until(lambda: value(parse(prom.read_text()), "floorsync_edge_backlog_events") == 3,
                   5, "the next textfile")
    last = parse(prom.read_text())
    assert value(last, "floorsync_edge_broker_state", state="stopped") == 1
    assert value(last, "floorsync_edge_backlog_events") == 3
    assert sorted(p.name for p in prom.parent.iterdir()) == ["floorsync.prom"]  # no leftovers


def test_textfile_in_a_missing_directory_is_refused_at_start(tmp_path: Path) -> None:
    settings = MetricsSettings(textfile=str(tmp_path / "nowhere" / "f.prom"))
    agent = EdgeAgent(config(tmp_path, metrics=settings))
    with pytest.raises(ConfigError, match="no such directory"):
        agent.start()
    agent.outbox.close()


@pytest.mark.parametrize(("text", "error"), [
    ("[metrics]\nport = 70000", "port must be 0"),
    ("[metrics]\nport = \"9108\"", "port must be a whole number"),
    ("[metrics]\nport = true", "port must be a whole number"),
    ("[metrics]\ntextfile = \"/var/lib/node_exporter/floorsync.txt\"", "ending in .prom"),
    ("[metrics]\ntextfile_interval_s = 0.2", "at least 1"),
    ("[metrics]\nhost = \"\"", "host must name"),
    ("[metrics]\nlisten = \":9108\"", "unknown setting"),
    ("metrics = 9108", r"\[metrics\] must be a table"),
])
def test_bad_metrics_settings_are_refused(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f'site = "wh1"\ndevice = "hh"\n{text}\n')
    with pytest.raises(ConfigError, match=error):
        load(path)


def test_metrics_settings_from_toml_and_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('site = "wh1"\ndevice = "hh"\n')
    assert not load(path).metrics.enabled
    path.write_text('site = "wh1"\ndevice = "hh"\n[metrics]\nport = 9108\n'
                    'textfile = "/var/lib/node_exporter/textfile/floorsync.prom"\n')
    got = load(path).metrics
    assert (got.port, got.host, got.textfile, got.textfile_interval_s) == (
        9108, "127.0.0.1", "/var/lib/node_exporter/textfile/floorsync.prom", 15.0)


def test_synced_through_mosquitto_the_backlog_drains_in_the_figures(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = free_port()
    central = Settings(database=tmp_path / "central.db", broker=mosquitto.url,
                       client_id=f"central-{uuid.uuid4().hex[:8]}")
    with Store(central.database) as store, MqttIngest(store, central) as ingest:
        assert ingest.wait_ready(10)
        cfg = config(tmp_path, broker=mosquitto.url, metrics=MetricsSettings(port=port))
        with EdgeAgent(cfg) as agent:
            assert agent.capture(events(25))
            wait_until(lambda: value(scrape(port), "floorsync_edge_backlog_events") == 0, 15,
                       "the backlog drained")
            done = scrape(port)
        assert store.summary()["events"] == 25
    assert value(done, "floorsync_edge_broker_connected") == 1
    assert value(done, "floorsync_edge_broker_state", state="connected") == 1
    assert value(done, "floorsync_edge_events_acked_total") == 25
    sent = value(done, "floorsync_edge_events_sent_total")
    assert sent is not None and sent >= 25
    assert value(done, "floorsync_edge_outbox_events", state="acked") == 25
    assert value(done, "floorsync_edge_oldest_unsynced_seconds") == 0
    last_ack = value(done, "floorsync_edge_last_ack_timestamp_seconds")
    assert last_ack is not None and abs(last_ack - time.time()) < 30
    assert value(done, "floorsync_edge_broker_connects_total") == 1
