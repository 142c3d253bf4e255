"""MQTT ingest: batches in, application acks out, PUBACK only after the commit.

Two threads: paho's network thread only reads messages and queues them, so keepalives and
reads never wait for the database; the writer thread takes what has queued up, decodes it,
applies the batches in one transaction (one fsync for several messages), then publishes each
application ack and PUBACKs each message, in the order they arrived (MQTT wants acks in
receive order). Decoding stays on the writer thread on purpose: decoding on the network
thread while the writer ran SQLite made the two fight over the GIL (measured: 13-23k events/s
and more CPU, against 21-24k events/s with both steps on one thread).

The queue is bounded: when the writer falls behind, the network thread waits, and the broker
holds the rest. A bad message is recorded and acked as rejected; it never stops the consumer.
A failing database is different: nothing is PUBACKed, the client drops the connection and comes
back, and the broker redelivers what was not acknowledged. Work read on an older connection is
never PUBACKed on a newer one (its message ids belong to the old session's delivery).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from paho.mqtt.client import (
    CallbackAPIVersion,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTProtocolVersion,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from floorsync.edge import wire
from floorsync.server import brokerlink
from floorsync.server.errors import StoreError
from floorsync.server.ledger import LOGGED_IDS, Incoming, Store
from floorsync.server.settings import Settings, broker_address

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
KEEPALIVE_S = 30
RESTART_AFTER_STORE_FAILURE_S = 1.0
QUEUE_MESSAGES = 64  # received messages waiting for the writer
GROUP_EVENTS = 5000  # events applied in one transaction, at most
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 1.0  # deliveries resume within ~1 s of the broker


@dataclass(frozen=True, slots=True)
class _Received:
    """A message as paho handed it over, with the connection it came on."""

    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Work:
    """One received message, decoded, waiting to be written and acknowledged."""

    connection: int
    mid: int
    qos: int
    site: str | None = None
    device: str | None = None
    incoming: Incoming | None = None  # events to apply
    reject: tuple[str, bytes, str, tuple[str, ...]] | None = None  # reason, payload, topic, ids
    status: wire.Status | None = None
    claimed: tuple[str, str] | None = None  # the payload's (site, device), not the topic's

    @property
    def events(self) -> int:
        return len(self.incoming.batch.events) if self.incoming else 0
EVENTS_FILTER = f"{wire.TOPIC_ROOT}/+/+/events"
STATUS_FILTER = f"{wire.TOPIC_ROOT}/+/+/status"


class MqttIngest:
    """Consumes ``floorsync/v1/+/+/events`` and ``/status`` into ``store``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        if settings.broker is None:
            raise ValueError("MqttIngest needs settings.broker")
        self._store = store
        self._settings = settings
        self._host, self._port = broker_address(settings.broker)
        self._v5 = settings.mqtt_protocol == "5"
        group = settings.shared_group
        self._events_filter = f"$share/{group}/{EVENTS_FILTER}" if group else EVENTS_FILTER
        self._client = self._new_client()
        self._ready = threading.Event()
        self._session_up = False  # a CONNACK accepted us and no disconnect came since
        self._subscribe_mid: int | None = None
        self._halted = False  # the store failed: ack nothing until we have reconnected
        self._stopping = False
        self._life = threading.Lock()
        self._restart_timer: threading.Timer | None = None
        self._queue: queue.Queue[_Received | None] = queue.Queue(QUEUE_MESSAGES)
        self._connection = 0  # counts connections; work remembers the one it came on
        self._writer: threading.Thread | None = None
        # the queue's depth for metrics: each counter has one writing thread, so no lock
        self._received = 0  # messages the network thread took (it alone counts them)
        self._finished = 0  # messages the writer acknowledged or dropped (it alone)
        # told, after a group's acks went out, each one's seconds from the commit (metrics)
        self.ack_listeners: list[Callable[[list[float]], None]] = []

    def _new_client(self) -> Client:
        if self._v5:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._settings.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
                manual_ack=True,
            )
        else:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._settings.client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        self._broker_errors = brokerlink.configure(client, self._settings, log, "ingest")
        # paho takes seconds as floats here, whatever its annotation says
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_close = self._on_socket_close
        return client

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and subscribed: messages are flowing."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._ready.wait(timeout)

    @property
    def pending(self) -> int:
        """Messages received and not yet applied and acknowledged (queued or being written)."""
        return max(0, self._received - self._finished)

    def start(self) -> MqttIngest:
        """Connect in the background; paho retries until the broker answers."""
        with self._life:
            self._stopping = False
            self._writer = threading.Thread(target=self._write_loop, name="ingest-writer",
                                            daemon=True)
            self._writer.start()
            self._connect_async()
            self._client.loop_start()
        return self

    def stop(self) -> None:
        with self._life:
            self._stopping = True
            if self._restart_timer is not None:
                self._restart_timer.cancel()
            self._client.disconnect()
            self._client.loop_stop()
            self._ready.clear()
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join(10)
                self._writer = None

    def __enter__(self) -> MqttIngest:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _connect_async(self) -> None:
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self._client.connect_async(
                self._host, self._port, KEEPALIVE_S, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S)

    def _schedule_restart(self) -> None:
        """After a store failure, reconnect in a while (once, however many callers ask)."""
        with self._life:
            if self._stopping or (self._restart_timer and self._restart_timer.is_alive()):
                return
            timer = threading.Timer(RESTART_AFTER_STORE_FAILURE_S, self._restart)
            timer.daemon = True
            self._restart_timer = timer
            timer.start()

    def _restart(self) -> None:
        """After a store failure: a fresh connection, so the broker redelivers the un-PUBACKed."""
        with self._life:
            if self._stopping:
                return
            self._client.disconnect()
            self._client.loop_stop()
            self._connect_async()
            self._client.loop_start()

    # --- callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:  # paho tries again: logged once until connected
            self._broker_errors.refused(reason)
            return
        _no_delay(client)
        self._broker_errors.connected()
        self._session_up = True
        self._halted = False
        # Every time: a shared subscription does not survive a broker restart.
        _, self._subscribe_mid = client.subscribe([(self._events_filter, 1), (STATUS_FILTER, 1)])
        log.info("connected to %s:%s (session present: %s)", self._host, self._port,
                 flags.session_present, extra={"state": "connected",
                                               "broker": f"{self._host}:{self._port}"})

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused our subscriptions: %s", failed)
        else:
            self._ready.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._ready.clear()
        was_up, self._session_up = self._session_up, False
        if self._stopping:
            return
        if was_up:  # not after each refused attempt: the broker's refusal is logged once
            log.warning("disconnected from %s:%s: %s", self._host, self._port, reason,
                        extra={"state": "disconnected",
                               "broker": f"{self._host}:{self._port}"})
        if self._halted:
            self._schedule_restart()

    def _on_socket_close(self, client: Client, userdata: Any, sock: Any) -> None:
        # A new connection starts here, before paho drops its queued packets: from now on the
        # writer PUBACKs nothing read on the old one (its message ids mean nothing any more).
        self._connection += 1

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        if self._halted:
            return  # not PUBACKed: the broker redelivers it after we reconnect
        self._received += 1
        self._queue.put(
            _Received(self._connection, msg.mid, msg.qos, msg.topic, bytes(msg.payload))
        )

    def _prepare(self, msg: _Received) -> Work:
        """Writer thread: topic and payload checked, the batch decoded."""
        return prepare(Work(msg.connection, msg.mid, msg.qos), msg.topic, msg.payload)

    # --- the writer -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        applier = Applier(self._store)
        while True:
            received = self._queue.get()
            if received is None:
                return
            first = self._prepare(received)
            group, events = [first], first.events
            while events < GROUP_EVENTS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                work = self._prepare(more)
                group.append(work)
                events += work.events
            if self._halted:
                self._finished += len(group)
                continue  # dropped unacknowledged: redelivered after the reconnect
            try:
                results = applier.write(group)
            except StoreError:
                log.exception("store failed; not acknowledging, reconnecting")
                self._finished += len(group)
                self._halted = True
                self._client.disconnect()
                # not left to on_disconnect: with no connection at this moment, paho's thread
                # just ends and on_disconnect never comes
                self._schedule_restart()
                continue
            except Exception:
                log.exception("unexpected error writing %d message(s)", len(group))
                results = [None] * len(group)
            self._acknowledge(group, results, time.perf_counter())
            self._finished += len(group)

    def _acknowledge(self, group: list[Work], results: list[tuple[wire.Result, ...] | None],
                     committed: float = 0.0) -> None:
        """After the commit: application acks to the edges, then PUBACKs in receive order."""
        listeners, latencies = self.ack_listeners, list[float]()
        for work, result in zip(group, results, strict=True):
            if work.connection != self._connection:
                continue  # read on a connection that is gone: the broker sends it again
            if result and work.site and work.device:
                ack = wire.encode_ack(wire.Ack(work.device, result))
                self._client.publish(wire.acks_topic(work.site, work.device), ack, qos=1)
                if listeners:
                    latencies.append(time.perf_counter() - committed)
            self._client.ack(work.mid, work.qos)
        for listener in listeners if latencies else ():
            try:
                listener(latencies)
            except Exception:
                log.exception("ack listener %r failed", listener)


