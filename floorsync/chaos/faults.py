"""The faults and how each is injected into a running site.

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
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

from floorsync.chaos.site import SITE, Site
from floorsync.edge.errors import EdgeError


class FaultInjector(Site):
    """A site and its fault injector: one fault of a kind at a time, at the caller's moment."""

    def _pause(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))

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
