"""The dock path under faults, with the real parts: a reader-side mosquitto (or the edge's HTTP
receiver), the central service and the edge agent as separate processes.

The promise under test, "durable before acknowledged": 20,000 reads at 500/s while the edge is
SIGKILLed mid-stream and started again 5 s later (or the reader-side broker restarts): every tag
that crossed the door has exactly one movement in the ledger.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.simreader import ZebraMqttReaderSim, post_impinj
from floorsync.devices.sim import sgtin96_hex
from floorsync.localbroker import Mosquitto, free_port
from tests.e2e.conftest import CentralProcess, wait_until

pytestmark = pytest.mark.slow

READS = 20_000
RATE = 500.0  # reads per second
PER_TAG = 4  # two reads on the outside antenna, two inside: one crossing per tag
KILL_AFTER = 0.4  # of the stream
DOWN_S = 5.0


def crossings(site: str) -> Iterator[list[TagRead]]:
    """Tags crossing one after another, each read PER_TAG times, stamped as they are read."""
    serial = int(time.time() * 1000) % 10**9
    for n in range(READS // PER_TAG):
        epc = sgtin96_hex("0614141", "812345", serial + n)
        yield [TagRead("door-1", epc, 1 if k < PER_TAG // 2 else 2, -55.0 + k, datetime.now(UTC))
               for k in range(PER_TAG)]


def edge_config(tmp_path: Path, site: str, central_url: str, reader: str) -> Path:
    config = tmp_path / "dock.toml"
    config.write_text(
        f'site = "{site}"\ndevice = "dock-1"\n'
        f'[outbox]\npath = "{tmp_path / "dock-outbox.db"}"\n'
        f'[sync]\nbroker = "{central_url}"\n'
        "[[portals]]\n"
        'name = "door-1"\nlocation = "DOCK-1"\n'
        'direction = "in"\nmin_reads = 1\nquiet_s = 0.05\ncycle_s = 1.0\nlatency_s = 0.05\n'
        + reader
    )
    return config


class EdgeProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EdgeProcess:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "edge", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        wait_until(lambda: "door-1 online" in self.log.read_text()[offset:], 20,
                   "the door's reader to come online")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def receives(database: Path) -> dict[str, int]:
    conn = sqlite3.connect(database)
    try:
        return dict(conn.execute(
            "SELECT tag, COUNT(*) FROM events WHERE type = 'receive' GROUP BY tag").fetchall())
    finally:
        conn.close()


def assert_each_crossed_once(database: Path, tags: list[str]) -> None:
    wait_until(lambda: len(receives(database)) >= len(tags), 90,
               "every crossing to reach the ledger")
    time.sleep(1.0)  # anything doubled would arrive now
    got = receives(database)
    lost = [t for t in tags if t not in got]
    doubled = {t: n for t, n in got.items() if n != 1}
    unknown = set(got) - set(tags)
    assert (len(lost), len(doubled), len(unknown)) == (0, 0, 0), (
        f"lost {len(lost)} (e.g. {lost[:3]}), doubled {len(doubled)}, unknown {len(unknown)}")


@pytest.fixture
def central(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[CentralProcess]:
    process = CentralProcess(tmp_path / "central.db", mosquitto.url).start()
    try:
        yield process
    finally:
        process.stop()


def stream_over_mqtt(reader: ZebraMqttReaderSim, site: str, fault: threading.Event,
                     tags: list[str]) -> None:
    """Publish every crossing at RATE; set ``fault`` once KILL_AFTER of the stream is out."""
    start, sent = time.monotonic(), 0
    for reads in crossings(site):
        tags.append(reads[0].epc)
        for read in reads:
            due = start + sent / RATE
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            reader.publish([read])
            sent += 1
        if sent >= READS * KILL_AFTER:
            fault.set()


def run_over_mqtt(tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str,
                  fault: Callable[[EdgeProcess, Mosquitto], None]) -> None:
    """A Zebra-style reader streams every crossing through its own broker to the edge; once
    KILL_AFTER of the stream is out, ``fault(edge, reader_broker)``; then every crossing must
    be in the ledger once."""
    with Mosquitto(tmp_path / "reader-broker") as reader_broker:
        topic = f"zebra/{site}/door-1"
        edge = EdgeProcess(edge_config(tmp_path, site, mosquitto.url, (
            f'reader = "zebra-mqtt"\nbroker = "{reader_broker.url}"\ntopic = "{topic}"\n'))).start()
        with ZebraMqttReaderSim(reader_broker.url, topic, client_id=f"zebra-{site}") as reader:
            tags: list[str] = []
            midway = threading.Event()
            stream = threading.Thread(target=stream_over_mqtt,
                                      args=(reader, site, midway, tags))
            stream.start()
            assert midway.wait(60)
            fault(edge, reader_broker)
            stream.join()
            assert reader.wait_acked(60)
            try:
                assert_each_crossed_once(central.database, tags)
            finally:
                edge.stop()
        assert reader.published == READS


def test_edge_killed_mid_stream_loses_no_network_reader_read(
    tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str
) -> None:
    def kill_and_restart(edge: EdgeProcess, _broker: Mosquitto) -> None:
        edge.kill()  # mid-stream: reads in the door, in the journal, on the wire
        time.sleep(DOWN_S)  # the reader goes on; its broker queues for the edge's session
        edge.start()

    run_over_mqtt(tmp_path, mosquitto, central, site, kill_and_restart)


def test_reader_broker_restarted_mid_stream_loses_no_read(
    tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str
) -> None:
    def restart_broker(_edge: EdgeProcess, broker: Mosquitto) -> None:
        broker.restart()  # persistence on: sessions and queued reads survive

    run_over_mqtt(tmp_path, mosquitto, central, site, restart_broker)


def test_edge_killed_mid_stream_loses_no_http_reader_read(
    tmp_path: Path, mosquitto: Mosquitto, central: CentralProcess, site: str
) -> None:
    port = free_port()
    edge = EdgeProcess(edge_config(tmp_path, site, mosquitto.url, (
        f'reader = "impinj-http"\nhost = "127.0.0.1"\nhttp_port = {port}\n'))).start()
    url = f"http://127.0.0.1:{port}/"
    tags: list[str] = []
    fault = threading.Event()
    attempts = [0]

    def stream() -> None:  # a reader posting batches of 20 reads, retrying until a 2xx
        start, sent, batch = time.monotonic(), 0, []
        for reads in crossings(site):
            tags.append(reads[0].epc)
            batch.extend(reads)
            if len(batch) < 20:
                continue
            if (wait := start + sent / RATE - time.monotonic()) > 0:
                time.sleep(wait)
            attempts[0] += post_impinj(url, batch, timeout=1.0)
            sent += len(batch)
            batch = []
            if sent >= READS * KILL_AFTER:
                fault.set()
        if batch:
            attempts[0] += post_impinj(url, batch)

    thread = threading.Thread(target=stream)
    thread.start()
    assert fault.wait(60)
    edge.kill()
    time.sleep(DOWN_S)  # the reader retries: connection refused, again and again
    edge.start()
    thread.join()
    try:
        assert_each_crossed_once(central.database, tags)
    finally:
        edge.stop()
    assert attempts[0] > READS // 20  # it did have to retry
