"""The KPIs on a large ledger, beside raw SQLite reads of the same rows, and what their index
costs the apply path (``python -m floorsync.server.kpibench [--days N]``).

A seeded site is built through ``Store.apply_batch``: ``days`` days of receives at four docks
(an item of 2,000, a lot for half of them, 1-20 units), each put away in one or two parts 10
minutes to 8 hours later into 2,000 bins, most picked again within three days, and floor counts
of bins early each day (one in ten a unit off) through the real count path. Then, in one run:
inventory record accuracy over the last 30 days by day and zone, and dock-to-stock over the last
30 and the last 7 days (median of ``repeat`` runs each), against a raw read of the same ledger
rows (everything dated since the horizon: what any matching must at least read); and put-away
batches applied with and without the index of migration 0011 (copies of one file, batches
taking turns), in movements per second.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from floorsync.edge import wire
from floorsync.server import checks
from floorsync.server.docktostock import HORIZON_DAYS, dock_to_stock
from floorsync.server.kpi import span
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from floorsync.server.recordaccuracy import record_accuracy

SITE = "bench"
START = datetime(2026, 1, 5, tzinfo=UTC)
DOCKS = [f"DOCK-{n}" for n in range(1, 5)]
BINS = [f"Z{z}-A{a}-{b:03d}" for z in range(1, 5) for a in range(1, 5) for b in range(1, 126)]


def _tree() -> str:
    rows = [f"{SITE},{SITE},site,"] + [f"{SITE},{d},bin," for d in DOCKS]
    for z in range(1, 5):
        rows.append(f"{SITE},Z{z},zone,")
        rows += [f"{SITE},Z{z}-A{a},aisle,Z{z}" for a in range(1, 5)]
    rows += [f"{SITE},{b},bin,{b.rsplit('-', 1)[0]}" for b in BINS]
    return "site,code,kind,parent\n" + "\n".join(rows) + "\n"


def _gtin(n: int) -> str:
    body = f"0950110{n:06d}"
    odd = sum(int(c) for c in body[-1::-2])
    even = sum(int(c) for c in body[-2::-2])
    return body + str((10 - (odd * 3 + even) % 10) % 10)


class _Floor:
    """A seeded site's events, applied in time order through the store, 500 to a batch."""

    def __init__(self, store: Store, seed: int) -> None:
        self.store, self.rng, self.seq = store, random.Random(seed), 0
        self.items = [_gtin(n) for n in range(1, 2001)]
        self.pending: list[tuple[datetime, wire.Event]] = []

    def event(self, at: datetime, type: str, gtin: str, qty: float, lot: str | None,
              src: str | None = None, dst: str | None = None) -> None:
        self.seq += 1
        self.pending.append((at, wire.Event(
            wire.new_event_id(), self.seq, wire.format_time(at), type,
            wire.Item(gtin=gtin, lot=lot), qty, src, dst)))

    def day(self, first: datetime, receipts: int) -> None:
        rng = self.rng
        for _ in range(receipts):
            at = first + timedelta(seconds=rng.uniform(600, 86_000))
            gtin, qty = rng.choice(self.items), float(rng.randint(1, 20))
            lot = f"L{rng.randint(1, 9)}" if rng.random() < 0.5 else None
            dock, put = rng.choice(DOCKS), at + timedelta(minutes=rng.uniform(10, 480))
            self.event(at, "receive", gtin, qty, lot, dst=dock)
            parts = [qty] if qty < 2 or rng.random() < 0.5 else [qty // 2, qty - qty // 2]
            for part in parts:
                where = rng.choice(BINS)
                self.event(put, "putaway", gtin, part, lot, src=dock, dst=where)
                put += timedelta(minutes=rng.uniform(1, 30))
                if rng.random() < 0.8:  # picked within three days
                    self.event(put + timedelta(hours=rng.uniform(1, 72)), "pick", gtin, part,
                               lot, src=where)


    def counts(self, first: datetime, counts: int) -> None:
        """Floor counts early in the day of bins as the ledger has them (one in ten off by a
        unit); what is dated before ``first`` has been applied."""
        rng = self.rng
        for where in rng.sample(BINS, min(counts, len(BINS))):
            off = 1.0 if rng.random() < 0.1 else 0.0
            lines = tuple(wire.CountLine(wire.Item(gtin=r.item, lot=r.lot), max(q, 0.0))
                          for n, r in enumerate(self.store.stock(location=where, site=SITE))
                          if (q := r.quantity - (off if n == 0 else 0.0)) > 0)
            self.seq += 1
            at = first + timedelta(seconds=rng.uniform(0, 600))
            self.pending.append((at, wire.Event(
                wire.new_event_id(), self.seq, wire.format_time(at), "count", None, 0,
                count=wire.Count(where, lines))))

    def flush(self, before: datetime) -> int:
        """Apply what is dated before ``before``, in time order."""
        self.pending.sort(key=lambda p: p[0])
        cut = next((i for i, p in enumerate(self.pending) if p[0] >= before),
                   len(self.pending))
        due, self.pending = self.pending[:cut], self.pending[cut:]
        for first in range(0, len(due), 500):
            events = tuple(e for _, e in due[first:first + 500])
            self.store.apply_batch(wire.Batch(SITE, "hh-bench", wire.utc_now(), events),
                                   source="http")
        return len(due)


def _median_s(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _apply_rates(paths: list[Path], batches: int, seed: int) -> list[float]:
    """Movements/s of the same put-away batches (a receive and its put-away per item) into each
    of ``paths``, the files taking turns batch by batch so both see the same machine."""
    rng = random.Random(seed)
    stores = [Store(p).open() for p in paths]
    elapsed = [0.0] * len(paths)
    try:
        at, seq = START + timedelta(days=400), 10**7
        for _ in range(batches):
            events = []
            for _ in range(250):
                gtin, dock = _gtin(rng.randint(1, 2000)), rng.choice(DOCKS)
                at += timedelta(seconds=1)
                for type, src, dst in (("receive", None, dock), ("putaway", dock,
                                                                  rng.choice(BINS))):
                    seq += 1
                    events.append(wire.Event(wire.new_event_id(), seq, wire.format_time(at),
                                             type, wire.Item(gtin=gtin), 1, src, dst))
            batch = wire.Batch(SITE, "hh-rate", wire.utc_now(), tuple(events))
            for n, store in enumerate(stores):
                began = time.perf_counter()
                store.apply_batch(batch, source="http")
                elapsed[n] += time.perf_counter() - began
    finally:
        for store in stores:
            store.close()
    return [batches * 750 / e for e in elapsed]  # a receive makes one ledger row, a put-away 2


def run(days: int = 90, receipts: int = 2000, counts: int = 200, repeat: int = 5,
        batches: int = 100, seed: int = 11) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="floorsync-kpi-") as tmp:
        path = Path(tmp) / "central.db"
        began = time.perf_counter()
        with Store(path) as store:
            MasterData(store).import_locations(_tree())
            floor = _Floor(store, seed)
            applied = 0
            for n in range(days):
                applied += floor.flush(START + timedelta(days=n))
                floor.counts(START + timedelta(days=n), counts)
                floor.day(START + timedelta(days=n), receipts)
            applied += floor.flush(START + timedelta(days=days + 30))
            built = time.perf_counter() - began
            (movements,), = store._query("SELECT COUNT(*) FROM movements")
            (posted,), = store._query("SELECT COUNT(*) FROM counts WHERE status = 'posted'")
            end = (START + timedelta(days=days)).date()
            month = span((end - timedelta(days=30)).isoformat(), end.isoformat(), "day", "UTC")
            week = span((end - timedelta(days=7)).isoformat(), end.isoformat(), "day", "UTC")
            since = checks.utc_text(month.start - timedelta(days=HORIZON_DAYS))

            def raw() -> None:  # every row dated since the horizon, as the text orders them
                store._query("SELECT item, location, lot, qty, event_time FROM movements"
                             " WHERE site = ? AND event_time >= ?", (SITE, since[:10]))

            ira = record_accuracy(store, SITE, month, by_zone=True)
            d2s = dock_to_stock(store, SITE, month)
            figures = {
                "ira_30d_s": _median_s(
                    lambda: record_accuracy(store, SITE, month, by_zone=True), repeat),
                "d2s_30d_s": _median_s(lambda: dock_to_stock(store, SITE, month), repeat),
                "d2s_7d_s": _median_s(lambda: dock_to_stock(store, SITE, week), repeat),
                "raw_read_s": _median_s(raw, repeat),
            }
        without = Path(tmp) / "without.db"
        shutil.copy(path, without)
        with Store(without) as store, store._transaction() as cur:
            cur.execute("DROP INDEX movements_receiving")
        with_index, without_index = _apply_rates([path, without], batches, seed)
    return {
        "events": applied, "movements": movements, "posted_counts": posted,
        "build_s": round(built, 1),
        "ira_30d": {"counts": ira.total.counts, "lines": ira.total.lines,
                    "accuracy": ira.total.accuracy},
        "d2s_30d": {"units": d2s.total.units, "timed_units": d2s.total.timed_units,
                    "median_s": d2s.total.median_s, "p90_s": d2s.total.p90_s},
        **{k: round(v, 4) for k, v in figures.items()},
        "d2s_30d_x_raw": round(figures["d2s_30d_s"] / figures["raw_read_s"], 2),
        "ira_30d_x_raw": round(figures["ira_30d_s"] / figures["raw_read_s"], 2),
        "apply_movements_per_s_with_index": round(with_index),
        "apply_movements_per_s_without_index": round(without_index),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--receipts", type=int, default=2000, help="receives a day")
    parser.add_argument("--counts", type=int, default=200, help="floor counts a day")
    args = parser.parse_args()
    print(json.dumps(run(args.days, args.receipts, args.counts), indent=1))


if __name__ == "__main__":
    main()
