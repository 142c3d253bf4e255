"""``floorsync chaos``: a randomized fault campaign over the whole product, both paths.

Real parts, each its own process as on a site: the central broker (mosquitto with a persistence
directory), the central service (``floorsync server`` on SQLite), the edge agent (``floorsync
edge --config``) and, for the dock path, a reader-side mosquitto (persistence on) fed by a
simulated Zebra / Impinj network reader that publishes tag-read JSON at QoS 1 with a persistent
session. The handheld path is a scripted serial scanner on a pseudo-terminal read by the edge's
real pyserial path; this process plays the operator and listens for the good-read feedback.

Ground truth is what this process generated:

- handheld: every item label carries a unique GS1 serial (AI 21). A label counts as
  *generated* once the edge answered it with good-read feedback (the promise: durable before
  the beep). A label the edge never answered (killed mid-scan) is *unconfirmed*: it may or may
  not be in the ledger, but never twice. A bad read (nothing kept) is scanned again.
- dock: every tag crosses the door as outside-antenna reads, then inside-antenna reads; a door
  in ``direction = "auto"`` makes one receive per tag. A tag counts as generated once all its
  reads were handed to the reader's MQTT client (which keeps them until its broker PUBACKs).

After the faults stop, everything is restored, the backlog drains and the edge is stopped
cleanly; then the central ledger (SQLite, read-only) says, per generated item, how many events
were applied: lost = generated - applied, doubled = applied more than once.

Faults, drawn by a seeded RNG, one at a time at random moments (each counts once):
``kill-edge``, ``kill-central``, ``kill-broker`` (the central broker), ``kill-reader-broker``
(SIGKILL, restart after a random delay); ``broker-amnesia`` (the central broker killed and
restarted *without* persistence: every session and queued message gone); ``disk-full`` (the
edge's data directory is a small tmpfs, filled to the last byte, then freed); ``clock-back``
(the edge runs under libfaketime, its wall clock stepped back at run time); ``flood``
(duplicates: events re-posted to ``POST /api/v1/events`` or re-published on the edge's topic,
the reader re-publishing reads it already sent); ``stall`` (the central service SIGSTOPped,
then SIGCONTed, while a central broker with small ``max_queued_messages`` keeps taking the
edge's messages).

Part of the composition root (like ``floorsync.bench``): it starts ``floorsync server`` and
``floorsync edge`` as subprocesses and reads the ledger file directly, read-only.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from floorsync.edge.errors import EdgeError
from floorsync.localbroker import free_port, mosquitto_binary, wait_for_port

SITE = "chaos"
GTIN = "09501101530003"  # the handheld's item; each label its own serial
COMPANY, ITEM_REF = "0614141", "812345"  # the dock's SGTIN-96 tags
GOOD, BAD = b"\x1b7", b"\x1b8"  # Honeywell good / bad read, configured as the scanner feedback
FEEDBACK_TIMEOUT_S = 3.0
TMPFS_MB = 64
FAKETIME_LIBS = (
    *(f"/usr/lib/{arch}/faketime/libfaketime.so.1"
      for arch in ("x86_64-linux-gnu", "aarch64-linux-gnu", "arm-linux-gnueabihf")),
    "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1",
)

# libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC breaks Python >= 3.11's
# time.sleep (clock_nanosleep with TIMER_ABSTIME gets a negative time: EINVAL, libfaketime issue
# #426); faking the monotonic clock too would step it back with the wall clock, which no NTP
# step does. So an edge under a faked clock runs the real ``floorsync edge`` with time.sleep
# served by an Event wait (pthread_cond_timedwait, which libfaketime handles).
_SLEEP_SHIM = (
    "import sys, threading, time\n"
    "_wait = threading.Event().wait\n"
    "time.sleep = lambda seconds: None if _wait(max(0.0, seconds)) else None\n"
    "from floorsync.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

HANDHELD_KINDS = ("kill-edge", "kill-central", "kill-broker", "broker-amnesia", "disk-full",
                  "clock-back", "flood", "stall")
DOCK_KINDS = (*HANDHELD_KINDS, "kill-reader-broker")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # handheld | dock
    kinds: tuple[str, ...]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("handheld-crash", "handheld",
             ("kill-edge", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("handheld-disk", "handheld", ("disk-full", "kill-edge")),
    Scenario("handheld-clock", "handheld", ("clock-back", "kill-edge", "kill-central")),
    Scenario("handheld-flood", "handheld", ("flood", "kill-central", "kill-broker")),
    Scenario("handheld-stall", "handheld", ("stall", "kill-broker", "flood")),
    Scenario("handheld-mixed", "handheld", HANDHELD_KINDS),
    Scenario("dock-crash", "dock",
             ("kill-edge", "kill-reader-broker", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("dock-brokers", "dock",
             ("kill-reader-broker", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("dock-disk", "dock", ("disk-full", "kill-reader-broker")),
    Scenario("dock-clock", "dock", ("clock-back", "kill-central", "kill-broker")),
    Scenario("dock-flood", "dock", ("flood", "kill-central", "kill-reader-broker")),
    Scenario("dock-stall", "dock", ("stall", "flood", "kill-broker")),
    Scenario("dock-edge", "dock", HANDHELD_KINDS),  # every fault but the reader's broker
    Scenario("dock-mixed", "dock", DOCK_KINDS),
)}


@dataclass
class Result:
    scenario: str
    path: str
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    generated: int = 0
    applied: int = 0
    lost: int = 0
    doubled: int = 0
    unconfirmed: int = 0  # handheld labels the edge never answered (killed mid-scan)
    wrong: int = 0  # events of generated items other than the expected movement
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong == 0 and self.generated > 0

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "path": self.path, "seed": self.seed,
                "faults": self.injected, "by_kind": dict(self.faults),
                "generated": self.generated, "applied": self.applied, "lost": self.lost,
                "doubled": self.doubled, "unconfirmed": self.unconfirmed, "wrong": self.wrong,
                "wall_s": round(self.wall_s, 1), "notes": self.notes, "examples": self.examples}


# --- the processes ----------------------------------------------------------------------------


class Broker:
    """A mosquitto on a fixed loopback port: killed, restarted, with or without persistence."""

    def __init__(self, directory: Path, *, small_queues: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise EdgeError("mosquitto is not installed (deploy/bootstrap.sh mosquitto)")
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.small_queues = small_queues
        self.persistent = True
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        limits = ("max_queued_messages 8\nmax_inflight_messages 4\n" if self.small_queues
                  else "max_queued_messages 1000000\nmax_inflight_messages 0\n")
        # Saved after every change: a SIGKILLed mosquitto loses what it acknowledged since its
        # last save (time-based saving lost up to a second of a reader's reads, the broker's
        # loss, not the edge's); per change, that window is the few microseconds of one loop.
        store = (f"persistence true\npersistence_location {self.directory}/\n"
                 "autosave_interval 1\nautosave_on_changes true\n" if self.persistent
                 else "persistence false\n")
        path = self.directory / "mosquitto.conf"
        path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            + "set_tcp_nodelay true\n" + store + limits
            + "max_queued_bytes 0\npersistent_client_expiration 1d\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n")
        return path

    def start(self, *, persistent: bool = True) -> None:
        self.persistent = persistent
        self.process = subprocess.Popen([self.binary, "-c", str(self._config())],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError as exc:
            raise EdgeError(f"mosquitto did not start; see {self.directory}/mosquitto.log") from exc

    def kill(self) -> None:
        _signal_and_wait(self.process, signal.SIGKILL)
        self.process = None

    def forget(self) -> None:
        """Remove the persistence file: what a broker without persistence comes back with."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "mosquitto.db").unlink()

    def stop(self) -> None:
        _signal_and_wait(self.process, signal.SIGTERM)
        self.process = None

    def ensure_running(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return False
        self.start(persistent=self.persistent)
        return True


def _signal_and_wait(process: subprocess.Popen[bytes] | None, sig: int, wait: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if sig != signal.SIGKILL:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.send_signal(sig)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Central:
    """``floorsync server`` on SQLite, as its own process: killed, stalled, restarted."""

    def __init__(self, directory: Path, broker: Broker) -> None:
        self.database = directory / "central.db"
        self.log = directory / "central.log"
        self.broker = broker
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.token = "chaos-" + os.urandom(12).hex()
        self.process: subprocess.Popen[bytes] | None = None
        self.stalled = False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync", "--log-level", "WARNING", "server",
                 "--db", str(self.database), "--broker", self.broker.url, "--port",
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "FLOORSYNC_TOKENS": f"{self.token}=admin",
                     "FLOORSYNC_TOKENS_FILE": "", "FLOORSYNC_AUTH": "on"})

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                self.request("GET", "health", timeout=1)
                return True
            except (OSError, ValueError):
                time.sleep(0.1)
        return False

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 5) -> Any:
        request = urllib.request.Request(
            f"{self.api}/{path}", data=body, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and path == "health":  # answering, its broker link is down
                return json.loads(exc.read() or b"{}")
            raise

    def kill(self) -> None:
        _signal_and_wait(self.process, signal.SIGKILL)
        self.stalled = False

    def stall(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)
            self.stalled = True

    def resume(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
        self.stalled = False

    def stop(self) -> None:
        _signal_and_wait(self.process, signal.SIGTERM)
        self.stalled = False


class Edge:
    """``floorsync edge --config``: SIGKILLed and restarted; optionally under libfaketime."""

    def __init__(self, config: Path, log: Path, faketime: tuple[str, Path] | None) -> None:
        self.config = config
        self.log = log
        self.faketime = faketime
        self.process: subprocess.Popen[bytes] | None = None
        self.up = threading.Event()  # set while a run has its device online (operator waits)
        self._generation = 0

    def start(self) -> None:
        args = ["--log-level", "INFO", "edge", "--config", str(self.config)]
        env = dict(os.environ)
        if self.faketime is not None:
            library, offset_file = self.faketime
            argv = [sys.executable, "-c", _SLEEP_SHIM, *args]
            env.update(LD_PRELOAD=library, FAKETIME_TIMESTAMP_FILE=str(offset_file),
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        else:
            argv = [sys.executable, "-m", "floorsync", *args]
        with open(self.log, "ab") as log:
            offset = log.tell()
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
        self._generation += 1
        threading.Thread(target=self._watch, args=(self._generation, self.process, offset),
                         daemon=True).start()

    def _watch(self, generation: int, process: subprocess.Popen[bytes], offset: int) -> None:
        """``up`` once this run says its device is online (its scanner port or reader)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            with open(self.log, "rb") as f:
                f.seek(offset)
                if b" online (" in f.read():
                    if generation == self._generation:
                        self.up.set()
                    return
            time.sleep(0.05)

    def wait_up(self, timeout: float = 30) -> bool:
        return self.up.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        self.up.clear()
        _signal_and_wait(self.process, signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM: the agent finishes its doors and waits ``drain_s`` for the last acks."""
        self.up.clear()
        _signal_and_wait(self.process, signal.SIGTERM, wait=60)
        return None if self.process is None else self.process.returncode


# --- the floor: a handheld operator, a dock-door reader ---------------------------------------


class Operator:
    """Types labels into the scanner's pty, one at a time, and waits for the feedback."""

    def __init__(self, master: int, edge: Edge, rng: random.Random, prefix: str) -> None:
        self.master = master
        os.set_blocking(master, False)
        self.edge = edge
        self.rng = rng
        self.prefix = prefix
        self.acked: list[str] = []  # serials the edge answered with a good read
        self.unconfirmed: list[str] = []  # no answer: the edge died mid-scan
        self.refused = 0  # bad reads (full disk): nothing kept, scanned again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.master, 4096):
                pass

    def scan(self, code: str) -> str:
        """'good', 'bad' or 'silent' (no feedback within the timeout)."""
        self._drain()
        try:
            os.write(self.master, code.encode() + b"\r")
        except OSError:  # the terminal's buffer is full (nobody reads): the scan went nowhere
            return "silent"
        seen = b""
        deadline = time.monotonic() + FEEDBACK_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                break
            try:
                seen += os.read(self.master, 64)
            except OSError:  # no process has the terminal open at the moment
                time.sleep(0.05)
                continue
            if GOOD in seen:
                return "good"
            if BAD in seen:
                return "bad"
        return "silent"

    def _settle(self) -> None:
        """After silence: wait for the edge to be back, and for stray feedback to arrive."""
        while not self._stop.is_set() and not self.edge.up.wait(0.2):
            pass
        self._stop.wait(1.0)
        self._drain()

    def _location(self) -> None:
        for _ in range(50):
            while not self._stop.is_set() and not self.edge.up.wait(0.2):
                pass
            if self._stop.is_set() or self.scan("LOC:DOCK-1") == "good":
                return
            self._settle()

    def _run(self) -> None:
        self._location()
        n = 0
        while not self._stop.is_set():
            while not self._stop.is_set() and not self.edge.up.wait(0.2):
                pass
            n += 1
            serial = f"{self.prefix}{n:07d}"
            label = f"]C101{GTIN}21{serial}"
            for _attempt in range(100):
                if self._stop.is_set():
                    break
                outcome = self.scan(label)
                if outcome == "good":
                    self.acked.append(serial)
                    break
                if outcome == "silent":
                    self.unconfirmed.append(serial)
                    self._settle()
                    break
                self.refused += 1  # nothing kept: scan again (the location first, in case)
                self._stop.wait(self.rng.uniform(0.1, 0.4))
                self._location()
            self._stop.wait(self.rng.uniform(0.0, 0.02))


class DockReader:
    """A network RFID reader at the door: tag reads as Zebra or Impinj JSON, QoS 1, MQTT 5 with
    a persistent session, pacing reads in real time. Pallets of tagged cases cross the door:
    each tag is read on the outside antenna (1), then on the inside antenna (2)."""

    def __init__(self, broker: Broker, topic: str, fmt: str, rng: random.Random,
                 first_serial: int, log: Callable[[str], None]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.topic = topic
        self.log = log
        self.fmt = fmt
        self.rng = rng
        self.serial = first_serial
        self.tags: list[str] = []  # crossed completely (every read handed to the client)
        self._schedule: list[tuple[float, int, str, float]] = []
        self._open: Counter[str] = Counter()  # reads of a tag not yet published
        self._recent: deque[tuple[float, bytes]] = deque()  # for duplicate floods
        self._event_num = 0
        self.late_messages = 0  # published over 0.25 s after their reads' time (host load)
        self.late_max = 0.0
        self._unpublished: set[int] = set()  # mids the broker has not PUBACKed yet
        self._early: set[int] = set()  # PUBACKed before publish() returned its mid
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-reader-{topic}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_publish = self._on_publish
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 86400
        self.client.connect("127.0.0.1", broker.port, keepalive=10, clean_start=False,
                            properties=properties)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            if mid in self._unpublished:
                self._unpublished.discard(mid)
            else:
                self._early.add(mid)

    def start(self) -> None:
        self._thread.start()

    def _pallet(self, start: float) -> None:
        rng = self.rng
        first = self.serial + 1
        count = rng.randint(4, 10)
        self.log(f"pallet: serials {first}..{first + count - 1} from {start:.3f}")
        for _ in range(count):
            self.serial += 1
            from floorsync.devices.sim import sgtin96_hex

            tag = sgtin96_hex(COMPANY, ITEM_REF, self.serial).upper()
            t0 = start + rng.uniform(0.0, 0.5)
            half = rng.uniform(0.3, 0.8)
            strength = rng.uniform(-68.0, -52.0)  # the tag passes close to both antennas
            for antenna, base in ((1, t0), (2, t0 + half)):
                rssi = strength + rng.uniform(-3.0, 3.0)
                for _ in range(rng.randint(3, 8)):
                    at = base + rng.uniform(0.0, half)
                    heapq.heappush(self._schedule, (at, antenna, tag, round(rssi, 1)))
                    self._open[tag] += 1

    def _encode(self, reads: list[tuple[float, int, str, float]]) -> bytes:
        events: list[dict[str, Any]] = []
        for at, antenna, tag, rssi in reads:
            self._event_num += 1
            stamp = datetime.fromtimestamp(at, UTC)
            if self.fmt == "zebra":
                events.append({"type": "SIMPLE",
                               "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000",
                               "data": {"MAC": "84:24:8D:C4:A0:5E", "antenna": antenna,
                                        "eventNum": self._event_num, "format": "epc",
                                        "idHex": tag, "peakRssi": rssi, "reads": 1}})
            else:
                events.append({"timestamp": stamp.isoformat().replace("+00:00", "Z"),
                               "hostname": "impinj-chaos", "eventType": "tagInventory",
                               "tagInventoryEvent": {"epcHex": tag, "antennaPort": antenna,
                                                     "peakRssiCdbm": int(rssi * 100)}})
        return json.dumps(events, separators=(",", ":")).encode()

    def _publish(self, payload: bytes) -> None:
        # paho keeps it while offline and sends it after reconnecting; on_publish is the only
        # PUBACK signal (is_published() raises while disconnected). Never hold our lock around
        # publish(): on_publish takes it on paho's thread.
        info = self.client.publish(self.topic, payload, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
            else:
                self._unpublished.add(info.mid)

    def _run(self) -> None:
        next_pallet = time.time()
        while True:
            now = time.time()
            stopping = self._stop.is_set()
            if not stopping and now >= next_pallet:
                self._pallet(now)
                next_pallet = now + self.rng.uniform(0.8, 2.5)
            due: list[tuple[float, int, str, float]] = []
            while self._schedule and self._schedule[0][0] <= now:
                due.append(heapq.heappop(self._schedule))
            if due:
                behind = now - due[0][0]  # this process's own lateness (a real reader has none)
                if behind > 0.25:
                    self.late_messages += 1
                    self.late_max = max(self.late_max, behind)
                payload = self._encode(due)
                self._publish(payload)
                self._recent.append((now, payload))
                for _at, _antenna, tag, _rssi in due:
                    self._open[tag] -= 1
                    if self._open[tag] == 0:
                        del self._open[tag]
                        self.tags.append(tag)
            while self._recent and self._recent[0][0] < now - 15:
                self._recent.popleft()
            if stopping and not self._schedule:
                break
            time.sleep(0.05)
        self._idle.set()

    def flood(self) -> int:
        """Re-publish what was sent in the last 15 s (a reader re-sending its buffer)."""
        recent = list(self._recent)
        for _t, payload in recent:
            self._publish(payload)
        return len(recent)

    def finish(self, timeout: float = 60) -> bool:
        """Let the pallets in the door finish; True once the broker took every message."""
        self._stop.set()
        self._idle.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._unpublished:
                    return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


# --- one scenario -------------------------------------------------------------------------------


class World:
    """One scenario's site: brokers, central service, the edge, the floor, the fault injector."""

    def __init__(self, spec: Scenario, seed: int, directory: Path, out: Callable[[str], None],
                 index: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.dir = directory
        self.out = out
        self.result = Result(spec.name, spec.path, seed)
        self.kinds = list(spec.kinds)
        self.device = "hh-1" if spec.path == "handheld" else "dock-1"
        self.fmt = self.rng.choice(("zebra", "impinj"))  # the dock reader's JSON
        self.mounted = False
        self.clock_offset = 0.0
        self.offset_file = directory / "faketime.offset"
        self.master = -1
        self.operator: Operator | None = None
        self.reader: DockReader | None = None
        self.index = index
        directory.mkdir(parents=True, exist_ok=True)
        self.data = directory / "edge-data"
        self.data.mkdir(exist_ok=True)
        self.outbox = self.data / "outbox.db"
        stall = "stall" in self.kinds
        self.central_broker = Broker(directory / "central-broker", small_queues=stall)
        self.reader_broker = (Broker(directory / "reader-broker") if spec.path == "dock"
                              else None)
        self.central = Central(directory, self.central_broker)
        self.edge: Edge | None = None
        self._mqtt: Any = None
        self._journal = open(directory / "chaos.log", "a", buffering=1)  # noqa: SIM115

    def log(self, text: str) -> None:
        """What happened when, for reading beside the processes' logs."""
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        self._journal.write(f"{stamp} {text}\n")

    # --- set up and tear down --------------------------------------------------------------

    def _skip(self, kind: str, reason: str) -> None:
        if kind in self.kinds:
            self.kinds.remove(kind)
            note = f"{kind} skipped: {reason}"
            self.result.notes.append(note)
            self.out(f"  [{self.spec.name}] {note}")

    def setup(self) -> None:
        if "disk-full" in self.kinds:
            if os.geteuid() != 0:
                self._skip("disk-full", "mounting a tmpfs needs root")
            else:
                done = subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(self.data)],
                    capture_output=True, text=True)
                if done.returncode != 0:
                    self._skip("disk-full", f"mount -t tmpfs refused: {done.stderr.strip()}")
                else:
                    self.mounted = True
        faketime = None
        if "clock-back" in self.kinds:
            library = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
            if library is None:
                self._skip("clock-back", "libfaketime is not installed "
                           "(deploy/bootstrap.sh faketime)")
            else:
                self.offset_file.write_text("+0s\n")
                faketime = (library, self.offset_file)
        if not self.kinds:
            raise EdgeError(f"{self.spec.name}: no fault kind can run here")
        self.central_broker.start()
        if self.reader_broker is not None:
            self.reader_broker.start()
        self.central.start()
        if not self.central.wait_ready(60):
            raise EdgeError(f"central service did not start; see {self.central.log}")
        config = self._edge_config()
        self.edge = Edge(config, self.dir / "edge.log", faketime)
        self.edge.start()
        if self.spec.path == "handheld":
            from floorsync.devices.sim import open_pty

            self.master, slave = open_pty()
            config.write_text(config.read_text().replace("@PORT@", slave))
            time.sleep(0.1)
            self.operator = Operator(self.master, self.edge, self.rng, f"S{self.index:02d}")
            self.operator.start()
        else:
            assert self.reader_broker is not None
            self.reader = DockReader(self.reader_broker, "readers/dock-1/tags", self.fmt,
                                     self.rng, first_serial=self.index * 10_000_000,
                                     log=self.log)
            # pallets start once the edge subscribed: its session exists from then on (on a
            # site, from the day it was installed); reads before that have no one to go to
            if not self.edge.wait_up(60):
                raise EdgeError(f"the edge's reader did not come online; see {self.edge.log}")
            self.reader.start()

    def _edge_config(self) -> Path:
        stall = "stall" in self.kinds
        body = (f'site = "{SITE}"\ndevice = "{self.device}"\n\n'
                f'[outbox]\npath = "{self.outbox}"\ncap_mb = {TMPFS_MB // 2}\n\n'
                f'[sync]\nbroker = "{self.central_broker.url}"\nack_timeout_s = 2.0\n'
                f'batch_size = {20 if stall else 100}\nwindow = {32 if stall else 16}\n'
                'status_interval_s = 2.0\n\n')
        if self.spec.path == "handheld":
            body += ('[[scanners]]\nname = "hh-1"\nport = "@PORT@"\nmode = "receive"\n'
                     'operator = "op-chaos"\ngood_read = "\\u001b7"\nbad_read = "\\u001b8"\n')
        else:
            assert self.reader_broker is not None
            body += ('[[portals]]\nname = "dock-1"\nlocation = "DOCK-1"\n'
                     f'reader = "{self.fmt}-mqtt"\nbroker = "{self.reader_broker.url}"\n'
                     'topic = "readers/dock-1/tags"\ndirection = "auto"\n'
                     'antennas = { "1" = "outside", "2" = "inside" }\n'
                     # extra door keys for experiments, e.g. "latency_s = 5.0"
                     + os.environ.get("FLOORSYNC_CHAOS_DOOR", "").replace(";", "\n") + "\n")
        path = self.dir / "edge.toml"
        path.write_text(body)
        return path

    def teardown(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.reader is not None:
            self.reader.close()
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
                self._mqtt.loop_stop()
        if self.edge is not None:
            self.edge.stop()
        self.central.stop()
        self.central_broker.stop()
        if self.reader_broker is not None:
            self.reader_broker.stop()
        if self.master >= 0:
            with contextlib.suppress(OSError):
                os.close(self.master)
        if self.mounted:  # keep the edge's databases for reading afterwards
            with contextlib.suppress(OSError):
                shutil.copytree(self.data, self.dir / "edge-data-copy", dirs_exist_ok=True)
            done = subprocess.run(["umount", str(self.data)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.data)], capture_output=True)
            self.mounted = False
        self._journal.close()

    # --- the faults ----------------------------------------------------------------------------

    def _pause(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))

    def _check_crashes(self) -> None:
        """A process that died without being killed is a finding: note it, start it again."""
        assert self.edge is not None
        for name, proc, restart in (("edge", self.edge, self.edge.start),
                                    ("central", self.central, self.central.start)):
            process = proc.process
            if process is not None and process.poll() is not None:
                self.result.notes.append(f"{name} exited by itself (status {process.returncode})")
                proc.process = None
                restart()
        for broker in (self.central_broker, self.reader_broker):
            if broker is not None and broker.ensure_running():
                self.result.notes.append(f"broker on {broker.port} exited by itself")

    def inject(self, kind: str) -> bool:
        assert self.edge is not None
        if kind == "kill-edge":
            self.edge.kill()
            self._pause(0.1, 1.5)
            self.edge.start()
        elif kind == "kill-central":
            self.central.kill()
            self._pause(0.1, 2.0)
            self.central.start()
        elif kind == "kill-broker":
            self.central_broker.kill()
            self._pause(0.1, 2.0)
            self.central_broker.start(persistent=True)
        elif kind == "broker-amnesia":
            self.central_broker.kill()
            self.central_broker.forget()
            self._pause(0.1, 2.0)
            self.central_broker.start(persistent=False)
        elif kind == "kill-reader-broker":
            assert self.reader_broker is not None
            self.reader_broker.kill()
            self._pause(0.1, 2.0)
            self.reader_broker.start(persistent=True)
        elif kind == "disk-full":
            return self._fill_disk()
        elif kind == "clock-back":
            limit = 600.0 if self.spec.path == "handheld" else 30.0
            step = self.rng.uniform(1.0, 60.0 if self.spec.path == "handheld" else 5.0)
            if self.clock_offset + step > limit:
                return False
            self.clock_offset += step
            self.offset_file.write_text(f"-{self.clock_offset:.3f}s\n")
        elif kind == "flood":
            return self._flood()
        elif kind == "stall":
            if not self.central.alive():
                return False
            self.central.stall()
            self._pause(0.5, 4.0)
            self.central.resume()
        else:
            raise EdgeError(f"unknown fault {kind!r}")
        return True

    def _fill_disk(self) -> bool:
        filler = self.data / "filler"
        chunk = b"\0" * (256 * 1024)
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError:
            pass  # ENOSPC: full to the last block
        with contextlib.suppress(OSError), open(filler, "ab") as f:
            while True:  # and the last bytes
                f.write(b"\0" * 512)
                f.flush()
        self._pause(0.3, 3.0)
        filler.unlink()
        return True

    def _outbox_payloads(self, limit: int) -> list[str]:
        if not self.outbox.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=2)
            try:
                return [p for (p,) in conn.execute(
                    "SELECT payload FROM outbox ORDER BY random() LIMIT ?", (limit,))]
            finally:
                conn.close()
        except sqlite3.Error:
            return []

    def _flood(self) -> bool:
        from floorsync.edge import wire

        way = self.rng.choice(("http", "mqtt", "reader") if self.reader else ("http", "mqtt"))
        if way == "reader":
            assert self.reader is not None
            return self.reader.flood() > 0
        payloads = self._outbox_payloads(self.rng.randint(20, 300))
        if not payloads:
            return False
        batch = wire.encode_batch_payloads(SITE, self.device, wire.utc_now(), payloads)
        if way == "http":
            if not self.central.wait_ready(20):
                return False
            try:
                self.central.request("POST", "events", batch, timeout=20)
            except (OSError, ValueError) as exc:
                self.result.notes.append(f"flood over HTTP failed: {exc}")
                return False
            return True
        client = self._flood_client()
        info = client.publish(wire.events_topic(SITE, self.device), batch, qos=1)
        return bool(info.rc == 0)

    def _flood_client(self) -> Any:
        if self._mqtt is None:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion

            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-flood-{self.index}",
                                 protocol=mqtt.MQTTv5)
            client.reconnect_delay_set(1, 1)
            client.max_queued_messages_set(0)
            client.connect_async("127.0.0.1", self.central_broker.port)
            client.loop_start()
            self._mqtt = client
        return self._mqtt

    # --- the campaign ----------------------------------------------------------------------------

    def run(self, budget: int) -> Result:
        started = time.monotonic()
        try:
            self.setup()
            assert self.edge is not None
            if not self.edge.wait_up(60):
                raise EdgeError(f"the edge did not come up; see {self.edge.log}")
            time.sleep(2.0)  # the floor gets going before the first fault
            while self.result.injected < budget:
                self._pause(0.05, 1.0)
                self._check_crashes()
                kind = self.rng.choice(self.kinds)
                self.log(f"fault {kind}")
                if self.inject(kind):
                    self.result.faults[kind] += 1
                    self.log(f"fault {kind} done")
                else:
                    self.log(f"fault {kind} not possible now")
                assert self.edge is not None
                if self.rng.random() < 0.8:  # mostly, the floor gets going again first
                    self.edge.wait_up(30)
            self.log("faults over: recovering")
            self._recover()
            self.log("counting")
            self._count()
        finally:
            self.teardown()
            self.result.wall_s = time.monotonic() - started
        return self.result

    def _backlog(self) -> int:
        if not self.outbox.exists():
            return 0
        try:
            conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5)
            try:
                (n,) = conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sent')").fetchone()
                return int(n)
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def _applied(self) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.central.database}?mode=ro", uri=True, timeout=5)
            try:
                (n,) = conn.execute("SELECT COUNT(*) FROM events WHERE device = ?",
                                    (self.device,)).fetchone()
                return int(n)
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def _recover(self) -> None:
        """Faults over: everything back, the floor stops, the backlog drains, the edge stops."""
        assert self.edge is not None
        self.central.resume()
        self._check_crashes()
        if not self.central.wait_ready(60):
            self.result.notes.append("central service not ready after the faults")
        if self.operator is not None:
            self.operator.stop()
        if self.reader is not None and not self.reader.finish():
            self.result.notes.append("the reader's broker did not take every message")
        extra = self.clock_offset if self.spec.path == "dock" else 0.0
        deadline = time.monotonic() + 90 + extra
        last, still = -2, time.monotonic()
        while time.monotonic() < deadline:
            applied = self._applied()
            if applied != last:
                last, still = applied, time.monotonic()
            if self._backlog() == 0 and time.monotonic() - still > 5 + extra:
                break
            time.sleep(0.25)
        code = self.edge.stop()
        if code not in (0, None):
            self.result.notes.append(f"edge exited with status {code} at the final stop")
        for _ in range(3):  # what the stop could not get acked goes at the next start
            if self._backlog() == 0:
                break
            self.edge.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self._backlog() != 0:
                time.sleep(0.25)
            self.edge.stop()
        if self._backlog():
            self.result.notes.append(f"edge backlog not drained: {self._backlog()} events")

    def _count(self) -> None:
        r = self.result
        conn = sqlite3.connect(f"file:{self.central.database}?mode=ro", uri=True, timeout=10)
        try:
            if self.operator is not None:
                rows = conn.execute(
                    "SELECT serial, type, COUNT(*) FROM events WHERE device = ? AND gtin = ?"
                    " GROUP BY serial, type", (self.device, GTIN)).fetchall()
                generated = self.operator.acked
                others = self.operator.unconfirmed
                r.unconfirmed = len(others)
                if self.operator.refused:
                    r.notes.append(f"{self.operator.refused} scans refused (bad read) and "
                                   "scanned again")
            else:
                assert self.reader is not None
                rows = conn.execute(
                    "SELECT tag, type, COUNT(*) FROM events WHERE device = ? AND tag IS NOT NULL"
                    " GROUP BY tag, type", (self.device,)).fetchall()
                generated, others = self.reader.tags, []
                if self.reader.late_messages:
                    r.notes.append(f"the simulated reader published {self.reader.late_messages} "
                                   "message(s) over 0.25 s after their reads' time (max "
                                   f"{self.reader.late_max:.2f} s): host load, not the reader")
        finally:
            conn.close()
        receives: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        for key, kind, n in rows:
            (receives if kind == "receive" else wrong)[key] += n
        known = set(generated) | set(others)
        r.generated = len(generated)
        r.applied = sum(1 for k in generated if receives[k] >= 1)
        lost = [k for k in generated if receives[k] == 0]
        doubled = [k for k in known if receives[k] > 1]
        strays = [k for k in receives if k not in known]
        r.lost, r.doubled = len(lost), len(doubled)
        r.wrong = sum(wrong[k] for k in known) + len(strays)
        if lost:
            r.examples["lost"] = lost[:10]
        if doubled:
            r.examples["doubled"] = doubled[:10]
        if not r.generated:
            r.notes.append("nothing was generated: this scenario proves nothing")
        if r.wrong:
            r.examples["wrong"] = ([f"{k}: {wrong[k]} other" for k in known if wrong[k]]
                                   + [f"{k}: not generated here" for k in strays])[:10]


