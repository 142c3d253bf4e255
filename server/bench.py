"""``floorsync bench ledger``: the central ledger at size, beside raw SQLite upserts.

A ledger database with ``on_hand`` stock lines (default 1,000,000), then 500-event put-away
batches applied through the real ``Store.apply_batch`` (events, two ledger rows each, stock
upserts, one transaction and fsync per batch); the baseline is raw SQLite upserts of the same
stock rows, 500 per commit, in the same run. Then ``Store.stock(item=...)`` latency for one
item in-process (the query ``GET /api/v1/stock?item=`` runs), and the same lookup over real
HTTP: the app from ``server.app.create_app`` under uvicorn on a free 127.0.0.1 port in a
background thread, one keep-alive client sending a read-scope bearer token, every answer
checked (200 and a non-empty list). ``GET /api/v1/health`` is timed in the same run, interleaved
with the stock lookups, as the floor of HTTP and framework (it runs ``SELECT 1``). Client and
server share this process, so the HTTP numbers include a little GIL handover. Part of the
composition root: it imports the server (and uvicorn), lazily, so it needs the server extra.
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn

from floorsync.edge import wire
from floorsync.server.app import create_app
from floorsync.server.db import WAL_CHECKPOINT_PAGES
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from floorsync.server.settings import Settings

BENCH_TOKEN = "bench-read-token"
HTTP_WARMUP = 50


def run(on_hand: int = 1_000_000, batches: int = 40, lookups: int = 500) -> dict[str, Any]:
    rng = random.Random(7)
    bodies = (f"{i:013d}" for i in range(1, on_hand // 50 + 1))
    items = [b + str(gs1_check_digit(b)) for b in bodies]  # GTIN-14s, 50 bins each
    with tempfile.TemporaryDirectory(prefix="floorsync-ledger-") as tmp:
        path = Path(tmp) / "central.db"
        with Store(path) as store:  # master data knows every item and bin: the checks run
            md = MasterData(store)
            for first in range(0, len(items), 50_000):
                md.import_items("sku,gtins\n" + "".join(
                    f"SKU-{g},{g}\n" for g in items[first:first + 50_000]))
            md.import_locations("site,code,kind,parent\nbench,bench,site,\n" + "".join(
                f"bench,B-{n:02d},bin,bench\n" for n in range(50)))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO stock (site, item, location, lot, quantity)"
            " VALUES ('bench', ?, ?, '', 10)",
            ((items[n // 50], f"B-{n % 50:02d}") for n in range(on_hand)),
        )
        conn.execute("COMMIT")
        conn.close()
        with Store(path) as store:
            seq, applied, began = 0, 0, time.perf_counter()
            for _ in range(batches):
                events = []
                for _ in range(500):
                    seq += 1
                    item = rng.choice(items)
                    events.append(wire.Event(
                        wire.new_event_id(), seq, wire.local_now(), "putaway",
                        wire.Item(gtin=item), 1, f"B-{rng.randrange(50):02d}",
                        f"B-{rng.randrange(50):02d}", "op-1",
                        wire.SourceRead(kind="barcode", raw="]C101" + item, symbology="]C1")))
                batch = wire.Batch("bench", "ledger", wire.utc_now(), tuple(events))
                applied += sum(r.status == "applied" for r in store.apply_batch(batch,
                                                                             source="mqtt"))
            apply_s = time.perf_counter() - began
            (raised,) = store._query("SELECT COUNT(*) FROM exceptions")[0]
            latencies = []
            for _ in range(lookups):
                item = rng.choice(items)
                start = time.perf_counter()
                store.stock(item=item)
                latencies.append((time.perf_counter() - start) * 1000)
            with _serving(store, path) as port:
                health_ms, stock_http_ms = _http_latencies(port, items, rng, lookups)
        raw_rate = _raw_upserts(Path(tmp) / "raw.db", items, on_hand, batches * 500 * 2)
    latencies.sort()
    movements = applied * 2  # a put-away is two ledger rows
    return {
        "on_hand_rows": on_hand,
        "events_applied": applied,
        "movements_per_s": movements / apply_s,
        "raw_sqlite_upserts_per_s": raw_rate,
        "ratio": (movements / apply_s) / raw_rate,
        "exceptions_raised": raised,
        "stock_one_item_p50_ms": statistics.median(latencies),
        "stock_one_item_p99_ms": latencies[int(0.99 * len(latencies))],
        "stock_http_p50_ms": statistics.median(stock_http_ms),
        "stock_http_p99_ms": stock_http_ms[int(0.99 * len(stock_http_ms))],
        "health_http_p50_ms": statistics.median(health_ms),
        "health_http_p99_ms": health_ms[int(0.99 * len(health_ms))],
    }


@contextmanager
def _serving(store: Store, path: Path) -> Iterator[int]:
    """The real app under uvicorn in a background thread; yields its port once health answers.

    uvicorn binds 127.0.0.1 port 0 itself, as ``floorsync server`` binds host and port: a socket
    made here and handed over as ``sockets=`` has proto 0, and asyncio then leaves TCP_NODELAY
    off on the accepted connections, so every keep-alive answer (head and body are two writes)
    waits ~40 ms for the client's delayed ACK.
    """
    settings = Settings(database=path, broker=None, http_port=0,
                        tokens={BENCH_TOKEN: frozenset({"read"})})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="ledgerbench-http", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before serving (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start in 30 s")
            time.sleep(0.02)
        port: int = server.servers[0].sockets[0].getsockname()[1]
        while not _health_ok(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET /api/v1/health on port {port} did not answer in 30 s")
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _health_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/api/v1/health")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _http_latencies(
    port: int, items: list[str], rng: random.Random, lookups: int
) -> tuple[list[float], list[float]]:
    """Sorted milliseconds of ``GET /api/v1/health`` and ``GET /api/v1/stock?item=``, one each
    in turn on one keep-alive connection, after a warm-up; the clock covers request to last
    body byte, the checks (200, a non-empty list of that item's lines) come after it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}", "Accept": "application/json"}

    def get(target: str) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return (time.perf_counter() - start) * 1000, response.status, body

    def stock_target() -> tuple[str, str]:
        item = rng.choice(items)
        return item, "/api/v1/stock?" + urlencode({"item": item})

    health_ms: list[float] = []
    stock_ms: list[float] = []
    try:
        for n in range(HTTP_WARMUP + lookups):
            elapsed, status, body = get("/api/v1/health")
            if status != 200 or json.loads(body).get("database") != "ok":
                raise RuntimeError(f"GET /api/v1/health answered {status}: {body[:200]!r}")
            item, target = stock_target()
            stock_elapsed, status, body = get(target)
            if status != 200:
                raise RuntimeError(f"GET {target} answered {status}: {body[:200]!r}")
            lines = json.loads(body).get("items")
            if not isinstance(lines, list) or not lines or any(
                line.get("item") != item for line in lines
            ):
                raise RuntimeError(f"GET {target} gave no stock lines of {item}: {body[:200]!r}")
            if n >= HTTP_WARMUP:
                health_ms.append(elapsed)
                stock_ms.append(stock_elapsed)
    finally:
        conn.close()
    return sorted(health_ms), sorted(stock_ms)


def _raw_upserts(path: Path, items: list[str], on_hand: int, count: int) -> float:
    """Stock upserts alone into a table of the same shape and size (the ledger's key, WITHOUT
    ROWID), 500 per commit, WAL, synchronous=FULL and checkpoint interval as the ledger runs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")  # as the ledger runs
    conn.execute("CREATE TABLE stock (item TEXT, site TEXT, location TEXT, lot TEXT,"
                 " quantity REAL, PRIMARY KEY (item, site, location, lot)) WITHOUT ROWID")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO stock VALUES (?, 'bench', ?, '', 10)",
                     ((items[n // 50], f"B-{n % 50:02d}") for n in range(on_hand)))
    conn.execute("COMMIT")
    rng = random.Random(3)
    rows = [(rng.choice(items), "bench", f"B-{rng.randrange(50):02d}", "", 1.0)
            for _ in range(count)]
    began = time.perf_counter()
    for i in range(0, count, 500):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO stock VALUES (?, ?, ?, ?, ?) ON CONFLICT (item, site, location, lot)"
            " DO UPDATE SET quantity = stock.quantity + excluded.quantity", rows[i:i + 500])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return count / elapsed
