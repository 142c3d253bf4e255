"""The several-hosts faults: a three-node NATS cluster, central replicas on PostgreSQL, one edge.

Each scenario runs end to end on real parts it starts itself and owns: three ``nats-server``
nodes (JetStream R3, MQTT on each) on free loopback ports with their own store directories, a
PostgreSQL database of its own on the server at ``FLOORSYNC_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; created, migrated, dropped after), two
``floorsync server --replica`` processes, and a real edge (the edge agent's own ``Outbox`` and
``Syncer``, MQTT 3.1.1 as NATS needs) connected to node 1's MQTT listener.

This process captures events into the edge's outbox at a steady pace (each ``Outbox.add`` is
durable when it returns: that is *generated*), while a fault thread injects the scenario's
faults at evenly spaced points of the stream, each brought back after a seeded 0.5-3 s; the
capture waits at the next fault's point until the previous fault is over, so every fault and
every return happens while events flow. After the stream the edge's backlog drains; then
PostgreSQL says, per generated event id, whether it is in ``events`` and how many movements it
made: lost = generated - applied, doubled = an event with more than one movement; an event not
generated here or without its movement counts as wrong.

Per fault, three times: ``down`` (how long the part was away), ``back`` (from its restart until
it serves again: a node's client and MQTT ports listening, a replica consuming) and
``recovered`` (from the fault until every event captured before it is in PostgreSQL).

Scenarios: ``cluster-node`` (a broker node other than the edge's SIGKILLed, restarted on its
store), ``cluster-replica`` (a replica SIGKILLed, started again), ``cluster-both`` (both at
once), ``cluster-pg`` (every PostgreSQL connection of the replicas terminated with
``pg_terminate_backend``). Not run: the node the edge is connected to killed. The edge takes one
broker URL (``[sync] broker``, ``edge.sync.parse_broker``), so it cannot move to another node;
it would only wait for that node's return.

The parts are also what ``tests/server/test_replica.py`` builds its tests on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floorsync.bench.cluster import NatsNode, nats_binary
from floorsync.chaos.scenarios import Result
from floorsync.edge import wire
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import free_port

ADMIN = os.environ.get("FLOORSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SITE = "chaos"
DEVICE = "dock-1"  # NATS 2.9 refuses MQTT topics holding a '.': no dot in site or device
MONITOR = "floorsync-chaos-monitor"  # our own PostgreSQL connections, spared by cluster-pg

EDGE_NODE_SKIPPED = ("cluster-edge-node skipped: the edge takes one broker URL ([sync] broker), "
                     "so it cannot reconnect to another node")


@dataclass(frozen=True)
class ClusterScenario:
    name: str
    fault: str  # kill-node | kill-replica | kill-node+replica | pg-terminate


CLUSTER_SCENARIOS: dict[str, ClusterScenario] = {s.name: s for s in (
    ClusterScenario("cluster-node", "kill-node"),
    ClusterScenario("cluster-replica", "kill-replica"),
    ClusterScenario("cluster-both", "kill-node+replica"),
    ClusterScenario("cluster-pg", "pg-terminate"),
)}


# --- the parts ----------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise EdgeError(f"timed out after {timeout}s waiting for {what}")


def mqtt_hello(port: int, timeout: float = 30) -> None:
    """An MQTT 3.1.1 connection the server accepts (CONNACK 0): nats-server creates its MQTT
    streams then, and a cluster accepts one only once JetStream has its leaders."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    deadline = time.monotonic() + timeout
    while True:
        accepted = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hello-{port}",
                             protocol=mqtt.MQTTv311)
        client.on_connect = lambda _c, _u, _f, reason, _p, done=accepted: (
            None if reason.is_failure else done.set())
        try:
            client.connect("127.0.0.1", port)
            client.loop_start()
            if accepted.wait(5):
                return
        except OSError:
            pass
        finally:
            client.disconnect()
            client.loop_stop()
        if time.monotonic() > deadline:
            raise EdgeError(f"NATS MQTT on port {port} accepted no connection")
        time.sleep(0.5)