# --- the campaign -------------------------------------------------------------------------------


def _budgets(total: int, count: int) -> list[int]:
    base, extra = divmod(max(total, count), count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _line(r: Result) -> str:
    return (f"{r.scenario:15} {r.injected:6} {r.generated:9} {r.applied:8} {r.lost:5} "
            f"{r.doubled:7} {r.unconfirmed:7} {r.wall_s:7.1f}s  "
            + ("ok" if r.ok else "FAIL" + (f" (wrong {r.wrong})" if r.wrong else "")))


HEADER = (f"{'scenario':15} {'faults':>6} {'generated':>9} {'applied':>8} {'lost':>5} "
          f"{'doubled':>7} {'unconf.':>7} {'wall':>8}")


def run_campaign(*, seed: int | None = None, faults: int = 1000,
                 scenarios: Sequence[str] | None = None, as_json: bool = False,
                 data: Path | None = None, keep: bool = False,
                 stream: TextIO | None = None) -> tuple[int, list[Result]]:
    """Run the scenarios one after the other; (exit status, results). 1 on any loss or double."""
    stream = stream or sys.stdout
    names = list(scenarios or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise EdgeError(f"unknown scenario(s) {', '.join(unknown)}; "
                        f"known: {', '.join(SCENARIOS)}")
    seed = random.SystemRandom().randrange(1, 2**31) if seed is None else seed
    base = data or Path(tempfile.mkdtemp(prefix="floorsync-chaos-"))
    base.mkdir(parents=True, exist_ok=True)

    def out(text: str) -> None:
        if not as_json:
            print(text, file=stream, flush=True)

    out(f"floorsync chaos: seed {seed}, {faults} faults over {len(names)} scenario(s), "
        f"logs in {base}")
    results: list[Result] = []
    started = time.monotonic()
    for index, (name, budget) in enumerate(zip(names, _budgets(faults, len(names)),
                                               strict=True)):
        scenario_seed = random.Random(f"{seed}:{name}").randrange(2**31)
        out(f"-- {name} ({budget} faults, seed {scenario_seed})")
        world = World(SCENARIOS[name], scenario_seed, base / name, out, index + 1)
        try:
            result = world.run(budget)
        except EdgeError as exc:
            result = world.result
            result.notes.append(f"scenario failed to run: {exc}")
            result.lost = max(result.lost, 1)  # a scenario that cannot run proves nothing
        results.append(result)
        out(HEADER)
        out(_line(result))
        out("   faults: " + ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items())))
        for note in result.notes:
            out(f"   note: {note}")
        for what, examples in result.examples.items():
            out(f"   {what}: {', '.join(examples)}")
    total = Result("total", "both", seed)
    for r in results:
        total.faults.update(r.faults)
        for attr in ("generated", "applied", "lost", "doubled", "unconfirmed", "wrong"):
            setattr(total, attr, getattr(total, attr) + getattr(r, attr))
    total.wall_s = time.monotonic() - started
    status = 0 if all(r.ok for r in results) else 1
    if as_json:
        print(json.dumps({"seed": seed, "ok": status == 0,
                          "scenarios": [r.as_dict() for r in results],
                          "total": total.as_dict()}), file=stream, flush=True)
    else:
        out("== per scenario")
        out(HEADER)
        for r in results:
            out(_line(r))
        out(_line(total))
        out("   faults: " + ", ".join(f"{k} {v}" for k, v in sorted(total.faults.items())))
        out("chaos: " + ("no loss, no double" if status == 0 else
                         "LOSS OR DOUBLE FOUND (see above)"))
    if not keep and data is None and status == 0:
        shutil.rmtree(base, ignore_errors=True)
    return status, results
