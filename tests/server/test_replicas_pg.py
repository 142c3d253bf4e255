"""Two central replicas on one PostgreSQL database end where one replica alone ends.

Run A: one Store on a fresh database applies every step of a workload in list order. Run B: two
replicas, each a separate process (multiprocessing spawn) with its own Store, on another fresh
database, apply the same steps concurrently: step i goes to replica i % 2 (or to both: a batch
redelivered at once), both replicas busy at the same time, each grouping what it has queued into
one transaction (``apply_batches``), as the service does. Then the full observable state of both
databases is compared: stock, ledger rows, held rows, exceptions, rejections, devices and their
sequence gaps and late arrivals, where serials are, counts and their lines, master data.

What may differ and what may not. Commit order across devices differs between the runs (and
between runs of B); the ids the database hands out in commit order (movement, exception, count,
rejection ids) and receive times differ with it, so rows are compared by what they say, with
ids replaced by what they point at (a count by its event, an exception by kind and event).
The rest must be equal, so the workload is built the way the floor is:

- each device has one batch in flight: its next batch goes out only when the previous one was
  acked (by whichever replica applied it), so both runs see every device's batches in seq order
  and per-device facts (which event raised an exception first, its occurrences, seq gaps and
  late arrivals, a serial put in two places by one handheld, a negative line and its clearing)
  are the same;
- what many devices do to the same lines at once is order-independent where the ledger's
  semantics are: receipts, moves and picks on shared lines are sums (whole quantities: float
  sums exact in any order), and the shared lines hold enough that no order drives them
  negative;
- where one device's work must follow another's (a count of a location after the receipts
  into it; a late receipt into it after the count; a serial handed on; events for an item
  after master data learnt it; an exception dismissed and then met again), the step waits for
  that step's ack (``after``), as the floor would: the count is taken after the goods were put
  there. Without such an edge the result would depend on order (a count's expected quantity,
  which event is late) and is left out of the workload on purpose.

Consecutive batches of one device go to different replicas, so every check a replica keeps in
memory (open unknown-item/location and negative-stock exceptions, the latest count of a
location, master data) must be dropped when the other replica wrote (``store_epoch``), and the
writes must be serialised (the advisory writer lock): without either, this test fails (see
the report of issue 14, item 4).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from floorsync.edge import wire
from floorsync.server import exceptionlog
from floorsync.server import ledgerviews as lv
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Incoming, Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData

SITE = "wh1"
G1, G2, G3 = "09501101530003", "09501101530010", "04006381333931"
G_UNKNOWN = "05012345678900"  # never in master data
G_NEW = "09780201379624"  # learnt by master data in the middle of the run
WAIT_S = 120.0  # for one ack, on a loaded machine

# --- the workload ---------------------------------------------------------------------------


@dataclass
class Step:
    """A batch of one device (to one replica, or to both at once), or a master data / exception
    action, waiting for the device's previous step and for the steps named in ``after``."""

    name: str
    device: str | None = None
    payload: bytes = b""
    both: bool = False
    after: tuple[str, ...] = ()
    action: tuple[str, ...] = ()  # ("item", sku, gtin) | ("dismiss", kind, item)


