"""The EPCIS export at size: events per second and peak memory, beside raw SQLite + json.

A ledger of ``events`` movements (receives by lot and by tag, put-aways, packs onto SSCCs, ships
against orders; master data with GLNs, so every event has its readPoint, bizLocation and
identifiers) is built through the real ``Store.apply_batch``. Then, in the same run:

- baseline: ``SELECT`` of the same columns in rowid order and ``json.dumps`` of each row;
- generator: ``epcis.stream`` of one page of all events (master data, mapping, JSON);
- HTTP: ``GET /api/v1/epcis/events?perPage=N`` from the real app under uvicorn in this
  process, read to the end by a client in a process of its own (the events it got are counted
  after its clock stops);
- memory: tracemalloc's peak while the generator streams ``small`` events and all of them, and
  in the server while a client reads them over HTTP (flat memory: the ratios stay near 1 while
  the events grow tenfold).

After those (so they do not change the conditions of the rounds): the generator once more with
identifiers as EPC URIs (``identifiers=urn`` with the bench's company prefixes configured), and,
in a store of their own, ``captured`` EPCIS events with sensor data (``server/epcisstore.py``):
the rate of their capture (validation included) and of their export.

Run: ``python -m floorsync.server.epcisbench [events]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floorsync.edge import wire
from floorsync.server import epcis, epcisjson, epcisstore
from floorsync.server.bench import BENCH_TOKEN, _serving
from floorsync.server.epcisurn import EPCWriter
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData


def _check(body: str) -> str:
    return body + str(gs1_check_digit(body))


def _ledger(store: Store, events: int) -> None:
    md = MasterData(store)
    md.create_location(LocationSpec("wh1", "wh1", "site", gln=_check("950600013430")))
    md.create_location(LocationSpec("wh1", "DOCK-1", "bin", "wh1", gln=_check("950600013431")))
    md.create_location(LocationSpec("wh1", "PACK-1", "bin", "wh1"))
    for n in range(20):
        md.create_location(LocationSpec("wh1", f"A-{n:02d}", "bin", "wh1"))
    gtins = [_check(f"0950110153{n:03d}") for n in range(50)]
    for n, gtin in enumerate(gtins):
        md.create_item(ItemSpec(f"SKU-{n}", (gtin,)))
    seq = 0
    for first in range(0, events, 500):
        batch = []
        for i in range(first, min(first + 500, events)):
            seq += 1
            gtin, kind = gtins[i % 50], i % 5
            item = wire.Item(gtin=gtin, lot=f"L{i % 7}")
            src: str | None = None
            dst: str | None = "DOCK-1"
            doc = None
            if kind == 1:
                item = wire.Item(gtin=gtin, serial=str(i),
                                 epc=f"urn:epc:id:sgtin:9501101.0{gtin[8:13]}.{i}")
            elif kind == 2:
                src, dst = "DOCK-1", f"A-{i % 20:02d}"
            elif kind == 3:
                item = wire.Item(gtin=gtin, serial=str(i), sscc=_check(f"1950110100{i:07d}"))
                src, dst = "PACK-1", None
            elif kind == 4:
                src, dst, doc = f"A-{i % 20:02d}", None, wire.DocRef("order", f"SO-{i // 50}")
            batch.append(wire.Event(
                wire.new_event_id(), seq, f"2026-11-22T10:{(i // 60) % 60:02d}:{i % 60:02d}"
                ".000+01:00", ("receive", "receive", "putaway", "pack", "ship")[kind], item,
                1, src, dst, doc=doc))
        store.apply_batch(wire.Batch("wh1", "hh-01", wire.utc_now(), tuple(batch)),
                          source="http")


def _baseline(store: Store, events: int) -> float:
    started = time.perf_counter()
    written = 0
    after = 0
    while True:
        rows = store._query(f"SELECT {epcis.COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid"
                            f" LIMIT {epcis.CHUNK_ROWS}", [after])
        for row in rows:
            written += len(json.dumps(row, separators=(",", ":")))
        if len(rows) < epcis.CHUNK_ROWS:
            break
        after = rows[-1][0]
    assert written and after <= events
    return events / (time.perf_counter() - started)


URN_PREFIXES = ("9506000", "9501101")  # the bench's GLNs; its GTINs, SSCCs and EPCs


def _generator(store: Store, per_page: int, writer: EPCWriter | None = None
               ) -> tuple[float, int]:
    started = time.perf_counter()
    page = epcis.plan_page(store, epcis.Filters(), None, per_page)
    size = sum(len(chunk) for chunk in epcis.stream(store, epcis.Filters(), page,
                                                     datetime.now(UTC), writer=writer))
    return time.perf_counter() - started, size


def _captured(events: int) -> tuple[float, float]:
    """Events per second captured (a document of ``events`` ObjectEvents with a sensor
    reading each, validated and kept) and exported again, in a store of their own."""
    body = json.dumps({
        "@context": [epcisjson.CONTEXT, {"example": "http://ns.example.com/epcis/"}],
        "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-01-01T00:00:00Z",
        "epcisBody": {"eventList": [{
            "type": "ObjectEvent", "eventID": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "eventTime": "2026-01-01T10:00:00.000+01:00", "eventTimeZoneOffset": "+01:00",
            "action": "OBSERVE", "bizStep": "inspecting",
            "epcList": [f"urn:epc:id:sgtin:9501101.053000.{n}"],
            "readPoint": {"id": "urn:epc:id:sgln:9506000.13431.0"},
            "sensorElementList": [{"sensorReport": [
                {"type": "Temperature", "value": 4.25, "uom": "CEL"}]}],
            "example:batch": n} for n in range(events)]}}).encode()
    with tempfile.TemporaryDirectory(prefix="floorsync-epcis-captured-") as tmp, \
            Store(Path(tmp) / "central.db") as store:
        started = time.perf_counter()
        document, prepared = epcisstore.prepare(body)
        epcisstore.capture(store, document, prepared)
        capture_rate = events / (time.perf_counter() - started)
        elapsed, _ = _generator(store, events)
    return capture_rate, events / elapsed


def _peak(store: Store, per_page: int) -> int:
    tracemalloc.start()
    try:
        _generator(store, per_page)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# The HTTP client runs in a process of its own, as a consumer of the export would: in this
# process it would take the GIL from the server it measures.
_CLIENT = """
import http.client, json, sys, time
port, token, per_page = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
started = time.perf_counter()
conn.request("GET", f"/api/v1/epcis/events?perPage={per_page}",
             headers={"Authorization": "Bearer " + token})
