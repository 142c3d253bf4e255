"""A central replica: one of several stateless consumers of the edges' batches through NATS.

Edges publish MQTT (paho, QoS 1, protocol 3.1.1) to a NATS server's MQTT listener, which stores
each QoS 1 message in the JetStream stream ``$MQTT_msgs`` (subject ``$MQTT.msgs.`` + the topic,
``/`` as ``.``). Every replica binds to the same durable pull consumer on that stream, filtered
to the events topics, so the replicas are competing consumers: each batch goes to one of them,
and to another if that one dies before acknowledging it (after ``ack_wait``).

A replica does what ``server.ingest.MqttIngest`` does with a message, with the same functions:
topic and payload checked and decoded (``ingest.prepare``), the fetched group applied in one
transaction (``ingest.Applier``, ``Store.apply_batches``; PostgreSQL serialises the replicas'
writes with an advisory lock), then for each message the edge's application ack is published
(core NATS to ``floorsync.v1.<site>.<device>.acks``, which the MQTT listener hands to the
edge's MQTT subscription whichever replica sends it) and only then the JetStream message is
acknowledged. A failing database acknowledges nothing: the group is nak'ed with a delay, the
store reopened, and the broker redelivers. Applying is idempotent by event id, so a redelivery
(a replica killed between commit and ack, an ack lost) answers "duplicate" and changes nothing.

Blocking work (decoding and the database) runs on one worker thread; the asyncio loop keeps the
NATS connection (pings, reconnects to another cluster node) alive meanwhile.

Run with ``floorsync server --replica nats://host:4222[,nats://host2:4222] --db
postgresql://…`` (or FLOORSYNC_DATABASE), or ``floorsync server --replica`` with the URLs in
FLOORSYNC_REPLICA; it serves no HTTP. Needs nats-py: ``pip install 'floorsync[cluster]'``.

The connection (``ReplicaSettings.from_env``): TLS with the server's certificate and host name
always verified, against FLOORSYNC_NATS_CA_FILE's CA (else the system's), when that or a client
certificate (FLOORSYNC_NATS_CERT_FILE, _KEY_FILE) is set or a URL is ``tls://``; then no
password leaves this process over a connection that is not TLS (a server that offers none is
refused). The login: FLOORSYNC_NATS_USER with FLOORSYNC_NATS_PASSWORD or _PASSWORD_FILE, so that
no secret is on the command line (a ``user:password@`` in a URL still works, and is moved
there). A refused connection (an untrusted certificate, ours refused, a wrong password) is one
ERROR line naming what to check, and the replica keeps trying, as the edge does.

Metrics (FLOORSYNC_METRICS_PORT): on FLOORSYNC_METRICS_HOST (127.0.0.1), HTTPS with
FLOORSYNC_METRICS_CERT_FILE and _KEY_FILE, client certificates from
FLOORSYNC_METRICS_CLIENT_CA_FILE's CA required when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from floorsync.edge import wire
from floorsync.server import docfollow, picking
from floorsync.server.errors import ConfigError
from floorsync.server.ingest import Applier, Work, prepare
from floorsync.server.ledger import Store
from floorsync.server.metrics import CentralMetrics
from floorsync.server.receipts import book_of
from floorsync.server.settings import ENV_PREFIX

log = logging.getLogger(__name__)

STREAM = "$MQTT_msgs"  # nats-server creates it on the first MQTT connection
SUBJECT_PREFIX = "$MQTT.msgs."
EVENTS_FILTER = SUBJECT_PREFIX + wire.TOPIC_ROOT.replace("/", ".") + ".*.*.events"
DURABLE = "floorsync-replicas"
ACK_WAIT_S = 10.0  # a dead replica's unacknowledged batches go to another after this
FETCH = 16  # messages per group (one transaction): 8,000 events of 500-event batches
MAX_ACK_PENDING = 1000
RETRY_S = 1.0  # after a database failure: redelivery delay, and the wait before reopening


def _nats() -> Any:
    try:
        import nats
    except ImportError:
        raise ConfigError("the replica needs nats-py: pip install 'floorsync[cluster]'") from None
    return nats


def topic_of(subject: str) -> str:
    """The MQTT topic of a ``$MQTT.msgs.`` subject. NATS 2.9 refuses MQTT topics holding a
    ``.`` (measured: "characters ' ' and '.' not supported for MQTT topics", and the edge's
    CONNECT is refused for its will topic), so sites and devices behind NATS are named
    without one; the wire allows it."""
    return subject.removeprefix(SUBJECT_PREFIX).replace(".", "/")


def subject_of(topic: str) -> str:
    """The core NATS subject that reaches MQTT subscribers of ``topic``."""
    return topic.replace("/", ".")


# --- settings (the environment, as the central service's) ----------------------------------

_SCHEMES = ("nats", "tls")
# what ReplicaSettings.from_env reads (FLOORSYNC_DATABASE and _METRICS_PORT are Settings')
ENV_NAMES = tuple(ENV_PREFIX + n for n in (
    "REPLICA", "NATS_CA_FILE", "NATS_CERT_FILE", "NATS_KEY_FILE", "NATS_USER", "NATS_PASSWORD",
    "NATS_PASSWORD_FILE", "METRICS_HOST", "METRICS_CERT_FILE", "METRICS_KEY_FILE",
    "METRICS_CLIENT_CA_FILE"))


@dataclass(frozen=True, slots=True)
class NatsLogin:
    """How the replica connects: TLS files and the login (FLOORSYNC_NATS_*)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_required: bool = False  # set by ReplicaSettings: a TLS file given or a tls:// URL

    def tls_context(self) -> ssl.SSLContext | None:
        """Verification always on (no setting turns it off), TLS 1.2 at least; None: nothing
        configured, nats-py then verifies a TLS server against the system's CAs."""
        if not self.tls_required:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"cannot use the NATS TLS files: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass(frozen=True, slots=True)
