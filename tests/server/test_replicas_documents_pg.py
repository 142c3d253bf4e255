"""Two central replicas on one PostgreSQL database end where one store alone ends, with the
documents in play: expected receipts verified and closed, orders allocated, backordered, filled
by later receives, picked, shipped and cancelled (tests/server/test_replicas_pg.py's workload has
none of them).

Run A: one replica's apply path (``Replica._process``: decode, then ``apply_batches`` with the
documents' batch hooks a replica installs) applies every step in list order on a fresh database.
Run B: two replica processes (multiprocessing spawn, each its own ``Replica`` and store) on
another fresh database: consecutive steps go to different replicas (interleaved), some batches
are delivered to both at once and some again later (redelivered), and whatever a replica has
queued goes in one transaction, as the replica groups what it fetched. Document actions
(accepting an order or a receipt, closing a receipt, cancelling an order) run on a replica's
store too, as the HTTP service of that host would. Then everything a client can see of the
ledger and the documents is compared, with commit-ordered ids replaced by what they point at and
times of receipt left out.

Two sites work at once, each in its own order: a site's steps follow one another (the next goes
out when the previous one was acked by whichever replica applied it), because what a receive
fills or a pick takes depends on what came before at that site, as it does on the floor; the
sites share nothing but master data, so their interleaving must not matter. Every document the
replicas read must come from the database, not from what one replica happens to hold in memory
(a receipt's lines accepted by one replica and checked by the other's batch hook).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg

from floorsync.edge import wire
from floorsync.server import orders
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from floorsync.server.replica import SUBJECT_PREFIX, Replica, subject_of
from tests.server.orderkit import SKUS, with_items

SITES = ("wh1", "wh2")
WAIT_S = 120.0


@dataclass
class Step:
    name: str
    site: str
    device: str = ""
    payload: bytes = b""
    both: bool = False  # delivered to both replicas at once
    action: tuple[Any, ...] = ()  # ("order", doc) | ("receipt", doc) | ("close", id) | ...


class Workload:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.seqs: Counter[str] = Counter()

    def ev(self, site: str, device: str, type: str, item: str, qty: float, *,
           src: str | None = None, dst: str | None = None, doc: tuple[str, str] | None = None
           ) -> wire.Event:
        key = f"{site}/{device}"
        self.seqs[key] += 1
        ref = None if doc is None else wire.DocRef(doc[0], doc[1], None)
        return wire.Event(wire.new_event_id(), self.seqs[key], wire.local_now(), type,
                          wire.Item(gtin=SKUS[f"SKU-{item}"]), qty, src, dst, f"op-{device}",
                          doc=ref)

    def send(self, name: str, site: str, device: str, *events: wire.Event,
             both: bool = False) -> None:
        batch = wire.Batch(site, device, wire.utc_now(), events,
                           ack_statuses=wire.EDGE_ACK_STATUSES)
        self.steps.append(Step(name, site, device, wire.encode_batch(batch), both))

    def again(self, name: str, of: str) -> None:
        old = next(s for s in self.steps if s.name == of)
        self.steps.append(Step(name, old.site, old.device, old.payload))

    def act(self, name: str, site: str, *action: Any) -> None:
        self.steps.append(Step(name, site, action=action))


def site_work(w: Workload, s: str) -> None:
    """One site's day: a receipt, three orders (two backordered at first), the receipt's
    goods filling them first-come by due date, picks and ships, a wrong pick, an order that
    does not exist, the receipt closed with an over and an unexpected item, a cancellation
    whose reservations go back to the shelf, and a second receipt left open."""
    asn, so1, so2, so3 = f"ASN-{s}-1", f"SO-{s}-1", f"SO-{s}-2", f"SO-{s}-3"
    door, hh = "door-1", "hh-1"
    w.act(f"{s}-asn", s, "receipt", {
        "id": asn, "site": s, "supplier": "ACME", "expected_date": "2026-11-23",
        "location": "DOCK-1", "lines": [{"sku": "SKU-A", "qty": 10}, {"sku": "SKU-B", "qty": 5}]})
    w.act(f"{s}-so1", s, "order", {
        "id": so1, "site": s, "ship_to": "ACME Ltd", "priority": 5, "due": "2026-12-01",
        "lines": [{"line": 1, "item": "SKU-A", "qty": 4}, {"line": 2, "item": "SKU-C", "qty": 3}]})
    w.act(f"{s}-so2", s, "order", {
        "id": so2, "site": s, "ship_to": "Bolt plc", "priority": 3, "due": "2026-11-20",
        "lines": [{"line": 1, "item": "SKU-A", "qty": 8}]})
    w.send(f"{s}-rx-a", s, door, w.ev(s, door, "receive", "A", 10, dst="DOCK-1",
                                      doc=("receipt", asn)))
    w.send(f"{s}-rx-b", s, door, w.ev(s, door, "receive", "B", 6, dst="DOCK-1",
                                      doc=("receipt", asn)), both=True)
    w.send(f"{s}-rx-d", s, door, w.ev(s, door, "receive", "D", 2, dst="DOCK-1",
                                      doc=("receipt", asn)))
    w.send(f"{s}-rx-c", s, door, w.ev(s, door, "receive", "C", 3, dst="DOCK-1"),
           w.ev(s, door, "putaway", "A", 4, src="DOCK-1", dst="A-01"))
    w.send(f"{s}-pick-2", s, hh, w.ev(s, hh, "pick", "A", 6, src="DOCK-1", dst="STG-1",
                                      doc=("order", so2)),
           w.ev(s, hh, "pick", "A", 2, src="A-01", dst="STG-1", doc=("order", so2)))
    w.send(f"{s}-ship-2", s, hh, w.ev(s, hh, "ship", "A", 8, src="STG-1",
                                      doc=("order", so2)), both=True)
    w.again(f"{s}-rx-b-again", f"{s}-rx-b")
    w.act(f"{s}-close", s, "close", asn)
    w.send(f"{s}-pick-1", s, hh, w.ev(s, hh, "pick", "E", 1, src="A-01", doc=("order", so1)),
           w.ev(s, hh, "pick", "A", 2, src="A-01", doc=("order", so1)),
           w.ev(s, hh, "pick", "B", 1, src="DOCK-1", doc=("order", f"SO-{s}-NONE")))
    w.act(f"{s}-so3", s, "order", {
        "id": so3, "site": s, "ship_to": "Cog GmbH", "priority": 5, "due": "2026-12-05",
        "lines": [{"line": 1, "item": "SKU-A", "qty": 5}, {"line": 2, "item": "SKU-C", "qty": 1}]})
    w.send(f"{s}-rx-a2", s, door, w.ev(s, door, "receive", "A", 3, dst="DOCK-1"), both=True)
    w.act(f"{s}-cancel-1", s, "cancel", so1)  # its C goes back, and SO-3's C line takes it
    w.again(f"{s}-pick-2-again", f"{s}-pick-2")
    w.act(f"{s}-asn2", s, "receipt", {
        "id": f"ASN-{s}-2", "site": s, "supplier": "ACME", "expected_date": "2026-11-30",
        "location": "DOCK-1", "lines": [{"sku": "SKU-A", "qty": 4}]})
    w.send(f"{s}-rx-asn2", s, door, w.ev(s, door, "receive", "A", 1, dst="DOCK-1",
                                         doc=("receipt", f"ASN-{s}-2")))


def workload() -> Workload:
    w = Workload()
    one, two = Workload(), Workload()
    site_work(one, SITES[0])
    site_work(two, SITES[1])
    for a, b in zip(one.steps, two.steps, strict=True):  # the sites' steps side by side
        w.steps += [a, b]
    return w


# --- applying: a replica's own path ------------------------------------------------------------


def subject(payload: bytes) -> str:
    batch = wire.decode_batch(payload)
    return SUBJECT_PREFIX + subject_of(wire.events_topic(batch.site, batch.device))


def act(store: Store, action: tuple[Any, ...]) -> None:
    """A person's action through the store, as the API does it."""
    kind, arg = action
    if kind == "order":
        orders.accept(store, arg)
    elif kind == "receipt":
        book_of(store).accept(arg)
    elif kind == "close":
        book_of(store).close(arg, by="clerk")
    elif kind == "cancel":
        orders.cancel(store, arg, "planner", "customer changed its mind")
    else:  # pragma: no cover
        raise ValueError(kind)


