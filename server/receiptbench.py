"""Receipts at size, beside raw SQLite doing the least the same work needs, in the same run
(``python -m floorsync.server.receiptbench [--lines N] [--items N] [--runs N]``).

Master data of ``items`` items (default 20,000: SKU and GTIN each) and a site with its dock.
Then, for a ``lines``-line receipt (default 10,000; distinct items, a quarter with a lot,
1-50 units):

- **accept**: from the document's JSON text to the committed receipt and its view read back
  (``json.loads`` and ``ReceiptBook.accept``: master data read for every key it names, every
  line checked, one transaction with ``synchronous=FULL``), ``runs`` times with fresh ids;
- **over HTTP**: ``POST /api/v1/receipts`` to the real app under uvicorn on 127.0.0.1 (a
  keep-alive client in this process), request to last body byte, each answer checked (201);
- **baseline**: ``json.loads`` of the same text and its lines inserted raw into a table of the
  same shape, one transaction, the same pragmas (WAL, ``synchronous=FULL``);
- **the hook on the apply path**: 500-event receive batches against the receipt through
  ``Store.apply_batch`` (each batch laid against the whole receipt by the batch hook), beside
  the same batches made against no document, taking turns on the same file.
"""

from __future__ import annotations

import argparse
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

import uvicorn

from floorsync.edge import wire
from floorsync.server.app import create_app
from floorsync.server.db import WAL_CHECKPOINT_PAGES
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from floorsync.server.receipts import book_of
from floorsync.server.settings import Settings

SITE = "bench"
TOKEN = "bench-write-token"
TARGET_S = 1.0


def _gtins(count: int) -> list[str]:
    bodies = (f"2{i:012d}" for i in range(1, count + 1))
    return [b + str(gs1_check_digit(b)) for b in bodies]


def _document(ident: str, gtins: list[str], rng: random.Random) -> str:
    lines = []
    for n, gtin in enumerate(gtins, start=1):
        line: dict[str, Any] = {"line": n, "gtin": gtin, "qty": rng.randint(1, 50)}
        if n % 4 == 0:
            line["lot"] = f"L{rng.randrange(1000):03d}"
        lines.append(line)
    return json.dumps({"id": ident, "site": SITE, "supplier": "Bench Supplies",
                       "expected_date": "2026-11-23", "location": "DOCK-1", "lines": lines})


