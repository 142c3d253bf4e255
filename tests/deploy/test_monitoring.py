"""deploy/prometheus and deploy/grafana cannot drift from the code: the rule file and the
dashboard parse, hold the alerts and panels they promise, and every floorsync metric they name
is one a real central service and a real edge agent export (both scraped here, their text read
by prometheus-client's parser)."""

from __future__ import annotations

import json
import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty, sgtin96_hex
from floorsync.edge import wire
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import EdgeConfig, MetricsSettings, PortalConfig, ScannerConfig
from floorsync.edge.sync import SyncSettings
from floorsync.localbroker import free_port
from floorsync.server.app import create_app
from floorsync.server.settings import Settings
from tests.brokers import Mosquitto
from tests.e2e.conftest import wait_until
from tests.server.helpers import READ_TOKEN, TOKENS, WRITE_TOKEN, Edge, bearer, event, payload

from .conftest import DEPLOY

RULES = DEPLOY / "prometheus" / "floorsync.rules.yml"
SCRAPES = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "floorsync.json"
METRIC = re.compile(r"\bfloorsync_[a-z0-9_]+")
# Named by the rules but exported by others: Prometheus itself and node_exporter's textfile
# collector.
FOREIGN = {"up", "node_textfile_mtime_seconds"}


def sample_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def central_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """A central service with MQTT ingest, after a batch over HTTP and a device's presence."""
    tmp = tmp_path_factory.mktemp("central")
    with Mosquitto(tmp / "broker") as broker:
        settings = Settings(database=tmp / "ledger.db", broker=broker.url, tokens=TOKENS,
                            client_id=f"central-{uuid.uuid4().hex[:8]}")
        with TestClient(create_app(settings)) as client:
            assert client.app.state.ingest.wait_ready(10)  # type: ignore[attr-defined]
            body = payload("wh1", "hh-07", event("receive"), event("pick", src="A-1", dst=None))
            ok = client.post("/api/v1/events", content=body, headers=bearer(WRITE_TOKEN))
            assert ok.status_code == 200
            edge = Edge(broker.port, "wh1", "hh-07")
            try:
                edge.publish(wire.encode_status(wire.Status(
                    "online", wire.utc_now(), backlog=3, oldest_unsynced_s=1.0,
                    measured_at=wire.utc_now())), topic=wire.status_topic("wh1", "hh-07"))
                edge.send(event())
                edge.next_ack()
            finally:
                edge.close()
            text = client.get("/metrics", headers=bearer(READ_TOKEN)).text
    yield sample_names(text)


@pytest.fixture(scope="module")
def edge_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """An edge agent with a scanner and a journaled door, one scan, one ack-less read."""
    tmp = tmp_path_factory.mktemp("edge")
    scanner_master, scanner_port = open_pty()
    reader_master, reader_port = open_pty()
    port = free_port()
    config = EdgeConfig(
        site="wh1", device="hh-07", outbox_path=tmp / "outbox.db",
        sync=SyncSettings(broker=f"mqtt://127.0.0.1:{free_port()}"),
        scanners=(ScannerConfig(name="hh-07", port=scanner_port),),
        portals=(PortalConfig(name="dock-1", location="DOCK-1", reader="serial",
                              port=reader_port, quiet_s=60),),
        metrics=MetricsSettings(port=port)).validate()
    try:
        with EdgeAgent(config) as agent:
            scanner = ScriptedScanner(scanner_master)
            wait_until(lambda: agent.device_online.get("hh-07") and agent.journals.get(
                "dock-1") is not None, 10, "scanner and door up")
            scanner.type("LOC:DOCK-1")
            scanner.type(gs1_label("09501101530003"))
            os.write(reader_master, f"{sgtin96_hex('0614141', '812345', 1)},1,-50\r\n".encode())
            wait_until(lambda: agent.outbox.stats().pending == 1, 10, "the scan kept")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
    finally:
        os.close(scanner_master)
        os.close(reader_master)
    yield sample_names(text)


def rules() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    out: dict[str, dict[str, Any]] = {}
    for group in data["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in out, f"alert {rule['alert']} twice"
            out[rule["alert"]] = rule
    return out


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    got = rules()
    assert "floorsync_edge_oldest_unsynced_seconds > 300" in got["FloorsyncBacklogOlderThan5m"][
        "expr"]
    assert "(floorsync_device_oldest_unsynced_seconds) > 300" in got[
        "FloorsyncDeviceBacklogOlderThan5m"]["expr"]
    assert got["FloorsyncDeviceOffline"]["expr"].strip() == (
        "max by (site, device) (floorsync_device_online) == 0")
    assert got["FloorsyncDeviceOffline"]["for"] == "10m"
    assert "floorsync_edge_outbox_bytes / floorsync_edge_outbox_cap_bytes > 0.8" in got[
        "FloorsyncOutboxNearCap"]["expr"]
    for name, rule in got.items():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert METRIC.search(rule["expr"]) or any(f in rule["expr"] for f in FOREIGN), name


def test_every_metric_the_rules_name_is_exported(
    central_names: set[str], edge_names: set[str]
) -> None:
    exported = central_names | edge_names
    for name, rule in rules().items():
        used = set(METRIC.findall(rule["expr"]))
        for text in rule.get("annotations", {}).values():
            used |= set(METRIC.findall(text))
        missing = used - exported
        assert not missing, f"alert {name} names metrics nothing exports: {sorted(missing)}"


def test_every_metric_the_dashboard_names_is_exported(
    central_names: set[str], edge_names: set[str]
) -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 15
    exported = central_names | edge_names
    for expr in exprs:
        missing = set(METRIC.findall(expr)) - exported
        assert not missing, f"panel expression {expr!r} names {sorted(missing)}"


def test_the_exports_are_the_ones_checked_against(
    central_names: set[str], edge_names: set[str]
) -> None:
    """The name check above is only as good as the scrapes: each side must have exported its
    scrape-time families (those needing a device, ingest or an open journal) too."""
    assert {"floorsync_device_online", "floorsync_ingest_queue_depth",
            "floorsync_batch_apply_seconds_bucket", "floorsync_events_total"} <= central_names
    assert {"floorsync_edge_journal_reads", "floorsync_edge_reads_total",
            "floorsync_edge_oldest_unsynced_seconds"} <= edge_names
    assert not {n for n in central_names if n.startswith("floorsync_edge_")}


def test_scrape_config_loads_the_rules_and_sends_a_token() -> None:
    config = yaml.safe_load(SCRAPES.read_text())
    assert [DEPLOY / "prometheus" / f for f in config["rule_files"]] == [RULES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"floorsync-central", "floorsync-replicas", "floorsync-edge",
                         "floorsync-edge-node"}
    central = jobs["floorsync-central"]
    assert central["metrics_path"] == "/metrics"
    assert central["authorization"]["type"] == "Bearer"
    assert "credentials_file" in central["authorization"]  # never the token in this file


def test_dashboard_is_importable_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "floorsync" and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "site", "device"}
    for p in board["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_node_exporter_textfile_path_fits_the_edge_unit() -> None:
    """The textfile route in the scrape example writes where the edge unit may write."""
    unit = (DEPLOY / "systemd" / "floorsync-edge.service").read_text()
    assert "StateDirectory=floorsync" in unit
    text = SCRAPES.read_text()
    assert "/var/lib/floorsync/metrics/floorsync.prom" in text
    assert MetricsSettings(textfile="/var/lib/floorsync/metrics/floorsync.prom").check() is None

