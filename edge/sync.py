"""Edge sync: outbox -> MQTT (QoS 1 batches) -> central service -> application ack -> outbox.

One thread owns the paho client (paho is not thread-safe in practice): it selects on the MQTT
socket and a wake-up pipe, and does all reading, writing, publishing and ack handling itself.
Captures on other threads only poke the pipe.

A broker PUBACK proves nothing (a broker drops queued messages past its limits): an event leaves
the outbox only on the central service's ack. Events sent and not acked within ``ack_timeout_s``
(counted while connected) are sent again, and so is everything in flight the moment a connection
is made (a broker restart may have lost it, or the ack): the central service answers re-sends
"duplicate".

The same connection brings the documents' expected lists (``edge.documents``): on every
connect the syncer subscribes to ``floorsync/v1/{site}/docs/#`` (QoS 1), so the broker sends
every open document's retained message again, and each message is kept in the outbox
database before paho PUBACKs it. A bad one is recorded and skipped, never fatal.

Nothing is sent until the broker grants the acks subscription (its SUBACK): acks it would not
deliver would leave every batch applied centrally but unsettled here, sent again forever. A
refused one (a reason code of 0x80 or more: an ACL, a NATS permission, a cluster short of a
node) is logged once as an ERROR and the connection dropped, then made again with the backoff
until the broker grants it (state ``refused``). A refused documents subscription is a WARNING:
events still flow.

The broker state (connecting, connected, refused, retrying, disconnected, stopped) is logged once
per change, and written with the last ack time to a small status file beside the outbox (atomic
rename, at most once a second) that ``floorsync edge status`` reads; a lock file held while
syncing tells it whether an agent is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from floorsync.edge import status as local_status
from floorsync.edge import wire
from floorsync.edge.documents import DocumentBook, book_for
from floorsync.edge.errors import ConfigError
from floorsync.edge.expected import docs_filter
from floorsync.edge.outbox import LOGGED_IDS, Outbox

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
# After reconnecting to a broker that forgot our session, until the first ack: the central
# service resubscribes within about a second (its reconnect waits are capped at 1 s).
FORGOT_ACK_TIMEOUT_S = 1.5


@dataclass(frozen=True, slots=True)
class SyncSettings:
    broker: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"  # "5", or "3.1.1" for brokers without MQTT 5 (the embedded amqtt)
    batch_size: int = 500  # events per message
    linger_s: float = 0.005  # wait this long for a batch to fill before sending a partial one
    window: int = 16  # messages sent and not yet acked by the central service
    ack_timeout_s: float = 10.0
    keepalive_s: int = 15
    backoff_max_s: float = 1.0  # reconnect waits are capped here (deliveries resume quickly)
    status_interval_s: float = 10.0
    purge_interval_s: float = 60.0
    drain_s: float = 5.0  # at stop, while connected: wait this long for the backlog's acks
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log or a repr
    # TLS (``mqtts://``): the CA that signed the broker's certificate (None: the system's
    # trusted CAs), and for mutual TLS this device's certificate and key (its CN is the device
    # name, the broker's username for it). The broker's host name is always verified.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def check(self) -> None:
        """Raise ConfigError for TLS settings that cannot work or would be silently ignored."""
        _, _, tls = parse_broker(self.broker)
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("[sync] cert_file and key_file go together (mutual TLS)")
        given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is not None]
        if given and not tls:
            raise ConfigError(
                f"[sync] {', '.join(given)} set but broker {self.broker!r} is plain MQTT: use "
                "mqtts://host:8883 (TLS settings are never ignored silently)"
            )


def tls_context(settings: SyncSettings) -> ssl.SSLContext:
    """Certificate and host name verification always on (TLS 1.2 at least); the CA file or
    the system's CAs; the client certificate for mutual TLS. Unreadable files: ConfigError."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        if settings.cert_file is not None:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        files = ", ".join(f"{k} = {v!r}" for k, v in (
            ("ca_file", settings.ca_file), ("cert_file", settings.cert_file),
            ("key_file", settings.key_file)) if v is not None)
        raise ConfigError(f"[sync] cannot use the TLS files ({files}): {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def parse_broker(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ConfigError(f"broker must look like mqtt://host:port (got {url!r})")
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


@dataclass
class _InFlight:
    ids: set[str]
    sent: float  # monotonic: when the broker took it (PUBACK); reset on reconnect
    mid: int = 0
    taken: bool = False  # PUBACKed: only then does the ack timeout run (a slow link is no loss)


@dataclass
class SyncStats:
    messages_sent: int = 0
    events_sent: int = 0
    events_acked: int = 0
    events_rejected: int = 0
    resent: int = 0
    connects: int = 0
    foreign_messages: int = 0  # delivered on a topic we did not subscribe to; ignored
    documents: int = 0  # document messages received (kept, older, withdrawn or refused)
    last_error: str | None = None
    connected_at: float | None = None
    disconnected_at: float | None = field(default=None)
    last_ack_at: float | None = None  # wall time of the last application ack settled
    connect_attempts: int = 0  # failed attempts since the last connection


class Syncer:
    """Carries an outbox to the central service, and the site's documents to the edge.
    ``start()`` / ``stop()`` or a ``with`` block. ``documents``: the outbox's book (by default
    the one ``book_for`` gives)."""

    def __init__(self, outbox: Outbox, site: str, device: str, settings: SyncSettings,
                 documents: DocumentBook | None = None) -> None:
        self.outbox = outbox
        self.site = wire.check_name(site, "site")
        self.device = wire.check_name(device, "device")
        self.settings = settings
        settings.check()
        self.host, self.port, tls = parse_broker(settings.broker)
        self.events_topic = wire.events_topic(site, device)
        self.acks_topic = wire.acks_topic(site, device)
        self.status_topic = wire.status_topic(site, device)
        self.docs_filter = docs_filter(site)
        self._docs_prefix = self.docs_filter[:-1]  # floorsync/v1/{site}/docs/
        self.documents = documents if documents is not None else book_for(outbox, site)
        self.stats = SyncStats()
        # broker state, logged once per change: starting | connecting | connected | refused |
        # retrying | disconnected | stopped (wall-clock ``state_since``). "connected" only once
        # the broker granted the acks subscription: before that nothing is sent
        self.state = "starting"
        self.state_since = time.time()
        self.started_at = time.time()
        self.status_path = local_status.status_path(outbox.path)
        self._lock_file: IO[bytes] | None = None
        self._status_dirty = True
        self._status_written = 0.0  # monotonic
        self._will_at = 0.0  # monotonic: when the last will's figures were taken
        self._queued_offline = 0  # events captured while not connected (for the log)
        self._next_wait = 0.0  # the wait before the next connection attempt
        self._catching_up = False  # connected with a backlog: say when it is gone
        # events sent again for want of an ack since the last ack came: the first expiry of
        # such a spell is logged, the rest counted and told when acks come again
        self._resent_unacked = 0
        # The live lane: while the backlog found at connect (rows up to this one) drains,
        # events captured since go ahead of it when nothing pending in it touches the same
        # things (Outbox.take_live), in the window's last slot or any free one. None: one lane.
        self._live_after: int | None = None
        # reconnected to a broker that forgot our session (it restarted and lost its state), or
        # that refused connections meanwhile (its process was down: what it restored came from
        # its last save, which may hold our session but not the central service's
        # subscription): the central's subscription may be gone until it resubscribes, and what
        # we send before that is PUBACKed and dropped. The first ack then shows which messages
        # came too early: those sent before the acked one go again at once. Messages the
        # broker took before the first ack time out after FORGOT_ACK_TIMEOUT_S instead of
        # ack_timeout_s: that first ack may be one the broker kept from before the restart
        # (for events sent again now), which proves nothing about the central's subscription.
        self._broker_forgot = False
        self._broker_was_down = False  # a connection refused since the last connect
        self._first_ack_at: float | None = None  # monotonic: the first ack since reconnecting
        # called on the sync thread with each ack's results, after the outbox settled them
        self.ack_listeners: list[Callable[[tuple[wire.Result, ...]], None]] = []
        self._inflight: dict[int, _InFlight] = {}
        self._batch_of: dict[str, int] = {}
        self._batch_of_mid: dict[int, int] = {}
        self._next_batch = 0
        # "The outbox may hold pending events": set by captures (any thread), cleared by the
        # sync thread *before* it looks, so a capture racing with a look is never missed.
        self._dirty = True
        self._dirty_since = 0.0
        self._added = 0  # events added since the last look (for the linger decision only)
        self._session_up = False
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._tls = tls
        self._socket_error: str | None = None  # paho's last error before a CONNACK (TLS alerts)
        self._answered = False  # the broker sent a CONNACK on this connection attempt
        # The SUBACKs of this connection's subscriptions (mid -> "acks" | "documents"). Sending
        # waits for the acks one; a refusal (>= 0x80) is said once per spell (until granted):
        # the reason is kept for the status file, and the connection dropped on purpose.
        self._sub_mids: dict[int, str] = {}
        self._acks_granted = False
        self.acks_refused: str | None = None
        self.documents_refused: str | None = None
        self._refusals = 0  # acks refusals in this spell (told when it ends)
        self._hanging_up = False  # we dropped the connection ourselves (no "disconnected")
        self._connected_note = ""  # the "connected" line, said once the acks are granted
        self._broker_lost_state = False  # kept from the CONNACK until the acks are granted
        self._client = self._make_client(tls)
        outbox.listeners.append(self.notify)

    def _make_client(self, tls: bool) -> mqtt.Client:
        v5 = self.settings.protocol == "5"
        if self.settings.protocol not in ("5", "3.1.1"):
            raise ConfigError(f"protocol must be '5' or '3.1.1' (got {self.settings.protocol!r})")
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"floorsync-edge-{self.site}-{self.device}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        if self.settings.username:
            client.username_pw_set(self.settings.username, self.settings.password)
        if tls:
            client.tls_set_context(tls_context(self.settings))
        client.max_inflight_messages_set(self.settings.window + 4)
        client.max_queued_messages_set(0)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(
            self.host,
            self.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        return client

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Syncer:
        self._lock_file = local_status.hold_lock(self.outbox.path)
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Say offline (retained), disconnect and join the thread. Unacked events stay pending."""
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.notify in self.outbox.listeners:
            self.outbox.listeners.remove(self.notify)
        self._closed = True
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._set_state("stopped", "")
        self._write_status_file(force=True)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock: "edge status" says not running
            self._lock_file = None

    def __enter__(self) -> Syncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self, added: int = 1) -> None:
        """Events were added to the outbox: wake the sync thread (any thread may call this)."""
        if not self._dirty:
            self._dirty_since = time.monotonic()
        self._added += added
        self._dirty = True
        if self._closed:
            return
        if not self._session_up and not self._stop.is_set():
            if not self._queued_offline:
                log.info("not connected to the broker (%s): events are kept in the outbox and"
                         " sent once connected", self.state)
            self._queued_offline += added
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    @property
    def connected(self) -> bool:
        """Connected and the acks subscription granted: events flow."""
        return self._session_up and self._acks_granted

    def wait_synced(self, timeout: float) -> bool:
        """Block until the outbox holds nothing unconfirmed (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.settled():
                return True
            time.sleep(0.02)
        return False

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        recovered = False
        while not self._stop.is_set():
            try:
                if not recovered:
                    self._recover()
                    recovered = True
                self._loop()
            except Exception as exc:
                # A disk error or a bug must not end syncing silently: log, wait, start over
                # from the outbox (what was in flight is sent again; re-sends are harmless).
                self.stats.last_error = f"sync loop failed: {exc!r}"
                log.exception("sync loop failed; retrying in 1 s")
                recovered = False
                self._sleep(1.0)
        try:
            self._shutdown()
        except Exception:
            log.exception("could not say offline before disconnecting")

    def _recover(self) -> None:
        """Everything marked sent goes back to pending: at start, and after a failure."""
        self._inflight.clear()
        self._batch_of.clear()
        self._batch_of_mid.clear()
        requeued = self.outbox.requeue_all_sent()
        if requeued:
            log.info("%d event(s) in flight will be sent again", requeued)
        self._dirty, self._dirty_since = True, 0.0

    def _loop(self) -> None:
        attempt = 0
        last_status = last_purge = time.monotonic()
        while not self._stop.is_set():
            if self._status_dirty:
                self._write_status_file()
            sock = self._client.socket()
            if sock is None:
                if attempt and self._sleep(self._next_wait):
                    break
                attempt += 1
                self._next_wait = self._backoff(attempt)
                self._connect()
                continue
            if self._acks_granted:  # accepted: the next loss reconnects at once. Not merely the
                # socket (a broker that refuses the login would be asked again at once), nor the
                # CONNACK (one that refuses the acks subscription would be)
                attempt = 0
            timeout = self._timeout()
            fd = sock.fileno()
            want_write = [fd] if self._client.want_write() else []
            try:
                readable, writable, _ = select.select([fd, self._wake_r], want_write, [], timeout)
            except (OSError, ValueError):
                readable, writable = [], []
            if self._wake_r in readable:
                self._drain_wake()
            if fd in readable:
                self._client.loop_read()
            if writable and self._client.socket() is not None:
                self._client.loop_write()
            if self._client.socket() is not None:
                self._client.loop_misc()
            if self._session_up:
                now = time.monotonic()
                if self._acks_granted:
                    self._pump()
                    self._check_ack_timeouts(now)
                elif (not self._hanging_up and self.stats.connected_at is not None
                      and now - self.stats.connected_at >= self.settings.keepalive_s):
                    # a broker that never answers the SUBSCRIBE is as good as silent: like a
                    # missing PINGRESP, given the keepalive (not heard of here, but sending
                    # waits on that answer, so it must not wait forever)
                    self._acks_not_granted(
                        f"no SUBACK within {self.settings.keepalive_s} s", None)
                if now - last_status >= self.settings.status_interval_s:
                    last_status = now
                    self._publish_status("online")
                if now - last_purge >= self.settings.purge_interval_s:
                    last_purge = now
                    self.outbox.purge()

    def _connect(self) -> None:
        if self.state not in ("connecting", "retrying", "refused"):
            self._set_state("connecting", f"connecting to {self.host}:{self.port}")
        if time.monotonic() - self._will_at >= self.settings.status_interval_s:
            self._refresh_will()
        self._socket_error, self._answered = None, False
        self._client.on_log = self._on_paho_log  # only until connected (no cost on the hot path)
        try:
            self._client.reconnect()
        except ssl.SSLCertVerificationError as exc:
            self._connect_failed(
                f"TLS: the broker at {self.host}:{self.port} is not trusted "
                f"({exc.verify_message}): its certificate must be signed by the CA in [sync] "
                "ca_file and name the host in the broker URL", logging.ERROR)
        except ssl.SSLError as exc:
            self._connect_failed(
                f"TLS handshake with {self.host}:{self.port} failed: {exc}", logging.ERROR)
        except (OSError, mqtt.WebsocketConnectionError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                self._broker_was_down = True
            self._connect_failed(f"connect to {self.host}:{self.port} failed: {exc}")

    def _on_paho_log(self, _c: mqtt.Client, _u: object, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and " on socket" in message:  # a TLS alert, a reset
            self._socket_error = message

    def _connect_failed(self, error: str, level: int = logging.WARNING) -> None:
        """Logged once when retrying starts, not per attempt; the status file has the rest."""
        self.stats.last_error = error
        self.stats.connect_attempts += 1
        self._status_dirty = True
        if self.state != "retrying":
            self._set_state(
                "retrying",
                f"{error}; retrying in {self._next_wait:.2f} s, then waits doubling to"
                f" {self.settings.backoff_max_s:g} s (jittered); events are kept meanwhile",
                level,
            )
        else:
            log.debug(error)

    def _set_state(self, state: str, message: str, level: int = logging.INFO) -> None:
        """One log line per broker state change (none when the state is unchanged)."""
        if state == self.state:
            return
        self.state, self.state_since = state, time.time()
        self._status_dirty = True
        if message:
            log.log(level, "%s", message, extra={"state": state,
                                                 "broker": f"{self.host}:{self.port}"})

    def _refresh_will(self) -> None:
        """The last will goes with the CONNECT: give it the figures of this moment (the central
        service keeps whichever figures were measured last)."""
        self._will_at = time.monotonic()
        try:
            self._client.will_set(self.status_topic, self._status("offline"), qos=1,
                                  retain=True)
        except Exception:  # an outbox read failing here must not stop reconnecting
            log.debug("could not refresh the last will", exc_info=True)

    def _write_status_file(self, force: bool = False) -> None:
        """The local status for ``floorsync edge status``: at most once a second."""
        now = time.monotonic()
        if not force and now - self._status_written < 1.0:
            return
        self._status_written, self._status_dirty = now, False
        try:
            local_status.write_status(self.status_path, self._local_status())
        except OSError as exc:
            log.debug("could not write %s: %s", self.status_path, exc)

    def _local_status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "v": 1, "pid": os.getpid(), "host": socket.gethostname(),
            "site": self.site, "device": self.device, "outbox": str(self.outbox.path),
            "cap_bytes": self.outbox.cap_bytes, "broker": self.settings.broker,
            "started_at": local_status.iso(self.started_at),
            "written_at": local_status.iso(time.time()),
            "state": self.state, "since": local_status.iso(self.state_since),
            "last_error": s.last_error, "connect_attempts": s.connect_attempts,
            "last_ack_at": local_status.iso(s.last_ack_at),
            "in_flight_messages": len(self._inflight), "connects": s.connects,
            "events_sent": s.events_sent, "events_acked": s.events_acked,
            "events_rejected": s.events_rejected, "resent": s.resent,
            "acks_topic": self.acks_topic, "acks_refused": self.acks_refused,
            "documents_filter": self.docs_filter, "documents_refused": self.documents_refused,
        }

    def _backoff(self, attempt: int) -> float:
        """Capped, jittered: 50 ms doubling to ``backoff_max_s``, times 0.5-1.0."""
        base = min(self.settings.backoff_max_s, 0.05 * 2 ** min(attempt - 1, 10))
        return base * random.uniform(0.5, 1.0)

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on stop. True when stopping."""
        return self._stop.wait(seconds)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _timeout(self) -> float:
        """How long select may sleep: short while a partial batch lingers, else until keepalive."""
        if self._session_up and self._dirty and len(self._inflight) < self.settings.window:
            return max(0.0, self.settings.linger_s - (time.monotonic() - self._dirty_since))
        return 1.0

    def _pump(self) -> None:
        """Publish batches while the window has room and the outbox has pending events."""
        if not self._dirty or len(self._inflight) >= self.settings.window:
            return
        lingering = time.monotonic() - self._dirty_since < self.settings.linger_s
        if lingering and self._added < self.settings.batch_size:
            return
        self._dirty = False
        self._added = 0
        while len(self._inflight) < self.settings.window:
            live = self._live_after is not None
            batch = self.outbox.take_live(self.settings.batch_size, self._live_after) \
                if self._live_after is not None else []
            if not batch:
                if live and len(self._inflight) >= self.settings.window - 1:
                    return  # the last slot waits for a live scan
                batch = self.outbox.take(self.settings.batch_size)
                if not batch:
                    return
                if self._live_after is not None and batch[0].rowid > self._live_after:
                    self._live_after = None  # the backlog is sent: one lane again
                    log.info("backlog sent: events go in capture order again")
                live = False
            payload = wire.encode_batch_payloads(
                self.site, self.device, wire.utc_now(), [p.payload for p in batch]
            )
            info = self._client.publish(self.events_topic, payload, qos=1)
            self._next_batch += 1
            ids = {p.id for p in batch}
            self._inflight[self._next_batch] = _InFlight(ids, time.monotonic(), info.mid)
            self._batch_of_mid[info.mid] = self._next_batch
            for event_id in ids:
                self._batch_of[event_id] = self._next_batch
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # not handed to a connection (MQTT_ERR_NO_CONN: it just dropped): not "sent";
                # everything in flight is sent again when the next connection is made
                log.debug("%d event(s) not sent: %s", len(batch), mqtt.error_string(info.rc))
                return
            self.stats.messages_sent += 1
            self.stats.events_sent += len(batch)
            log.debug("sent %d event(s) (message %d)", len(batch), info.mid)
            if len(batch) < self.settings.batch_size and not live:
                return
        self._dirty = True  # the window is full and more may be pending: look again on acks

    def _check_ack_timeouts(self, now: float) -> None:
        timeout = self.settings.ack_timeout_s
        short = min(timeout, FORGOT_ACK_TIMEOUT_S)
        first_ack = self._first_ack_at
        if self._broker_forgot and first_ack is not None and not any(
                f.taken and f.sent <= first_ack for f in self._inflight.values()):
            self._broker_forgot = False  # every message taken before the first ack settled

        def limit(flight: _InFlight) -> float:
            early = self._broker_forgot and (first_ack is None or flight.sent <= first_ack)
            return short if early else timeout

        expired = [n for n, f in self._inflight.items() if f.taken and now - f.sent >= limit(f)]
        for number in expired:
            flight = self._inflight.pop(number)
            for event_id in flight.ids:
                self._batch_of.pop(event_id, None)
            requeued = self.outbox.requeue(flight.ids)
            self.stats.resent += requeued
            first, self._resent_unacked = not self._resent_unacked, self._resent_unacked + requeued
            log.log(
                (logging.INFO if self._broker_forgot else logging.WARNING) if first
                else logging.DEBUG,
                "no ack for %d event(s) after %.1f s: sending them again%s", requeued,
                limit(flight), " (until an ack comes, further re-sends are counted, not logged)"
                if first else "",
                extra={"state": "ack_timeout", "events": requeued,
                       "event_ids": sorted(flight.ids)[:LOGGED_IDS]},
            )
            self.notify(requeued)

    def _shutdown(self) -> None:
        if self._client.socket() is not None:
            info = self._client.publish(
                self.status_topic, self._status("offline"), qos=1, retain=True
            )
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline:
                if self._client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
            self._client.disconnect()
        self._session_up = False

    # --- callbacks (all on the sync thread, inside loop_read) -----------------------------

    def _on_connect(self, client: mqtt.Client, _u: object, flags: object, reason: object,
                    _p: object) -> None:
        self._answered = True
        if getattr(reason, "is_failure", False):
            self._connect_failed(f"broker refused the connection: {reason}", logging.ERROR)
            return
        no_delay(client)
        client.on_log = None
        # before "connected" is seen: what is captured from then on is live
        self._live_after = self.outbox.live_boundary()
        self._session_up = True
        self.stats.connects += 1
        self.stats.connected_at = time.monotonic()
        if self.stats.connects > 1 and (
                self._broker_was_down or not getattr(flags, "session_present", True)):
            self._broker_lost_state = True  # until a connection's acks subscription is granted
        self._broker_was_down = False
        self._acks_granted, self._hanging_up = False, False
        self._sub_mids.clear()
        # again on every connect (documents: the broker then sends every retained document
        # anew, so one missed while a session was lost comes back; versions make the repeats
        # harmless). A SUBSCRIBE not sent (the connection just dropped) is never answered.
        for topic, which in ((self.acks_topic, "acks"), (self.docs_filter, "documents")):
            _rc, mid = client.subscribe(topic, qos=1)
            if mid is not None:
                self._sub_mids[mid] = which
        # Everything in flight goes again now, not after the ack timeout: a broker restart may
        # have lost the messages or their acks (the central service answers "duplicate").
        self._inflight.clear()
        self._batch_of.clear()
        self._batch_of_mid.clear()
        resend = self.outbox.requeue_all_sent()
        self.stats.resent += resend
        backlog = self.outbox.stats().backlog
        self._dirty, self._dirty_since = True, 0.0
        self._catching_up = backlog > 0
        offline = (f", {self._queued_offline} captured while not connected"
                   if self._queued_offline else "")
        self._queued_offline = 0
        # said once the broker grants the acks subscription (nothing is sent before)
        self._connected_note = (
            f"sending {backlog} event(s) not yet acked ({resend} of them were in flight: sent"
            f" again now{offline})" if backlog else "nothing to send")

    def _on_subscribe(self, client: mqtt.Client, _u: object, mid: int,
                      reasons: list[ReasonCode], _p: object) -> None:
        which = self._sub_mids.pop(mid, None)
        if which is None or not reasons:
            return  # a SUBACK of an earlier connection
        reason = reasons[0]
        if which == "documents":
            self._documents_subscription(reason)
        elif reason.is_failure:
            self._acks_not_granted(self._reason_text(reason), client)
        else:
            self._acks_subscribed()

    def _reason_text(self, reason: ReasonCode) -> str:
        """"Not authorized (0x87)"; MQTT 3.1.1's SUBACK has one failure code and no reason."""
        if self.settings.protocol != "5":
            return f"failure (0x{reason.value:02X}; MQTT 3.1.1 gives no reason)"
        return f"{reason} (0x{reason.value:02X})"

    def _acks_subscribed(self) -> None:
        """The broker granted the acks subscription: sending starts, and the spell of
        refusals (if any) ends, said once."""
        self._acks_granted = True
        self._broker_forgot, self._broker_lost_state = self._broker_lost_state, False
        self._first_ack_at = None
        attempts, self.stats.connect_attempts = self.stats.connect_attempts, 0
        if self.acks_refused is not None:
            log.info("the broker grants the acks subscription on %s again (refused %d time(s)"
                     " before, last: %s)", self.acks_topic, self._refusals, self.acks_refused,
                     extra={"state": "connected", "topic": self.acks_topic})
            self.acks_refused, self._refusals = None, 0
        # "online" only now: a refused connection publishes nothing (its PUBACK would come
        # after we hung up, and paho would send it again on every connection of the spell)
        self._publish_status("online")
        waited = f" after {attempts} failed attempt(s)" if attempts else ""
        self._set_state("connected",
                        f"connected to {self.host}:{self.port}{waited}; {self._connected_note}")
        self._status_dirty = True

    def _acks_not_granted(self, why: str, client: mqtt.Client | None) -> None:
        """The acks subscription refused (or never answered): batches sent now would be applied
        centrally and never acked here. Say so once per spell, drop this connection and make
        another with the backoff: the broker may grant it later (a cluster node back, an ACL
        fixed)."""
        self._sub_mids.clear()
        self._refusals += 1
        self.stats.connect_attempts += 1
        self.stats.last_error = f"acks subscription refused: {why} ({self.acks_topic})"
        first = self.acks_refused is None
        self.acks_refused = why
        self._status_dirty = True
        self._set_state("refused", (
            f"the broker at {self.host}:{self.port} refused the subscription to the acks topic"
            f" {self.acks_topic}: {why}. The central service's acks cannot reach this edge, so"
            " nothing is sent (events are kept in the outbox); reconnecting with the backoff"
            " until the broker grants it: check its ACL or permissions for this device"
            " (said once until then)") if first else "", logging.ERROR)
        if not first:
            log.debug("acks subscription refused again: %s", why)
        self._hanging_up = True
        (client or self._client).disconnect()

    def _documents_subscription(self, reason: ReasonCode) -> None:
        """A refused documents subscription: events still flow; said once per spell."""
        if reason.is_failure:
            if self.documents_refused is None:
                log.warning(
                    "the broker refused the subscription to the documents %s: %s. Events still"
                    " flow, but the site's documents (expected lists) do not reach this edge;"
                    " asked again on every connect (said once until granted)",
                    self.docs_filter, self._reason_text(reason),
                    extra={"state": "documents_refused", "topic": self.docs_filter})
            self.documents_refused = self._reason_text(reason)
            self._status_dirty = True
        elif self.documents_refused is not None:
            log.info("the broker grants the documents subscription on %s again",
                     self.docs_filter, extra={"state": "documents", "topic": self.docs_filter})
            self.documents_refused = None
            self._status_dirty = True

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object,
                       _p: object) -> None:
        was_up, self._session_up = self._session_up, False
        self._acks_granted = False
        self._sub_mids.clear()
        self.stats.disconnected_at = time.monotonic()
        if self._hanging_up:  # our own doing (a refused acks subscription): already said
            self._hanging_up = False
            return
        if not (was_up or self._answered or self._stop.is_set()):
            # closed before its CONNACK: with TLS, typically the broker refusing our
            # certificate (or the lack of one); paho reports that only in its log
            why = self._socket_error or str(reason)
            hint = ("; a mutual-TLS listener needs a valid client certificate of its CA "
                    "([sync] cert_file, key_file), not revoked" if self._tls else "")
            self._connect_failed(
                f"broker {self.host}:{self.port} closed the connection before accepting it: "
                f"{why}{hint}", logging.ERROR if self._tls else logging.WARNING)
        if was_up and not self._stop.is_set():
            self.stats.last_error = f"disconnected: {reason}"
            self._set_state(
                "disconnected",
                f"disconnected from {self.host}:{self.port} ({reason}); {len(self._inflight)}"
                " message(s) not yet acked are sent again once reconnected", logging.WARNING)

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: object,
                    _p: object) -> None:
        number = self._batch_of_mid.pop(mid, None)
        flight = self._inflight.get(number) if number is not None else None
        if flight is not None and flight.mid == mid:
            flight.taken, flight.sent = True, time.monotonic()
        if getattr(reason, "is_failure", False):
            # e.g. "Not authorized": the broker dropped it; the ack timeout will send it again
            self.stats.last_error = f"broker refused message {mid}: {reason}"
            log.error(self.stats.last_error)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.startswith(self._docs_prefix):
            self._on_document(message)
            return
        if message.topic != self.acks_topic:
            # only our acks are subscribed to, yet in one demo run the embedded amqtt broker
            # delivered another device's status here (not reproduced in isolation): not ours
            self.stats.foreign_messages += 1
            log.debug("ignored a message on %s (not %s)", message.topic, self.acks_topic)
            return
        try:
            ack = wire.decode_ack(bytes(message.payload))
        except wire.WireError as exc:
            log.error("unreadable ack on %s: %s", message.topic, exc)
            return
        try:
            settled = self.outbox.settle(ack.results)
        except Exception:  # raised into paho it would end the loop; the ack timeout re-sends
            log.exception("could not record an ack for %d event(s)", len(ack.results))
            return
        self.stats.events_acked += settled.acked
        self.stats.events_rejected += settled.rejected
        if self._resent_unacked:
            log.info("acks come again: %d event(s) were sent again while none came",
                     self._resent_unacked, extra={"state": "acked", "events": self._resent_unacked})
            self._resent_unacked = 0
        self.stats.last_ack_at = time.time()
        self._status_dirty = True
        for listener in self.ack_listeners:
            listener(ack.results)
        if self._broker_forgot and self._first_ack_at is None:
            self._resend_before(ack.results)
        for result in ack.results:
            number = self._batch_of.pop(result.id, None)
            if number is None:
                continue
            flight = self._inflight.get(number)
            if flight is not None:
                flight.ids.discard(result.id)
                if not flight.ids:
                    del self._inflight[number]
        if len(self._inflight) < self.settings.window and not self._dirty:
            self._dirty, self._dirty_since = True, 0.0
        if self._catching_up and not self._inflight and self.outbox.settled():
            self._catching_up = False
            log.info("caught up: every event is acked by the central service")

    def _on_document(self, message: mqtt.MQTTMessage) -> None:
        """Kept before this returns (paho PUBACKs after it). Nothing may escape into paho: a
        failure is logged and recorded; the next connect brings the retained message again."""
        self.stats.documents += 1
        try:
            self.documents.receive(message.topic, bytes(message.payload))
        except Exception as exc:
            log.exception("could not keep the document message on %s", message.topic[:200])
            with contextlib.suppress(Exception):
                self.outbox.record_exception("docs", f"document message not kept: {exc!r}",
                                             message.topic[:200])

    def _resend_before(self, results: tuple[wire.Result, ...]) -> None:
        """The first ack after reconnecting to a broker that lost its state: messages sent
        before the acked one and still unacked were most likely dropped (no subscriber yet)."""
        numbers = [n for n in (self._batch_of.get(r.id) for r in results) if n is not None]
        if not numbers:
            return
        self._first_ack_at = time.monotonic()
        acked = max(numbers)
        earlier = [n for n in self._inflight if n < acked]
        ids = [i for n in earlier for i in self._inflight.pop(n).ids]
        for event_id in ids:
            self._batch_of.pop(event_id, None)
        requeued = self.outbox.requeue(ids)
        if requeued:
            self.stats.resent += requeued
            log.info("the broker had lost its state: %d event(s) sent before the central"
                     " service was back are sent again", requeued)
            self.notify(requeued)

    # --- presence -------------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        """Presence with the backlog figures of now (a last will: of when it is made)."""
        stats = self.outbox.stats()
        age = stats.oldest_unsynced_age()
        now = wire.utc_now()
        return wire.encode_status(wire.Status(
            state, now, stats.backlog, stats.last_seq,
            None if age is None else round(age, 3), now))

    def _publish_status(self, state: str) -> None:
        self._client.publish(self.status_topic, self._status(state), qos=1, retain=True)


def no_delay(client: mqtt.Client) -> None:
    """Turn Nagle off: paho does not, and a small ack held back behind the peer's delayed ACK
    costs 40 ms (measured here: p50 capture-to-ack fell from ~50 ms to a few ms)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # also ssl.SSLSocket; not a websocket wrapper
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def hostname_device() -> str:
    """A default device name: this host's short name, made topic-safe."""
    name = socket.gethostname().split(".")[0]
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:64] or "edge"