def statuses(results: list[tuple[wire.Result, ...] | None]) -> list[list[str]]:
    out = []
    for result in results:
        assert result is not None
        out.append([r.status for r in result])
    return out


def replica(url: str, name: int, inbox: Any, outbox: Any) -> None:
    """A replica process: what is queued goes through ``Replica._process`` in one group."""
    try:
        rep = Replica(["nats://127.0.0.1:1"], url)  # no NATS: its decode-and-apply path only
        try:
            rep._open_store()  # the documents' batch hooks, as a replica installs them
            outbox.put(("ready", name, None))
            while True:
                todo = [inbox.get()]
                while len(todo) < 16:
                    try:
                        todo.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                batches = [(n, p) for kind, n, p in todo if kind == "batch"]
                if batches:
                    _, results = rep._process([(subject(p), p) for _, p in batches])
                    outbox.put(("group", name, len(batches)))
                    for (n, _), got in zip(batches, statuses(results), strict=True):
                        outbox.put(("ack", n, got))
                for kind, n, p in todo:
                    if kind == "act":
                        act(rep._open_store(), tuple(json.loads(p)))
                        outbox.put(("ack", n, []))
                if any(kind == "stop" for kind, _, _ in todo):
                    return
        finally:
            rep._close_store()
    except BaseException as exc:  # the coordinator fails the test with it
        outbox.put(("error", name, repr(exc)))
        raise


