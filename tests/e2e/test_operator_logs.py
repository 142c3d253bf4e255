"""Logs an operator can use, from the real processes: ``floorsync --log-format json`` edges and
central service with secrets configured everywhere (the edges' broker passwords, a reader's
broker password, a wrong password, the central's broker password, a password in its PostgreSQL
URL, a plain API token), at DEBUG, through a password-protected mosquitto.

Every line of every log is one JSON object; no secret appears in any of them; the edge's lines
carry its site and device; scans name the event ids the central service stored; a rejection
names its events; and an edge that the broker refuses says so once, however often it retries.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from floorsync import logs
from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty
from floorsync.edge import status
from floorsync.localbroker import free_port
from floorsync.server import tokens
from tests import pgkit
from tests.brokerkit import ProductionBroker

SITE = "wh1"
EDGE_PW, OTHER_PW, WRONG_PW = (f"edge-{secrets.token_urlsafe(12)}" for _ in range(3))
READER_PW, CENTRAL_PW, PG_PW = (f"pw-{secrets.token_urlsafe(12)}" for _ in range(3))
TOKEN = secrets.token_urlsafe(24)
SECRETS = (EDGE_PW, OTHER_PW, WRONG_PW, READER_PW, CENTRAL_PW, PG_PW, TOKEN,
           tokens.digest(TOKEN).hex())
BAD_EVENT = "01a20297-0501-7c3e-9a41-000000000bad"


def with_password(url: str) -> tuple[str, str]:
    """The test database's URL with a password in it (trust auth ignores it), and that
    password (the one already there, if the URL had one)."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url, parts.password
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{PG_PW}@{host}")), PG_PW


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "floorsync", "--log-level", "DEBUG", "--log-format", "json",
             *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def edge_config(path: Path, device: str, broker: int, password: str, body: str = "") -> Path:
    path.write_text(
        f'site = "{SITE}"\ndevice = "{device}"\n\n[outbox]\npath = "{path.parent}/{device}.db"\n\n'
        f'[sync]\nbroker = "mqtt://127.0.0.1:{broker}"\nusername = "{device}"\n'
        f'password = "{password}"\n\n{body}')
    return path