def jetstream_ready(urls: Sequence[str], timeout: float = 60) -> None:
    """Wait for the cluster's JetStream (its meta leader elected). An MQTT client connecting
    before that waits out a 4 s JetStream request inside nats-server and is refused; waiting
    here first brings a three-node cluster up in ~2 s instead of ~7 (measured)."""

    async def ask() -> None:
        import nats

        nc = await nats.connect(servers=list(urls), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=0.5)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await js.account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    try:
        asyncio.run(ask())
    except Exception as exc:
        raise EdgeError(f"JetStream not ready on {', '.join(urls)}: {exc!r}") from None


def three_nodes(directory: Path) -> list[NatsNode]:
    """Three nats-server nodes routed to each other (JetStream R3, MQTT on each); not started."""
    ports = [free_port() for _ in range(3)]
    return [NatsNode(directory / f"nats-c{i + 1}", f"fs-c{i + 1}", ports[i],
                     [f"127.0.0.1:{p}" for j, p in enumerate(ports) if j != i])
            for i in range(3)]


class ReplicaProcess:
    """``floorsync server --replica`` in its own process, to be killed like a real one."""

    def __init__(self, directory: Path, name: str, servers: Sequence[str], database: str
                 ) -> None:
        self.name = name
        self.log = directory / f"{name}.log"
        self.servers, self.database = ",".join(servers), database
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._mark = 0

    def _consuming(self) -> int:
        return self.log.read_text().count("replica consuming") if self.log.exists() else 0

    def start(self, wait: bool = True) -> ReplicaProcess:
        self._mark = self._consuming()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync.cli", "server", "--replica", self.servers,
                 "--db", self.database], stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        if wait:
            self.wait()
        return self

    def wait(self, timeout: float = 60) -> None:
        process = self.process
        assert process is not None
        wait_until(lambda: process.poll() is not None or self._consuming() > self._mark,
                   timeout, f"{self.name} consuming")
        if process.poll() is not None:
            raise EdgeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> dict[str, float]:
        """SIGTERM; its figures from the log line it writes at the end ({} if it had none)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.log.exists():
            return {}
        lines = [ln for ln in self.log.read_text().splitlines() if "replica stopped: " in ln]
        return json.loads(lines[-1].split("replica stopped: ", 1)[1]) if lines else {}


@contextlib.contextmanager
def replicas(directory: Path, count: int, servers: Sequence[str], database: str
             ) -> Iterator[list[ReplicaProcess]]:
    """``count`` replicas started together (each waited for), stopped at the end."""
    running = [ReplicaProcess(directory, f"replica-{i}", servers, database)
               for i in range(count)]
    try:
        for replica in running:
            replica.start(wait=False)
        for replica in running:
            replica.wait()
        yield running
    finally:
        for replica in running:
            replica.stop()


@contextlib.contextmanager
def edge(directory: Path, site: str, device: str, mqtt_port: int
         ) -> Iterator[tuple[Outbox, Syncer]]:
    """A real edge: outbox and syncer, the one config change NATS needs (MQTT 3.1.1)."""
    with Outbox(directory / f"{device}-outbox.db") as outbox:
        syncer = Syncer(outbox, site, device, SyncSettings(
            broker=f"mqtt://127.0.0.1:{mqtt_port}", protocol="3.1.1")).start()
        try:
            yield outbox, syncer
        finally:
            syncer.stop()


@contextlib.contextmanager
def database(admin: str = ADMIN, prefix: str = "floorsync_chaos_") -> Iterator[str]:
    """A PostgreSQL database of its own, migrated; dropped after, whatever its connections."""
    import psycopg
    from psycopg import sql

    from floorsync.server.ledger import Store

    name = prefix + uuid.uuid4().hex[:12]
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with Store(url):
            pass  # migrated
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


def ledger(database: str) -> dict[str, Any]:
    """Straight from PostgreSQL: events, movements, the stock total, and per event id its
    number of movements."""
    import psycopg

    with psycopg.connect(database, application_name=MONITOR) as conn:
        moves = {row[0]: int(row[1]) for row in conn.execute(
            "SELECT e.id, COUNT(m.event_id) FROM events e LEFT JOIN movements m "
            "ON m.event_id = e.id GROUP BY e.id")}
        (movements,) = conn.execute("SELECT COUNT(*) FROM movements").fetchone()  # type: ignore[misc]
        (stock,) = conn.execute(  # type: ignore[misc]
            "SELECT COALESCE(SUM(quantity), 0) FROM stock").fetchone()
    return {"events": len(moves), "movements": int(movements), "stock": float(stock),
            "doubled": sum(1 for n in moves.values() if n > 1), "ids": set(moves),
            "moves": moves}


def terminate_connections(database: str, admin: str = ADMIN) -> int:
    """``pg_terminate_backend`` every connection to ``database`` but this harness's own."""
    import psycopg

    name = database.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid() AND application_name <> %s", (name, MONITOR)).fetchall()
    return sum(1 for (done,) in rows if done)