@dataclass
class Workload:
    base: datetime
    steps: list[Step] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)

    def t(self, minutes: float) -> str:
        return wire.format_time(self.base + timedelta(minutes=minutes))

    def ev(self, device: str, type: str, gtin: str, qty: float = 1, *, src: str | None = None,
           dst: str | None = None, at: float = 0, serial: str | None = None,
           seq: int | None = None) -> wire.Event:
        if seq is None:
            seq = self.seqs.get(device, 0) + 1
        self.seqs[device] = max(seq, self.seqs.get(device, 0))
        return wire.Event(wire.new_event_id(), seq, self.t(at), type,
                          wire.Item(gtin=gtin, serial=serial), qty, from_=src, to=dst,
                          operator=f"op-{device}")

    def count(self, device: str, location: str, seen: dict[str, float], at: float
              ) -> wire.Event:
        seq = self.seqs.get(device, 0) + 1
        self.seqs[device] = seq
        lines = tuple(wire.CountLine(wire.Item(gtin=g), q) for g, q in seen.items())
        return wire.Event(wire.new_event_id(), seq, self.t(at), "count", None, 0,
                          operator=f"op-{device}", count=wire.Count(location, lines))

    def send(self, name: str, device: str, *events: wire.Event, both: bool = False,
             after: tuple[str, ...] = (), invalid: int = 0) -> list[wire.Event]:
        batch = wire.Batch(SITE, device, wire.utc_now(), tuple(events),
                           ack_statuses=wire.EDGE_ACK_STATUSES)
        payload = wire.encode_batch(batch)
        if invalid:  # events the service cannot read: rejected, kept with the payload
            data = json.loads(payload)
            for _ in range(invalid):  # its seq is never recorded: not one of the device's
                data["events"].append({"id": wire.new_event_id(), "seq": 10**9,
                                       "time": self.t(0), "type": "teleport", "qty": 1})
            payload = json.dumps(data, separators=(",", ":")).encode()
        self.steps.append(Step(name, device, payload, both, after))
        return list(events)

    def resend(self, name: str, of: str, *, after: tuple[str, ...] = ()) -> None:
        """A whole batch again (an edge that timed out on its ack), to the next replica."""
        old = next(s for s in self.steps if s.name == of)
        self.steps.append(Step(name, old.device, old.payload, False, after))

    def act(self, name: str, *action: str, after: tuple[str, ...] = ()) -> None:
        self.steps.append(Step(name, None, b"", False, after, tuple(action)))