def prepare(work: Work, topic: str, payload: bytes) -> Work:
    """``work`` with what ``topic`` and ``payload`` say: topic and payload checked, the batch
    decoded, or the reason to reject it. Never raises: a bug is logged and gives ``work`` as it
    was (no application ack goes out, the edge re-sends later; the message itself is
    acknowledged, so one poison message cannot block the rest)."""
    try:
        return decode(work, topic, payload)
    except Exception:
        # A bug must not kill the consumer. No application ack goes out, so the edge
        # re-sends later; the PUBACK keeps one poison message from blocking the rest.
        log.exception("unexpected error reading a message on %s", topic)
        return work


def decode(work: Work, topic: str, payload: bytes) -> Work:
    """``prepare`` without its guard against bugs."""
    try:
        site, device, kind = wire.parse_topic(topic)
    except wire.WireError as exc:
        return replace(work, reject=(str(exc), payload, topic, ()))
    work = replace(work, site=site, device=device)
    if kind == "status":
        if not payload:
            return work  # a cleared retained status
        try:
            return replace(work, status=wire.decode_status(payload))
        except wire.WireError as exc:
            return replace(work, reject=(str(exc), payload, topic, ()))
    if kind != "events":
        return work
    try:
        batch = wire.decode_batch(payload)
    except wire.WireError as exc:
        ids = tuple(wire.salvage_ids(payload))
        return replace(work, reject=(str(exc), payload, topic, ids))
    if (batch.site, batch.device) != (site, device):
        reason = (
            f"spoofed: payload device {batch.site}/{batch.device}"
            f" on topic of device {site}/{device}"
        )
        ids = tuple([e.id for e in batch.events] + [b.id for b in batch.invalid if b.id])
        return replace(work, reject=(reason, payload, topic, ids),
                       claimed=(batch.site, batch.device))
    return replace(work, incoming=Incoming(batch, "mqtt", topic, payload))


