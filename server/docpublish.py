"""The documents' expected lists, out to the floor: one retained MQTT message per open document.

A door or handheld cut off from the central service still has to say whether a pallet was
expected, so each open document's ``Expected`` (``edge/expected.py``) is published **retained**
at QoS 1 on ``floorsync/v1/{site}/docs/{kind}/{id}`` when it opens or changes, and withdrawn by
an empty retained message when it closes. Edges subscribe to their site's ``docs/#`` and keep
what they got.

The broker's retained store is not to be trusted alone, so on every (re)connection the
publisher makes the broker match the database again:

1. it republishes every open document (a broker restarted without its retained store must not
   leave the doors blind), from the **providers**: one callable per document kind returning the
   open documents' ``Expected`` (receipts now; outbound orders plug in the same way);
2. then it subscribes to ``floorsync/v1/+/docs/#`` and withdraws every retained document of a
   kind it provides that is not open: one closed while the broker was away, or while this
   service was down between its commit and the withdrawal. Subscribing after the republishing
   matters: paho re-sends what was in flight at the disconnect right after the CONNACK, so the
   retained messages delivered on subscribing show the broker's state after those re-sends.

Its own paho client, not the ingest's: the ingest's connection is a persistent session whose
writer PUBACKs deliveries in order after each commit and drops the connection on purpose when
the database fails (so the broker redelivers); a megabyte expected list queued on that socket
would delay the edges' acks, and the floor's documents must not vanish from the broker's view
whenever the ingest restarts. The settings are the same (broker, protocol, login), the client id
is ``{client_id}-docs`` and the session is clean: the state lives in the broker's retained store
and in the database, there is nothing to resume. One worker thread does the database reads and
the publishing, in order, so a withdrawal never overtakes the publication it withdraws.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from paho.mqtt.client import (
    CallbackAPIVersion,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTMessageInfo,
    MQTTProtocolVersion,
)
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from floorsync.edge import expected as floor
from floorsync.edge import wire
from floorsync.server import brokerlink
from floorsync.server.settings import Settings, broker_address

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 2.0
RETRY_S = 1.0  # a provider failed (database busy): republish everything again after this
DOCS_FILTER = f"{wire.TOPIC_ROOT}/+/{floor.DOC_TOPIC_KIND}/#"

Provider = Callable[[], Iterable[floor.Expected]]
_Key = tuple[str, str, str]  # site, kind, id


@dataclass(frozen=True, slots=True)
class _Publish:
    doc: floor.Expected


@dataclass(frozen=True, slots=True)
class _Withdraw:
    key: _Key


@dataclass(frozen=True, slots=True)
class _Connected:
    connection: int


@dataclass(frozen=True, slots=True)
class _Retained:
    topic: str
    connection: int


_Job = _Publish | _Withdraw | _Connected | _Retained | None


class DocumentPublisher:
    """Keeps the broker's retained documents equal to the open ones; ``start()``, ``stop()``."""

    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        if settings.broker is None:
            raise ValueError("DocumentPublisher needs settings.broker")
        unknown = set(providers) - wire.DOC_KINDS
        if unknown:
            raise ValueError(f"no such document kinds: {sorted(unknown)}")
        self._providers = dict(providers)
        self._host, self._port = broker_address(settings.broker)
        self._v5 = settings.mqtt_protocol == "5"
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._open: set[_Key] = set()  # what the database has open, as the worker last heard
        self._connected = threading.Event()
        self._connection = 0
        self._in_flight: list[MQTTMessageInfo] = []
        self._worker: threading.Thread | None = None
        self._retry: threading.Timer | None = None
        self.published = 0  # expected lists sent (republishing included)
        self.withdrawn = 0  # empty retained messages sent
        self.rounds = 0  # complete republishing rounds (one per connection, or retry)
        client_id = f"{settings.client_id}-docs"
        if self._v5:
            self._client = Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        else:
            self._client = Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
        self._broker_errors = brokerlink.configure(self._client, settings, log,
                                                   "document publisher")
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(0)  # re-sends all go out at the CONNACK
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> DocumentPublisher:
        self._worker = threading.Thread(target=self._work, name="doc-publisher", daemon=True)
        self._worker.start()
        if self._v5:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S, clean_start=True)
        else:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(10)
            self._worker = None
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> DocumentPublisher:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Every job done and every message sent PUBACKed (for tests and a clean stop)."""
        done = threading.Event()

        def join() -> None:
            self._jobs.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        if not done.wait(timeout):
            return False
        for info in list(self._in_flight):
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    # --- what the documents say (any thread) ------------------------------------------------

    def document_changed(self, kind: str, site: str, doc_id: str,
                         expected: floor.Expected | None) -> None:
        """A document opened or changed (``expected``), or closed (None): tell the floor."""
        self._jobs.put(_Withdraw((site, kind, doc_id)) if expected is None
                       else _Publish(expected))

    def republish(self) -> None:
        """Send every open document again and withdraw stale ones (as at a connection)."""
        self._jobs.put(_Connected(self._connection))

    # --- paho's callbacks ---------------------------------------------------------------------

    def _on_connect(self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:  # paho tries again: logged once until connected
            self._broker_errors.refused(reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # small PUBACKs must not wait for a delayed ACK
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._broker_errors.connected()
        self._connection += 1
        self._connected.set()
        self._jobs.put(_Connected(self._connection))

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up:  # not after each refused attempt
            log.info("document publisher disconnected from %s:%s: %s", self._host, self._port,
                     reason)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        # Only what the broker held when we subscribed (retain flag set) says anything about
        # its retained store; live copies of our own publications come without it.
        if msg.retain and msg.payload:
            self._jobs.put(_Retained(msg.topic, self._connection))

    # --- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                self._do(job)
            except Exception:
                log.exception("document publisher: %r failed", type(job).__name__)
            finally:
                self._jobs.task_done()

    def _do(self, job: _Publish | _Withdraw | _Connected | _Retained) -> None:
        if isinstance(job, _Publish):
            doc = job.doc
            self._open.add((doc.site, doc.kind, doc.id))
            self._send(doc.site, doc.kind, doc.id, floor.encode_expected(doc))
        elif isinstance(job, _Withdraw):
            self._open.discard(job.key)
            self._send(*job.key, b"")
        elif isinstance(job, _Connected):
            if job.connection == self._connection and self.connected:
                self._republish()
        elif job.connection == self._connection:
            self._reconcile(job.topic)

    def _republish(self) -> None:
        """Every open document of every provider; then subscribe to see what else is kept."""
        try:
            docs = [doc for provide in self._providers.values() for doc in provide()]
        except Exception:
            log.exception("document publisher: reading the open documents failed; again in"
                          " %.0f s", RETRY_S)
            self._retry = threading.Timer(RETRY_S, self.republish)
            self._retry.daemon = True
            self._retry.start()
            return
        self._open = {(d.site, d.kind, d.id) for d in docs}
        for doc in docs:
            self._send(doc.site, doc.kind, doc.id, floor.encode_expected(doc))
        self._client.subscribe(DOCS_FILTER, qos=1)
        self.rounds += 1
        log.info("document publisher: %d open document(s) published", len(docs))

    def _reconcile(self, topic: str) -> None:
        try:
            site, kind, doc_id = floor.parse_docs_topic(topic)
        except wire.WireError:
            return  # not a document topic of ours: not ours to clear
        if kind in self._providers and (site, kind, doc_id) not in self._open:
            log.info("document publisher: withdrawing %s, which is not open", topic)
            self._send(site, kind, doc_id, b"")

    def _send(self, site: str, kind: str, doc_id: str, payload: bytes) -> None:
        if not self.connected:
            return  # the next connection republishes and reconciles everything
        info = self._client.publish(floor.docs_topic(site, kind, doc_id), payload, qos=1,
                                    retain=True)
        self._in_flight = [i for i in self._in_flight if not i.is_published()] + [info]
        if payload:
            self.published += 1
        else:
            self.withdrawn += 1