def workload() -> Workload:
    """Four handhelds on one site; see the module's docstring for what may be shared."""
    w = Workload(datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3))
    ev = w.ev
    # B is the shared line: 400 of G1 and 200 of G2 first, then everyone picks a little
    w.send("load", "hh-1", ev("hh-1", "receive", G1, 400, dst="B", at=1),
           ev("hh-1", "receive", G2, 200, dst="B", at=1))
    shared: tuple[str, ...] = ("load",)
    for round_ in range(8):
        for n, device in enumerate(("hh-1", "hh-2", "hh-3")):
            at = 2 + round_ + n / 10
            events = [ev(device, "pick", G1, 1 + n, src="B", dst="D", at=at),
                      ev(device, "move", G2, 2, src="B", dst="C", at=at),
                      ev(device, "receive", G1, 1, dst="B", at=at),
                      ev(device, "move", G1, 1, src="B", dst="C", at=at)]
            if device == "hh-1":  # an unknown item, met again in every batch of hh-1
                events.append(ev(device, "receive", G_UNKNOWN, 1, dst="D", at=at))
            if device == "hh-2":  # an unknown location, likewise
                events.append(ev(device, "move", G2, 1, src="B", dst="X-9", at=at))
            if device == "hh-3" and round_ < 3:  # an item master data learns after round 2
                events.append(ev(device, "receive", G_NEW, 2, dst="D", at=at))
            if device == "hh-3" and round_ >= 4:
                events.append(ev(device, "receive", G_NEW, 2, dst="D", at=at))
            after: tuple[str, ...] = shared
            if device == "hh-3" and round_ == 4:
                after = (*shared, "learn-new")
            if device == "hh-1" and round_ == 6:
                after = (*shared, "dismiss-unknown")
            w.send(f"{device}-r{round_}", device, *events, after=after,
                   both=(device == "hh-1" and round_ == 3),  # delivered to both at once
                   invalid=1 if (device == "hh-1" and round_ == 3) else 0)
            if device == "hh-3" and round_ == 2:
                w.act("learn-new", "item", "SKU-NEW", G_NEW, after=("hh-3-r2",))
            if device == "hh-1" and round_ == 5:
                w.act("dismiss-unknown", "dismiss", "unknown_item", G_UNKNOWN,
                      after=("hh-1-r5",))
    # hh-1: a line of its own driven negative, cleared by its next batch (the other replica)
    w.send("neg", "hh-1", ev("hh-1", "pick", G3, 3, src="C", at=20),
           ev("hh-1", "receive", G_UNKNOWN, 1, dst="D", at=20))
    w.send("neg-more", "hh-1", ev("hh-1", "pick", G3, 2, src="C", at=21))
    w.send("neg-clear", "hh-1", ev("hh-1", "receive", G3, 10, dst="C", at=22))
    # hh-2: serial SN-1 put in two places, then sequence gaps and late arrivals
    w.send("sn-in", "hh-2", ev("hh-2", "receive", G2, 1, dst="D", at=30, serial="SN-1"))
    w.send("sn-twice", "hh-2", ev("hh-2", "receive", G2, 1, dst="C", at=31, serial="SN-1"))
    gap_from = w.seqs["hh-2"] + 1  # seqs gap_from .. gap_from+2 are skipped for now
    w.send("gap", "hh-2", ev("hh-2", "receive", G1, 1, dst="B", at=32, seq=gap_from + 3),
           ev("hh-2", "receive", G1, 1, dst="B", at=32, seq=gap_from + 4))
    w.send("late", "hh-2", ev("hh-2", "receive", G1, 1, dst="B", at=33, seq=gap_from),
           ev("hh-2", "receive", G1, 1, dst="B", at=33, seq=gap_from + 1))  # +2 never comes
    w.resend("gap-again", "gap")
    # hh-3 takes SN-1 on from where hh-2 left it, and from where the ledger does not have it
    w.send("sn-on", "hh-3", ev("hh-3", "move", G2, 1, src="C", dst="B", at=34, serial="SN-1"),
           after=("sn-twice",))
    w.send("sn-wrong", "hh-3", ev("hh-3", "move", G2, 1, src="D", dst="B", at=35,
                                  serial="SN-1"))
    # A: receipts by two handhelds, a count by a third after them, a late receipt after it
    w.send("a-1", "hh-1", ev("hh-1", "receive", G1, 6, dst="A", at=40))
    w.send("a-3", "hh-3", ev("hh-3", "receive", G1, 4, dst="A", at=41),
           ev("hh-3", "receive", G2, 2, dst="A", at=41))
    w.send("count", "hh-4", w.count("hh-4", "A", {G1: 9, G3: 1}, at=50), after=("a-1", "a-3"))
    w.send("a-late", "hh-3", ev("hh-3", "receive", G1, 5, dst="A", at=45),
           after=("count",))  # dated before the count: held
    w.send("a-after", "hh-1", ev("hh-1", "move", G1, 2, src="B", dst="A", at=55),
           after=("count",))
    w.send("count-late", "hh-4", w.count("hh-4", "A", {G1: 1}, at=48),
           after=("a-late", "a-after"))
    w.resend("count-again", "count", after=("count-late",))
    return w


def master_data(md: MasterData) -> None:
    md.create_item(ItemSpec("SKU-1", gtins=(G1,)))
    md.create_item(ItemSpec("SKU-2", gtins=(G2,)))
    md.create_item(ItemSpec("SKU-3", gtins=(G3,)))
    md.create_location(LocationSpec(SITE, SITE, "site"))
    for code in "ABCD":
        md.create_location(LocationSpec(SITE, code, "bin"))


def act(store: Store, action: tuple[str, ...]) -> None:
    """A person's action through the store, as the API does it."""
    if action[0] == "item":
        MasterData(store).create_item(ItemSpec(action[1], gtins=(action[2],)))
    elif action[0] == "dismiss":
        ((ident,), *_) = store._query("SELECT id FROM exceptions WHERE kind = ? AND item = ?"
                                      " AND status = 'open' ORDER BY id", (action[1], action[2]))
        exceptionlog.resolve(store, int(ident), action="dismiss", by="lead",
                             reason="relabelled")
    else:  # pragma: no cover
        raise ValueError(action)


def deliver(store: Store, payloads: list[bytes]) -> list[list[str]]:
    """Batches as the MQTT receiver hands them over: decoded, in one transaction."""
    incoming = [Incoming(b := wire.decode_batch(p), "mqtt",
                         wire.events_topic(b.site, b.device), p) for p in payloads]
    return [[r.status for r in rs] for rs in store.apply_batches(incoming)]