response = conn.getresponse()
body = bytearray()
while chunk := response.read(1 << 20):
    body += chunk
elapsed = time.perf_counter() - started
events = len(json.loads(body)["epcisBody"]["eventList"]) if response.status == 200 else 0
print(json.dumps({"status": response.status, "elapsed": elapsed, "events": events}))
"""


def _http(port: int, events: int) -> float:
    """Seconds for one GET of ``events`` events, read to the end by a client process."""
    done = subprocess.run([sys.executable, "-c", _CLIENT, str(port), BENCH_TOKEN, str(events)],
                          capture_output=True, text=True, timeout=900, check=True)
    answer = json.loads(done.stdout)
    if answer["status"] != 200 or answer["events"] != events:
        raise RuntimeError(f"GET /epcis/events: {answer} for {events} events in the ledger")
    elapsed: float = answer["elapsed"]
    return elapsed


def _http_peak(port: int, events: int) -> int:
    """tracemalloc's peak in this process (the server) while a client reads the export."""
    tracemalloc.start()
    try:
        _http(port, events)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_epcis_export(events: int = 100_000, small: int = 10_000, rounds: int = 3
                     ) -> dict[str, Any]:
    """Export rates (events/s) and peak memory, with ratios to the baseline of the same run.

    The three rates are measured ``rounds`` times, interleaved, and their medians kept: on a
    shared machine the load moves within a run, and interleaving lets it touch each alike."""
    small = min(small, events)
    raw: list[float] = []
    gen: list[float] = []
    over_http: list[float] = []
    with tempfile.TemporaryDirectory(prefix="floorsync-epcis-") as tmp:
        path = Path(tmp) / "central.db"
        with Store(path) as store:
            _ledger(store, events)
            _generator(store, min(events, 1000))  # warm the page cache and the code
            with _serving(store, path) as port:
                _http(port, min(events, 1000))
                for _ in range(rounds):
                    raw.append(_baseline(store, events))
                    elapsed, size = _generator(store, events)
                    gen.append(events / elapsed)
                    over_http.append(events / _http(port, events))
                http_small, http_all = _http_peak(port, small), _http_peak(port, events)
            peak_small, peak_all = _peak(store, small), _peak(store, events)
            urn_elapsed, _ = _generator(store, events, EPCWriter(URN_PREFIXES))
    captured = min(events, 10_000)
    capture_rate, captured_export_rate = _captured(captured)
    baseline, generator = statistics.median(raw), statistics.median(gen)
    http_rate = statistics.median(over_http)
    return {
        "events": events,
        "raw_select_json_events_per_s": baseline,
        "generator_events_per_s": generator,
        "generator_vs_raw": generator / baseline,
        "http_events_per_s": http_rate,
        "http_vs_raw": http_rate / baseline,
        "http_events_per_s_min": min(over_http),
        "http_events_per_s_max": max(over_http),
        "document_mb": size / 1e6,
        f"peak_kb_{small}": peak_small / 1024,
        f"peak_kb_{events}": peak_all / 1024,
        "peak_ratio": peak_all / peak_small,
        f"http_server_peak_kb_{small}": http_small / 1024,
        f"http_server_peak_kb_{events}": http_all / 1024,
        "http_peak_ratio": http_all / http_small,
        "generator_urn_events_per_s": events / urn_elapsed,
        "generator_urn_vs_raw": events / urn_elapsed / baseline,
        "captured_events": captured,
        "capture_events_per_s": capture_rate,
        "captured_export_events_per_s": captured_export_rate,
    }


if __name__ == "__main__":
    result = run_epcis_export(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    for key, value in result.items():
        print(f"{key:32} {value:>14,.2f}")
