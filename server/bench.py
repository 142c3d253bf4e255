"""``floorsync bench ledger``: the central ledger at size, beside raw upserts of the same engine.

A ledger database with ``on_hand`` stock lines (default 1,000,000), then 500-event put-away
batches applied through the real ``Store.apply_batch`` (events, two ledger rows each, stock
upserts, one transaction and fsync per batch). The batches are made before the clock starts.
Then ``Store.stock(item=...)`` latency for one item in-process (the query
``GET /api/v1/stock?item=`` runs), and the same lookup over real HTTP: the app from
``server.app.create_app`` under uvicorn on a free 127.0.0.1 port in a background thread, one
keep-alive client sending a read-scope bearer token, every answer checked (200 and a non-empty
list). ``GET /api/v1/health`` is timed in the same run, interleaved with the stock lookups, as
the floor of HTTP and framework (it runs ``SELECT 1``). Client and server share this process,
so the HTTP numbers include a little GIL handover.

SQLite (the default): a file in a temporary directory; the baseline is raw SQLite upserts of
stock rows, 500 per commit. PostgreSQL (``db="postgresql://..."``, ``--db``): the bench creates
its own database on that server (``floorsync_bench_<random>``; the URL's database is only where
it says CREATE/DROP DATABASE), loads the stock lines with COPY, and drops it after, whatever
happened. The baseline there is raw psycopg upserts (INSERT ... ON CONFLICT DO UPDATE) of the
very stock rows the batches' movements touch, 500 per transaction, into a copy of the stock
table in the same database, in four ways (one execute per row, a pipelined ``executemany``,
COPY into a temp table + INSERT ... SELECT, one INSERT of ``unnest``-ed arrays); the fastest is
the baseline and is named. After the run the ledger is checked exactly (movement rows, stock
total, every touched line equal to its start plus its movements).

Part of the composition root: it imports the server (and uvicorn), lazily, so it needs the
server extra (and the postgresql extra for a URL).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import uvicorn

from floorsync.edge import wire
from floorsync.server import pg
from floorsync.server.app import create_app
from floorsync.server.db import WAL_CHECKPOINT_PAGES
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from floorsync.server.settings import Settings

BENCH_TOKEN = "bench-read-token"
HTTP_WARMUP = 50
BINS = 50
START_QTY = 10
RAW_PER_TX = 500
PG_PREFIX = "floorsync_bench_"


def run(on_hand: int = 1_000_000, batches: int = 40, lookups: int = 500,
        db: str | None = None) -> dict[str, Any]:
    """The bench on SQLite (``db`` None) or on the PostgreSQL server of a ``postgresql://``."""
    if db is not None:
        if not pg.is_url(db):
            raise ValueError("db is a postgresql:// URL (SQLite runs in a temporary directory)")
        return _run_pg(db, on_hand, batches, lookups)
    rng = random.Random(7)
    items = _items(on_hand)
    work = _batches(items, batches, rng)
    with tempfile.TemporaryDirectory(prefix="floorsync-ledger-") as tmp:
        path = Path(tmp) / "central.db"
        with Store(path) as store:  # master data knows every item and bin: the checks run
            _master_data(store, items)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO stock (site, item, location, lot, quantity)"
            f" VALUES ('bench', ?, ?, '', {START_QTY})", _stock_lines(items, on_hand))
        conn.execute("COMMIT")
        conn.close()
        with Store(path) as store:
            applied, apply_s = _apply(store, work)
            (raised,) = store._query("SELECT COUNT(*) FROM exceptions")[0]
            latencies = _lookups(store, items, rng, lookups)
            with _serving(store) as port:
                health_ms, stock_http_ms = _http_latencies(port, items, rng, lookups)
        raw_rate = _raw_upserts(Path(tmp) / "raw.db", items, on_hand, batches * 500 * 2)
    movements = applied * 2  # a put-away is two ledger rows
    return {
        "on_hand_rows": on_hand,
        "events_applied": applied,
        "movements_per_s": movements / apply_s,
        "raw_sqlite_upserts_per_s": raw_rate,
        "ratio": (movements / apply_s) / raw_rate,
        "exceptions_raised": raised,
        **_latency_figures(latencies, stock_http_ms, health_ms),
    }


