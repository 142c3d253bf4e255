"""Which distributed broker should central replicas consume from? Measured, not guessed.

Edges keep publishing MQTT with paho (QoS 1, batches of 500 events, as ``floorsync bench``);
replicas are competing consumers of one durable queue on a broker that can be clustered:

- NATS 2.9 + JetStream: its MQTT listener stores QoS 1 publishes in the stream ``$MQTT_msgs``
  (subject ``$MQTT.msgs.<topic with / as .>``); replicas share one durable pull consumer (nats-py);
- RabbitMQ 3.10 + rabbitmq_mqtt: publishes go to ``amq.topic`` (routing key = topic with ``/`` as
  ``.``); replicas share one quorum queue bound to it, over AMQP (pika, manual ack, prefetch).

Beside them, in the same run, raw paho through mosquitto (publisher to subscriber, no acks back).
Every broker is started by this script on free loopback ports in a temporary directory: the
system's services and their data are never touched. Consumers are separate processes (so a
SIGKILL is a real crash); each "processes" a message (``wire.decode_batch``), appends the batch's
id to its own file, then acks. Lost = PUBACKed by the broker but never processed by anyone;
duplicates = processed more than once (fine for floorsync: the ledger dedupes by event id).

    python -m floorsync.bench.cluster --messages 2000 [--candidates nats,rabbit] [--cluster]
    python -m floorsync.bench.cluster --write-configs deploy/cluster

Findings and the recommendation: deploy/cluster/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.bench.e2e import BATCH, SITE, _event, bench_paho
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.localbroker import Mosquitto, free_port, wait_for_port

TOPIC = wire.events_topic(SITE, "dock-1")  # floorsync/v1/bench/dock-1/events
NATS_STREAM = "$MQTT_msgs"  # created by nats-server on the first MQTT connection
NATS_FILTER = "$MQTT.msgs.floorsync.v1.*.*.events"
NATS_DURABLE = "floorsync-replicas"
NATS_ACK_WAIT_S = 5.0  # a dead replica's unacked batches go to another after this
AMQP_QUEUE = "floorsync.replicas"
AMQP_BINDING = "floorsync.v1.*.*.events"
AMQP_PREFETCH = 200
RABBIT_HOME = Path("/usr/lib/rabbitmq/bin")


def nats_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if os.path.exists(p)),
        None,
    )
    if found is None:
        raise EdgeError("nats-server is not installed (apt-get install nats-server)")
    return found


# --- configurations (rendered here; deploy/cluster/*.conf are these with fixed ports) -------

@dataclass(frozen=True, slots=True)
class NatsSecurity:
    """What makes a node of deploy/multisite safe to expose (``render_nats(security=...)``).

    One certificate per node (``cert_file``/``key_file``, signed by the site CA ``ca_file``;
    subjectAltName = the node's host name, extended key usage serverAuth and clientAuth) serves
    the client port, the MQTT listener and the cluster routes. Routes verify each other's
    certificate and accept only one naming a host of their own ``routes`` list
    (``verify_cert_and_check_known_urls``): a device certificate of the same CA is no route.
    ``users`` is the file of users and permissions (``include``d in ``authorization``, a path
    relative to the configuration's directory) that ``floorsync enroll --nats-users`` edits.
    ``advertise``: this node's host name, which the routes gossip (their TLS checks names; an IP
    address would fail it)."""

    cert_file: str
    key_file: str
    ca_file: str
    users: str
    advertise: str | None = None


def _nats_tls(security: NatsSecurity, indent: str, *extra: str) -> str:
    lines = [f"{indent}tls {{",
             f'{indent}  cert_file: "{security.cert_file}"',
             f'{indent}  key_file: "{security.key_file}"',
             f'{indent}  ca_file: "{security.ca_file}"',
             f"{indent}  timeout: 5",
             *(f"{indent}  {line}" for line in extra),
             f"{indent}}}"]
    return "\n".join(lines) + "\n"


def render_nats(name: str, port: int, mqtt_port: int, store: str,
                cluster_port: int | None = None, routes: Sequence[str] = (),
                host: str = "127.0.0.1", security: NatsSecurity | None = None) -> str:
    """One nats-server: JetStream (MQTT needs it, and a server_name) and the MQTT listener.

    In a cluster the MQTT streams are created with 3 replicas (``stream_replicas``), so losing a
    node loses no stored message; the replicas' durable pull consumer is made R3 by the replica.
    With ``security`` (deploy/multisite): TLS on the client port, the MQTT listener and the
    routes, and authorization by the users of ``security.users``; the bench runs without.
    """
    text = (
        f"server_name: {name}\n"
        f"listen: {host}:{port}\n"
    )
    if security is not None:
        text += _nats_tls(security, "")
    text += (
        "jetstream {\n"
        f'  store_dir: "{store}"\n'
        "  max_memory_store: 64MB\n"
        "  max_file_store: 4GB\n"
        "}\n"
        "mqtt {\n"
        f"  listen: {host}:{mqtt_port}\n"
    )
    if security is not None:
        text += _nats_tls(security, "  ")
    text += (
        "  # a QoS 1 message not PUBACKed by an MQTT subscriber is sent again after this\n"
        '  ack_wait: "30s"\n'
    )
    if cluster_port is not None:
        text += "  stream_replicas: 3\n"
    text += "}\n"
    if cluster_port is not None:
        joined = ", ".join(f"nats-route://{r}" for r in routes)
        text += (
            "cluster {\n"
            "  name: floorsync\n"
            f"  listen: {host}:{cluster_port}\n"
        )
        if security is not None:
            if security.advertise is not None:
                text += f"  advertise: {security.advertise}:{cluster_port}\n"
            # clients are given every node's URL: gossiped IP addresses would fail their TLS
            text += "  no_advertise: true\n"
            text += _nats_tls(security, "  ", "verify: true",
                              "verify_cert_and_check_known_urls: true")
        text += (
            f"  routes: [{joined}]\n"
            "}\n"
        )
    if security is not None:
        text += (
            "authorization {\n"
            "  timeout: 5\n"
            f'  include "{security.users}"\n'
            "}\n"
        )
    return text


def render_rabbit(amqp_port: int, mqtt_port: int) -> str:
    """rabbitmq.conf for one node with the MQTT plugin; a cluster adds the peer discovery lines."""
    return (
        f"listeners.tcp.local = 127.0.0.1:{amqp_port}\n"
        f"mqtt.listeners.tcp.local = 127.0.0.1:{mqtt_port}\n"
        "mqtt.allow_anonymous = true\n"
        "mqtt.vhost = /\n"
        "mqtt.exchange = amq.topic\n"
        "# the MQTT plugin's own session queues (subscribers) replicated too, on a cluster\n"
        "mqtt.durable_queue_type = quorum\n"
    )


# --- brokers, started and owned by this script ------------------------------------------------

class NatsNode:
    """One nats-server on free loopback ports with its own JetStream store; kill and restart."""

    def __init__(self, directory: Path, name: str, cluster_port: int | None = None,
                 routes: Sequence[str] = ()) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port, self.mqtt_port = free_port(), free_port()
        self.config = directory / "nats.conf"
        self.config.write_text(render_nats(name, self.port, self.mqtt_port,
                                           str(directory / "js"), cluster_port, routes))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> NatsNode:
        log = open(self.directory / "nats.log", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen([nats_binary(), "-c", str(self.config)],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait()
        return self

    def wait(self) -> None:
        wait_for_port(self.port, 20)
        wait_for_port(self.mqtt_port, 60)  # MQTT listens once JetStream is ready (cluster: meta)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


class RabbitNode:
    """A RabbitMQ node of its own (name, ports, data, cookie) beside the system's service."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port, self.mqtt_port, dist = free_port(), free_port(), free_port()
        (directory / "rabbitmq.conf").write_text(render_rabbit(self.port, self.mqtt_port))
        (directory / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = {
            **os.environ,
            "HOME": str(directory),  # its own .erlang.cookie, never the service's
            "RABBITMQ_NODENAME": f"fsbench{self.port}@localhost",
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> RabbitNode:
        binary = RABBIT_HOME / "rabbitmq-server"
        if not binary.exists():
            raise EdgeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        log = open(self.directory / "rabbit.out", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen([str(binary)], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd=self.directory)
        log.close()
        try:
            wait_for_port(self.port, 90)
            wait_for_port(self.mqtt_port, 30)
        except TimeoutError as exc:
            self.stop()
            raise EdgeError(f"rabbitmq did not start; see {self.directory}/rabbit.out") from exc
        return self

    def stop(self) -> None:
        """The node runs as a process group (the script, erlang, its port helpers): end it all."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None


# --- consumers: separate processes, one file of processed batch ids each ---------------------

def _process(payload: bytes) -> str:
    """What a replica must do at least: read and check the batch. Its id: the first event's."""
    return wire.decode_batch(payload).events[0].id


def _record(fd: int, batch_id: str) -> None:
    os.write(fd, (batch_id + "\n").encode())  # before the ack: a crash can double, never lose


async def _consume_nats(urls: list[str], out: Path, ready: Path) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=NATS_DURABLE, stream=NATS_STREAM)
    ready.touch()
    while True:
        try:
            messages = await sub.fetch(100, timeout=1)
        except NatsTimeout:
            continue
        except Exception:  # a node down, a leader election: keep pulling
            await asyncio.sleep(0.2)
            continue
        for message in messages:
            _record(fd, _process(message.data))
            with contextlib.suppress(Exception):  # unacked: redelivered after ack_wait
                await message.ack()


def _consume_amqp(url: str, out: Path, ready: Path) -> None:
    import pika

    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=AMQP_PREFETCH)

    def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
        _record(fd, _process(body))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(AMQP_QUEUE, on_message)
    ready.touch()
    channel.start_consuming()


def consumer_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["nats", "amqp"])
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ready = args.out.with_suffix(".ready")
    if args.kind == "nats":
        asyncio.run(_consume_nats(args.url, args.out, ready))
    else:
        _consume_amqp(args.url[0], args.out, ready)


@dataclass
class Consumer:
    process: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(cls, kind: str, urls: Sequence[str], out: Path) -> Consumer:
        out.touch()
        command = [sys.executable, "-m", "floorsync.bench.cluster", "consume", kind,
                   "--out", str(out)]
        for url in urls:
            command += ["--url", url]
        log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while not out.with_suffix(".ready").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise EdgeError(f"{kind} consumer did not start: "
                                f"{out.with_suffix('.log').read_text()[-2000:]}")
            time.sleep(0.05)
        return cls(process, out)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def ids(self) -> list[str]:
        return self.out.read_text().split()


# --- the edge: paho, MQTT 3.1.1 (neither NATS 2.9 nor RabbitMQ 3.10 speaks MQTT 5) -----------

class Edge:
    """Batches of 500 events, QoS 1, 16 in flight, like ``floorsync bench``'s raw paho."""

    def __init__(self, messages: int) -> None:
        rest = ",".join(wire.encode_event(replace(_event(i), seq=i + 1)) for i in range(1, BATCH))
        head = json.dumps({"v": wire.VERSION, "site": SITE, "device": "dock-1",
                           "sent_at": wire.utc_now()}, separators=(",", ":"))[:-1]
        self.ids: list[str] = []
        self.payloads: list[bytes] = []
        for n in range(messages):
            first = replace(_event(n), seq=1)
            self.ids.append(first.id)
            self.payloads.append(
                (head + ',"events":[' + wire.encode_event(first) + "," + rest + "]}").encode())
        self.acked: set[int] = set()
        self._mids: dict[int, int] = {}
        self._lock = threading.Lock()

    def publish(self, port: int) -> float:
        """Publish every payload; seconds until the last PUBACK. PUBACKed indexes in ``acked``."""
        done = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{port}",
                             protocol=mqtt.MQTTv311)
        total = len(self.payloads)

        early: set[int] = set()  # PUBACKs that came before publish() returned their mid

        def settle(index: int) -> None:
            self.acked.add(index)
            if len(self.acked) == total:
                done.set()

        def on_publish(_c: mqtt.Client, _u: object, mid: int, _rc: Any, _p: Any) -> None:
            with self._lock:
                index = self._mids.pop(mid, None)
                if index is None:
                    early.add(mid)
                else:
                    settle(index)

        client.on_publish = on_publish
        client.max_inflight_messages_set(16)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        start = time.perf_counter()
        try:
            for index, payload in enumerate(self.payloads):
                # never under our lock: paho calls on_publish holding its own (FIELD-NOTES)
                info = client.publish(TOPIC, payload, qos=1)
                with self._lock:
                    if info.mid in early:
                        early.discard(info.mid)
                        settle(index)
                    else:
                        self._mids[info.mid] = index
            if not done.wait(180):
                raise EdgeError(f"only {len(self.acked)} of {total} publishes were PUBACKed")
            return time.perf_counter() - start
        finally:
            client.disconnect()
            client.loop_stop()


