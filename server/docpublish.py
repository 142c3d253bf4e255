"""The documents' expected lists, out to the floor: one retained MQTT message per open document.

A door or handheld cut off from the central service still has to say whether a pallet was
expected, so each open document's ``Expected`` (``edge/expected.py``) is published **retained**
at QoS 1 on ``floorsync/v1/{site}/docs/{kind}/{id}`` when it opens or changes, and withdrawn by
an empty retained message when it closes. Edges subscribe to their site's ``docs/#`` and keep
what they got.

**What is published is the committed state of the store, whoever wrote it** (``follow``, a
``server.docfollow.Follower``): the worker watches the store's commit counter (SQLite's
``data_version``, PostgreSQL's ``store_epoch``, the dashboard's change counter) and, when it
moved, reads which open documents' versions changed, publishes those and withdraws the ones no
longer open. An HTTP service, a central replica applying NATS batches, another process on the
same SQLite file: their commits all reach the floor, within a tick (``poll_s``). This process's
own listeners (the receipt book, the order desk) only wake the worker early; what they say is
not published as such, so every publication is read after the previous one, in commit order,
and a document's versions on the broker never go backwards.

**One publisher at a time** (``lead``, ``server.docfollow``): a process publishes only while it
holds the documents' lock (PostgreSQL: a session advisory lock on a connection of its own; SQLite:
a file lock beside the database); the others wait as standbys, trying again every
``LEAD_RETRY_S``, and take over when the holder stops or dies. Only the holder connects to the
broker. It checks that it still holds the lock before each round of sends and every
``LEAD_CHECK_S``, and steps down (disconnects) when it does not.

The broker's retained store is not to be trusted alone, so on every (re)connection the
publisher makes the broker match the database again:

1. it republishes every open document (a broker restarted without its retained store must not
   leave the doors blind);
2. then it subscribes to ``floorsync/v1/+/docs/#`` and withdraws every retained document of a
   kind it provides that is not open: one closed while the broker was away, or while this
   service was down between its commit and the withdrawal. Subscribing after the republishing
   matters: paho re-sends what was in flight at the disconnect right after the CONNACK, so the
   retained messages delivered on subscribing show the broker's state after those re-sends.
3. while subscribed, a copy of an open document older than the one last sent (another process
   that published late: a former lock holder, an older floorsync) is replaced by the current
   one at once.

Without ``follow`` (``providers`` only) it is the earlier listener-driven publisher: the
listeners' copies are published as they come (``document_changed``), the providers read at
each connection.

Its own paho client, not the ingest's: the ingest's connection is a persistent session whose
writer PUBACKs deliveries in order after each commit and drops the connection on purpose when
the database fails (so the broker redelivers); a megabyte expected list queued on that socket
would delay the edges' acks, and the floor's documents must not vanish from the broker's view
whenever the ingest restarts. The settings are the same (broker, protocol, login), the client id
is ``{client_id}-docs`` and the session is clean: the state lives in the broker's retained store
and in the database, there is nothing to resume. One worker thread does the lock, the database
reads and the publishing, in order, so a withdrawal never overtakes the publication it
withdraws and no read is published after a later one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

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
POLL_S = 0.25  # the commit counter is read this often (and whenever a listener wakes us)
LEAD_RETRY_S = 1.0  # a standby tries the lock this often
LEAD_CHECK_S = 1.0  # the holder checks it still holds the lock at least this often
# The holder that cannot reach its broker this long gives the lead up, and waits long enough
# for every standby to have tried the lock (each tries every LEAD_RETRY_S) before trying again:
# a replica whose own broker node answers publishes instead. Alone, it is back at once.
LEAD_UNREACHABLE_S = 15.0
LEAD_YIELD_S = 2 * LEAD_RETRY_S + 0.5
ECHOES = 16  # per topic: our publications whose copy may still come back to us
DOCS_FILTER = f"{wire.TOPIC_ROOT}/+/{floor.DOC_TOPIC_KIND}/#"

Provider = Callable[[], Iterable[floor.Expected]]
_Key = tuple[str, str, str]  # site, kind, id


class Follow(Protocol):
    """The committed state of the documents (``server.docfollow.Follower``), read on the
    publisher's worker thread only."""

    kinds: frozenset[str]

    def everything(self) -> list[floor.Expected]:
        """Every open document; what later ``changes`` are counted from."""

    def changes(self) -> list[tuple[_Key, floor.Expected | None]]:
        """What changed since the last call (or ``everything``): a new copy, or None (closed)."""

    def render(self, key: _Key) -> floor.Expected | None:
        """One document's copy as committed now; None once it is not open."""

    def forget(self) -> None:
        """Nothing is known any more: the next ``everything`` starts again."""


