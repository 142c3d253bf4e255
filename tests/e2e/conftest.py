"""End-to-end parts: a central service in this process or in its own, an edge outbox + syncer."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import free_port
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings


@contextmanager
def central(database: Path, broker: str, protocol: str = "5") -> Iterator[Store]:
    """The central ingest in this process: a real Store and a real MQTT consumer."""
    settings = Settings(database=database, broker=broker, mqtt_protocol=protocol,
                        client_id=f"central-{uuid.uuid4().hex[:8]}")
    with Store(database) as store:
        ingest = MqttIngest(store, settings).start()
        try:
            assert ingest.wait_ready(15), "central ingest did not connect"
            yield store
        finally:
            ingest.stop()


@contextmanager
def edge(directory: Path, site: str, device: str, broker: str, **sync: Any
         ) -> Iterator[tuple[Outbox, Syncer]]:
    with Outbox(directory / f"{device}-outbox.db") as outbox:
        syncer = Syncer(outbox, site, device, SyncSettings(broker=broker, **sync)).start()
        try:
            yield outbox, syncer
        finally:
            syncer.stop()


class CentralProcess:
    """``floorsync server`` as its own process, to be killed and restarted like the real one."""

    def __init__(self, database: Path, broker: str, protocol: str = "5") -> None:
        self.database = database
        self.broker = broker
        self.protocol = protocol
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = secrets.token_urlsafe(24)  # admin: the tests may do anything
        self.tokens = f"{self.token}=admin"  # FLOORSYNC_TOKENS (tests/web add read and write)

    def start(self) -> CentralProcess:
        log = open(self.database.with_suffix(".log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "server", "--db", str(self.database),
             "--broker", self.broker, "--protocol", self.protocol, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "FLOORSYNC_TOKENS": self.tokens},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.get("health")["mqtt"] == "connected":
                    return self
            except (OSError, ValueError, KeyError):
                pass
            assert self.process.poll() is None, self.database.with_suffix(".log").read_text()
            time.sleep(0.1)
        raise TimeoutError("central service did not become ready")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.api}/{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ledger_counts(database: Path) -> dict[str, int]:
    """Read the central database directly: events, distinct ids, movements, total on hand."""
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        events, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM events"
        ).fetchone()
        (movements,) = conn.execute("SELECT COUNT(*) FROM movements").fetchone()
        (on_hand,) = conn.execute("SELECT COALESCE(SUM(quantity), 0) FROM stock").fetchone()
    finally:
        conn.close()
    return {"events": events, "distinct": distinct, "movements": movements,
            "on_hand": int(on_hand)}

