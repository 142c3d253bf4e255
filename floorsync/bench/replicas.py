"""Central replicas on PostgreSQL through NATS: events/s with 1 and 2 replicas, and where a
replica's CPU goes (decode, apply, ack), measured on this machine.

Per run: a nats-server of its own (JetStream + MQTT on free loopback ports, its own store), a
PostgreSQL database of its own (created on the server at ``--pg``, migrated, dropped after),
N ``floorsync server --replica`` processes, and a paho publisher (MQTT 3.1.1, QoS 1, 16 in
flight, as an edge) sending every batch (500 unique receive events, ``floorsync.edge.wire``)
of four devices. The clock runs from the first publish to the last event in PostgreSQL's
``events``; the replicas' CPU per event comes from their own counters (thread CPU time of
decoding, of applying, of publishing acks and acking), logged when they stop.

    python -m floorsync.bench.replicas [--events 100000] [--replicas 1,2]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.bench.cluster import NatsNode, _touch_mqtt
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 500
DEVICES = 4
SITE = "bench"


def _payloads(total: int) -> list[tuple[str, bytes]]:
    """(topic, batch) for ``total`` unique receive events over DEVICES devices."""
    out: list[tuple[str, bytes]] = []
    now, sent_at = wire.local_now(), wire.utc_now()
    seqs = dict.fromkeys(range(DEVICES), 0)
    for start in range(0, total, BATCH):
        device = (start // BATCH) % DEVICES
        encoded = []
        for n in range(start, min(total, start + BATCH)):
            seqs[device] += 1
            encoded.append(wire.encode_event(wire.Event(
                id=wire.new_event_id(), seq=seqs[device], time=now, type="receive",
                item=wire.Item(gtin="09501101530003", lot=f"L{n % 7}"), qty=1, from_=None,
                to=f"DOCK-{n % 4 + 1}", operator="op-12",
                read=wire.SourceRead(kind="barcode", raw="]C1010950110153000310L1",
                                     symbology="]C1"))))
        name = f"dock-{device + 1}"
        out.append((wire.events_topic(SITE, name),
                    wire.encode_batch_payloads(SITE, name, sent_at, encoded)))
    return out


def _publish(port: int, payloads: Sequence[tuple[str, bytes]]) -> None:
    """Every batch at QoS 1, 16 in flight; returns once the broker PUBACKed them all."""
    done = threading.Event()
    acked = [0]

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-edge-{port}",
                         protocol=mqtt.MQTTv311)
    client.on_publish = on_publish
    client.max_inflight_messages_set(16)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in payloads:
            client.publish(topic, payload, qos=1)
        if not done.wait(600):
            raise EdgeError(f"only {acked[0]} of {len(payloads)} publishes were PUBACKed")
    finally:
        client.disconnect()
        client.loop_stop()


def _count(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def run_one(directory: Path, admin: str, total: int, replicas: int) -> dict[str, Any]:
    import psycopg

    from floorsync.server.ledger import Store

    name = "floorsync_bench_" + uuid.uuid4().hex[:10]
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    node = NatsNode(directory / f"nats-{replicas}", "fs-bench").start()
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        with Store(url):
            pass  # migrated
        _touch_mqtt(node.mqtt_port)
        for i in range(replicas):
            log = directory / f"replica-{replicas}-{i}.log"
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "floorsync.cli", "server", "--replica", node.url,
                     "--db", url], stdout=out, stderr=subprocess.STDOUT)
            processes.append((process, log))
            deadline = time.monotonic() + 60
            while "replica consuming" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise EdgeError(f"replica did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        payloads = _payloads(total)
        start = time.perf_counter()
        publisher = threading.Thread(target=_publish, args=(node.mqtt_port, payloads))
        publisher.start()
        deadline = time.monotonic() + 900
        while _count(url) < total:
            if time.monotonic() > deadline:
                raise EdgeError(f"only {_count(url)} of {total} events applied")
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        publisher.join()
        stats = []
        for process, log in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            lines = [ln for ln in log.read_text().splitlines() if "replica stopped: " in ln]
            stats.append(json.loads(lines[-1].split("replica stopped: ", 1)[1]))
        events = sum(s["events"] for s in stats) or 1

        def per_event_us(key: str) -> float:
            return round(sum(s[key] for s in stats) / events * 1e6, 1)

        return {
            "replicas": replicas, "events": total, "seconds": round(elapsed, 2),
            "events_per_s": round(total / elapsed),
            "cpu_us_per_event": {"decode": per_event_us("decode_cpu_s"),
                                 "apply": per_event_us("apply_cpu_s"),
                                 "ack": per_event_us("ack_cpu_s")},
            "per_replica_events": [s["events"] for s in stats],
            "redelivered": sum(s["redelivered"] for s in stats),
        }
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        node.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(total: int, counts: Sequence[int], admin: str = ADMIN) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="floorsync-replicas-") as tmp:
        for count in counts:
            results["runs"].append(run_one(Path(tmp), admin, total, count))
    base = results["runs"][0]["events_per_s"]
    for one in results["runs"]:
        one["ratio_vs_first"] = round(one["events_per_s"] / base, 2)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--replicas", default="1,2", help="replica counts to run, in order")
    parser.add_argument("--pg", default=ADMIN, help="a PostgreSQL server's maintenance database")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.replicas.split(",")]
    print(json.dumps(run(args.events, counts, args.pg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
