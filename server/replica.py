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
postgresql://…`` (or FLOORSYNC_DATABASE); it serves no HTTP. Needs nats-py: ``pip install
'floorsync[cluster]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from floorsync.edge import wire
from floorsync.server import picking
from floorsync.server.errors import ConfigError
from floorsync.server.ingest import Applier, Work, prepare
from floorsync.server.ledger import Store
from floorsync.server.metrics import CentralMetrics
from floorsync.server.receipts import book_of

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
                 fetch: int = FETCH, metrics: CentralMetrics | None = None) -> None:
        if not servers:
            raise ConfigError("the replica needs a NATS server URL (nats://host:4222)")
        self.servers = list(servers)
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

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> Stats:
        nats = _nats()
        from nats.errors import TimeoutError as NatsTimeout

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._open_store)  # a bad URL fails here
        nc = await nats.connect(servers=self.servers, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5, name="floorsync-replica")
        try:
            sub = await self._bind(nc.jetstream(), stop)
            if ready is not None:
                ready()
            while sub is not None and not stop.is_set():
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


def main(servers: str, database: str, metrics_port: int = 0, metrics_host: str = "127.0.0.1"
         ) -> int:
    """``floorsync server --replica``: run until SIGTERM or SIGINT; log the figures at the end.
    With ``metrics_port`` (FLOORSYNC_METRICS_PORT) its Prometheus metrics are served on
    ``metrics_host`` (FLOORSYNC_HTTP_HOST) without authentication, as the edge's are."""
    metrics = CentralMetrics(lambda: replica.store) if metrics_port else None
    replica = Replica([s.strip() for s in servers.split(",") if s.strip()], database,
                      metrics=metrics)
    server = None
    if metrics is not None:
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(metrics_port, addr=metrics_host,
                                          registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {metrics_host}:{metrics_port}:"
                              f" {exc.strerror or exc}") from None
        log.info("replica metrics on http://%s:%d/metrics", metrics_host, metrics_port)

    async def go() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await replica.run(stop, lambda: log.info("replica consuming %s", servers))

    try:
        stats = asyncio.run(go())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("replica stopped: %s", stats.line())
    return 0
