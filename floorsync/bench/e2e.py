"""``floorsync bench``: durable end-to-end throughput and latency, beside raw baselines.

Everything runs on this host in the same run, so ratios survive a noisy shared machine:

- raw SQLite: WAL, synchronous=FULL, 500 rows per commit (the edge's and the server's disks);
- raw paho: QoS 1 messages of ``batch`` events through the same mosquitto, publisher to
  subscriber, no storage and no acks back;
- end to end: events added to the edge outbox (100 per commit) -> mosquitto -> central service
  (a separate process, SQLite ledger) -> application ack -> outbox settled. The clock stops when
  the last event is acked at the edge, and the central service's count is checked;
- latency: one event per capture at a paced rate, from the start of the capture to its ack.

Part of the composition root: the central service runs as a ``floorsync server`` subprocess.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings, no_delay
from floorsync.localbroker import Mosquitto, free_port

SITE = "bench"
BATCH = 500


def _event(n: int) -> wire.Event:
    return wire.Event(
        id=wire.new_event_id(), seq=0, time=wire.local_now(), type="putaway",
        item=wire.Item(gtin="09501101530003", lot=f"L{n % 7}"), qty=1,
        from_="RECV-1", to=f"A-{n % 20:02d}-{n % 5:02d}", operator="op-12",
        read=wire.SourceRead(kind="barcode", raw="]C1010950110153000310L1", symbology="]C1"),
    )


def bench_sqlite(directory: Path, rows: int) -> float:
    """Rows/s: WAL, synchronous=FULL, 500 ordered-key rows of ~300 bytes per commit."""
    payload = wire.encode_event(_event(0))
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, payload TEXT)")
    data = [(wire.new_event_id(), payload) for _ in range(rows)]
    start = time.perf_counter()
    for i in range(0, rows, BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (id, payload) VALUES (?, ?)", data[i:i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def bench_paho(broker: Mosquitto, events: int) -> float:
    """Events/s through mosquitto at QoS 1 in messages of BATCH events, publisher to subscriber."""
    payload = wire.encode_batch_payloads(
        SITE, "raw", wire.utc_now(), [wire.encode_event(_event(i)) for i in range(BATCH)]
    )
    messages = events // BATCH
    topic = f"bench/raw/{os.getpid()}"
    received = threading.Event()
    count = [0]

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == messages:
            received.set()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub",
                             protocol=mqtt.MQTTv5)
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe(topic, qos=1)
    no_delay(subscriber)
    subscriber.loop_start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub",
                            protocol=mqtt.MQTTv5)
    publisher.max_inflight_messages_set(16)
    publisher.max_queued_messages_set(0)
    publisher.connect("127.0.0.1", broker.port)
    no_delay(publisher)
    publisher.loop_start()
    time.sleep(0.3)
    start = time.perf_counter()
    for _ in range(messages):
        publisher.publish(topic, payload, qos=1)
    if not received.wait(120):
        raise EdgeError(f"raw paho: only {count[0]} of {messages} messages arrived")
    elapsed = time.perf_counter() - start
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    return messages * BATCH / elapsed


class _Central:
    """The central service as a separate process, as in production."""

    def __init__(self, directory: Path, broker: Mosquitto) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.token = secrets.token_urlsafe(24)  # read: the bench only polls
        self.log = open(directory / "central.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "--log-level", "WARNING", "server",
             "--db", str(directory / "central.db"), "--broker", broker.url,
             "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "FLOORSYNC_TOKENS": f"{self.token}=read"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                health = self.get("health")
                if health.get("mqtt") == "connected":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise EdgeError(f"central service did not start; see {directory}/central.log")
            time.sleep(0.1)

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.api}/{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def bench_e2e(directory: Path, broker: Mosquitto, events: int) -> float:
    """Durable events/s: outbox -> mosquitto -> central commit -> ack settled at the edge."""
    settings = SyncSettings(broker=broker.url, batch_size=BATCH, window=16)
    drafts = [_event(i) for i in range(events)]
    with Outbox(directory / "e2e-outbox.db") as outbox:
        syncer = Syncer(outbox, SITE, "e2e", settings).start()
        try:
            start = time.perf_counter()
            for i in range(0, events, 100):
                outbox.add(drafts[i:i + 100])
            if not syncer.wait_synced(300):
                raise EdgeError(f"end to end: backlog {outbox.stats().backlog} after 300 s")
            elapsed = time.perf_counter() - start
        finally:
            syncer.stop()
    return events / elapsed


def bench_latency(directory: Path, broker: Mosquitto, rate: float, seconds: float
                  ) -> list[float]:
    """Milliseconds from the start of each capture (one event per commit) to its ack."""
    settings = SyncSettings(broker=broker.url, batch_size=BATCH, window=16)
    started: dict[str, float] = {}
    latencies: list[float] = []

    def on_ack(results: tuple[wire.Result, ...]) -> None:
        now = time.perf_counter()
        latencies.extend((now - started[r.id]) * 1000 for r in results if r.id in started)

    with Outbox(directory / "paced-outbox.db") as outbox:
        syncer = Syncer(outbox, SITE, "paced", settings)
        syncer.ack_listeners.append(on_ack)
        syncer.start()
        time.sleep(0.5)
        try:
            total = int(rate * seconds)
            begin = time.perf_counter()
            for n in range(total):
                due = begin + n / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.001))
                event = _event(n)
                started[event.id] = time.perf_counter()
                outbox.add([event])
            if not syncer.wait_synced(60):
                raise EdgeError("paced run did not drain")
        finally:
            syncer.stop()
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_bench(*, as_json: bool, events: int, paced_rate: float, paced_seconds: float) -> int:
    events = max(BATCH, events // BATCH * BATCH)
    with tempfile.TemporaryDirectory(prefix="floorsync-bench-") as tmp:
        directory = Path(tmp)
        with Mosquitto(directory / "broker") as broker:
            sqlite_rate = bench_sqlite(directory, events)
            mqtt_rate = bench_paho(broker, events)
            central = _Central(directory, broker)
            try:
                e2e_rate = bench_e2e(directory, broker, events)
                latencies = bench_latency(directory, broker, paced_rate, paced_seconds)
                applied = central.get("summary")["events"]
            finally:
                central.stop()
    expected = events + int(paced_rate * paced_seconds)
    result = {
        "events": events,
        "e2e_events_per_s": round(e2e_rate),
        "raw_mqtt_events_per_s": round(mqtt_rate),
        "raw_sqlite_rows_per_s": round(sqlite_rate),
        "ratio": round(e2e_rate / mqtt_rate, 3),
        "ratio_sqlite": round(e2e_rate / sqlite_rate, 3),
        "paced_events_per_s": paced_rate,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "central_applied": applied,
        "central_applied_expected": expected,
    }
    if as_json:
        print(json.dumps(result))
    else:
        sqlite_rows, mqtt_events = result["raw_sqlite_rows_per_s"], result["raw_mqtt_events_per_s"]
        print(f"raw SQLite (WAL, FULL, {BATCH}/commit): {sqlite_rows:>9,} rows/s")
        print(f"raw paho QoS 1 ({BATCH} events/message): {mqtt_events:>9,} events/s")
        print(f"end to end, durable, acked:           {result['e2e_events_per_s']:>9,} events/s"
              f"  (x{result['ratio']} of raw paho, x{result['ratio_sqlite']} of raw SQLite)")
        print(f"latency at {paced_rate:g} events/s (capture -> ack): p50 {result['p50_ms']} ms,"
              f" p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
        print(f"central service applied {applied} of {expected} events")
    return 0 if applied == expected else 1