def _raw(path: Path, text: str) -> float:
    """Seconds to read the JSON and insert its lines raw, one transaction (the floor)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    conn.execute("CREATE TABLE IF NOT EXISTS receipt_lines (receipt_id TEXT, line INTEGER,"
                 " item TEXT, sku TEXT, gtin TEXT, lot TEXT, qty REAL,"
                 " PRIMARY KEY (receipt_id, line))")
    began = time.perf_counter()
    data = json.loads(text)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO receipt_lines VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(data["id"], ln["line"], ln["gtin"], "SKU-" + ln["gtin"], ln["gtin"],
                       ln.get("lot", ""), float(ln["qty"])) for ln in data["lines"]])
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed


@contextmanager
def _serving(store: Store, path: Path) -> Iterator[int]:
    """The real app under uvicorn in a background thread (it binds port 0 itself, so asyncio
    sets TCP_NODELAY on accepted sockets); yields its port once it serves."""
    settings = Settings(database=path, broker=None, http_port=0,
                        tokens={TOKEN: frozenset({"write"})})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="receiptbench-http", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _post(conn: http.client.HTTPConnection, text: str) -> float:
    began = time.perf_counter()
    conn.request("POST", "/api/v1/receipts", body=text.encode(),
                 headers={"Authorization": f"Bearer {TOKEN}",
                          "Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - began
    if response.status != 201:
        raise RuntimeError(f"POST /api/v1/receipts answered {response.status}: {body[:300]!r}")
    return elapsed


def _receives(gtins: list[str], doc: str | None, seq: int, rng: random.Random,
              size: int = 500) -> wire.Batch:
    ref = None if doc is None else wire.DocRef("receipt", doc, "expected")
    events = tuple(
        wire.Event(wire.new_event_id(), seq + n, wire.local_now(), "receive",
                   wire.Item(gtin=rng.choice(gtins)), rng.randint(1, 3), to="DOCK-1", doc=ref)
        for n in range(size))
    return wire.Batch(SITE, "door-1", wire.utc_now(), events)


def run(lines: int = 10_000, items: int = 20_000, runs: int = 5, batches: int = 10
        ) -> dict[str, Any]:
    rng = random.Random(11)
    gtins = _gtins(max(items, lines))
    with tempfile.TemporaryDirectory(prefix="floorsync-receipts-") as tmp:
        path = Path(tmp) / "central.db"
        with Store(path) as store:
            md = MasterData(store)
            for first in range(0, len(gtins), 50_000):
                md.import_items("sku,gtins\n" + "".join(
                    f"SKU-{g},{g}\n" for g in gtins[first:first + 50_000]))
            md.import_locations(f"site,code,kind,parent\n{SITE},{SITE},site,\n"
                                f"{SITE},DOCK-1,bin,{SITE}\n")
            book = book_of(store)
            texts = [_document(f"ASN-{n}", rng.sample(gtins, lines), rng)
                     for n in range(2 * runs + 1)]
            accept_s, accept_cpu_s = [], []
            for text in texts[:runs]:
                began, cpu = time.perf_counter(), time.process_time()
                receipt, created = book.accept(json.loads(text), by="bench")
                accept_s.append(time.perf_counter() - began)
                accept_cpu_s.append(time.process_time() - cpu)
                if not created or len(receipt.lines) != lines:
                    raise RuntimeError("the receipt was not accepted whole")
            with _serving(store, path) as port:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                http_s = [_post(conn, text) for text in texts[runs:2 * runs]]
                conn.close()
            raw_s = [_raw(Path(tmp) / "raw.db", text) for text in texts[:runs]]
            # the batch hook on the apply path: against the receipt, and against nothing
            target = json.loads(texts[-1])
            book.accept(target, by="bench")
            wanted = [ln["gtin"] for ln in target["lines"]]
            with_doc: list[float] = []
            without: list[float] = []
            seq = 1
            for _ in range(batches):
                for doc, times in (("ASN-" + str(2 * runs), with_doc), (None, without)):
                    batch = _receives(wanted, doc, seq, rng)
                    seq += len(batch.events)
                    began = time.perf_counter()
                    store.apply_batch(batch, source="mqtt")
                    times.append(time.perf_counter() - began)
            raised = store._query("SELECT kind, COUNT(*) FROM exceptions GROUP BY kind")
    accept, raw, over_http = (statistics.median(accept_s), statistics.median(raw_s),
                              statistics.median(http_s))
    return {
        "lines": lines, "items_in_master_data": len(gtins), "runs": runs,
        "accept_median_s": accept, "accept_max_s": max(accept_s),
        "accept_cpu_median_s": statistics.median(accept_cpu_s),
        "http_median_s": over_http, "http_max_s": max(http_s),
        "raw_sqlite_median_s": raw, "accept_vs_raw": accept / raw,
        "target_s": TARGET_S,
        "apply_with_receipt_events_per_s": 500 * batches / sum(with_doc),
        "apply_without_doc_events_per_s": 500 * batches / sum(without),
        "exceptions_raised": dict(raised),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(lines=args.lines, items=args.items, runs=args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"a {result['lines']:,}-line receipt ({result['items_in_master_data']:,} items in"
          f" master data), median of {result['runs']} [target {TARGET_S:g} s]:")
    print(f"  accepted in-process  {result['accept_median_s'] * 1000:8.1f} ms"
          f" (max {result['accept_max_s'] * 1000:.1f}; CPU of this process"
          f" {result['accept_cpu_median_s'] * 1000:.1f} ms)")
    print(f"  accepted over HTTP   {result['http_median_s'] * 1000:8.1f} ms"
          f" (max {result['http_max_s'] * 1000:.1f})")
    print(f"  raw SQLite baseline  {result['raw_sqlite_median_s'] * 1000:8.1f} ms"
          f"  (accept = {result['accept_vs_raw']:.1f} x raw)")
    print(f"  receive batches against it: {result['apply_with_receipt_events_per_s']:,.0f}"
          f" events/s; against no document: {result['apply_without_doc_events_per_s']:,.0f}"
          f" events/s; exceptions {result['exceptions_raised']}")


if __name__ == "__main__":
    main()