# --- a replica: a process of its own ------------------------------------------------------------


def replica(url: str, name: int, inbox: Any, outbox: Any) -> None:
    """Apply what the inbox brings; everything queued goes in one transaction, like the service's
    grouped writes; acks each step (by name) when committed."""
    try:
        with Store(url) as store:
            outbox.put(("ready", name, None))
            while True:
                first = inbox.get()
                todo = [first]
                while len(todo) < 16:
                    try:
                        todo.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                batches = [(n, p) for kind, n, p in todo if kind == "batch"]
                if batches:
                    began = time.monotonic()
                    results = deliver(store, [p for _, p in batches])
                    outbox.put(("span", name, (began, time.monotonic(), len(batches))))
                    for (n, _), statuses in zip(batches, results, strict=True):
                        outbox.put(("ack", n, statuses))
                for kind, n, p in todo:
                    if kind == "act":
                        act(store, tuple(json.loads(p)))
                        outbox.put(("ack", n, []))
                if any(kind == "stop" for kind, _, _ in todo):
                    return
    except BaseException as exc:  # the coordinator fails the test with it
        outbox.put(("error", name, repr(exc)))
        raise


def run_alone(url: str, w: Workload) -> dict[str, list[str]]:
    """Run A: one store, every step in list order (each copy of a redelivered batch in turn)."""
    acks: dict[str, list[str]] = {}
    with Store(url) as store:
        master_data(MasterData(store))
        for step in w.steps:
            if step.action:
                act(store, step.action)
                continue
            for _ in range(2 if step.both else 1):
                (acks[step.name],) = deliver(store, [step.payload])
    return acks


def run_replicas(url: str, w: Workload, pick: Callable[[int], int]
                 ) -> tuple[dict[int, int], list[tuple[int, float, float, int]]]:
    """Run B: two replica processes; each device one step in flight; returns how many steps
    each replica applied, and each replica's transactions (replica, start, end, batches):
    waiting for the writer lock included, so overlapping ones ran at once."""
    with Store(url) as store:
        master_data(MasterData(store))
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=replica, args=(url, i, inboxes[i], outbox), daemon=True)
             for i in range(2)]
    for proc in procs:
        proc.start()
    applied = {0: 0, 1: 0}
    spans: list[tuple[int, float, float, int]] = []
    try:
        for _ in procs:
            kind, who, detail = outbox.get(timeout=WAIT_S)
            assert kind == "ready", (kind, who, detail)
        index = {s.name: i for i, s in enumerate(w.steps)}
        previous: dict[str, str] = {}
        needs: dict[str, set[str]] = {}
        for step in w.steps:
            deps = set(step.after)
            if step.device is not None:
                if step.device in previous:
                    deps.add(previous[step.device])
                previous[step.device] = step.name
            needs[step.name] = deps
        copies = {s.name: 2 if s.both else 1 for s in w.steps}
        done: set[str] = set()
        sent: set[str] = set()
        while len(done) < len(w.steps):
            for step in w.steps:
                if step.name in sent or not needs[step.name] <= done:
                    continue
                sent.add(step.name)
                i = index[step.name]
                targets = (0, 1) if step.both else (pick(i),)
                for r in targets:
                    if step.action:
                        inboxes[r].put(("act", step.name, json.dumps(step.action).encode()))
                    else:
                        inboxes[r].put(("batch", step.name, step.payload))
                    applied[r] += 1
            kind, name, detail = outbox.get(timeout=WAIT_S)
            if kind == "span":
                spans.append((int(name), *detail))
                continue
            assert kind == "ack", (kind, name, detail)
            copies[name] -= 1
            if copies[name] == 0:  # one batch in flight: the next waits for every copy
                done.add(name)
        for box in inboxes:
            box.put(("stop", "", b""))
        for proc in procs:
            proc.join(WAIT_S)
            assert proc.exitcode == 0, proc.exitcode
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    return applied, spans


# --- the observable state -----------------------------------------------------------------------