class Applier:
    """Writes a group of decoded messages to the store: every batch in one transaction,
    rejections and presence beside it. Shared by MqttIngest and the replicas (server.replica).
    A failing database raises StoreError: nothing of the group may be acknowledged."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def write(self, group: list[Work]) -> list[tuple[wire.Result, ...] | None]:
        """All batches of the group in one transaction; rejections and presence beside it."""
        batches = [w.incoming for w in group if w.incoming is not None]
        applied = iter(self._apply(batches) if batches else [])
        results: list[tuple[wire.Result, ...] | None] = []
        for work in group:
            if work.incoming is not None:
                results.append(next(applied))
            elif work.reject is not None:
                results.append(self._reject(work))
            else:
                if work.status is not None and work.site and work.device:
                    self._store.update_presence(work.site, work.device, work.status)
                results.append(None)
        return results

    def _apply(self, batches: list[Incoming]) -> list[tuple[wire.Result, ...]]:
        """Apply together; if something other than the database fails (a value SQLite cannot
        take), apply one by one so only the message that carries it is rejected."""
        try:
            return self._store.apply_batches(batches)
        except StoreError:
            raise
        except Exception as exc:
            if len(batches) > 1:
                return [self._apply([one])[0] for one in batches]
            one = batches[0]
            reason = f"could not be stored: {exc!r}"[:500]
            ids = [e.id for e in one.batch.events] + [b.id for b in one.batch.invalid if b.id]
            log.exception("rejected a batch on %s", one.topic, extra={
                "site": one.batch.site, "device": one.batch.device, "reason": reason,
                "events": len(ids), "event_ids": ids[:LOGGED_IDS]})
            self._store.record_rejection(
                source=one.source, reason=reason, payload=one.raw or b"", topic=one.topic,
                site=one.batch.site, device=one.batch.device, event_ids=ids,
            )
            return [wire.results_for(ids, "rejected", reason)]

    def _reject(self, work: Work) -> tuple[wire.Result, ...]:
        assert work.reject is not None
        reason, payload, topic, ids = work.reject
        if work.claimed is not None and work.site and work.device:
            count = self._store.record_topic_mismatch(
                topic=topic, site=work.site, device=work.device, reason=reason,
                payload=payload, event_ids=ids,
            )
            # Names only: both were checked by the decoder (1-64 of A-Z a-z 0-9 . _ -), so
            # they cannot forge a log line; the payload itself is never logged.
            log.warning(
                "topic/payload mismatch on %s: the payload claims site %s device %s"
                " (%d event(s) rejected; %d such batch(es) from %s/%s so far)",
                topic, work.claimed[0], work.claimed[1], len(ids), count, work.site,
                work.device, extra={"site": work.site, "device": work.device,
                                    "reason": "spoofed", "events": len(ids),
                                    "event_ids": list(ids[:LOGGED_IDS])},
            )
            return wire.results_for(ids, "rejected", reason)
        log.warning("rejected message on %s: %s", topic, reason, extra={
            "site": work.site, "device": work.device, "reason": reason, "events": len(ids),
            "event_ids": list(ids[:LOGGED_IDS])})
        self._store.record_rejection(
            source="mqtt", reason=reason, payload=payload, topic=topic, site=work.site,
            device=work.device, event_ids=ids,
        )
        return wire.results_for(ids, "rejected", reason)


def _no_delay(client: Client) -> None:
    """Nagle off (paho leaves it on): small acks must not wait for the peer's delayed ACK."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # also ssl.SSLSocket; not a websocket wrapper
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
