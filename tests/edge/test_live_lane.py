"""The outbox's live lane on a real SQLite file: scans made after the edge reconnected go ahead
of the backlog unless something still pending in it touches the same things."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from floorsync.edge import wire
from floorsync.edge.outbox import Outbox, migrations, touches
from tests.factories import event, events


def _ids(pending: list) -> list[str]:  # type: ignore[type-arg]
    return [p.id for p in pending]


def _with(e: wire.Event, **changes: object) -> wire.Event:
    return dataclasses.replace(e, **changes)  # type: ignore[arg-type]


def test_live_events_go_ahead_of_the_backlog_and_the_backlog_keeps_its_order(
        tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        backlog = outbox.add(events(5, type="putaway", from_="RECV-1", to="A-01-01"))
        after = outbox.live_boundary()
        assert after is not None
        live = outbox.add(events(2, type="putaway", from_="RECV-2", to="A-01-01"))
        assert _ids(outbox.take_live(10, after)) == [e.id for e in live]
        assert outbox.take_live(10, after) == []  # taken: sent, not pending
        assert _ids(outbox.take(3)) == [e.id for e in backlog[:3]]
        assert _ids(outbox.take(10)) == [e.id for e in backlog[3:]]
        assert outbox.live_boundary() == after + 2  # sent, not yet confirmed: a backlog still
        outbox.settle([wire.Result(e.id, "applied") for e in backlog + live])
        assert outbox.take_live(10, after) == []  # the backlog is confirmed: one lane again
        assert outbox.live_boundary() is None


def test_a_live_take_waits_for_stock_the_backlog_brings_and_so_do_the_scans_after_it(
        tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.add(events(3, type="putaway", from_="RECV-1", to="A-01-01"))
        (receive,) = outbox.add([event(type="receive", to="DOCK-9")])
        outbox.add(events(3, type="putaway", from_="RECV-1", to="A-01-02"))
        after = outbox.live_boundary()
        assert after is not None
        first = outbox.add([event(type="putaway", from_="RECV-3", to="B-01-01")])
        waits = outbox.add([event(type="putaway", from_="DOCK-9", to="B-01-01")])
        later = outbox.add([event(type="putaway", from_="RECV-3", to="B-01-02")])
        # the put-away from DOCK-9 would take stock its backlog receive has not yet brought
        # (a false negative line centrally); the one after it keeps its place behind it
        assert _ids(outbox.take_live(10, after)) == [first[0].id]
        assert outbox.take_live(10, after) == []
        taken = _ids(outbox.take(3))
        assert receive.id not in taken and outbox.take_live(10, after) == []
        assert receive.id in _ids(outbox.take(1))
        assert outbox.take_live(10, after) == []  # sent is not applied: a replica may lag
        outbox.settle([wire.Result(receive.id, "applied")])  # committed centrally
        assert _ids(outbox.take_live(10, after)) == [waits[0].id, later[0].id]


def test_a_backlog_event_holds_the_live_lane_until_it_is_confirmed(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        (receive,) = outbox.add([event(type="receive", to="DOCK-9")])
        outbox.add(events(2, type="putaway", from_="RECV-1"))
        after = outbox.live_boundary()
        assert after is not None
        assert _ids(outbox.take(1)) == [receive.id]
        outbox.requeue([receive.id])  # no ack in time: it goes again, before what depends on it
        (live,) = outbox.add([event(type="pick", from_="DOCK-9")])
        assert outbox.take_live(10, after) == []
        outbox.take(1)
        assert outbox.take_live(10, after) == []
        outbox.settle([wire.Result(receive.id, "duplicate")])  # the first copy had landed
        assert _ids(outbox.take_live(10, after)) == [live.id]


def test_what_makes_a_live_event_wait(tmp_path: Path) -> None:
    serial = wire.Item(gtin="09501101530003", serial="S-1")
    tag = wire.Item(epc="urn:epc:id:sgtin:0614141.812345.6789")
    receipt = wire.DocRef("receipt", "ASN-7")
    count_a = wire.Count(location="A-05-05")
    cases = [  # (backlog event, live event, waits)
        (_with(event(type="move", from_="X-1", to="X-2"), item=serial),
         _with(event(type="move", from_="Y-1", to="Y-2"), item=serial), True),
        (_with(event(type="move", from_="X-1", to="X-2"), item=tag),
         _with(event(type="ship", from_="Y-1"), item=tag), True),
        (_with(event(type="move", from_="X-1", to="X-2"), item=serial),
         _with(event(type="move", from_="Y-1", to="Y-2"),
               item=wire.Item(gtin="09501101530003", serial="S-2")), False),
        # a count of a location goes after the backlog's movements into or out of it
        (event(type="pick", from_="A-05-05"),
         _with(event(type="count", to=None), item=None, qty=0, count=count_a), True),
        (event(type="receive", to="A-05-05"),
         _with(event(type="count", to=None), item=None, qty=0, count=count_a), True),
        (event(type="receive", to="A-05-06"),
         _with(event(type="count", to=None), item=None, qty=0, count=count_a), False),
        # and a movement into or out of a location goes after the backlog's count of it
        (_with(event(type="count", to=None), item=None, qty=0, count=count_a),
         event(type="receive", to="A-05-05"), True),
        (_with(event(type="count", to=None), item=None, qty=0, count=count_a),
         event(type="pick", from_="A-05-05"), True),
        # stock the backlog takes from where the live event takes it: sums, in any order
        (event(type="pick", from_="A-05-05"), event(type="pick", from_="A-05-05"), False),
        (event(type="receive", to="DOCK-1"), event(type="receive", to="DOCK-1"), False),
        # the same document: its lines' tallies (and which event is "over") follow the floor
        (_with(event(type="receive", to="DOCK-1"), doc=receipt),
         _with(event(type="receive", to="DOCK-2"), doc=receipt), True),
        (_with(event(type="receive", to="DOCK-1"), doc=wire.DocRef("receipt", "ASN-8")),
         _with(event(type="receive", to="DOCK-2"), doc=receipt), False),
    ]
    for n, (before, live, waits) in enumerate(cases):
        with Outbox(tmp_path / f"o{n}.db") as outbox:
            outbox.add([before])
            after = outbox.live_boundary()
            assert after is not None
            (kept,) = outbox.add([live])
            taken = _ids(outbox.take_live(10, after))
            assert taken == ([] if waits else [kept.id]), (n, before, live)


def test_an_outbox_kept_before_the_live_lane_gets_its_keys_from_the_wire_text(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    samples = [
        event(type="receive", to="DOCK-1"),
        _with(event(type="move", from_="X-1", to="X-2"),
              item=wire.Item(gtin="09501101530003", serial="S-1"),
              doc=wire.DocRef("order", "SO-1")),
        _with(event(type="ship", from_="Y-1"), item=wire.Item(epc="urn:epc:id:sscc:0614141.1")),
        _with(event(type="count", to=None), item=None, qty=0,
              count=wire.Count(location="A-05-05")),
    ]
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="m005_live_lane")
    db.conn.executemany(
        "INSERT INTO outbox (id, seq, type, payload, bytes, created_at) VALUES (?, ?, ?, ?, 1, 0)",
        [(e.id, n + 1, e.type, wire.encode_event(e)) for n, e in enumerate(samples)],
    )
    db.conn.commit()
    db.conn.close()
    with Outbox(path) as outbox:
        rows = outbox.db.conn.execute(
            "SELECT thing, from_loc, to_loc, count_loc, doc FROM outbox ORDER BY rowid").fetchall()
    assert rows == [touches(e) for e in samples]
    assert rows[1] == ("serial:S-1", "X-1", "X-2", None, "order:SO-1")
    assert rows[3] == (None, None, None, "A-05-05", None)


def test_the_lane_s_lookups_use_the_indexes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        for column in ("thing", "from_loc", "to_loc", "count_loc", "doc"):
            plan = " ".join(str(r[-1]) for r in outbox.db.conn.execute(
                f"EXPLAIN QUERY PLAN SELECT 1 FROM outbox WHERE {column} = ?"
                " AND rowid BETWEEN ? AND ? AND state IN ('pending', 'sent') LIMIT 1", ("x", 1, 2)))
            assert f"USING INDEX outbox_{column}" in plan, plan
