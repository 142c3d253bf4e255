"""``floorsync bench ledger``: the central ledger at size, beside raw SQLite upserts.

A ledger database with ``on_hand`` stock lines (default 1,000,000), then 500-event put-away
batches applied through the real ``Store.apply_batch`` (events, two ledger rows each, stock
upserts, one transaction and fsync per batch); the baseline is raw SQLite upserts of the same
stock rows, 500 per commit, in the same run. Then ``Store.stock(item=...)`` latency for one
item (what ``GET /api/v1/stock?item=`` runs). Part of the composition root: it imports the
server's store, so it needs the server extra.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from edge import wire


def run(on_hand: int = 1_000_000, batches: int = 40, lookups: int = 500) -> dict[str, Any]:
    from server.ledger import Store

    rng = random.Random(7)
    items = [f"{i:014d}" for i in range(1, on_hand // 50 + 1)]  # GTIN-like keys, 50 bins each
    with tempfile.TemporaryDirectory(prefix="floorsync-ledger-") as tmp:
        path = Path(tmp) / "central.db"
        with Store(path) as store:
            store.ping()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO stock (item, location, lot, quantity) VALUES (?, ?, '', 10)",
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
            latencies = []
            for _ in range(lookups):
                item = rng.choice(items)
                start = time.perf_counter()
                store.stock(item=item)
                latencies.append((time.perf_counter() - start) * 1000)
        raw_rate = _raw_upserts(Path(tmp) / "raw.db", items, on_hand, batches * 500 * 2)
    latencies.sort()
    movements = applied * 2  # a put-away is two ledger rows
    return {
        "on_hand_rows": on_hand,
        "events_applied": applied,
        "movements_per_s": movements / apply_s,
        "raw_sqlite_upserts_per_s": raw_rate,
        "ratio": (movements / apply_s) / raw_rate,
        "stock_one_item_p50_ms": statistics.median(latencies),
        "stock_one_item_p99_ms": latencies[int(0.99 * len(latencies))],
    }


def _raw_upserts(path: Path, items: list[str], on_hand: int, count: int) -> float:
    """Stock upserts alone into a table of the same size, 500 per commit, WAL and
    synchronous=FULL as the ledger runs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE stock (item TEXT, location TEXT, lot TEXT, quantity REAL,"
                 " PRIMARY KEY (item, location, lot))")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO stock VALUES (?, ?, '', 10)",
                     ((items[n // 50], f"B-{n % 50:02d}") for n in range(on_hand)))
    conn.execute("COMMIT")
    rng = random.Random(3)
    rows = [(rng.choice(items), f"B-{rng.randrange(50):02d}", "", 1.0) for _ in range(count)]
    began = time.perf_counter()
    for i in range(0, count, 500):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO stock VALUES (?, ?, ?, ?) ON CONFLICT (item, location, lot)"
            " DO UPDATE SET quantity = stock.quantity + excluded.quantity", rows[i:i + 500])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return count / elapsed
