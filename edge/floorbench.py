"""``floorsync bench floor``: the floor logic's speed.

- doors: raw tag reads per second through four doors sharing one arbiter (pallets of 60 tags,
  15-30 reads per tag and antenna, outside then inside or the reverse), advanced every 100 ms
  of event time; decoding each distinct EPC once is part of the cost;
- handheld: a scan is durable when ``handle`` returns (events and context committed, fsync);
  latency of that at a paced 100 scans/s, while another thread takes and settles events as
  the sync thread would. Targets: ≥ 50,000 reads/s; p99 ≤ 10 ms.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from floorsync.devices.base import TagRead
from floorsync.devices.framing import Frame, to_scan_read
from floorsync.devices.sim import gs1_label, sgtin96_hex
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter
from floorsync.edge.config import PortalConfig
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from floorsync.edge.workflow import HandheldWorkflow

T0 = datetime(2026, 11, 22, 9, tzinfo=UTC)


def bench_doors(doors: int = 4, pallets: int = 20, tags: int = 60) -> dict[str, float]:
    rng = random.Random(1)
    configs = [PortalConfig(name=f"d{i}", location=f"DOCK-{i}",
                            antennas={"1": "outside", "2": "inside"}, include=("0614141",),
                            rssi_min=-80.0, min_reads=3) for i in range(doors)]
    arbiter = DoorArbiter.for_portals(configs)
    lanes = [Door(c, arbiter=arbiter) for c in configs]
    streams: list[list[TagRead]] = []
    serial = 0
    for d in range(doors):
        reads = []
        for p in range(pallets):
            start = p * 6.0 + rng.uniform(0, 1)
            path = (1, 2) if p % 2 == 0 else (2, 1)
            for _ in range(tags):
                serial += 1
                tag = sgtin96_hex("0614141", "812345", serial)
                t = start + rng.uniform(0, 0.3)
                for antenna in path:
                    for _ in range(rng.randint(15, 30)):
                        at = T0 + timedelta(seconds=t + rng.uniform(0, 0.8))
                        reads.append(TagRead(f"d{d}", tag, antenna, -55.0 + rng.uniform(-5, 5), at))
                    t += 0.55
        reads.sort(key=lambda r: r.at)
        streams.append(reads)
    total = sum(map(len, streams))
    positions = [0] * doors
    events = 0
    began = time.perf_counter()
    for tick in range(int((pallets * 6.0 + 5) / 0.1) + 1):
        now = T0 + timedelta(seconds=tick * 0.1)
        for i, door in enumerate(lanes):
            stream, j = streams[i], positions[i]
            while j < len(stream) and stream[j].at <= now:
                door.add(stream[j])
                j += 1
            positions[i] = j
            events += len(door.advance(now))
            door.take_reports()
    for door in lanes:
        events += len(door.finish())
    elapsed = time.perf_counter() - began
    return {"door_reads_per_s": total / elapsed, "door_reads": total, "door_tags": serial,
            "door_movements": events}


def bench_handheld(scans: int = 1000, rate: float = 100.0) -> dict[str, float]:
    items = [gs1_label(g, lot=f"L{i}") for i, g in
             enumerate(["09501101530003", "04012345000009"] * 5)]
    script: list[str] = []
    for r in range(scans // 20 + 1):
        script += ["CMD:RECEIVE", "LOC:DOCK-1", *items[:4], "CMD:PUTAWAY", "LOC:DOCK-1",
                   *items[:6], f"LOC:A-01-{r % 9 + 1:02d}", "CMD:DONE", "CMD:PICK",
                   f"LOC:A-01-{r % 9 + 1:02d}", *items[:2]]
    script = script[:scans]
    with tempfile.TemporaryDirectory(prefix="floorsync-bench-") as tmp, \
            Outbox(Path(tmp) / "outbox.db") as outbox:
        flow = HandheldWorkflow(store=outbox, key="hh", operator="op")
        stop = threading.Event()

        def sync_like() -> None:  # the sync thread's share of the outbox lock
            while not stop.wait(0.05):
                taken = outbox.take(500)
                outbox.settle([wire.Result(p.id, "applied") for p in taken])

        syncer = threading.Thread(target=sync_like, daemon=True)
        syncer.start()
        latencies, at = [], datetime.now(UTC)
        began = time.perf_counter()
        for n, code in enumerate(script):
            while (wait := began + n / rate - time.perf_counter()) > 0:
                time.sleep(wait)
            at += timedelta(milliseconds=600)  # past the duplicate window
            read = to_scan_read("hh", Frame(code.encode()), at=at)
            start = time.perf_counter()
            flow.handle(read)
            latencies.append((time.perf_counter() - start) * 1000)
        stop.set()
        syncer.join(5)
    latencies.sort()
    return {"handheld_scans": len(latencies), "handheld_p50_ms": statistics.median(latencies),
            "handheld_p99_ms": latencies[int(0.99 * len(latencies))],
            "handheld_max_ms": latencies[-1]}


def run(scans: int = 1000) -> dict[str, Any]:
    return {**bench_doors(), **bench_handheld(scans)}
