"""Orders at size, beside raw SQLite doing the least the same work needs, in the same run
(``python -m floorsync.server.orderbench [--on-hand N] [--per-item N] [--lines N]``).

A ledger with ``on_hand`` stock lines (default 1,000,000): ``per_item`` lines an item (default
10: a pick face and reserves; 50 is the ledger bench's layout, the worst case for allocation, as
every line of an item is a candidate), 1-100 units each, every item in master data (SKU and
GTIN). Then:

- **accept**: a ``lines``-line order (default 10,000; distinct items, 1-50 units) from its JSON
  text to the committed order with its lines allocated and its view read back
  (``orders.accept``); baseline: the same number of rows inserted raw in one transaction.
- **allocate**: another order of as many lines, its lines already stored, allocated alone
  (``allocation.allocate`` and the commit) while the first order's reservations stand;
  baseline: a raw join of the demanded items against the stock table (every candidate line read
  once) and as many rows written, in one transaction.
- **apply rate with the order hook**: 500-event put-away batches through ``Store.apply_batch``
  without the hook and with it (no order of these items, and then with open orders at the site:
  the two orders above), taking turns on the same file.

Wall-clock seconds, and this process's CPU seconds beside them (on a shared machine the wall
clock also counts others' work).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from floorsync.edge import wire
from floorsync.server import allocation, picking
from floorsync.server import orders as od
from floorsync.server.allocation import Demand
from floorsync.server.db import WAL_CHECKPOINT_PAGES
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.ledger import AppliedBatch, BatchHook, Store
from floorsync.server.masterdata import MasterData

SITE = "bench"
BINS = 50
WARM_UP = 4  # batches applied before the apply rates are timed


def _gtins(count: int) -> list[str]:
    bodies = (f"1{i:012d}" for i in range(1, count + 1))
    return [b + str(gs1_check_digit(b)) for b in bodies]


def _build(path: Path, on_hand: int, per_item: int, rng: random.Random) -> list[str]:
    """Master data for every item, then the stock lines written raw (fast, and the same rows
    the ledger would hold)."""
    items = _gtins(max(1, on_hand // per_item))
    with Store(path) as store:
        md = MasterData(store)
        for first in range(0, len(items), 50_000):
            md.import_items("sku,gtins\n" + "".join(
                f"SKU-{g},{g}\n" for g in items[first:first + 50_000]))
        md.import_locations("site,code,kind,parent\n" f"{SITE},{SITE},site,\n" + "".join(
            f"{SITE},B-{n:02d},bin,{SITE}\n" for n in range(BINS)))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO stock (site, item, location, lot, quantity) VALUES (?, ?, ?, '', ?)",
        ((SITE, items[n // per_item], f"B-{n % per_item % BINS:02d}", rng.randint(1, 100))
         for n in range(len(items) * per_item)))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return items


def _document(ident: str, skus: list[str], rng: random.Random) -> bytes:
    return json.dumps({
        "id": ident, "site": SITE, "ship_to": "bench", "priority": 5, "due": "2026-12-01",
        "lines": [{"line": n, "item": sku, "qty": rng.randint(1, 50)}
                  for n, sku in enumerate(skus, start=1)]}).encode()


def _raw_insert(path: Path, rows: int) -> float:
    """Seconds to insert ``rows`` order-line-like rows raw, one transaction, as the ledger runs."""
    conn = _raw(path)
    conn.execute("CREATE TABLE IF NOT EXISTS raw_lines (order_id TEXT, line INTEGER, item TEXT,"
                 " qty REAL, PRIMARY KEY (order_id, line))")
    data = [("RAW", n, f"SKU-{n}", 1.0) for n in range(rows)]
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO raw_lines VALUES (?, ?, ?, ?)", data)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.execute("DROP TABLE raw_lines")
    conn.close()
    return elapsed


def _raw_candidates(path: Path, gtins: list[str]) -> tuple[float, int]:
    """Seconds to read every stock line of ``gtins`` once (a join on the stock key) and write
    one row per demanded item, one transaction: what any allocation must at least do."""
    conn = _raw(path)
    conn.execute("CREATE TEMP TABLE want (item TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS raw_taken (item TEXT, location TEXT, qty REAL)")
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO temp.want VALUES (?)", [(g,) for g in gtins])
    rows = conn.execute(
        "SELECT w.item, MAX(s.location), SUM(s.quantity) FROM temp.want w CROSS JOIN stock s"
        " ON s.item = w.item AND s.site = ? GROUP BY w.item", (SITE,)).fetchall()
    conn.executemany("INSERT INTO raw_taken VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    (read,) = conn.execute("SELECT COUNT(*) FROM temp.want w CROSS JOIN stock s ON s.item = w.item"
                           " AND s.site = ?", (SITE,)).fetchone()
    conn.execute("DROP TABLE raw_taken")
    conn.close()
    return elapsed, int(read)


def _raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    return conn


def _putaways(items: list[str], rng: random.Random, batches: int, first_seq: int
              ) -> list[wire.Batch]:
    out, seq = [], first_seq
    for _ in range(batches):
        events = []
        for _ in range(500):
            seq += 1
            item = rng.choice(items)
            events.append(wire.Event(
                wire.new_event_id(), seq, wire.local_now(), "putaway", wire.Item(gtin=item), 1,
                f"B-{rng.randrange(BINS):02d}", f"B-{rng.randrange(BINS):02d}", "op-1",
                wire.SourceRead(kind="barcode", raw="]C101" + item, symbology="]C1")))
        out.append(wire.Batch(SITE, "ledger", wire.utc_now(), tuple(events)))
    return out


def _apply_rates(store: Store, batches: list[wire.Batch], hook: BatchHook
                 ) -> tuple[float, float, float]:
    """Movements per second without and with ``hook``, the batches taking turns (without, with,
    with, without, ...), so a machine that slows down mid-run slows both; and the share of the
    hooked batches' time spent in the hook itself (the cost the noise of a shared machine
    cannot hide)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    inside = [0.0]

    def timed(cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
        began = time.perf_counter()
        hook(cur, applied)
        inside[0] += time.perf_counter() - began

    for batch in batches[:WARM_UP]:  # the first batches after opening pay for a cold cache
        store._batch_hooks[:] = [hook]
        store.apply_batch(batch, source="mqtt")
    for n, batch in enumerate(batches[WARM_UP:]):
        with_hook = n % 4 in (1, 2)
        store._batch_hooks[:] = [timed] if with_hook else []
        began = time.perf_counter()
        results = store.apply_batch(batch, source="mqtt")
        times[with_hook].append(time.perf_counter() - began)
        if any(r.status != "applied" for r in results):
            raise RuntimeError(f"a put-away batch did not apply: {results[:3]}")
    store._batch_hooks[:] = [hook]
    per_batch = 500 * 2  # a put-away is two ledger rows
    return (per_batch * len(times[False]) / sum(times[False]),
            per_batch * len(times[True]) / sum(times[True]), inside[0] / sum(times[True]))


def run(on_hand: int = 1_000_000, per_item: int = 10, lines: int = 10_000,
        batches: int = 40) -> dict[str, Any]:
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="floorsync-orders-") as tmp:
        path = Path(tmp) / "central.db"
        items = _build(path, on_hand, per_item, rng)
        picked = rng.sample(items, min(2 * lines, len(items)))
        first, second = picked[:lines], picked[lines:2 * lines] or picked[:lines]
        raw_accept_s = _raw_insert(path, lines)
        raw_alloc_s, candidates = _raw_candidates(path, second)
        with Store(path) as store:
            hook = picking.OrderHook(store)
            bare = _putaways(items, rng, batches + WARM_UP, 0)
            no_orders = _apply_rates(store, bare, hook)

            body = _document("BENCH-1", [f"SKU-{g}" for g in first], rng)
            began, cpu = time.perf_counter(), time.process_time()
            view, created = od.accept(store, json.loads(body))
            accept_s, accept_cpu = time.perf_counter() - began, time.process_time() - cpu
            assert created and len(view.lines) == lines

            doc = json.loads(_document("BENCH-2", [f"SKU-{g}" for g in second], rng))
            now = od.now_text()
            with store._transaction() as cur:  # stored, not yet allocated
                cur.execute("INSERT INTO orders (id, site, ship_to, priority, due, digest,"
                            " received_at, updated_at) VALUES ('BENCH-2', ?, 'bench', 5,"
                            " '2026-12-02', '-', ?, ?)", (SITE, now, now))
                cur.executemany(
                    "INSERT INTO order_lines (order_id, line, item, sku, lot, qty)"
                    " VALUES ('BENCH-2', ?, ?, ?, '', ?)",
                    [(ln["line"], ln["item"], ln["item"], ln["qty"]) for ln in doc["lines"]])
            demands = [Demand("BENCH-2", ln["line"], SITE, ln["item"], "", float(ln["qty"]))
                       for ln in doc["lines"]]
            began, cpu = time.perf_counter(), time.process_time()
            with store._transaction() as cur:
                outcomes = allocation.allocate(cur, demands, now)
            allocate_s, allocate_cpu = time.perf_counter() - began, time.process_time() - cpu
            allocated = sum(o.allocated for o in outcomes)
            with_orders = _apply_rates(store, _putaways(items, rng, batches + WARM_UP, 10**6),
                                       hook)
            (over,) = store._query(
                "SELECT COUNT(*) FROM (SELECT a.item FROM order_allocations a JOIN stock s"
                " ON s.item = a.item AND s.site = a.site AND s.location = a.location"
                " AND s.lot = a.lot WHERE a.qty > 0 GROUP BY a.item, a.site, a.location, a.lot"
                " HAVING SUM(a.qty) > MAX(s.quantity) + 1e-9)")[0]
    return {
        "on_hand_rows": on_hand,
        "lines_per_item": per_item,
        "order_lines": lines,
        "accept_s": accept_s,
        "accept_cpu_s": accept_cpu,
        "raw_insert_s": raw_accept_s,
        "accept_ratio": accept_s / raw_accept_s,
        "accept_allocated": sum(ln.allocated for ln in view.lines),
        "accept_backordered": sum(ln.backordered for ln in view.lines),
        "allocate_s": allocate_s,
        "allocate_cpu_s": allocate_cpu,
        "raw_candidates_s": raw_alloc_s,
        "candidate_stock_lines": candidates,
        "allocate_ratio": allocate_s / raw_alloc_s,
        "allocate_allocated": allocated,
        "allocate_short_lines": sum(1 for o in outcomes if o.short),
        "over_allocated_lines": over,
        "apply_movements_per_s_without_hook": no_orders[0],
        "apply_movements_per_s_with_hook": no_orders[1],
        "apply_hook_ratio": no_orders[1] / no_orders[0],
        "apply_hook_share": no_orders[2],
        "apply_with_open_orders_without_hook": with_orders[0],
        "apply_with_open_orders_with_hook": with_orders[1],
        "apply_open_orders_ratio": with_orders[1] / with_orders[0],
        "apply_open_orders_hook_share": with_orders[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--on-hand", type=int, default=1_000_000)
    parser.add_argument("--per-item", type=int, default=10)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = [run(args.on_hand, args.per_item, args.lines, args.batches)
               for _ in range(args.runs)]
    for result in results:
        print(json.dumps(result))
    if len(results) > 1:
        print(json.dumps({key: statistics.median(r[key] for r in results)
                          for key in results[0]}, indent=2))


if __name__ == "__main__":
    main()