class Lead(Protocol):
    """Who may publish (``server.docfollow``): at most one holder at a time."""

    def acquire(self) -> bool:
        """Try to become the holder (never waits); True if this process now holds it."""

    def holds(self) -> bool:
        """Whether we still hold it (False: it was lost, e.g. the lock's connection died)."""

    def release(self) -> None: ...


class Solo:
    """The lead of a publisher that is alone by construction (a test, one process)."""

    def acquire(self) -> bool:
        return True

    def holds(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def __str__(self) -> str:
        return "alone"


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
    version: int | None  # of a copy not ours (None: unreadable, or an empty message)
    retained: bool
    connection: int


class _Wake:
    """Look at the store now (a listener heard of a commit; or the start)."""


_WAKE = _Wake()
_TICK = _Wake()  # the worker's own, not from the queue
_Job = _Publish | _Withdraw | _Connected | _Retained | _Wake | None


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def _version_of(payload: bytes) -> int | None:
    try:
        version = json.loads(payload).get("version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


class DocumentPublisher:
    """Keeps the broker's retained documents equal to the open ones; ``start()``, ``stop()``.

    ``follow``: publish the store's committed state (see the module's docstring); else
    ``providers`` (kind -> every open document of it) and the listeners' copies. ``lead``: who
    may publish (default: this one, alone)."""

    def __init__(self, settings: Settings, providers: Mapping[str, Provider] | None = None, *,
                 follow: Follow | None = None, lead: Lead | None = None,
                 poll_s: float = POLL_S) -> None:
        if settings.broker is None:
            raise ValueError("DocumentPublisher needs settings.broker")
        if (providers is None) == (follow is None):
            raise ValueError("DocumentPublisher takes providers or follow, one of them")
        kinds = set(providers) if providers is not None else set(follow.kinds)  # type: ignore[union-attr]
        unknown = kinds - wire.DOC_KINDS
        if unknown:
            raise ValueError(f"no such document kinds: {sorted(unknown)}")
        self._providers = dict(providers or {})
        self._kinds = frozenset(kinds)
        self._follow = follow
        self._lead: Lead = lead or Solo()
        self._poll_s = poll_s
        self._settings = settings
        self._host, self._port = broker_address(settings.broker)
        self._v5 = settings.mqtt_protocol == "5"
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._open: set[_Key] = set()  # what the database has open, as the worker last heard
        # topic -> (version last sent, digests of ours that may still come back): a copy with
        # one of those digests is ours (MQTT 3.1.1 sends our own publications back to us)
        self._sent: dict[str, tuple[int, deque[bytes]]] = {}
        self._sent_lock = threading.Lock()
        self._connection_lock = threading.Lock()
        self._connected = threading.Event()
        self._connection = 0
        self._rounded = -1  # the connection whose republishing round is done
        self._leading = False
        self._down_since: float | None = None  # leading, not connected to the broker: since
        self._wake_pending = threading.Event()
        self._in_flight: list[MQTTMessageInfo] = []
        self._worker: threading.Thread | None = None
        self._retry: threading.Timer | None = None
        self._next_try = self._next_check = 0.0
        self._failing = False  # reading the changes failed (said once until it works again)
        self.published = 0  # expected lists sent (republishing included)
        self.withdrawn = 0  # empty retained messages sent
        self.rounds = 0  # complete republishing rounds (one per connection, or retry)
        self._docs_refused = False  # the broker refused the documents subscription (SUBACK)
        self.repaired = 0  # older copies of open documents found on the broker and replaced
        self.leaderships = 0  # times this publisher took the lead
        self._client = self._new_client()

    def _new_client(self) -> Client:
        client_id = f"{self._settings.client_id}-docs"
        if self._v5:
            client = Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=MQTTProtocolVersion.MQTTv5)
        else:
            client = Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
        self._broker_errors = brokerlink.configure(client, self._settings, log,
                                                   "document publisher")
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)  # type: ignore[arg-type]
        client.max_inflight_messages_set(0)  # re-sends all go out at the CONNACK
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> DocumentPublisher:
        self._worker = threading.Thread(target=self._work, name="doc-publisher", daemon=True)
        self._worker.start()
        self._jobs.put(_WAKE)  # take the lead (or not) at once
        return self

    def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(10)
            self._worker = None
        self._go_offline()
        with contextlib.suppress(Exception):
            self._lead.release()

    def __enter__(self) -> DocumentPublisher:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def leading(self) -> bool:
        """Whether this publisher holds the lead (only the holder connects and publishes)."""
        return self._leading

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
        """A document opened or changed (``expected``), or closed (None): tell the floor. When
        following the store, this only wakes the worker to read what was committed."""
        if self._follow is not None:
            if not self._wake_pending.is_set():
                self._wake_pending.set()
                self._jobs.put(_WAKE)
            return
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
        self._down_since = None
        with self._connection_lock:
            self._connection += 1
        self._connected.set()
        self._jobs.put(_Connected(self._connection))

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up and self._leading:
            self._down_since = time.monotonic()
        if was_up:  # not after each refused attempt
            log.info("document publisher disconnected from %s:%s: %s", self._host, self._port,
                     reason)

    def _on_subscribe(self, client: Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        """Its one subscription (the documents, to withdraw stale copies): a refusal is said
        once until granted again; publishing goes on either way."""
        refused = next((r for r in reasons if r.is_failure), None)
        if refused is not None and not self._docs_refused:
            log.error("document publisher: the broker refused the subscription to %s (%s):"
                      " copies it keeps of documents that are not open are not withdrawn;"
                      " give this login read access to it", DOCS_FILTER, refused)
        elif refused is None and self._docs_refused:
            log.warning("document publisher: subscribed to %s again", DOCS_FILTER)
        self._docs_refused = refused is not None

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if not payload:
            return  # a withdrawal: nothing retained there
        if msg.retain:
            # what the broker held when we subscribed: says something about its retained store
            self._jobs.put(_Retained(msg.topic, self._foreign_version(msg.topic, payload), True,
                                     self._connection))
        elif self._follow is not None:
            # a live copy: our own coming back (3.1.1 has no no-local), or another's
            version = self._foreign_version(msg.topic, payload)
            if version is not None:
                self._jobs.put(_Retained(msg.topic, version, False, self._connection))

    def _foreign_version(self, topic: str, payload: bytes) -> int | None:
        """The version of a copy we did not send (None: ours, or no version in it)."""
        digest = _digest(payload)
        with self._sent_lock:
            sent = self._sent.get(topic)
            if sent is not None and digest in sent[1]:
                while sent[1] and sent[1][0] != digest:  # copies come back in the order sent
                    sent[1].popleft()
                if len(sent[1]) > 1:
                    sent[1].popleft()  # the last one stays: the retained copy may come again
                return None
        return _version_of(payload)

    # --- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                job: _Job = self._jobs.get(timeout=self._poll_s)
                from_queue = True
            except queue.Empty:
                job, from_queue = _TICK, False
            try:
                if job is None:
                    return
                if isinstance(job, _Wake):
                    self._wake_pending.clear()
                self._lead_turn()
                if self._leading:
                    if isinstance(job, _Wake):
                        self._follow_turn()
                    else:
                        self._do(job)
            except Exception:
                log.exception("document publisher: %r failed", type(job).__name__)
            finally:
                if from_queue:
                    self._jobs.task_done()

    def _lead_turn(self) -> None:
        """Take the lead when free (a standby), or step down when it was lost (the holder)."""
        now = time.monotonic()
        if not self._leading:
            if now < self._next_try:
                return
            self._next_try = now + LEAD_RETRY_S
            if not self._lead.acquire():
                return
            self._leading = True
            self.leaderships += 1
            self._next_check = now + LEAD_CHECK_S
            log.info("document publisher: leading (%s); publishing to %s:%s", self._lead,
                     self._host, self._port)
            self._go_online()
        elif now >= self._next_check:
            self._next_check = now + LEAD_CHECK_S
            if self._still_leading():
                self._give_up_unreachable(now)

    def _give_up_unreachable(self, now: float) -> None:
        down = self._down_since
        if down is None or now - down < LEAD_UNREACHABLE_S:
            return
        log.warning("document publisher: %s:%s unreachable for %.0f s; giving the lead up"
                    " (%s) for another publisher that can reach its broker", self._host,
                    self._port, now - down, self._lead)
        self._leading = False
        self._lead.release()
        self._next_try = now + LEAD_YIELD_S
        self._go_offline()

    def _still_leading(self) -> bool:
        if self._lead.holds():
            return True
        log.warning("document publisher: the lead was lost (%s); not publishing until it is"
                    " taken again", self._lead)
        self._leading = False
        self._next_try = time.monotonic() + LEAD_RETRY_S
        self._go_offline()
        return False

    def _go_online(self) -> None:
        self._down_since = time.monotonic()  # until its CONNACK
        self._client = self._new_client()
        if self._v5:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S, clean_start=True)
        else:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S)
        self._client.loop_start()

    def _go_offline(self) -> None:
        with self._connection_lock:
            self._connection += 1  # what was queued for the old connection is not done
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            self._client.loop_stop()
        self._connected.clear()
        self._open.clear()
        with self._sent_lock:
            self._sent.clear()
        if self._follow is not None:
            self._follow.forget()

    def _follow_turn(self) -> None:
        """What was committed since we last looked: published in the order read."""
        if self._follow is None or not self.connected or self._rounded != self._connection:
            return  # the next connection's round sends everything
        try:
            changes = self._follow.changes()
        except Exception as exc:  # the database is away: the next tick tries again
            if not self._failing:
                log.warning("document publisher: reading the documents' changes failed (%s);"
                            " trying again", exc)
                self._failing = True
            return
        if self._failing:
            log.info("document publisher: reading the documents' changes works again")
            self._failing = False
        if changes and not self._still_leading():
            return
        for key, doc in changes:
            self._do(_Withdraw(key) if doc is None else _Publish(doc))

    def _do(self, job: _Publish | _Withdraw | _Connected | _Retained) -> None:
        if isinstance(job, _Publish):
            doc = job.doc
            self._open.add((doc.site, doc.kind, doc.id))
            self._send(doc.site, doc.kind, doc.id, floor.encode_expected(doc), doc.version)
        elif isinstance(job, _Withdraw):
            self._open.discard(job.key)
            self._send(*job.key, b"")
        elif isinstance(job, _Connected):
            if job.connection == self._connection and self.connected:
                self._republish()
        elif job.connection == self._connection:
            self._reconcile(job)

    def _republish(self) -> None:
        """Every open document; then subscribe to see what else is kept."""
        if not self._still_leading():
            return
        try:
            if self._follow is not None:
                docs = self._follow.everything()
            else:
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
            self._send(doc.site, doc.kind, doc.id, floor.encode_expected(doc), doc.version)
        self._client.subscribe(DOCS_FILTER, qos=1)
        self._rounded = self._connection
        self.rounds += 1
        log.info("document publisher: %d open document(s) published", len(docs))

    def _reconcile(self, job: _Retained) -> None:
        try:
            site, kind, doc_id = floor.parse_docs_topic(job.topic)
        except wire.WireError:
            return  # not a document topic of ours: not ours to clear
        if kind not in self._kinds:
            return
        key = (site, kind, doc_id)
        if key not in self._open:
            if job.retained:
                log.info("document publisher: withdrawing %s, which is not open", job.topic)
                self._send(site, kind, doc_id, b"")
            return
        with self._sent_lock:
            sent = self._sent.get(job.topic)
            newest = None if sent is None else sent[0]
        if self._follow is None or newest is None or job.version is None or job.version >= newest:
            return
        # an older copy than ours came after it (a former holder of the lead, an older
        # floorsync): the current one goes again, read now
        if not self._still_leading():
            return
        doc = self._follow.render(key)
        log.warning("document publisher: %s version %d on the broker, older than the %d sent;"
                    " sending the current one again", job.topic, job.version, newest)
        self.repaired += 1
        self._do(_Withdraw(key) if doc is None else _Publish(doc))

    def _send(self, site: str, kind: str, doc_id: str, payload: bytes,
              version: int | None = None) -> None:
        if not self.connected:
            return  # the next connection republishes and reconciles everything
        topic = floor.docs_topic(site, kind, doc_id)
        with self._sent_lock:
            if payload and version is not None:
                echoes = self._sent[topic][1] if topic in self._sent else deque(maxlen=ECHOES)
                echoes.append(_digest(payload))
                self._sent[topic] = (version, echoes)
            else:
                self._sent.pop(topic, None)
        if payload:  # counted first: a subscriber may have it before publish() returns
            self.published += 1
        else:
            self.withdrawn += 1
        info = self._client.publish(topic, payload, qos=1, retain=True)
        self._in_flight = [i for i in self._in_flight if not i.is_published()] + [info]