class MetricsListen:
    """Where a replica's /metrics listens (FLOORSYNC_METRICS_HOST, _CERT_FILE, _KEY_FILE,
    _CLIENT_CA_FILE): loopback by default; HTTPS with a certificate; client certificates
    required with a client CA."""

    host: str = "127.0.0.1"
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.cert_file is not None else "http"


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """``floorsync server --replica``'s own settings; ``from_env`` reads them."""

    servers: tuple[str, ...]
    login: NatsLogin = NatsLogin()
    metrics: MetricsListen = MetricsListen()

    @classmethod
    def from_env(cls, urls: str | None = None, env: Mapping[str, str] = os.environ
                 ) -> ReplicaSettings:
        """``urls`` (``--replica``'s value) or FLOORSYNC_REPLICA, and the FLOORSYNC_NATS_* and
        FLOORSYNC_METRICS_* variables. A setting that cannot be used is a ConfigError naming
        its variable, never showing a secret."""

        def text(name: str) -> str | None:
            raw = env.get(ENV_PREFIX + name)
            return raw.strip() if raw is not None and raw.strip() else None

        def path(name: str) -> Path | None:
            raw = text(name)
            if raw is None:
                return None
            if not Path(raw).is_file():
                raise ConfigError(f"{ENV_PREFIX}{name}: no such file {raw}")
            return Path(raw)

        def pair(cert: str, key: str) -> tuple[Path | None, Path | None]:
            found = path(cert), path(key)
            if (found[0] is None) != (found[1] is None):
                raise ConfigError(f"{ENV_PREFIX}{cert} and {ENV_PREFIX}{key} go together")
            return found

        given = urls if urls and urls.strip() else text("REPLICA")
        if given is None:
            raise ConfigError("the replica needs its NATS server URLs: --replica URLS or "
                              f"{ENV_PREFIX}REPLICA (nats://host:4222, comma-separated)")
        servers, url_user, url_password = _servers(given)
        user, password = text("NATS_USER"), env.get(ENV_PREFIX + "NATS_PASSWORD") or None
        password_file = path("NATS_PASSWORD_FILE")
        if password is not None and password_file is not None:
            raise ConfigError(f"{ENV_PREFIX}NATS_PASSWORD and {ENV_PREFIX}NATS_PASSWORD_FILE: "
                              "give one")
        if password_file is not None:
            password = password_file.read_text().rstrip("\r\n") or None
            if password is None:
                raise ConfigError(f"{ENV_PREFIX}NATS_PASSWORD_FILE: {password_file} is empty")
        if url_user is not None:
            if user is not None or password is not None:
                raise ConfigError(f"a login both in the NATS URL and in {ENV_PREFIX}NATS_USER/"
                                  "_PASSWORD: give one")
            user, password = url_user, url_password
        if (user is None) != (password is None):
            raise ConfigError(f"{ENV_PREFIX}NATS_USER needs {ENV_PREFIX}NATS_PASSWORD (or "
                              "_PASSWORD_FILE), and the password a user")
        ca_file = path("NATS_CA_FILE")
        cert_file, key_file = pair("NATS_CERT_FILE", "NATS_KEY_FILE")
        tls = (ca_file is not None or cert_file is not None
               or any(s.startswith("tls://") for s in servers))
        login = NatsLogin(ca_file, cert_file, key_file, user, password, tls_required=tls)
        login.tls_context()  # unreadable files refused now, not on the first connection
        metrics_cert, metrics_key = pair("METRICS_CERT_FILE", "METRICS_KEY_FILE")
        client_ca = path("METRICS_CLIENT_CA_FILE")
        if client_ca is not None and metrics_cert is None:
            raise ConfigError(f"{ENV_PREFIX}METRICS_CLIENT_CA_FILE (client certificates) needs "
                              f"{ENV_PREFIX}METRICS_CERT_FILE and _KEY_FILE (HTTPS)")
        metrics = MetricsListen(text("METRICS_HOST") or "127.0.0.1", metrics_cert, metrics_key,
                                client_ca)
        return cls(tuple(servers), login, metrics)


