"""``floorsync bench drain``: an edge back from a shift offline drains its backlog.

The edge's outbox is filled with ``backlog`` events while no syncer runs (the edge was offline;
the fill goes through ``Outbox.add`` in large transactions and is timed on its own). Then the
syncer connects to a real mosquitto and drains them to the central service, a ``floorsync
server`` subprocess on SQLite, as in production. Printed:

- drain events/s, from the syncer's connection (sending starts in its CONNACK callback) to the
  ack that settles the last backlog event at the edge, and the central service's check: every
  event applied once (its event count, no sequence number missing or carried twice);
- the resident memory (VmRSS) of this process (the edge: outbox and syncer) and of the central
  process, sampled every 0.5 s during the drain: min, median, max, and the medians of the first
  and last tenth of the samples, so growth shows;
- live scans: one event per capture at a paced rate (operators scanning) into the same outbox
  during the drain, capture -> ack latency p50/p99, and the capture alone (``Outbox.add``, what
  the scanner's good-read feedback waits for). Scans made since the syncer connected go
  ahead of the backlog (the live lane: these put-aways take nothing the backlog brings), so a
  live scan waits for the batches already in flight, not for the rest of the drain;
- another device's scans at the same rate, from its own outbox and syncer (another handheld of
  the site, online all along): capture -> ack p50/p99 while the drain shares the central service;
- raw paho QoS 1 of the same number of events, in the same run, as the baseline.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from floorsync.bench.e2e import BATCH, SITE, _Central, _event, _percentile, bench_paho
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import ROW_OVERHEAD, Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import Mosquitto

DEVICE = "drain"
NEIGHBOUR = "floor"  # another device of the site, scanning during the drain
FILL_CHUNK = 10_000  # events per Outbox.add: one transaction, one fsync
SAMPLE_S = 0.5


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process from /proc (Linux), KiB; 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used, from /proc (Linux); 0 when it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Sampler:
    """RSS of this process and of one other, every SAMPLE_S seconds, on its own thread."""

    def __init__(self, other_pid: int) -> None:
        self.other_pid = other_pid
        self.edge: list[int] = []
        self.central: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.edge.append(rss_kib())
            self.central.append(rss_kib(self.other_pid))
            if self._stop.wait(SAMPLE_S):
                return


def summarize_rss(samples: list[int]) -> dict[str, float]:
    """MiB: min, median, max, and the medians of the first and last tenth of the samples."""
    if not samples:
        return {}
    tenth = max(1, len(samples) // 10)
    mib = [s / 1024 for s in samples]
    return {
        "samples": len(mib),
        "min_mib": round(min(mib), 1),
        "median_mib": round(statistics.median(mib), 1),
        "max_mib": round(max(mib), 1),
        "first_10pct_median_mib": round(statistics.median(mib[:tenth]), 1),
        "last_10pct_median_mib": round(statistics.median(mib[-tenth:]), 1),
    }


def fill(outbox: Outbox, events: int) -> float:
    """Seconds to capture ``events`` into the outbox, FILL_CHUNK per transaction."""
    start = time.perf_counter()
    for i in range(0, events, FILL_CHUNK):
        outbox.add([_event(n) for n in range(i, min(events, i + FILL_CHUNK))])
    return time.perf_counter() - start


class _Live:
    """Operators scanning during the drain: one event per capture at ``rate`` a second."""

    def __init__(self, outbox: Outbox, rate: float) -> None:
        self.outbox = outbox
        self.rate = rate
        self.started: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.capture_ms: list[float] = []  # Outbox.add: what the operator waits for (the beep)
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-scans", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start scanning; returns once the first live scan is kept (so even a drain shorter
        than one interval has a live scan to time)."""
        self._thread.start()
        self._first.wait(10)

    def stop(self) -> None:
        """Stop capturing (at once, and again harmlessly); raise what the capture met."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is not None:
            raise EdgeError(f"live capture failed: {self.error}")

    def on_ack(self, results: tuple[wire.Result, ...], now: float) -> int:
        """Record the live events among ``results``; returns how many were not live."""
        live = 0
        for r in results:
            began = self.started.pop(r.id, None)
            if began is not None:
                live += 1
                self.latencies_ms.append((now - began) * 1000)
        return len(results) - live

    def _run(self) -> None:
        begin, n = time.perf_counter(), 0
        try:
            while not self._stop.wait(max(0.0, begin + n / self.rate - time.perf_counter())):
                event = _event(n)
                self.started[event.id] = began = time.perf_counter()
                self.outbox.add([event])
                self.capture_ms.append((time.perf_counter() - began) * 1000)
                self._first.set()
                n += 1
        except Exception as exc:  # reported by stop()
            self.error = exc
        finally:
            self._first.set()


def _get(central: _Central, path: str, timeout: float = 120.0) -> Any:
    """The central API with a long timeout: the gap check reads every event of the device."""
    request = urllib.request.Request(
        f"{central.api}/{path}", headers={"Authorization": f"Bearer {central.token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def drain(directory: Path, broker: Mosquitto, central: _Central, backlog: int,
          live_rate: float) -> dict[str, Any]:
    """Fill, then drain with live scans on top; the figures as a dict."""
    # a shift's backlog is bigger than the default cap (256 MiB): give it room, and say so
    payload_bytes = len(wire.encode_event(_event(0)).encode())
    cap = max(256 * 1024 * 1024, 2 * backlog * (payload_bytes + ROW_OVERHEAD))
    settings = SyncSettings(broker=broker.url)
    with Outbox(directory / "drain-outbox.db", cap_bytes=cap) as outbox:
        fill_s = fill(outbox, backlog)
        edge_rss_after_fill = rss_kib()
        live = _Live(outbox, live_rate)
        done = threading.Event()
        acked = [0]
        ended = [0.0]

        def on_ack(results: tuple[wire.Result, ...]) -> None:
            now = time.perf_counter()
            acked[0] += live.on_ack(results, now)
            if acked[0] >= backlog and not done.is_set():
                ended[0] = now
                done.set()

        syncer = Syncer(outbox, SITE, DEVICE, settings)
        syncer.ack_listeners.append(on_ack)
        neighbour_box = Outbox(directory / "neighbour-outbox.db")
        neighbour = _Live(neighbour_box, live_rate)
        neighbour_syncer = Syncer(neighbour_box, SITE, NEIGHBOUR, settings)

        def on_neighbour_ack(results: tuple[wire.Result, ...]) -> None:
            neighbour.on_ack(results, time.perf_counter())

        neighbour_syncer.ack_listeners.append(on_neighbour_ack)
        with _Sampler(central.process.pid) as sampler, neighbour_box, neighbour_syncer:
            syncer.start()
            try:
                deadline = time.monotonic() + 30
                while not syncer.connected:
                    if time.monotonic() > deadline:
                        raise EdgeError("the syncer did not connect within 30 s")
                    time.sleep(0.001)
                pids: dict[str, int | str] = {"edge": "self", "central": central.process.pid}
                if broker.process is not None:
                    pids["broker"] = broker.process.pid
                cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
                began = time.perf_counter()
                live.start()
                neighbour.start()
                timeout = 120 + backlog / 1000  # 1,000 events/s would be a failure anyway
                if not done.wait(timeout):
                    raise EdgeError(f"drain: {acked[0]} of {backlog} acked after {timeout:.0f} s")
                cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
                live.stop()
                neighbour.stop()
                if not syncer.wait_synced(60):
                    raise EdgeError(f"live scans: backlog {outbox.stats().backlog} after 60 s")
                if not neighbour_syncer.wait_synced(60):
                    raise EdgeError(f"{NEIGHBOUR}: backlog {neighbour_box.stats().backlog}")
            finally:
                live.stop()
                neighbour.stop()
                syncer.stop()
        elapsed = ended[0] - began
        lat = live.latencies_ms
        other = neighbour.latencies_ms
    return {
        "fill_s": round(fill_s, 2),
        "fill_events_per_s": round(backlog / fill_s),
        "outbox_cap_mib": round(cap / 2**20),
        "edge_rss_after_fill_mib": round(edge_rss_after_fill / 1024, 1),
        "drain_s": round(elapsed, 2),
        "drain_events_per_s": round(backlog / elapsed),
        "edge_rss": summarize_rss(sampler.edge),
        "central_rss": summarize_rss(sampler.central),
        # CPU per backlog event during the drain (2 cores: the parts compete for them)
        "cpu_us_per_event": {name: round(used / backlog * 1e6, 1) for name, used in cpu.items()},
        "live_rate_per_s": live_rate,
        "live_events": len(lat),
        "live_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "live_p99_ms": round(_percentile(lat, 0.99), 1) if lat else None,
        "live_max_ms": round(max(lat), 1) if lat else None,
        "live_capture_p50_ms": round(statistics.median(live.capture_ms), 2),
        "live_capture_p99_ms": round(_percentile(live.capture_ms, 0.99), 2),
        "neighbour_events": len(other),
        "neighbour_p50_ms": round(statistics.median(other), 1) if other else None,
        "neighbour_p99_ms": round(_percentile(other, 0.99), 1) if other else None,
        "neighbour_max_ms": round(max(other), 1) if other else None,
        "resent": syncer.stats.resent,
    }


def run(*, backlog: int = 1_000_000, live_rate: float = 20.0) -> dict[str, Any]:
    """The whole bench in a temporary directory; the figures as a dict."""
    backlog = max(BATCH, backlog // BATCH * BATCH)
    with tempfile.TemporaryDirectory(prefix="floorsync-drain-") as tmp:
        directory = Path(tmp)
        with Mosquitto(directory / "broker") as broker:
            mqtt_rate = bench_paho(broker, backlog)
            central = _Central(directory, broker)
            try:
                result = drain(directory, broker, central, backlog, live_rate)
                summary = _get(central, "summary")
                gaps = _get(central, f"devices/{SITE}/{DEVICE}/gaps")
            finally:
                central.stop()
    expected = backlog + result["live_events"] + result["neighbour_events"]
    return {
        "backlog": backlog,
        **result,
        "raw_mqtt_events_per_s": round(mqtt_rate),
        "ratio": round(result["drain_events_per_s"] / mqtt_rate, 3),
        "central_applied": summary["events"],
        "central_applied_expected": expected,
        "central_missing_seqs": gaps["missing_count"],
        "central_duplicate_seqs": len(gaps["duplicate_seqs"]),
        "central_late": gaps["late_count"],
        "count_ok": (summary["events"] == expected and gaps["missing_count"] == 0
                     and not gaps["duplicate_seqs"]
                     and gaps["events"] == expected - result["neighbour_events"]),
    }


def main(*, as_json: bool, backlog: int, live_rate: float) -> int:
    result = run(backlog=backlog, live_rate=live_rate)
    if as_json:
        print(json.dumps(result))
    else:
        edge, central = result["edge_rss"], result["central_rss"]
        print(f"fill: {result['backlog']:,} events into the outbox in {result['fill_s']} s"
              f" ({result['fill_events_per_s']:,}/s, {FILL_CHUNK:,} a transaction)")
        print(f"drain: {result['drain_events_per_s']:>9,} events/s ({result['drain_s']} s);"
              f" raw paho QoS 1: {result['raw_mqtt_events_per_s']:,} events/s"
              f" (x{result['ratio']})")
        for name, rss in (("edge", edge), ("central", central)):
            print(f"{name} RSS MiB: min {rss['min_mib']}, median {rss['median_mib']},"
                  f" max {rss['max_mib']}; first 10 % {rss['first_10pct_median_mib']},"
                  f" last 10 % {rss['last_10pct_median_mib']} ({rss['samples']} samples)")
        cpu = ", ".join(f"{k} {v}" for k, v in result["cpu_us_per_event"].items())
        print(f"CPU per drained event (us): {cpu}")
        print(f"live scans at {result['live_rate_per_s']:g}/s during the drain"
              f" ({result['live_events']}): p50 {result['live_p50_ms']} ms,"
              f" p99 {result['live_p99_ms']} ms, max {result['live_max_ms']} ms to the ack;"
              f" capture (the good-read beep waits for it) p50 {result['live_capture_p50_ms']}"
              f" ms, p99 {result['live_capture_p99_ms']} ms")
        print(f"another device's scans at {result['live_rate_per_s']:g}/s meanwhile"
              f" ({result['neighbour_events']}): p50 {result['neighbour_p50_ms']} ms,"
              f" p99 {result['neighbour_p99_ms']} ms, max {result['neighbour_max_ms']} ms")
        print(f"central service applied {result['central_applied']:,} of"
              f" {result['central_applied_expected']:,}; missing seqs"
              f" {result['central_missing_seqs']}, seqs twice {result['central_duplicate_seqs']}")
    return 0 if result["count_ok"] else 1
