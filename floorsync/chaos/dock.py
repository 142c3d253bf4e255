"""The dock path: a simulated Zebra / Impinj network reader at the door that publishes tag-read
JSON at QoS 1 with a persistent session to a reader-side mosquitto (persistence on), read by
the edge's portal.

Ground truth: every tag crosses the door as outside-antenna reads, then inside-antenna reads;
a door in ``direction = "auto"`` makes one receive per tag. A tag counts as generated once
all its reads were handed to the reader's MQTT client (which keeps them until its broker
PUBACKs).
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from floorsync.chaos.processes import Broker

COMPANY, ITEM_REF = "0614141", "812345"  # the dock's SGTIN-96 tags


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