def _servers(given: str) -> tuple[list[str], str | None, str | None]:
    """The URLs without their ``user:password@``, and that login (the same in every URL that
    has one): nats-py would send a URL's password without asking whether the connection is
    TLS, so it is given to nats-py as the user and password, which are checked first."""
    servers, logins = [], set()
    for raw in (s.strip() for s in given.split(",")):
        if not raw:
            continue
        shown = _without_login(raw)
        try:
            parts = urlsplit(raw if "://" in raw else f"nats://{raw}")
            port = parts.port
        except ValueError:
            raise ConfigError(f"NATS URL cannot be read: {shown!r}") from None
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(f"NATS URL must be nats://host:4222 or tls://host:4222, not "
                              f"{shown!r}")
        if parts.username is not None:
            if parts.password is None:
                raise ConfigError(f"NATS URL {shown!r} has a user and no password (tokens are "
                                  "not supported)")
            logins.add((unquote(parts.username), unquote(parts.password)))
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        servers.append(f"{parts.scheme}://{host}:{port or 4222}")
    if not servers:
        raise ConfigError("the replica needs a NATS server URL (nats://host:4222)")
    if len(logins) > 1:
        raise ConfigError("NATS URLs with different logins: give one, in "
                          f"{ENV_PREFIX}NATS_USER and {ENV_PREFIX}NATS_PASSWORD_FILE")
    user, password = next(iter(logins), (None, None))
    return servers, user, password