def _items(on_hand: int) -> list[str]:
    bodies = (f"{i:013d}" for i in range(1, on_hand // BINS + 1))
    return [b + str(gs1_check_digit(b)) for b in bodies]  # GTIN-14s, 50 bins each


def _stock_lines(items: list[str], on_hand: int) -> Iterator[tuple[str, str]]:
    return ((items[n // BINS], f"B-{n % BINS:02d}") for n in range(on_hand))


def _master_data(store: Store, items: list[str]) -> None:
    md = MasterData(store)
    for first in range(0, len(items), 50_000):
        md.import_items("sku,gtins\n" + "".join(
            f"SKU-{g},{g}\n" for g in items[first:first + 50_000]))
    md.import_locations("site,code,kind,parent\nbench,bench,site,\n" + "".join(
        f"bench,B-{n:02d},bin,bench\n" for n in range(BINS)))


def _batches(items: list[str], batches: int, rng: random.Random) -> list[wire.Batch]:
    """500 put-aways each, random item, from one random bin to another (made off the clock)."""
    out, seq = [], 0
    for _ in range(batches):
        events = []
        for _ in range(500):
            seq += 1
            item = rng.choice(items)
            events.append(wire.Event(
                wire.new_event_id(), seq, wire.local_now(), "putaway",
                wire.Item(gtin=item), 1, f"B-{rng.randrange(BINS):02d}",
                f"B-{rng.randrange(BINS):02d}", "op-1",
                wire.SourceRead(kind="barcode", raw="]C101" + item, symbology="]C1")))
        out.append(wire.Batch("bench", "ledger", wire.utc_now(), tuple(events)))
    return out


def _apply(store: Store, work: list[wire.Batch]) -> tuple[int, float]:
    applied, began = 0, time.perf_counter()
    for batch in work:
        applied += sum(r.status == "applied" for r in store.apply_batch(batch, source="mqtt"))
    return applied, time.perf_counter() - began


def _lookups(store: Store, items: list[str], rng: random.Random, lookups: int) -> list[float]:
    latencies = []
    for _ in range(lookups):
        item = rng.choice(items)
        start = time.perf_counter()
        store.stock(item=item)
        latencies.append((time.perf_counter() - start) * 1000)
    return sorted(latencies)


def _latency_figures(latencies: list[float], stock_http_ms: list[float],
                     health_ms: list[float]) -> dict[str, float]:
    return {
        "stock_one_item_p50_ms": statistics.median(latencies),
        "stock_one_item_p99_ms": latencies[int(0.99 * len(latencies))],
        "stock_http_p50_ms": statistics.median(stock_http_ms),
        "stock_http_p99_ms": stock_http_ms[int(0.99 * len(stock_http_ms))],
        "health_http_p50_ms": statistics.median(health_ms),
        "health_http_p99_ms": health_ms[int(0.99 * len(health_ms))],
    }


# --- PostgreSQL ---------------------------------------------------------------------------


def _run_pg(url: str, on_hand: int, batches: int, lookups: int) -> dict[str, Any]:
    rng = random.Random(7)
    items = _items(on_hand)
    work = _batches(items, batches, rng)
    rows = [(str(e.item and e.item.gtin), str(loc), q) for b in work for e in b.events
            for loc, q in ((e.from_, -1.0), (e.to, 1.0))]  # the very lines the batches move
    with scratch_database(url) as bench_url:
        with Store(bench_url) as store:
            _master_data(store, items)
        with pg.connect(bench_url) as conn:
            _copy_stock(conn, items, on_hand)
            conn.execute("CREATE TABLE raw_stock (LIKE stock INCLUDING ALL)")
            [(options,)] = conn.execute(  # stock's fillfactor too (LIKE leaves it)
                "SELECT reloptions FROM pg_class WHERE oid = 'stock'::regclass").fetchall()
            if options:
                conn.execute(f"ALTER TABLE raw_stock SET ({', '.join(options)})")
            conn.execute("INSERT INTO raw_stock SELECT * FROM stock")
            conn.execute("VACUUM (ANALYZE) stock, raw_stock")
            conn.execute("CHECKPOINT")
        with Store(bench_url) as store:
            load_before = os.getloadavg()[0]  # this machine's other work shows in the rate
            applied, apply_s = _apply(store, work)
            load_after = os.getloadavg()[0]
            (raised,) = store._query("SELECT COUNT(*) FROM exceptions")[0]
            latencies = _lookups(store, items, rng, lookups)
            with _serving(store) as port:
                health_ms, stock_http_ms = _http_latencies(port, items, rng, lookups)
        with pg.connect(bench_url) as conn:
            exact = _pg_ledger_state(conn, on_hand)
            conn.execute("CHECKPOINT")
            raw = {name: _pg_raw(conn, way, rows) for name, way in RAW_WAYS.items()}
    best = max(raw, key=raw.__getitem__)
    movements = applied * 2
    return {
        "engine": "postgresql",
        "on_hand_rows": on_hand,
        "events_applied": applied,
        "movements_per_s": movements / apply_s,
        "load_1m_before": load_before,
        "load_1m_after": load_after,
        "baseline": best,
        "raw_pg_upserts_per_s": raw[best],
        "ratio": (movements / apply_s) / raw[best],
        **{f"raw_{name}_per_s": rate for name, rate in raw.items()},
        "exceptions_raised": raised,
        **exact,
        **_latency_figures(latencies, stock_http_ms, health_ms),
    }


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new database on the server of ``url`` (its URL); dropped after, whatever connects.

    Made as deploy/multisite/postgresql/create.sql makes floorsync's: text compared by bytes
    (``LC_COLLATE 'C'``, SQLite's order too). Under a libc locale every comparison in the
    text-keyed indexes (stock's line, the events' ids) goes through strcoll: ~20 % more
    PostgreSQL CPU a movement at 1M stock lines, even under C.UTF-8, which orders the same."""
    from psycopg import sql

    name = PG_PREFIX + uuid.uuid4().hex[:12]
    with pg.connect(url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0"
                              " LC_COLLATE 'C'").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(url)._replace(path="/" + name))
    finally:
        with pg.connect(url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _copy_stock(conn: Any, items: list[str], on_hand: int) -> None:
    """The stock lines in by COPY, 50,000 rows a chunk of text."""
    with conn.cursor().copy(
            "COPY stock (site, item, location, lot, quantity) FROM STDIN") as copy:
        chunk: list[str] = []
        for item, location in _stock_lines(items, on_hand):
            chunk.append(f"bench\t{item}\t{location}\t\t{START_QTY}\n")
            if len(chunk) == 50_000:
                copy.write("".join(chunk))
                chunk.clear()
        copy.write("".join(chunk))


def _pg_ledger_state(conn: Any, on_hand: int) -> dict[str, Any]:
    """The ledger after the run, exactly: movement rows, stock total, and stock lines that are
    not their start plus their movements (0 when every movement reached stock once)."""
    (movements,) = conn.execute("SELECT COUNT(*) FROM movements").fetchone()
    (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    (orphans,) = conn.execute(  # PostgreSQL keeps no foreign key here (migration 0015)
        "SELECT COUNT(*) FROM movements m WHERE NOT EXISTS"
        " (SELECT 1 FROM events e WHERE e.id = m.event_id)").fetchone()
    stock_lines, total = conn.execute("SELECT COUNT(*), SUM(quantity) FROM stock").fetchone()
    (off,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT item, location, lot, SUM(qty) AS moved FROM movements"
        " WHERE site = 'bench' GROUP BY item, location, lot) m JOIN stock s"
        " ON (s.item, s.site, s.location, s.lot) = (m.item, 'bench', m.location, m.lot)"
        f" WHERE s.quantity <> {START_QTY} + m.moved").fetchone()
    return {"ledger_events": events, "ledger_movements": movements,
            "ledger_movements_without_event": orphans,
            "ledger_stock_lines": stock_lines, "ledger_stock_total": float(total),
            "ledger_lines_off": off, "ledger_stock_expected": float(on_hand * START_QTY)}


_UPSERT = ("INSERT INTO raw_stock (site, item, location, lot, quantity)"
           " VALUES ('bench', %s, %s, '', %s) ON CONFLICT (item, site, location, lot)"
           " DO UPDATE SET quantity = raw_stock.quantity + excluded.quantity")
_FROM_TEMP = ("INSERT INTO raw_stock (site, item, location, lot, quantity)"
              " SELECT 'bench', item, location, '', SUM(qty) FROM raw_in GROUP BY item, location"
              " ON CONFLICT (item, site, location, lot)"
              " DO UPDATE SET quantity = raw_stock.quantity + excluded.quantity")
_UNNEST = ("INSERT INTO raw_stock (site, item, location, lot, quantity)"
           " SELECT 'bench', item, location, '', SUM(qty)"
           " FROM unnest(%s::text[], %s::text[], %s::float8[]) AS r (item, location, qty)"
           " GROUP BY item, location ON CONFLICT (item, site, location, lot)"
           " DO UPDATE SET quantity = raw_stock.quantity + excluded.quantity")

Rows = list[tuple[str, str, float]]


def _raw_execute(cur: Any, rows: Rows) -> None:
    for row in rows:
        cur.execute(_UPSERT, row)


def _raw_executemany(cur: Any, rows: Rows) -> None:
    cur.executemany(_UPSERT, rows)  # psycopg 3 pipelines it: one round trip for the lot


def _raw_copy(cur: Any, rows: Rows) -> None:
    # a key twice in one INSERT ... ON CONFLICT DO UPDATE is an error: summed per key first
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS raw_in (item TEXT, location TEXT,"
                " qty DOUBLE PRECISION) ON COMMIT DELETE ROWS")
    with cur.copy("COPY raw_in (item, location, qty) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(_FROM_TEMP)


def _raw_unnest(cur: Any, rows: Rows) -> None:
    items, locations, qtys = zip(*rows, strict=True)
    cur.execute(_UNNEST, (list(items), list(locations), list(qtys)))


RAW_WAYS: dict[str, Callable[[Any, Rows], None]] = {
    "execute": _raw_execute, "executemany": _raw_executemany, "copy_temp": _raw_copy,
    "unnest": _raw_unnest}


def _pg_raw(conn: Any, way: Callable[[Any, Rows], None], rows: Rows) -> float:
    """Upserts a second, RAW_PER_TX to a transaction, ``way`` each."""
    began = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(0, len(rows), RAW_PER_TX):
            with conn.transaction():
                way(cur, rows[i:i + RAW_PER_TX])
    return len(rows) / (time.perf_counter() - began)


# --- HTTP ---------------------------------------------------------------------------------
@contextmanager
def _serving(store: Store, path: Path | None = None) -> Iterator[int]:
    """The real app under uvicorn in a background thread; yields its port once health answers.

    uvicorn binds 127.0.0.1 port 0 itself, as ``floorsync server`` binds host and port: a socket
    made here and handed over as ``sockets=`` has proto 0, and asyncio then leaves TCP_NODELAY
    off on the accepted connections, so every keep-alive answer (head and body are two writes)
    waits ~40 ms for the client's delayed ACK. The app is given the open store (a
    PostgreSQL store's ``path`` is no file; the settings' database is not opened).
    """
    settings = Settings(database=path or store.path, broker=None, http_port=0,
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