def state(url: str, devices: list[str]) -> dict[str, Any]:
    """Everything a client of the store can see, with commit-ordered ids replaced by what they
    point at; lists sorted (or counted) where commit order is all that orders them."""
    with Store(url) as s:
        q = s._query
        counts = {cid: ev for cid, ev in q("SELECT id, event_id FROM counts")}
        rejections = {rid: (ev, reason) for rid, ev, reason in q(
            "SELECT id, event_id, reason FROM rejections")}
        exc_rows = q("SELECT id, kind, status, site, device, event_id, last_event_id,"
                     " occurrences, rejection_id, count_id, held_by_count_id, item, lot,"
                     " location, serial, quantity, detail, resolved_by, reason"
                     " FROM exceptions")
        exceptions = {}
        for row in exc_rows:
            ident, *rest = row
            rest[7] = rejections.get(rest[7])  # rejection_id
            rest[8], rest[9] = counts.get(rest[8]), counts.get(rest[9])  # count ids
            rest[15] = _unnumbered(rest[15], counts)  # detail names count and exception ids
            exceptions[ident] = tuple(rest)
        out: dict[str, Any] = {
            "stock": sorted(q("SELECT site, item, location, lot, quantity FROM stock")),
            "events": sorted(q(
                "SELECT id, site, device, seq, type, event_time, source, item, gtin, sku, lot,"
                " serial, qty, from_location, to_location, operator, detail FROM events")),
            "movements": sorted(q(
                "SELECT event_id, site, device, type, item, lot, location, qty, event_time"
                " FROM movements")),
            "held": sorted((exceptions[x][:5], *rest) for x, *rest in q(
                "SELECT exception_id, event_id, site, device, type, item, lot, location, qty,"
                " event_time FROM held_movements")),
            "exceptions": sorted(exceptions.values(), key=repr),
            "rejections": Counter(q("SELECT source, topic, site, device, event_id, reason,"
                                    " payload FROM rejections")),
            "devices": sorted(q("SELECT site, device, last_seq, events, topic_mismatches"
                                " FROM devices")),
            "gaps": [_gaps(lv.device_gaps(s, SITE, d)) for d in devices],
            "serials": sorted(q("SELECT identity, serial, site, location, event_id, event_time"
                                " FROM serial_locations")),
            "counts": sorted(q(
                "SELECT c.event_id, c.site, c.location, c.origin, c.status, c.counted_at,"
                " c.started_by, c.adjustment_event_id, l.item, l.lot, l.counted, l.expected,"
                " l.on_hand_at_close, l.adjustment"
                " FROM counts c LEFT JOIN count_lines l ON l.count_id = c.id"), key=repr),
            "location_counts": sorted(
                (site, loc, at, counts[cid]) for site, loc, at, cid in q(
                    "SELECT site, location, counted_at, count_id FROM location_counts")),
            "items": sorted(q("SELECT sku, gtin FROM item_gtins")),
            "locations": sorted(q("SELECT site, code, kind FROM locations")),
        }
    return out


def _unnumbered(detail: str, counts: dict[int, str]) -> str:
    import re

    detail = re.sub(r"\(exception \d+\)", "(exception N)", detail)
    return re.sub(r"count (\d+)", lambda m: f"count of event {counts.get(int(m[1]))}", detail)


def _gaps(g: lv.DeviceGaps | None) -> Any:
    assert g is not None
    return (g.device, g.events, g.first_seq, g.last_seq, g.missing, g.duplicate_seqs,
            [(x.seq, x.event_id, x.after_seq) for x in g.late])


# --- the tests --------------------------------------------------------------------------------


