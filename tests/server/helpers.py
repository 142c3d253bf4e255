"""Batches built with the wire contract, and a raw paho 'edge' that publishes and collects acks."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTProtocolVersion

from floorsync.edge import wire
from floorsync.server.settings import Settings

# Bearer tokens of the test servers, one per scope.
READ_TOKEN = "test-read-token"
WRITE_TOKEN = "test-write-token"
ADMIN_TOKEN = "test-admin-token"
TOKENS = {READ_TOKEN: "read", WRITE_TOKEN: "write", ADMIN_TOKEN: "admin"}


def api_settings(database: Path, **kwargs: Any) -> Settings:
    """Settings of an HTTP-only test server that knows the test tokens."""
    kwargs.setdefault("broker", None)
    return Settings(database=database, tokens=TOKENS, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_client(app: FastAPI, token: str | None = ADMIN_TOKEN) -> TestClient:
    """A TestClient that sends ``token`` (admin by default) with every request."""
    return TestClient(app, headers=bearer(token) if token else None)

_seq = iter(range(1, 10**9))


def event(
    type: str = "receive",
    *,
    gtin: str = "09501101530003",
    lot: str | None = None,
    qty: float = 1,
    src: str | None = None,
    dst: str | None = "DOCK-1",
    count: wire.Count | None = None,
) -> wire.Event:
    item = None if type == "count" else wire.Item(gtin=gtin, lot=lot)
    return wire.Event(
        id=wire.new_event_id(), seq=next(_seq), time=wire.local_now(), type=type, item=item,
        qty=0 if type == "count" else qty, from_=src, to=dst, count=count,
    )


def batch(site: str, device: str, *events: wire.Event) -> wire.Batch:
    return wire.Batch(site, device, wire.utc_now(), tuple(events))


def payload(site: str, device: str, *events: wire.Event) -> bytes:
    return wire.encode_batch(batch(site, device, *events))


def decoded(site: str, device: str, *events: wire.Event) -> wire.Batch:
    """Through the decoder, as the service sees it."""
    return wire.decode_batch(payload(site, device, *events))


class Edge:
    """A raw paho client standing in for an edge: publishes batches, collects its acks."""

    def __init__(
        self,
        port: int,
        site: str,
        device: str,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.site, self.device = site, device
        self.acks: queue.Queue[wire.Ack] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=f"edge-{site}-{device}", protocol=protocol
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "edge did not subscribe to its acks"

    def _on_connect(self, client: Client, *args: Any) -> None:
        client.subscribe(wire.acks_topic(self.site, self.device), qos=1)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.acks.put(wire.decode_ack(bytes(msg.payload)))

    def publish(self, body: bytes, topic: str | None = None, retain: bool = False) -> None:
        info = self.client.publish(
            topic or wire.events_topic(self.site, self.device), body, qos=1, retain=retain
        )
        info.wait_for_publish(10)

    def send(self, *events: wire.Event) -> list[str]:
        self.publish(payload(self.site, self.device, *events))
        return [e.id for e in events]

    def next_ack(self, timeout: float = 10.0) -> wire.Ack:
        return self.acks.get(timeout=timeout)

    def no_ack(self, wait: float = 0.5) -> bool:
        try:
            self.acks.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- what differs between the engines, for tests that break the database on purpose ----------


def integrity_error(store: Any) -> type[Exception]:
    """The engine's constraint-violation error (a raw write on ``store._writer``)."""
    if store.engine == "sqlite":
        import sqlite3

        return sqlite3.IntegrityError
    import psycopg

    return psycopg.IntegrityError


def refuse_writes(store: Any, refuse: bool) -> None:
    """Make the writer's transactions fail (a real database refusal), or write again."""
    if store.engine == "sqlite":
        store._writer.execute(f"PRAGMA query_only = {int(refuse)}")
    else:
        store._writer.execute(f"SET default_transaction_read_only = {'on' if refuse else 'off'}")


def fail_insert(store: Any, table: str, when: str, message: str) -> None:
    """A trigger that aborts an insert into ``table`` where ``when`` (over NEW) holds."""
    if store.engine == "sqlite":
        store._writer.execute(f"CREATE TRIGGER fail AFTER INSERT ON {table} WHEN {when}"
                              f" BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return
    store._writer.execute(f"CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$"
                          f" BEGIN RAISE EXCEPTION '{message}'; END $$")
    store._writer.execute(f"CREATE TRIGGER fail AFTER INSERT ON {table} FOR EACH ROW"
                          f" WHEN ({when}) EXECUTE FUNCTION fail()")


def mend_insert(store: Any, table: str) -> None:
    if store.engine == "sqlite":
        store._writer.execute("DROP TRIGGER fail")
    else:
        store._writer.execute(f"DROP TRIGGER fail ON {table}")
        store._writer.execute("DROP FUNCTION fail()")