def _without_login(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


# --- the connection's errors ------------------------------------------------------------------

class NoTls(ConnectionError):
    """The server offered no TLS where TLS is required: the password is not sent (an OSError,
    so nats-py's connect loop reports it and tries again)."""


MAX_ERRORS_SAID = 8  # distinct errors logged while not connected (as server.brokerlink)


def _over_tls(nc: Any) -> bool:
    """Whether nats-py's connection to the server it is connecting to is TLS now (read from
    its transport; anything unexpected there answers no, so no password is sent)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    get = getattr(writer, "get_extra_info", None)
    return get is not None and get("ssl_object") is not None


def _server_of(nc: Any) -> str:
    """host:port of the server nats-py is trying (no login), or '' if it cannot be told."""
    uri = getattr(getattr(nc, "_current_server", None), "uri", None)
    try:
        return f"{uri.hostname}:{uri.port}" if uri is not None and uri.hostname else ""
    except ValueError:
        return ""


def explain(exc: BaseException, login: NatsLogin) -> str | None:
    """What a connection error means and what to check, one line; None for the ones that only
    follow another (a reset after a refusal) or are ordinary (a timeout, a reconnect)."""
    text = str(exc)
    if isinstance(exc, NoTls):
        return (f"TLS: the server offered no TLS, so the password was not sent; give it a tls "
                f"block, or (a test server) drop {ENV_PREFIX}NATS_CA_FILE, _CERT_FILE and "
                "tls:// URLs")
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = (f"{ENV_PREFIX}NATS_CA_FILE's CA" if login.ca_file is not None
                   else f"a CA of the system (or set {ENV_PREFIX}NATS_CA_FILE)")
        return (f"TLS: the server is not trusted ({exc.verify_message}); its certificate must "
                f"be signed by {trusted} and name the host in the URL")
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if "ALERT" not in reason:  # not the server's refusal: a close racing a read, ...
            return None if "CLOSE_NOTIFY" in reason else f"TLS: {reason}"
        if login.cert_file is None:
            return (f"TLS: the server refused the connection ({reason}); if it requires "
                    f"client certificates, set {ENV_PREFIX}NATS_CERT_FILE and _KEY_FILE")
        return (f"TLS: the server refused our certificate ({reason}); "
                f"{ENV_PREFIX}NATS_CERT_FILE must be signed by a CA the server trusts "
                "(its tls ca_file), for client authentication, and not expired")
    if "authorization violation" in text.lower() or type(exc).__name__ == "AuthorizationError":
        if login.user is None:
            return (f"the server requires a login (Authorization Violation): set "
                    f"{ENV_PREFIX}NATS_USER and {ENV_PREFIX}NATS_PASSWORD_FILE")
        return (f"the server refused the login of user {login.user!r} (Authorization "
                f"Violation): check {ENV_PREFIX}NATS_USER and {ENV_PREFIX}NATS_PASSWORD "
                "(or _PASSWORD_FILE) against the server's authorization block")
    if "permissions violation" in text.lower():
        return (f"{text.removeprefix('nats: ')}: the NATS user {login.user!r} needs publish "
                "rights on floorsync.v1.*.*.acks and $JS.API.>, and subscribe on _INBOX.>")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError,
                        asyncio.TimeoutError, TimeoutError)):
        return None
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return None if type(exc).__name__ in ("NoServersError", "UnexpectedEOF") else text


class ConnectLog:
    """nats-py's callbacks: each distinct refusal logged once, at ERROR, until connected (not
    per retry: nats-py retries every half second); a lost connection once, at WARNING."""

    def __init__(self, login: NatsLogin) -> None:
        self.login = login
        self.nc: Any = None
        self._said: set[str] = set()
        self.closing = False  # set before closing: what breaks then is not news
        self._up = False  # connected (nats-py also says "disconnected" of a failed attempt)

    async def error(self, exc: Exception) -> None:
        message = None if self.closing else explain(exc, self.login)
        if message is None:
            log.debug("NATS: %r", exc)
            return
        if message not in self._said and len(self._said) < MAX_ERRORS_SAID:
            self._said.add(message)
            where = _server_of(self.nc)
            log.error("replica: NATS %s: %s; retrying", where or "server", message,
                      extra={"state": "retrying", "error": message})

    async def disconnected(self) -> None:
        if self.closing or not self._up:
            return
        self._up = False
        log.warning("replica: NATS connection lost; reconnecting", extra={"state": "retrying"})

    async def reconnected(self) -> None:
        self._said.clear()
        self._up = True
        log.info("replica: NATS reconnected to %s", _server_of(self.nc))

    def connected(self) -> None:
        self._said.clear()
        self._up = True

    def password(self, value: str) -> Callable[[], str]:
        """nats-py asks for the password as it writes CONNECT: refused unless TLS is up."""
        def give() -> str:
            if self.login.tls_required and not _over_tls(self.nc):
                raise NoTls("the server offered no TLS; password not sent")
            return value
        return give



@dataclass
class Stats:
    """What this replica did, with the CPU time (of its own thread) of each part."""

    messages: int = 0
    events: int = 0
    groups: int = 0
    redelivered: int = 0  # messages the broker had delivered before (to us or another)
    store_failures: int = 0
    decode_cpu_s: float = 0.0
    apply_cpu_s: float = 0.0
    ack_cpu_s: float = 0.0

    def line(self) -> str:
        return json.dumps({k: round(v, 4) if isinstance(v, float) else v
                           for k, v in asdict(self).items()})


class Replica:
    """``await Replica(servers, database).run(stop)`` until ``stop`` is set."""

    def __init__(self, servers: Sequence[str], database: str, *, durable: str = DURABLE,
                 ack_wait_s: float = ACK_WAIT_S, durable_replicas: int = 0,
                 fetch: int = FETCH, metrics: CentralMetrics | None = None,
                 login: NatsLogin | None = None) -> None:
        if not servers:
            raise ConfigError("the replica needs a NATS server URL (nats://host:4222)")
        self.servers = list(servers)
        self.login = login or NatsLogin(
            tls_required=any(s.startswith("tls://") for s in self.servers))
        self.connect_log = ConnectLog(self.login)
        self.database = database
        self.durable = durable
        self.ack_wait_s = ack_wait_s
        self.durable_replicas = durable_replicas
        self.fetch = fetch
        self.stats = Stats()
        self.metrics = metrics  # told every apply (a store observer) and each ack's latency
        self._store: Store | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="replica-store")

    # --- the store (worker thread) ---------------------------------------------------------

    @property
    def store(self) -> Store | None:
        """The open store, None between a failure and the next group (read by scrapes)."""
        return self._store

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = Store(self.database).open()
            # the documents' batch hooks, as create_app installs them: a batch a replica applies
            # matches picks and ships to orders, fills backorders, raises receipt exceptions
            picking.install(self._store)
            book_of(self._store)
            if self.metrics is not None:
                self._store.add_observer(self.metrics)
        return self._store

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _process(self, messages: list[tuple[str, bytes]]
                 ) -> tuple[list[Work], list[tuple[wire.Result, ...] | None]]:
        """Decode and apply one group; raises if the store failed (nothing may be acked)."""
        started = time.thread_time()
        group = [prepare(Work(0, n, 1), topic_of(subject), data)
                 for n, (subject, data) in enumerate(messages)]
        decoded = time.thread_time()
        self.stats.decode_cpu_s += decoded - started
        try:
            results = Applier(self._open_store()).write(group)
        except Exception:
            self._close_store()  # a broken connection is not reused: reopened on the next group
            raise
        finally:
            self.stats.apply_cpu_s += time.thread_time() - decoded
        return group, results

    # --- NATS (the event loop) ------------------------------------------------------------

    async def _bind(self, js: Any, stop: asyncio.Event) -> Any:
        """The shared durable (created by whichever replica comes first), once the MQTT stream
        exists: until an edge or anything has connected over MQTT there is none."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        config = ConsumerConfig(
            durable_name=self.durable, filter_subject=EVENTS_FILTER,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s, max_ack_pending=MAX_ACK_PENDING, max_deliver=-1,
            # 0: as many copies as the stream (R3 on a cluster): the queue's position survives
            # the node that held it; with 1 a lost node stalled every replica until it returned
            num_replicas=self.durable_replicas,
        )
        said = False
        while not stop.is_set():
            try:
                await js.consumer_info(STREAM, self.durable)
            except NotFoundError:
                try:
                    await js.add_consumer(STREAM, config)
                except NotFoundError:
                    if not said:
                        log.warning("waiting for the stream %s (the NATS server creates it on "
                                    "the first MQTT connection)", STREAM)
                        said = True
                    await asyncio.sleep(0.5)
                    continue
                except Exception as exc:  # another replica created it first, a leader election
                    log.info("creating the durable %s: %s; looking again", self.durable, exc)
                    await asyncio.sleep(0.2)
                    continue
            except Exception as exc:  # no JetStream leader yet (a cluster starting)
                log.info("consumer info: %s; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            return await js.pull_subscribe_bind(durable=self.durable, stream=STREAM)
        return None

    async def _connect(self, stop: asyncio.Event) -> Any:
        """A connected nats-py client, or None if ``stop`` came first. A refused connection
        (TLS, login) is logged by ``connect_log`` and tried again every half second."""
        from nats.aio.client import Client

        nc, said = Client(), self.connect_log
        said.nc = nc
        login = self.login
        options: dict[str, Any] = {"reconnect_time_wait": 0.5}  # typed int, takes seconds
        if login.user is not None and login.password is not None:
            options.update(user=login.user, password=said.password(login.password))
        connecting = asyncio.ensure_future(nc.connect(
            servers=self.servers, max_reconnect_attempts=-1,
            connect_timeout=5, name="floorsync-replica", tls=login.tls_context(),
            error_cb=said.error, disconnected_cb=said.disconnected,
            reconnected_cb=said.reconnected, **options))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
            return None
        connecting.result()
        said.connected()
        return nc

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> Stats:
        _nats()
        from nats.errors import TimeoutError as NatsTimeout

        loop = asyncio.get_running_loop()
        nc = None
        try:
            await loop.run_in_executor(self._worker, self._open_store)  # a bad URL fails here
            if self.login.password is not None and not self.login.tls_required:
                log.warning("replica: the NATS password goes to %s without TLS (set %sNATS_CA_FILE"
                            " or use tls:// URLs)", ", ".join(self.servers), ENV_PREFIX)
            nc = await self._connect(stop)
            if nc is None:
                return self.stats
            log.info("replica: connected to NATS %s%s", _server_of(nc),
                     " over TLS" if _over_tls(nc) else "")
            sub = await self._bind(nc.jetstream(), stop)
            if ready is not None:
                ready()
            while sub is not None and not stop.is_set():
                if nc.is_closed:  # nats-py gave up (a server's -ERR closes it): restart us
                    raise ConfigError(f"the NATS connection was closed ({nc.last_error!r})")
                try:
                    messages = await sub.fetch(self.fetch, timeout=1)
                except NatsTimeout:
                    continue
                except Exception as exc:  # a node down, a leader election: keep pulling
                    log.debug("fetch: %r", exc)
                    await asyncio.sleep(0.2)
                    continue
                await self._handle(loop, nc, messages)
        finally:
            self.connect_log.closing = True
            if nc is not None:
                with contextlib.suppress(Exception):  # the acks written out, then goodbye
                    await asyncio.wait_for(nc.flush(), 5)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)
            await loop.run_in_executor(self._worker, self._close_store)
            self._worker.shutdown()
        return self.stats

    async def _handle(self, loop: asyncio.AbstractEventLoop, nc: Any, messages: list[Any]
                      ) -> None:
        pairs = [(m.subject, m.data) for m in messages]
        try:
            group, results = await loop.run_in_executor(self._worker, self._process, pairs)
        except Exception:
            self.stats.store_failures += 1
            log.exception("store failed; %d message(s) not acknowledged (redelivered in %.0f s),"
                          " reopening", len(messages), RETRY_S)
            for message in messages:
                with contextlib.suppress(Exception):
                    await message.nak(delay=RETRY_S)
            await asyncio.sleep(RETRY_S)
            return
        started, committed, latencies = time.thread_time(), time.perf_counter(), list[float]()
        for message, work, result in zip(messages, group, results, strict=True):
            if result and work.site and work.device:
                ack = wire.encode_ack(wire.Ack(work.device, result))
                await nc.publish(subject_of(wire.acks_topic(work.site, work.device)), ack)
                latencies.append(time.perf_counter() - committed)
            with contextlib.suppress(Exception):  # not acked: redelivered after ack_wait
                await message.ack()
            self.stats.events += work.events
            if message.metadata.num_delivered > 1:
                self.stats.redelivered += 1
        self.stats.messages += len(messages)
        self.stats.groups += 1
        self.stats.ack_cpu_s += time.thread_time() - started
        if self.metrics is not None and latencies:
            self.metrics.acked(latencies)