def test_two_replicas_end_where_one_alone_ends(pg_template: str) -> None:
    from tests import pgkit

    w = workload()
    devices = sorted({s.device for s in w.steps if s.device})
    with pgkit.database(template=pg_template) as alone_url:
        acks = run_alone(alone_url, w)
        alone = state(alone_url, devices)
    # the workload does what it says, alone
    kinds = Counter((x[0], x[1]) for x in alone["exceptions"])
    assert kinds == {("unknown_item", "open"): 2, ("unknown_item", "dismissed"): 1,
                     ("unknown_location", "open"): 1, ("negative_stock", "cleared"): 1,
                     ("serial_conflict", "open"): 2, ("late_after_count", "open"): 2,
                     ("rejected", "open"): 2}, kinds
    occurrences = {(x[0], x[10] or x[12]): x[6] for x in alone["exceptions"]
                   if x[0] in ("unknown_item", "unknown_location") and x[1] != "dismissed"}
    assert occurrences == {("unknown_item", G_UNKNOWN): 3, ("unknown_item", G_NEW): 3,
                           ("unknown_location", "X-9"): 8}, occurrences
    assert acks["a-late"] == ["held"] and set(acks["gap-again"]) == {"duplicate"}
    gaps = {g[0]: g for g in alone["gaps"]}
    assert gaps["hh-2"][4] == [(gaps["hh-2"][3] - 2, gaps["hh-2"][3] - 2)]
    assert len(gaps["hh-2"][6]) == 2  # the two late ones
    # two replicas, twice: alternating, and by step number's parity of a different stride
    for pick in (lambda i: i % 2, lambda i: (i // 3) % 2):
        with pgkit.database(template=pg_template) as url:
            applied, spans = run_replicas(url, w, pick)
            assert min(applied.values()) > 10, applied  # both replicas did work
            overlapping = sum(1 for r, a, b, _ in spans for r2, a2, b2, _ in spans
                              if r == 0 and r2 == 1 and a < b2 and a2 < b)
            print(f"replicas: steps {applied}, transactions {len(spans)}, grouped"
                  f" {sum(1 for *_, n in spans if n > 1)}, overlapping pairs {overlapping}")
            both = state(url, devices)
        differ = [key for key in alone if both[key] != alone[key]]
        assert differ == [], [(key, both[key], alone[key]) for key in differ[:1]]


def test_a_replicas_reader_sees_the_others_commits_at_once(pg_url: str) -> None:
    """No snapshot kept between reads: what one replica committed, the other reads next."""
    w = workload()
    with Store(pg_url) as one, Store(pg_url) as two:
        master_data(MasterData(one))
        assert two.stock() == []  # its reader pool is open and has read before
        for i in range(6):
            writer, reader = (one, two) if i % 2 == 0 else (two, one)
            deliver(writer, [wire.encode_batch(wire.Batch(
                SITE, "hh-9", wire.utc_now(),
                (w.ev("hh-9", "receive", G1, 1, dst="A", at=i),)))])
            (row,) = reader.stock(location="A")
            assert row.quantity == i + 1
            gaps = lv.device_gaps(reader, SITE, "hh-9")
            assert gaps is not None and gaps.events == i + 1
        MasterData(two).create_item(ItemSpec("SKU-NEW", gtins=(G_NEW,)))
        assert (G_NEW,) in one._query("SELECT gtin FROM item_gtins WHERE sku = 'SKU-NEW'")
        # and its writer's checks know it too: no unknown-item exception
        deliver(one, [wire.encode_batch(wire.Batch(
            SITE, "hh-9", wire.utc_now(), (w.ev("hh-9", "receive", G_NEW, 1, dst="A"),)))])
        assert two._query("SELECT kind FROM exceptions") == []



def test_receive_times_follow_commit_order_across_replica_clocks(pg_url: str) -> None:
    """A replica whose clock is an hour ahead stamps a batch; the next replica, its clock right,
    stamps after it, not an hour before (late-arrival and gap reports read these stamps)."""
    w = workload()
    with Store(pg_url) as ahead, Store(pg_url) as right:
        ahead._arrivals.not_before((datetime.now(UTC) + timedelta(hours=1)).isoformat())
        for i, store in enumerate((ahead, right, ahead, right)):
            deliver(store, [wire.encode_batch(wire.Batch(
                SITE, "hh-8", wire.utc_now(), (w.ev("hh-8", "receive", G1, 1, dst="A", at=i),)))])
        stamps = [r[0] for r in right._query(
            "SELECT received_at FROM events WHERE device = 'hh-8' ORDER BY rowid")]
    assert len(stamps) == 4 and stamps == sorted(stamps) and len(set(stamps)) == 4, stamps
