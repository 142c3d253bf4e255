"""Simulated network readers: tag reads pushed the way fixed readers push them.

`ZebraMqttReaderSim` publishes Zebra IoT Connector tag data events (one read per message, as the
connector does without batching) at QoS 1 from its own paho client with a persistent session, so a
broker restart does not lose what it had not yet delivered, like a reader that buffers during a
network loss. `post_impinj` sends Impinj IoT device interface events to an HTTP receiver the way
readers do: retrying on errors and time-outs until a 2xx answer.

For tests, benchmarks and the fault campaign; the formats are those `devices.rfid.zebra` and
`devices.rfid.impinj` parse.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from floorsync.devices.base import TagRead


def _stamp(read: TagRead) -> str:
    return read.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def zebra_event(read: TagRead) -> dict[str, Any]:
    """One Zebra IoT Connector tag data event."""
    data: dict[str, Any] = {"idHex": read.epc.lower(), "antenna": read.antenna, "reads": read.seen}
    if read.rssi is not None:
        data["peakRssi"] = read.rssi
    return {"data": data, "timestamp": _stamp(read), "type": "SIMPLE"}


def impinj_event(read: TagRead, hostname: str = "impinj-sim") -> dict[str, Any]:
    """One Impinj IoT device interface tagInventoryEvent."""
    event: dict[str, Any] = {"epcHex": read.epc, "antennaPort": read.antenna}
    if read.rssi is not None:
        event["peakRssiCdbm"] = round(read.rssi * 100)
    return {"timestamp": _stamp(read), "hostname": hostname, "eventType": "tagInventory",
            "tagInventoryEvent": event}


class ZebraMqttReaderSim:
    """Publishes reads as Zebra tag data events, QoS 1, one read per message.

    ``acked`` counts the broker's PUBACKs (what a real reader treats as delivered and forgets);
    paho keeps what is not PUBACKed and sends it again after a reconnect.
    """

    def __init__(self, broker_url: str, topic: str, *, client_id: str, protocol: int = 5) -> None:
        parts = urlsplit(broker_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.topic = topic
        self.published = 0
        self.acked = 0
        self._v5 = protocol == 5
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else False,
        )
        self._client.max_inflight_messages_set(100)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        self.acked += 1

    def start(self) -> ZebraMqttReaderSim:
        kwargs: dict[str, Any] = {}
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            kwargs = {"clean_start": False, "properties": properties}
        self._client.connect_async(self.host, self.port, 30, **kwargs)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> ZebraMqttReaderSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(self, reads: Iterable[TagRead], window: int = 1000, per_message: int = 1
                ) -> None:
        """Publish, one read per message or ``per_message`` as a JSON array (the connector's
        batching); while connected, at most ``window`` messages wait for their PUBACK (paho
        scans every waiting message on each PUBACK: a deep queue costs quadratic time)."""
        batch: list[dict[str, Any]] = []
        pending = list(reads)
        for i, read in enumerate(pending):
            batch.append(zebra_event(read))
            if len(batch) < per_message and i + 1 < len(pending):
                continue
            while (self.published - self.acked >= window and self._client.is_connected()):
                time.sleep(0.001)
            payload = json.dumps(batch[0] if per_message == 1 else batch)
            batch = []
            with self._lock:
                self._client.publish(self.topic, payload, qos=1)
                self.published += 1

    def paced(self, reads: Sequence[TagRead], rate: float) -> None:
        """Publish ``reads`` at ``rate`` per second (no catching up in bursts beyond 50 ms)."""
        start = time.monotonic()
        for i, read in enumerate(reads):
            due = start + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.publish([read])

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.published:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def post_impinj(url: str, reads: Sequence[TagRead], *, timeout: float = 2.0,
                give_up_after: float = 60.0) -> int:
    """POST reads as one Impinj event array, again and again until a 2xx answer, as a reader
    does (errors, refused connections and time-outs all retried); returns the attempts made."""
    parts = urlsplit(url)
    body = json.dumps([impinj_event(r) for r in reads]).encode()
    deadline = time.monotonic() + give_up_after
    attempts = 0
    while True:
        attempts += 1
        try:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                              timeout=timeout)
            try:
                conn.request("POST", parts.path or "/", body,
                             {"Content-Type": "application/json"})
                status = conn.getresponse().status
            finally:
                conn.close()
            if 200 <= status < 300:
                return attempts
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 2xx from {url} after {attempts} attempts")
        time.sleep(min(0.05 * attempts, 0.5))