def _touch_mqtt(port: int) -> None:
    """NATS creates its MQTT streams on the first MQTT connection: make one before replicas bind."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hello-{port}",
                         protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


def check_mqtt5_refused(port: int) -> str:
    """What an edge on its MQTT 5 default gets from this broker."""
    outcome: list[str] = []
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"v5-{port}",
                         protocol=mqtt.MQTTv5)

    def on_connect(_c: mqtt.Client, _u: object, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not connected.wait(5):
            outcome.append("no CONNACK (connection closed)")
    except OSError as exc:
        outcome.append(f"refused: {exc}")
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] if outcome else "no CONNACK"


async def _nats_durable(urls: list[str], replicas: int) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        await js.add_consumer(NATS_STREAM, ConsumerConfig(
            durable_name=NATS_DURABLE, filter_subject=NATS_FILTER,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=NATS_ACK_WAIT_S, max_ack_pending=1000, max_deliver=-1,
            num_replicas=replicas,
        ))
    finally:
        await nc.close()


def _amqp_queue(url: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(AMQP_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(AMQP_QUEUE, "amq.topic", routing_key=AMQP_BINDING)
    finally:
        connection.close()


# --- one run: publish N batches, consume with k competing consumers ---------------------------

@dataclass
class Outcome:
    messages_per_s: float
    events_per_s: float
    publish_messages_per_s: float
    lost: int
    duplicates: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"messages_per_s": round(self.messages_per_s),
                "events_per_s": round(self.events_per_s),
                "publish_messages_per_s": round(self.publish_messages_per_s),
                "lost": self.lost, "duplicates": self.duplicates, "notes": self.notes}


def _count(consumers: Sequence[Consumer]) -> tuple[set[str], int]:
    seen: set[str] = set()
    lines = 0
    for consumer in consumers:
        ids = consumer.ids()
        lines += len(ids)
        seen.update(ids)
    return seen, lines


def run_consumers(directory: Path, kind: str, urls: Sequence[str], mqtt_port: int,
                  messages: int, consumers: int, *, kill_consumer: bool = False,
                  fault: Callable[[], str] | None = None, settle: float = 60.0) -> Outcome:
    """Consumers started and ready, then the edge publishes; the clock stops at the last batch
    processed. ``kill_consumer``: the first consumer is SIGKILLed a third of the way through;
    ``fault``: called at the same point (a broker node killed) and returns a note."""
    edge = Edge(messages)
    tag = f"{kind}-{consumers}-{int(kill_consumer)}-{int(fault is not None)}"
    running = [Consumer.start(kind, urls, directory / f"{tag}-{i}.ids") for i in range(consumers)]
    notes: list[str] = []
    stop = threading.Event()

    def inject() -> None:
        """Once a third of the batches are processed (paho queues every publish at once, so
        the publisher's progress says nothing), kill a consumer and/or break the broker."""
        while not stop.wait(0.01):
            processed = _count(running)[1]
            if processed >= messages // 3:
                if kill_consumer:
                    running[0].stop(signal.SIGKILL)
                    notes.append(f"consumer 0 SIGKILLed after {processed} processed")
                if fault is not None:
                    notes.append(fault())
                return

    injector = threading.Thread(target=inject, daemon=True)
    if kill_consumer or fault is not None:
        injector.start()
    try:
        start = time.perf_counter()
        publish_seconds = edge.publish(mqtt_port)
        wanted = {edge.ids[i] for i in edge.acked}
        deadline = time.monotonic() + settle
        while True:
            seen, lines = _count(running)
            if wanted <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        time.sleep(0.5 if not (kill_consumer or fault) else NATS_ACK_WAIT_S + 1)
        seen, lines = _count(running)  # late redeliveries count as duplicates
    finally:
        stop.set()
        if injector.is_alive():
            injector.join()
        for consumer in running:
            consumer.stop()
    done = len(wanted & seen)
    return Outcome(done / elapsed, done * BATCH / elapsed, messages / publish_seconds,
                   lost=len(wanted - seen), duplicates=lines - len(seen), notes=notes)


def bench_nats(directory: Path, messages: int, scenarios: Sequence[tuple[str, int, bool]]
               ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, consumers, kill in scenarios:
        node = NatsNode(directory / f"nats-{label}", "fs-n1").start()  # fresh stream per run
        try:
            if "v5" not in results:
                results["mqtt5_connect"] = check_mqtt5_refused(node.mqtt_port)
            _touch_mqtt(node.mqtt_port)
            asyncio.run(_nats_durable([node.url], 1))
            results[label] = run_consumers(directory, "nats", [node.url], node.mqtt_port,
                                           messages, consumers, kill_consumer=kill).as_dict()
        finally:
            node.stop()
    return results


def bench_rabbit(directory: Path, messages: int, scenarios: Sequence[tuple[str, int, bool]]
                 ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    node = RabbitNode(directory / "rabbit").start()
    try:
        results["mqtt5_connect"] = check_mqtt5_refused(node.mqtt_port)
        _amqp_queue(node.url)
        for label, consumers, kill in scenarios:
            results[label] = run_consumers(directory, "amqp", [node.url], node.mqtt_port,
                                           messages, consumers, kill_consumer=kill).as_dict()
    finally:
        node.stop()
    return results


def bench_nats_cluster(directory: Path, messages: int) -> dict[str, Any]:
    """Three nodes on loopback, MQTT streams R3, a R3 durable; the edge publishes to node 1,
    the consumers may use all three; node 3 is SIGKILLed a third of the way through, then
    brought back."""
    cluster_ports = [free_port() for _ in range(3)]
    nodes = [NatsNode(directory / f"nats-c{i + 1}", f"fs-c{i + 1}", cluster_ports[i],
                      [f"127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i])
             for i in range(3)]
    for node in nodes:
        node.start(wait=False)
    try:
        for node in nodes:
            node.wait()
        urls = [n.url for n in nodes]
        deadline = time.monotonic() + 90
        while True:  # the MQTT streams need a meta leader, the consumer a stream leader
            try:
                _touch_mqtt(nodes[0].mqtt_port)
                asyncio.run(_nats_durable(urls, 3))
                break
            except Exception:  # still electing
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

        def kill_node() -> str:
            began = time.monotonic()
            nodes[2].stop(signal.SIGKILL)
            nodes[2].start(wait=False)
            return f"node fs-c3 SIGKILLed and restarted ({time.monotonic() - began:.1f}s)"

        outcome = run_consumers(directory, "nats", urls, nodes[0].mqtt_port, messages, 2,
                                fault=kill_node, settle=120)
        return {"cluster_r3_node_killed": outcome.as_dict()}
    finally:
        for node in nodes:
            node.stop()


SCENARIOS = [("1 consumer", 1, False), ("2 consumers", 2, False),
             ("2 consumers, one SIGKILLed", 2, True)]


def run(messages: int, candidates: Sequence[str], cluster: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"messages": messages, "events_per_message": BATCH}
    with tempfile.TemporaryDirectory(prefix="floorsync-cluster-") as tmp:
        directory = Path(tmp)
        if "mosquitto" in candidates:
            with Mosquitto(directory / "mosquitto") as broker:
                rate = bench_paho(broker, messages * BATCH)
            result["mosquitto_raw_paho"] = {"messages_per_s": round(rate / BATCH),
                                            "events_per_s": round(rate)}
        if "nats" in candidates:
            result["nats"] = bench_nats(directory, messages, SCENARIOS)
            if cluster:
                try:
                    result["nats"].update(bench_nats_cluster(directory, messages))
                except Exception as exc:  # the single-node figures are still worth printing
                    result["nats"]["cluster_r3_node_killed"] = f"failed: {exc!r}"
        if "rabbit" in candidates:
            result["rabbitmq"] = bench_rabbit(directory, messages, SCENARIOS)
    return result


def write_configs(target: Path) -> None:
    """The configurations this bench runs, with a site's usual ports, for deploy/cluster/."""
    target.mkdir(parents=True, exist_ok=True)
    for path, text in example_configs().items():
        (target / path).write_text(text)


CONFIG_HEADER = (
    "# As floorsync/bench/cluster.py runs it (its loopback ports replaced by a site's usual\n"
    "# ones; regenerate: python -m floorsync.bench.cluster --write-configs deploy/cluster).\n"
    "# Not hardened: a site adds TLS and per-device credentials (deploy/mosquitto shows which).\n"
)


def example_configs() -> dict[str, str]:
    store = "/var/lib/nats/jetstream"
    configs = {"nats-single.conf": render_nats("floorsync-1", 4222, 1883, store, host="0.0.0.0")}
    for i in range(3):
        peers = [f"nats{j + 1}.site.example:6222" for j in range(3) if j != i]
        configs[f"nats-node{i + 1}.conf"] = render_nats(
            f"floorsync-{i + 1}", 4222, 1883, store, 6222, peers, host="0.0.0.0")
    configs["rabbitmq.conf"] = render_rabbit(5672, 1883).replace("127.0.0.1", "0.0.0.0")
    return {name: CONFIG_HEADER + text for name, text in configs.items()}


def _print(result: dict[str, Any]) -> None:
    events = result.get("mosquitto_raw_paho")
    if events:
        print(f"raw paho through mosquitto: {events['messages_per_s']:>7,} msg/s "
              f"{events['events_per_s']:>10,} events/s")
    for broker in ("nats", "rabbitmq"):
        for label, value in result.get(broker, {}).items():
            if isinstance(value, dict):
                print(f"{broker} {label}: {value['messages_per_s']:>7,} msg/s "
                      f"{value['events_per_s']:>10,} events/s (publish "
                      f"{value['publish_messages_per_s']:,} msg/s) lost {value['lost']}, "
                      f"duplicates {value['duplicates']} {'; '.join(value['notes'])}")
            else:
                print(f"{broker} {label}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["consume"]:
        consumer_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m floorsync.bench.cluster")
    parser.add_argument("--messages", type=int, default=2000, help="batches of 500 events")
    parser.add_argument("--candidates", default="mosquitto,nats,rabbit")
    parser.add_argument("--cluster", action="store_true", help="also a 3-node NATS cluster")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-configs", type=Path)
    args = parser.parse_args(argv)
    if args.write_configs:
        write_configs(args.write_configs)
        return 0
    result = run(args.messages, args.candidates.split(","), args.cluster)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