def prepared(url: str) -> None:
    with Store(url) as store:
        with_items(store)


def run_alone(url: str, w: Workload) -> dict[str, list[str]]:
    prepared(url)
    acks: dict[str, list[str]] = {}
    rep = Replica(["nats://127.0.0.1:1"], url)
    try:
        for step in w.steps:
            if step.action:
                act(rep._open_store(), step.action)
                continue
            for _ in range(2 if step.both else 1):
                _, results = rep._process([(subject(step.payload), step.payload)])
                (acks[step.name],) = statuses(results)
    finally:
        rep._close_store()
    return acks


def run_replicas(url: str, w: Workload, pick: int) -> tuple[dict[int, int], int]:
    """Two replica processes; each site one step in flight, step i to replica (i // pick) % 2;
    returns how many steps each replica took, and how many groups held more than one batch."""
    prepared(url)
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=replica, args=(url, i, inboxes[i], outbox), daemon=True)
             for i in range(2)]
    for proc in procs:
        proc.start()
    applied, grouped = {0: 0, 1: 0}, 0
    try:
        for _ in procs:
            kind, who, detail = outbox.get(timeout=WAIT_S)
            assert kind == "ready", (kind, who, detail)
        previous: dict[str, str] = {}
        needs: dict[str, str | None] = {}
        for step in w.steps:
            needs[step.name] = previous.get(step.site)
            previous[step.site] = step.name
        copies = {s.name: 2 if s.both else 1 for s in w.steps}
        done: set[str] = set()
        sent: set[str] = set()
        while len(done) < len(w.steps):
            for i, step in enumerate(w.steps):
                before = needs[step.name]
                if step.name in sent or (before is not None and before not in done):
                    continue
                sent.add(step.name)
                for r in ((0, 1) if step.both else ((i // pick) % 2,)):
                    if step.action:
                        inboxes[r].put(("act", step.name, json.dumps(step.action).encode()))
                    else:
                        inboxes[r].put(("batch", step.name, step.payload))
                    applied[r] += 1
            kind, name, detail = outbox.get(timeout=WAIT_S)
            if kind == "group":
                grouped += detail > 1
                continue
            assert kind == "ack", (kind, name, detail)
            copies[name] -= 1
            if copies[name] == 0:
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
    return applied, grouped


# --- what a client can see ----------------------------------------------------------------------

# columns that say when this run did something (not what it did), and commit-ordered keys
TIMES = re.compile(r".*_at\Z|since|last_seen|status_at")
IDS = {"movements": "id", "exceptions": "id", "order_allocations": "id", "backorders": "id",
       "backorder_fills": "id", "rejections": "id", "orders": "seq", "receipts": "seq",
       "events": "rowid"}
TABLES = ("events", "movements", "stock", "devices", "rejections", "exceptions", "orders",
          "order_lines", "order_allocations", "backorders", "backorder_fills",
          "order_exceptions", "receipts", "receipt_lines", "receipt_discrepancies",
          "receipt_exceptions")


def _rows(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table}")  # our own table names
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def state(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        raw = {t: _rows(conn, t) for t in TABLES}
    exception = {r["id"]: (r["kind"], r["site"], r["event_id"], r["item"], r["lot"],
                           r["location"], re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "T", r["detail"]))
                 for r in raw["exceptions"]}
    backorder = {r["id"]: (r["order_id"], r["line"], r["qty"], r["why"])
                 for r in raw["backorders"]}
    allocation = {r["id"]: (r["order_id"], r["line"], r["location"], r["lot"], r["allocated"])
                  for r in raw["order_allocations"]}
    refs = {"exception_id": exception, "backorder_id": backorder, "allocation_id": allocation}
    out: dict[str, Any] = {}
    for table, rows in raw.items():
        kept = []
        for row in rows:
            row = {k: v for k, v in row.items()
                   if not TIMES.fullmatch(k) and k != IDS.get(table)}
            for column, mapping in refs.items():
                if row.get(column) is not None:
                    row[column] = mapping[row[column]]
            if table == "exceptions":
                row["detail"] = exception[rows[len(kept)]["id"]][-1]
            kept.append(tuple(sorted((k, repr(v)) for k, v in row.items())))
        out[table] = Counter(kept)
    return out


# --- the test ---------------------------------------------------------------------------------


def test_two_replicas_with_documents_end_where_one_alone_ends(pg_template: str) -> None:
    from tests import pgkit

    w = workload()
    with pgkit.database(template=pg_template) as alone_url:
        acks = run_alone(alone_url, w)
        alone = state(alone_url)
        with Store(alone_url) as store:
            view = {o.id: o.status for o in orders.list_orders(store)}
            receipts = {r.id: r.status for r in book_of(store).receipts()}
            fills = store._query("SELECT COUNT(*) FROM backorder_fills")[0][0]
            kinds = Counter(k for (k,) in store._query("SELECT kind FROM exceptions"))
    # the workload does what it says, alone
    for s in SITES:
        assert view == view | {f"SO-{s}-1": "cancelled", f"SO-{s}-2": "closed",
                               f"SO-{s}-3": "open"}, view
        assert receipts[f"ASN-{s}-1"] == "closed" and receipts[f"ASN-{s}-2"] == "open"
        assert set(acks[f"{s}-rx-b-again"]) == {"duplicate"}
    assert fills >= 6, fills  # receives filled backorders at both sites
    assert kinds == {"receipt_over": 2, "receipt_unexpected": 2, "order_unexpected": 2,
                     "order_unknown": 2, "negative_stock": 2}, kinds  # E: none on the books
    assert sum(len(c) for c in alone.values()) > 100
    # two replicas, twice: alternating step by step, and in runs of three
    for pick in (1, 3):
        with pgkit.database(template=pg_template) as url:
            applied, grouped = run_replicas(url, w, pick)
            assert min(applied.values()) > 10, applied
            print(f"replicas: steps {applied}, groups of more than one batch {grouped}")
            both = state(url)
        differ = [t for t in TABLES if both[t] != alone[t]]
        assert differ == [], [(t, both[t] - alone[t], alone[t] - both[t]) for t in differ[:2]]