def jetstream_leaders(urls: Sequence[str]) -> dict[str, str]:
    """Which node leads the MQTT stream and the replicas' durable consumer ({} if unknown)."""
    from floorsync.server.replica import DURABLE, STREAM

    async def ask() -> dict[str, str]:
        import nats

        nc = await nats.connect(servers=list(urls), connect_timeout=2,
                                max_reconnect_attempts=1)
        try:
            js = nc.jetstream(timeout=2)
            found = {}
            stream = await js.stream_info(STREAM)
            if stream.cluster is not None and stream.cluster.leader:
                found["stream"] = stream.cluster.leader
            consumer = await js.consumer_info(STREAM, DURABLE)
            if consumer.cluster is not None and consumer.cluster.leader:
                found["consumer"] = consumer.cluster.leader
            return found
        finally:
            await nc.close()

    try:
        return asyncio.run(asyncio.wait_for(ask(), 5))
    except Exception:  # a leader election under way: not worth failing a fault for
        return {}


def receive_events(count: int) -> list[wire.Event]:
    """``count`` receives of one unit each, every one its own id (the outbox numbers them)."""
    now = wire.local_now()
    return [wire.Event(id=wire.new_event_id(), seq=n + 1, time=now, type="receive",
                       item=wire.Item(gtin="09501101530003", lot=f"L{n % 7}"), qty=1,
                       from_=None, to="DOCK-1", operator="op-1",
                       read=wire.SourceRead(kind="barcode", raw="]C101095011015300031" + "0L1",
                                            symbology="]C1"))
            for n in range(count)]


# --- one scenario ------------------------------------------------------------------------------


