"""What the document-follower tests share: a floor subscriber that keeps every copy it hears with
the time it came, a receipt document of orderkit's items, and a writer in another process."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTProtocolVersion

from floorsync.edge import expected as floor
from floorsync.server.ledger import Store
from tests.server.orderkit import SITE


class Floor:
    """A raw paho client subscribed to a site's documents, as an edge would be."""

    def __init__(self, port: int, site: str = SITE, protocol: str = "5") -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool, float]] = queue.Queue()
        self.seen: list[tuple[str, bytes, bool, float]] = []
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, protocol=(
            MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311))
        self.client.on_connect = lambda c, *a: c.subscribe(floor.docs_filter(site), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        got = (msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
        self.messages.put(got)

    def _drain(self, timeout: float) -> bool:
        try:
            self.seen.append(self.messages.get(timeout=timeout))
        except queue.Empty:
            return False
        return True

    def wait_for(self, topic: str, test: Callable[[bytes], bool], timeout: float = 10.0
                 ) -> float:
        """Until a copy on ``topic`` passes ``test``: the time it came (monotonic)."""
        deadline = time.monotonic() + timeout
        for got in self.seen:
            if got[0] == topic and test(got[1]):
                return got[3]
        while (left := deadline - time.monotonic()) > 0:
            if self._drain(left) and self.seen[-1][0] == topic and test(self.seen[-1][1]):
                return self.seen[-1][3]
        raise AssertionError(f"no copy on {topic} as wanted in {timeout} s; heard "
                             f"{[(t, p[:80]) for t, p, *_ in self.seen[-5:]]}")

    def settle(self, quiet: float = 1.0) -> None:
        """Everything that comes until ``quiet`` seconds pass with nothing."""
        while self._drain(quiet):
            pass

    def versions(self, topic: str) -> list[int | None]:
        """Every copy heard on ``topic`` in order (None: a withdrawal)."""
        return [version(p) for t, p, *_ in self.seen if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def version(payload: bytes) -> int | None:
    return None if not payload else int(floor.decode_expected(payload).version)


def is_version(n: int) -> Callable[[bytes], bool]:
    return lambda p: version(p) == n


def retained(port: int, site: str = SITE, wait: float = 1.0) -> dict[str, bytes]:
    """What a new subscriber gets: the broker's retained documents of ``site``."""
    late = Floor(port, site)
    try:
        late.settle(wait)
        return {t: p for t, p, retain, _ in late.seen if retain}
    finally:
        late.close()


def receipt_doc(ident: str, *lines: tuple[str, float], site: str = SITE) -> dict[str, Any]:
    """A receipt of orderkit's SKUs: ("A", 5)."""
    return {"id": ident, "site": site, "supplier": "ACME", "expected_date": "2026-11-23",
            "location": "DOCK-1",
            "lines": [{"sku": f"SKU-{item}", "qty": qty} for item, qty in lines]}


def db_version(store: Store, table: str, ident: str) -> tuple[str, int]:
    ((status, version),) = store._query(f"SELECT status, version FROM {table} WHERE id = ?",
                                        (ident,))
    return str(status), int(version)


WRITER = """
import json, sys, time
from floorsync.server import orders, picking
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from floorsync.server.settings import database_of

database, action, *args = sys.argv[1:]
with Store(database_of(database)) as store:
    picking.install(store)
    book = book_of(store)
    if action == "order":
        orders.accept(store, json.loads(args[0]))
    elif action == "cancel":
        orders.cancel(store, args[0], "another process", None)
    elif action == "close":
        book.close(args[0], by="another process")
    elif action == "receipt":
        book.accept(json.loads(args[0]))
    print(time.monotonic())  # committed (CLOCK_MONOTONIC: the same clock in every process)
"""


def in_another_process(database: Path | str, action: str, *args: Any) -> float:
    """A document change committed by another process (its own store, no listener of ours);
    when it was committed (``time.monotonic()``)."""
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(database), action,
         *(a if isinstance(a, str) else json.dumps(a) for a in args)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.split()[-1])
