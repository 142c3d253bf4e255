"""``floorsync bench reader``: the network-reader path of a dock door, beside raw paho.

The path measured: a Zebra-style reader's QoS 1 messages (one tag read each) in a reader-side
mosquitto -> the edge agent (its own process: paho, vendor JSON decode, read checks, door journal
commit before the PUBACK, door logic, outbox) -> one movement per new tag, durable in the outbox.

- Flood: ``reads`` messages are queued in the broker for the edge's persistent session while the
  edge is stopped; the edge is started and the clock runs from its launch plus its measured
  start-up time (launch to "online" with nothing queued) to the last movement in the outbox. The
  baseline, a raw paho subscriber (MQTT 3.1.1 like the edge's reader, persistent session, QoS 1,
  acknowledging each message, no decoding, no storage), drains the same queue in the same run.
  The ratio is printed, with the edge's CPU time per read.
- Latency: the reader publishes live at ``rate`` reads/s (``per_tag`` reads a tag, stamped as
  published); for every movement, the time from its tag's last read to its commit in the outbox.

Door settings as on a fast conveyor door: direction in, min_reads 1, quiet_s 0.05, cycle_s 1,
latency_s 0.02 (reads of one MQTT reader arrive in order; the lag only waits for stragglers).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.simreader import ZebraMqttReaderSim
from floorsync.devices.sim import sgtin96_hex
from floorsync.edge.errors import EdgeError
from floorsync.localbroker import Mosquitto

QUIET_S = 0.05
TOPIC = "zebra/bench/door-1"


def _reads(count: int, per_tag: int, start: datetime, step_us: int, serial0: int
           ) -> list[TagRead]:
    out = []
    for n in range(count):
        tag = serial0 + n // per_tag
        out.append(TagRead("door-1", sgtin96_hex("0614141", "812345", tag), 1 + n % 2, -55.0,
                           start + timedelta(microseconds=n * step_us)))
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _preload(broker: Mosquitto, reads: list[TagRead], client_id: str, per_message: int = 1
             ) -> None:
    with ZebraMqttReaderSim(broker.url, TOPIC, client_id=client_id) as reader:
        reader.publish(reads, per_message=per_message)
        if not reader.wait_acked(300):
            raise EdgeError(f"reader-side broker took only {reader.acked} of {len(reads)}")


def bench_raw(broker: Mosquitto, reads: list[TagRead], per_message: int = 1) -> float:
    """Reads/s a raw paho subscriber drains from its queued persistent session."""
    messages = -(-len(reads) // per_message)
    count = [0]
    done = threading.Event()
    online = [0.0]

    def on_message(_c: Any, _u: Any, _m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= messages:
            done.set()

    def on_subscribe(*_: Any) -> None:
        online[0] = online[0] or time.perf_counter()

    def client() -> mqtt.Client:  # the edge's reader protocol (3.1.1, persistent session)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-sub",
                        protocol=mqtt.MQTTv311, clean_session=False)
        c.on_message = on_message
        c.on_subscribe = on_subscribe
        c.connect("127.0.0.1", broker.port)
        return c

    first = client()  # the session and its subscription, then away
    first.subscribe(TOPIC, qos=1)
    first.loop(1.0)
    first.loop(0.2)
    first.disconnect()
    _preload(broker, reads, "bench-raw-reader", per_message)
    online[0] = 0.0
    count[0] = 0
    start = time.perf_counter()
    sub = client()
    sub.subscribe(TOPIC, qos=1)  # as the edge does at every connect
    thread = threading.Thread(target=sub.loop_forever, daemon=True)
    thread.start()
    if not done.wait(300):
        raise EdgeError(f"raw paho: only {count[0]} of {messages} messages arrived")
    elapsed = time.perf_counter() - start  # from connect, as the edge's clock
    sub.disconnect()
    thread.join(5)
    return len(reads) / elapsed


class _Edge:
    def __init__(self, directory: Path, broker: Mosquitto) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.outbox = directory / "edge-outbox.db"
        self.config = directory / "edge.toml"
        self.log = directory / "edge.log"
        self.config.write_text(
            'site = "bench"\ndevice = "dock-bench"\n'
            f'[outbox]\npath = "{self.outbox}"\n'
            '[sync]\nbroker = "mqtt://127.0.0.1:1"\n'  # nowhere: the outbox is the finish line
            "[[portals]]\n"
            'name = "door-1"\nlocation = "DOCK-1"\nreader = "zebra-mqtt"\n'
            f'broker = "{broker.url}"\ntopic = "{TOPIC}"\n'
            f'direction = "in"\nmin_reads = 1\nquiet_s = {QUIET_S}\ncycle_s = 1.0\n'
            "latency_s = 0.02\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> float:
        """Start the agent; returns the wall time its reader came online."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "edge", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_text()[offset:]
            for line in text.splitlines():
                if "reader door-1 online" in line:
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    return stamp.timestamp()
            time.sleep(0.02)
        raise EdgeError(f"the edge's reader did not come online; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def movements(self) -> list[tuple[float, dict[str, Any]]]:
        conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT created_at, payload FROM outbox ORDER BY rowid").fetchall()
        finally:
            conn.close()
        return [(created, json.loads(payload)) for created, payload in rows]

    def count(self) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return 0


def bench_edge(directory: Path, broker: Mosquitto, reads: list[TagRead], tags: int,
               per_message: int = 1) -> tuple[float, float]:
    """(reads/s from reader online to the last movement in the outbox, edge CPU µs per read)."""
    edge = _Edge(directory, broker)
    # The first start makes the persistent session and says what starting costs: the time and
    # CPU from launch to the reader's "online" with nothing queued (imports, outbox, connect).
    startup = edge.start() - edge.started
    assert edge.process is not None
    cpu0 = _cpu_s(edge.process.pid)
    edge.stop()
    _preload(broker, reads, "bench-edge-reader", per_message)
    # A broker sends a session's queue right after CONNACK, before the SUBACK that says
    # "online": the clock starts at launch plus the startup time measured above.
    edge.start()
    online = edge.started + startup
    assert edge.process is not None
    deadline = time.monotonic() + 300
    while edge.count() < tags:
        if time.monotonic() > deadline or edge.process.poll() is not None:
            raise EdgeError(f"edge made {edge.count()} of {tags} movements; see {edge.log}")
        time.sleep(0.01)
    cpu = _cpu_s(edge.process.pid) - cpu0
    last = max(created for created, _ in edge.movements())
    edge.stop()
    return len(reads) / (last - online), cpu / len(reads) * 1e6


def bench_latency(directory: Path, broker: Mosquitto, rate: float, seconds: float,
                  per_tag: int) -> list[float]:
    """Milliseconds from a tag's last read to its movement's commit, reads published live."""
    edge = _Edge(directory, broker)
    edge.start()
    try:
        with ZebraMqttReaderSim(broker.url, TOPIC, client_id="bench-live-reader") as reader:
            serial0 = 500_000_000
            total = int(rate * seconds)
            start = time.monotonic()
            for n in range(total):
                due = start + n / rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                tag = sgtin96_hex("0614141", "812345", serial0 + n // per_tag)
                reader.publish([TagRead("door-1", tag, 1 + n % 2, -55.0, datetime.now(UTC))])
            tags = total // per_tag
            deadline = time.monotonic() + 30
            while edge.count() < tags and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        edge.stop()
    latencies = []
    for created, event in edge.movements():
        last = datetime.fromisoformat(event["read"]["last"]).timestamp()
        latencies.append((created - last) * 1000)
    if len(latencies) < tags:
        raise EdgeError(f"latency run: {len(latencies)} of {tags} movements")
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(*, reads: int = 50_000, per_tag: int = 4, rate: float = 2000.0, seconds: float = 10.0,
        per_message: int = 1) -> dict[str, Any]:
    reads = max(per_tag, reads // per_tag * per_tag)
    tags = reads // per_tag
    start = datetime.now(UTC) - timedelta(seconds=120)
    with tempfile.TemporaryDirectory(prefix="floorsync-readerbench-") as tmp:
        directory = Path(tmp)
        with Mosquitto(directory / "raw-broker") as raw_broker:
            raw = bench_raw(raw_broker, _reads(reads, per_tag, start, 50, 100_000_000),
                            per_message)
        with Mosquitto(directory / "reader-broker") as broker:
            ours, cpu_us = bench_edge(directory / "flood", broker,
                                      _reads(reads, per_tag, start, 50, 200_000_000), tags,
                                      per_message)
        with Mosquitto(directory / "live-broker") as broker:
            latencies = bench_latency(directory / "live", broker, rate, seconds, per_tag)
    return {
        "reads": reads,
        "reads_per_message": per_message,
        "movements": tags,
        "edge_reads_per_s": round(ours),
        "raw_paho_reads_per_s": round(raw),
        "ratio": round(ours / raw, 3),
        "edge_cpu_us_per_read": round(cpu_us, 1),
        "paced_reads_per_s": rate,
        "quiet_s": QUIET_S,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def main(as_json: bool = False, **kwargs: Any) -> int:
    result = run(**kwargs)
    if as_json:
        print(json.dumps(result))
        return 0
    raw, per = result["raw_paho_reads_per_s"], result["reads_per_message"]
    print(f"raw paho subscriber, QoS 1, {per} read(s)/message: {raw:>9,} reads/s")
    print(f"edge: reader broker -> decode -> journal -> door -> outbox: "
          f"{result['edge_reads_per_s']:>9,} reads/s (x{result['ratio']} of raw paho; "
          f"{result['edge_cpu_us_per_read']} us of edge CPU per read; "
          f"{result['movements']:,} movements)")
    print(f"latency at {result['paced_reads_per_s']:g} reads/s, last read -> movement on disk "
          f"(quiet_s {QUIET_S}): p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"max {result['max_ms']} ms")
    return 0