def api(port: int, path: str, body: bytes | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/{path}", data=body,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def records(path: Path) -> list[dict[str, Any]]:
    """Each line of a log as JSON: a line that is not one fails here."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        assert isinstance(record, dict), (path.name, number, line)
        assert {"time", "level", "logger", "message"} <= record.keys(), (path.name, line)
        out.append(record)
    assert out, f"{path.name} is empty"
    return out


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    with pgkit.database() as url:
        yield with_password(url)


def test_json_logs_of_real_edges_and_central_name_events_and_never_secrets(
        tmp_path: Path, database: tuple[str, str]) -> None:
    db_url, db_password = database
    broker = ProductionBroker.build(
        tmp_path, {"hh-01": EDGE_PW, "hh-02": OTHER_PW, "rdr-01": READER_PW,
                   "floorsync-central": CENTRAL_PW}, {"hh-01": SITE, "hh-02": SITE})
    port = free_port()
    master, slave = open_pty()
    running: list[subprocess.Popen[bytes]] = []
    with broker:
        try:
            running.append(spawn(
                ["server", "--db", db_url, "--broker", f"mqtt://127.0.0.1:{broker.port}",
                 "--port", str(port)], tmp_path / "server.log",
                {"FLOORSYNC_MQTT_USERNAME": "floorsync-central",
                 "FLOORSYNC_MQTT_PASSWORD": CENTRAL_PW, "FLOORSYNC_TOKENS": f"{TOKEN}=admin",
                 "FLOORSYNC_TOKENS_FILE": ""}))
            wait(lambda: _answers(port), "the central service")
            wait(lambda: api(port, "health")["mqtt"] == "connected", "the central's broker")
            hh01 = edge_config(
                tmp_path / "hh-01.toml", "hh-01", broker.port, EDGE_PW,
                f'[[scanners]]\nname = "hh-01"\nport = "{slave}"\nmode = "receive"\n\n'
                f'[[portals]]\nname = "door-01"\nlocation = "DOCK-1"\nreader = "impinj-mqtt"\n'
                f'broker = "mqtt://127.0.0.1:{broker.port}"\ntopic = "impinj/door-01/events"\n'
                f'username = "rdr-01"\npassword = "{READER_PW}"\n')
            hh02 = edge_config(tmp_path / "hh-02.toml", "hh-02", broker.port, WRONG_PW)
            running.append(spawn(["edge", "--config", str(hh01)], tmp_path / "hh-01.log"))
            running.append(spawn(["edge", "--config", str(hh02)], tmp_path / "hh-02.log"))
            wait(lambda: "scanner hh-01 online" in _text(tmp_path / "hh-01.log"), "the scanner")
            scanner = ScriptedScanner(master)
            for code in ("CMD:RECEIVE", "LOC:DOCK-1", gs1_label("09501101530003", lot="L1"),
                         gs1_label("04012345000009", lot="L2", qty=4)):
                scanner.type(code)
                time.sleep(0.3)
            wait(lambda: api(port, "summary")["events"] >= 2, "the scans applied")
            bad = {"v": 1, "site": SITE, "device": "hh-01", "sent_at": "2026-11-22T09:30:00Z",
                   "events": [{"id": BAD_EVENT, "seq": 99, "time": "2026-11-22T10:00:00Z",
                               "type": "receive", "item": {"gtin": "09501101530003"},
                               "qty": -5, "to": "DOCK-1"}]}
            ack = api(port, "events", json.dumps(bad).encode())
            assert [r["status"] for r in ack["results"]] == ["rejected"], ack
            wait(lambda: (status.report(tmp_path / "hh-02.db", 1 << 30)["broker"]
                          .get("connect_attempts") or 0) >= 3, "hh-02's retries")
        finally:
            for process in running:
                process.send_signal(signal.SIGTERM)
            for process in running:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            os.close(master)

    logs_written = {name: tmp_path / f"{name}.log" for name in ("server", "hh-01", "hh-02")}
    for name, path in logs_written.items():
        text = path.read_text()
        for secret in (*SECRETS, db_password):
            assert secret not in text, f"a secret in {name}.log"
    server, edge, refused = (records(p) for p in logs_written.values())

    # the edge: its site and device on every line; the broker state once; the scans' events
    assert all((r["site"], r["device"]) == (SITE, "hh-01") for r in edge)
    assert [r["state"] for r in edge if r.get("broker")] == ["connecting", "connected"], edge
    assert any(r.get("reader") == "door-01" and r["state"] == "online" for r in edge)
    scanned = [i for r in edge if r.get("scanner") == "hh-01" for i in r.get("event_ids", ())]
    with psycopg.connect(db_url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM events WHERE device = 'hh-01'")}
    assert len(scanned) == 2 and set(scanned) == stored, (scanned, stored)

    # the central service: uvicorn's lines in the same format; the rejection names its event
    assert any(r["logger"] == "uvicorn.error" for r in server)
    assert {"method": "POST", "path": "/api/v1/events", "status": 200}.items() <= next(
        r for r in server if r.get("method") == "POST").items()
    assert not any("color_message" in r for r in server)
    (rejected,) = [r for r in server if BAD_EVENT in r.get("event_ids", ())]
    assert (rejected["site"], rejected["device"], rejected["source"], rejected["events"]) == (
        SITE, "hh-01", "http", 1)
    assert rejected["level"] == "WARNING" and "qty" in rejected["reasons"][0]

    # refused by the broker, retried at least three times: said once
    assert [r["state"] for r in refused if r.get("state")] == ["connecting", "retrying"], refused
    (retrying,) = [r for r in refused if r.get("state") == "retrying"]
    assert "Not authorized" in retrying["message"], retrying
    assert logs.MASK not in "".join(r["message"] for r in refused)  # none came near the log


def _answers(port: int) -> bool:
    try:
        api(port, "health")
        return True
    except OSError:
        return False


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