class _SslEofNoise(logging.Filter):
    """asyncio says this WARNING whenever a TLS peer closes (nats-py's protocol returns True
    from eof_received); it tells an operator nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


def serve_metrics(metrics: CentralMetrics, port: int, listen: MetricsListen) -> Any:
    """prometheus-client's HTTP(S) server on ``listen``; returns it (to shut down)."""
    from prometheus_client import start_http_server

    tls: dict[str, Any] = {}
    if listen.cert_file is not None:
        tls = {"certfile": str(listen.cert_file), "keyfile": str(listen.key_file),
               "tls_min_version": ssl.TLSVersion.TLSv1_2}
        if listen.client_ca_file is not None:
            tls.update(client_cafile=str(listen.client_ca_file), client_auth_required=True)
    try:
        server, _ = start_http_server(port, addr=listen.host, registry=metrics.registry, **tls)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot listen on {listen.host}:{port}:"
                          f" {exc.strerror or exc}") from None
    log.info("replica metrics on %s://%s:%d/metrics%s", listen.scheme, listen.host, port,
             " (client certificates required)" if listen.client_ca_file else "")
    return server


def main(settings: ReplicaSettings | str, database: str, metrics_port: int = 0) -> int:
    """``floorsync server --replica``: run until SIGTERM or SIGINT; log the figures at the end.
    With ``metrics_port`` (FLOORSYNC_METRICS_PORT) its Prometheus metrics are served on
    ``settings.metrics`` (FLOORSYNC_METRICS_HOST, loopback by default; HTTPS with a
    certificate). ``settings`` may be the URLs alone (no TLS files, no login)."""
    if isinstance(settings, str):
        settings = ReplicaSettings.from_env(settings, env={})
    logging.getLogger("asyncio").addFilter(_SslEofNoise())
    metrics = CentralMetrics(lambda: replica.store) if metrics_port else None
    replica = Replica(settings.servers, database, metrics=metrics, login=settings.login)
    server = serve_metrics(metrics, metrics_port, settings.metrics) if metrics else None

    async def go() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await replica.run(stop, lambda: log.info("replica consuming %s",
                                                        ",".join(settings.servers)))

    documents = docfollow.for_replica(database)  # to the floor, if FLOORSYNC_BROKER is set
    try:
        stats = asyncio.run(go())
    finally:
        documents.stop()
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("replica stopped: %s", stats.line())
    return 0