class ClusterWorld:
    """One cluster scenario's site, its stream, its faults, its count."""

    CHUNK = 100  # events a capture

    def __init__(self, spec: ClusterScenario, seed: int, directory: Path,
                 out: Callable[[str], None], *, events: int, faults: int,
                 rate: float = 2000.0, admin: str = ADMIN) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.events, self.faults, self.rate, self.admin = events, max(1, faults), rate, admin
        self.result = Result(spec.name, "cluster", seed)
        self.generated: set[str] = set()
        self.captured = 0  # the highest sequence number durable in the outbox
        self._lock = threading.Lock()
        self._fault_done = [threading.Event() for _ in range(self.faults)]
        self._fault_error: BaseException | None = None
        self._journal = open(directory / "chaos.log", "a", buffering=1)  # noqa: SIM115

    def log(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        self._journal.write(f"{stamp} {text}\n")

    def run(self) -> Result:
        started = time.monotonic()
        try:
            nats_binary()
            self._run()
        finally:
            self._journal.close()
            self.result.wall_s = time.monotonic() - started
        return self.result

    def _run(self) -> None:
        nodes = three_nodes(self.dir)
        try:
            with database(self.admin) as url:
                for node in nodes:
                    node.start(wait=False)
                urls = [n.url for n in nodes]
                # the replicas start with the cluster: they bind once the stream exists
                running = [ReplicaProcess(self.dir, f"replica-{i}", urls, url)
                           for i in range(2)]
                try:
                    for replica in running:
                        replica.start(wait=False)
                    for node in nodes:
                        node.wait()
                    jetstream_ready(urls)
                    mqtt_hello(nodes[0].mqtt_port, 60)  # the MQTT streams need a leader
                    for replica in running:
                        replica.wait()
                    self.log(f"cluster up: {urls}; database {url.rsplit('/', 1)[1]}")
                    with edge(self.dir, SITE, DEVICE, nodes[0].mqtt_port) as (box, sync):
                        self._stream(box, nodes, running, url)
                        self._drain(box)
                        self.result.notes.append(
                            f"edge re-sent {sync.stats.resent} event(s), connected "
                            f"{sync.stats.connects} time(s)")
                finally:
                    stats = [r.stop() for r in running]
                self.result.notes.append(
                    "replicas (since their last start): " + ", ".join(
                        f"{r.name} {s.get('events', 0):.0f} events, {s.get('redelivered', 0):.0f}"
                        f" redelivered, {s.get('store_failures', 0):.0f} store failures"
                        f" ({r.starts} starts)"
                        for r, s in zip(running, stats, strict=True)))
                self._count(url)
        finally:
            for node in nodes:
                node.stop()

    # --- the stream and the faults ---------------------------------------------------------

    def _points(self) -> list[int]:
        """The capture counts at which the faults strike: evenly spaced, the last segment free."""
        return [self.events * (i + 1) // (self.faults + 2) for i in range(self.faults)]

    def _stream(self, box: Outbox, nodes: list[NatsNode], running: list[ReplicaProcess],
                url: str) -> None:
        points = self._points()
        injector = threading.Thread(target=self._faults,
                                    args=(points, box, nodes, running, url),
                                    name="chaos-faults", daemon=True)
        injector.start()
        gates = [*points[1:], self.events * (self.faults + 1) // (self.faults + 2)]
        started = time.monotonic()
        while self.captured < self.events:
            for index, gate in enumerate(gates):  # the next fault only once the last is over
                if self.captured >= gate:
                    while not self._fault_done[index].wait(0.5):
                        if not injector.is_alive():
                            break
            if self._fault_error is not None:
                raise EdgeError(f"a fault could not be injected: {self._fault_error}")
            n = min(self.CHUNK, self.events - self.captured)
            added = box.add(receive_events(n))
            with self._lock:
                self.generated.update(e.id for e in added)
                self.captured = max(e.seq for e in added)
            ahead = started + self.captured / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        injector.join(300)
        if self._fault_error is not None:
            raise EdgeError(f"a fault could not be injected: {self._fault_error}")

    def _faults(self, points: list[int], box: Outbox, nodes: list[NatsNode],
                running: list[ReplicaProcess], url: str) -> None:
        try:
            # The site is running before the first fault: the edge's first batch acked (its
            # acks subscription holds). NATS refuses an MQTT subscription whose JetStream
            # consumer it cannot create in time (seen while a node was down just after the
            # edge connected), and the edge does not check its SUBACKs.
            wait_until(lambda: box.stats().acked > 0, 60, "the edge's first ack")
            for index, point in enumerate(points):
                while self.captured < point:
                    time.sleep(0.01)
                self._inject(index, nodes, running, url)
                self._fault_done[index].set()
        except BaseException as exc:  # the stream stops at its next gate and says why
            self._fault_error = exc
            for done in self._fault_done:
                done.set()

    def _inject(self, index: int, nodes: list[NatsNode], running: list[ReplicaProcess],
                url: str) -> None:
        kind = self.spec.fault
        urls = [n.url for n in nodes]
        leaders = jetstream_leaders(urls) if "node" in kind else {}
        node = self.rng.choice(nodes[1:]) if "node" in kind else None  # never the edge's node
        replica = self.rng.choice(running) if "replica" in kind else None
        down = round(self.rng.uniform(0.5, 3.0), 2)
        record: dict[str, Any] = {"kind": kind}
        if node is not None:
            record["node"] = node.name
            held = [what for what, name in sorted(leaders.items()) if name == node.name]
            if held:
                record["leader_of"] = held
        if replica is not None:
            record["replica"] = replica.name
        with self._lock:
            before = self.captured
        self.log(f"fault {index + 1} {kind} {record} at {before} captured; down {down} s")
        struck = time.monotonic()
        recovered = threading.Thread(target=self._recovered, args=(url, before, struck, record),
                                     daemon=True)
        if kind == "pg-terminate":
            # a replica that lost its connections reopens the store on its next group, ~1 s
            # later: a fault that terminates nothing is no fault, so wait for one to exist
            deadline = time.monotonic() + 10
            while not (n := terminate_connections(url, self.admin)) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            record["connections"] = n
            recovered.start()
        else:
            if node is not None:
                node.stop(signal.SIGKILL)
            if replica is not None:
                replica.kill()
            recovered.start()
            time.sleep(max(0.0, struck + down - time.monotonic()))
            record["down_s"] = round(time.monotonic() - struck, 2)
            back = time.monotonic()
            if node is not None:
                node.start(wait=False)
            if replica is not None:
                replica.start(wait=False)
            if node is not None:
                node.wait()
            if replica is not None:
                replica.wait()
            record["back_s"] = round(time.monotonic() - back, 2)
        recovered.join(180)
        self.result.faults[kind] += 1
        self.result.recovery.append(record)
        self.log(f"fault {index + 1} over: {record}")

    def _recovered(self, url: str, before: int, struck: float, record: dict[str, Any]) -> None:
        """Time from the fault until every event captured before it is in PostgreSQL."""
        import psycopg

        deadline = struck + 180
        conn: Any = None
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = psycopg.connect(url, autocommit=True, application_name=MONITOR,
                                           connect_timeout=5)
                (n,) = conn.execute("SELECT COUNT(*) FROM events WHERE device = %s AND seq <= %s",
                                    (DEVICE, before)).fetchone()
                if n >= before:
                    record["recovered_s"] = round(time.monotonic() - struck, 2)
                    break
            except psycopg.Error:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            time.sleep(0.05)
        else:
            record["recovered_s"] = None
        if conn is not None:
            conn.close()

    # --- after the stream ------------------------------------------------------------------

    def _drain(self, box: Outbox) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and box.stats().backlog:
            time.sleep(0.1)
        if box.stats().backlog:
            self.result.notes.append(f"edge backlog not drained: {box.stats().backlog} events")

    def _count(self, url: str) -> None:
        r = self.result
        found = ledger(url)
        ids, moves = found["ids"], found["moves"]
        generated = self.generated
        lost = [k for k in generated if k not in ids]
        doubled = [k for k in generated if moves.get(k, 0) > 1]
        strays = [k for k in ids if k not in generated]
        unmoved = [k for k in generated if moves.get(k) == 0]
        r.generated = len(generated)
        r.applied = len(generated) - len(lost)
        r.lost, r.doubled = len(lost), len(doubled)
        r.wrong = len(strays) + len(unmoved)
        if found["stock"] != found["movements"]:
            r.wrong += 1
            r.notes.append(f"stock totals {found['stock']:g} for {found['movements']} movements")
        for what, keys in (("lost", lost), ("doubled", doubled), ("wrong", strays + unmoved)):
            if keys:
                r.examples[what] = sorted(keys)[:10]
        if not r.generated:
            r.notes.append("nothing was generated: this scenario proves nothing")


def recovery_line(r: Result) -> str:
    """``kill-node fs-c3 (leader of consumer) down 1.20 back 0.41 recovered 0.35 s; …``"""
    parts = []
    for f in r.recovery:
        who = " ".join(str(f[k]) for k in ("node", "replica") if k in f)
        if f.get("leader_of"):
            who += f" (leader of {', '.join(f['leader_of'])})"
        if "connections" in f:
            who += f"{f['connections']} connection(s) terminated"
        times = " ".join(f"{k.removesuffix('_s')} {f[k]:.2f}" for k in
                         ("down_s", "back_s") if f.get(k) is not None)
        rec = f.get("recovered_s")
        times += " recovered " + (f"{rec:.2f} s" if rec is not None else "NEVER")
        parts.append(f"{f['kind']} {who}: {times.strip()}")
    return "; ".join(parts)


def run_cluster_scenario(spec: ClusterScenario, seed: int, directory: Path,
                         out: Callable[[str], None], *, events: int, faults: int,
                         rate: float = 2000.0) -> Result:
    """One cluster scenario end to end; a scenario that cannot run counts as a loss."""
    world = ClusterWorld(spec, seed, directory, out, events=events, faults=faults, rate=rate)
    try:
        return world.run()
    except (EdgeError, OSError, ImportError) as exc:
        world.result.notes.append(f"scenario failed to run: {exc}")
        world.result.lost = max(world.result.lost, 1)
        return world.result
    except Exception as exc:  # psycopg's errors (PostgreSQL absent) are not ours to import here
        world.result.notes.append(f"scenario failed to run: {type(exc).__name__}: {exc}")
        world.result.lost = max(world.result.lost, 1)
        return world.result
