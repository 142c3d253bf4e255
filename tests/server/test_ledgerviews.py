"""The read side of the ledger, on a real SQLite file: as-of, check/rebuild, gaps, serials."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from floorsync.edge import wire
from floorsync.server import ledgerviews as lv
from floorsync.server.errors import BadRequest
from floorsync.server.ledger import Store

SITE, DEV = "wh1", "hh-01"
G = "09501101530003"
G2 = "09501101530010"


def ev(
    seq: int, type: str = "receive", *, time: str = "2026-03-01T10:00:00.000Z", qty: float = 1,
    src: str | None = None, dst: str | None = "DOCK", gtin: str = G, lot: str | None = None,
    serial: str | None = None, epc: str | None = None,
) -> wire.Event:
    return wire.Event(
        id=wire.new_event_id(), seq=seq, time=time, type=type,
        item=wire.Item(gtin=gtin, lot=lot, serial=serial, epc=epc), qty=qty, from_=src, to=dst,
    )


def apply(store: Store, *events: wire.Event, device: str = DEV) -> None:
    results = store.apply_batch(
        wire.Batch(SITE, device, wire.utc_now(), tuple(events)), source="http"
    )
    assert all(r.status == "applied" for r in results), results


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- stock as of ------------------------------------------------------------------------------


def test_stock_as_of_compares_instants_not_text(store: Store) -> None:
    # 10:30+02:00 is 08:30Z: before 09:00Z although its text sorts after "09:00Z"
    apply(store,
          ev(1, time="2026-03-01T10:30:00.000+02:00", qty=5, dst="A"),
          ev(2, time="2026-03-01T09:30:00.000Z", qty=3, dst="A"),
          ev(3, time="2026-03-01T04:15:00.000-05:00", qty=2, src="A", dst="B", type="move"))
    assert lv.stock_as_of(store, at("2026-03-01T08:00:00Z")) == []
    assert lv.stock_as_of(store, at("2026-03-01T09:00:00Z")) == [
        lv.StockAsOf(SITE, G, "A", None, 5)]
    # the boundary is inclusive, and an offset on `at` is honoured too
    assert lv.stock_as_of(store, at("2026-03-01T10:30:00.000+01:00")) == [
        lv.StockAsOf(SITE, G, "A", None, 6), lv.StockAsOf(SITE, G, "B", None, 2)
    ]
    assert lv.stock_as_of(store, at("2026-03-01T09:15:00Z")) == [
        lv.StockAsOf(SITE, G, "A", None, 3), lv.StockAsOf(SITE, G, "B", None, 2)
    ]
    assert lv.stock_as_of(store, at("2026-03-02T00:00:00Z"), location="B") == [
        lv.StockAsOf(SITE, G, "B", None, 2)
    ]
    assert lv.stock_as_of(store, at("2026-03-02T00:00:00Z"), item="other") == []


def test_stock_as_of_now_matches_the_cache(store: Store) -> None:
    apply(store, ev(1, qty=4, dst="A", lot="L1"), ev(2, qty=1, dst="B"),
          ev(3, "ship", qty=1, src="B", dst=None), ev(4, "adjust", qty=-1, src="A", dst=None,
                                                     lot="L1"))
    now = datetime.now(UTC)
    got = [(r.item, r.location, r.lot, r.quantity) for r in lv.stock_as_of(store, now)]
    assert got == [(r.item, r.location, r.lot, r.quantity) for r in store.stock()]
    assert got == [(G, "A", "L1", 3.0)]


def test_parse_at_refuses_times_without_offset() -> None:
    with pytest.raises(BadRequest):
        lv.parse_at("2026-03-01T10:00:00")
    with pytest.raises(BadRequest):
        lv.parse_at("yesterday")
    assert lv.parse_at("2026-03-01T10:00:00+01:00") == at("2026-03-01T09:00:00Z")


# --- check and rebuild ------------------------------------------------------------------------


def test_check_finds_a_corrupt_cache_and_rebuild_fixes_it(store: Store) -> None:
    apply(store, ev(1, qty=5, dst="A"), ev(2, qty=2, dst="B", lot="L"))
    apply(store, ev(3, "move", qty=1, src="A", dst="B"))
    assert lv.check_stock(store) == []
    with store._transaction() as cur:
        cur.execute("UPDATE stock SET quantity = 40 WHERE location = 'A'")
        cur.execute("DELETE FROM stock WHERE location = 'B' AND lot = 'L'")
        cur.execute("INSERT INTO stock (site, item, location, lot, quantity)"
                    " VALUES ('wh1', 'ghost', 'Z', '', 7)")
    assert lv.check_stock(store) == [
        lv.StockDifference(SITE, G, "A", None, 40, 4, 36),
        lv.StockDifference(SITE, G, "B", "L", 0, 2, -2),
        lv.StockDifference(SITE, "ghost", "Z", None, 7, 0, 7),
    ]
    result = lv.rebuild_stock(store)
    assert [d.location for d in result.fixed] == ["A", "B", "Z"]
    assert lv.check_stock(store) == []
    assert [(r.location, r.lot, r.quantity) for r in store.stock()] == [
        ("A", None, 4.0), ("B", None, 1.0), ("B", "L", 2.0)
    ]
    # the rebuilt cache keeps working with the writer (counts read it)
    apply(store, ev(4, qty=1, dst="A"))
    assert lv.check_stock(store) == []


def test_rebuild_of_an_empty_ledger(store: Store) -> None:
    assert lv.rebuild_stock(store) == lv.RebuildResult([], 0)


# --- gaps -------------------------------------------------------------------------------------


def test_device_gaps_missing_ranges_and_late_arrivals(store: Store) -> None:
    apply(store, *(ev(s) for s in (1, 2, 3, 4, 8, 9, 10, 11)))
    apply(store, ev(13), ev(14))
    apply(store, ev(6))  # arrives after 14: late
    apply(store, ev(6, dst="X"))  # a second event claiming seq 6
    gaps = lv.device_gaps(store, SITE, DEV)
    assert gaps is not None
    assert gaps.missing == [(5, 5), (7, 7), (12, 12)]
    assert gaps.missing_count == 3
    assert gaps.duplicate_seqs == [6]
    assert gaps.first_seq == 1 and gaps.last_seq == 14 and gaps.events == 12
    assert [(x.seq, x.after_seq) for x in gaps.late] == [(6, 11), (6, 11)]
    assert gaps.late_count == 2
    assert lv.device_gaps(store, SITE, "nobody") is None


def test_events_of_one_batch_are_not_late_to_each_other(store: Store) -> None:
    apply(store, ev(3), ev(1), ev(2))
    gaps = lv.device_gaps(store, SITE, DEV)
    assert gaps is not None and gaps.late == [] and gaps.missing == []


# --- serials and tags -------------------------------------------------------------------------


def test_serial_whereabouts_and_history(store: Store) -> None:
    apply(store, ev(1, time="2026-03-01T10:00:00.000+02:00", dst="DOCK", serial="S1"))
    apply(store, ev(2, "putaway", time="2026-03-01T09:00:00.000Z", src="DOCK", dst="A-1",
                    serial="S1"))
    apply(store, ev(3, "observe", time="2026-03-01T09:30:00.000Z", src=None, dst="A-1",
                    serial="S1"))
    apply(store, ev(4, gtin=G2, dst="DOCK", serial="S1"))  # same serial, another GTIN
    found = lv.find_serial(store, "S1", gtin=G)
    assert found is not None
    (where,) = found.whereabouts
    assert (where.gtin, where.location, where.event_type, where.events) == (G, "A-1", "putaway", 3)
    assert [e.type for e in found.history] == ["receive", "putaway", "observe"]
    both = lv.find_serial(store, "S1")
    assert both is not None
    assert [(w.gtin, w.location) for w in both.whereabouts] == [(G, "A-1"), (G2, "DOCK")]
    assert lv.find_serial(store, "nope") is None

    apply(store, ev(5, "ship", time="2026-03-02T09:00:00.000Z", src="A-1", dst=None,
                    serial="S1"))
    found = lv.find_serial(store, "S1", gtin=G)
    assert found is not None and found.whereabouts[0].location is None


def test_pick_without_destination_leaves_no_location(store: Store) -> None:
    apply(store, ev(1, dst="A", serial="P1"), ev(2, "pick", src="A", dst=None, serial="P1",
                                                time="2026-03-01T11:00:00.000Z"))
    found = lv.find_serial(store, "P1")
    assert found is not None and found.whereabouts[0].location is None


def test_epc_whereabouts(store: Store) -> None:
    epc = "urn:epc:id:sgtin:0614141.812345.6789"
    apply(store, ev(1, dst="DOCK", epc=epc, serial="6789"),
          ev(2, "move", src="DOCK", dst="B-2", epc=epc, serial="6789",
             time="2026-03-01T10:05:00.000Z"))
    found = lv.find_epc(store, epc)
    assert found is not None
    (where,) = found.whereabouts
    assert (where.epc, where.serial, where.location) == (epc, "6789", "B-2")
    assert lv.find_epc(store, "3074257BF7194E4000001A85") is None  # hex is not what is stored


def test_serial_conflicts(store: Store) -> None:
    apply(store, ev(1, dst="A", serial="C1"))
    apply(store, ev(2, dst="B", serial="C1", time="2026-03-01T11:00:00.000Z"))  # never left A
    apply(store, ev(3, dst="X", serial="OK"),
          ev(4, "ship", src="X", dst=None, serial="OK", time="2026-03-01T11:00:00.000Z"),
          ev(5, dst="Y", serial="OK", time="2026-03-01T12:00:00.000Z"))  # shipped, came back
    apply(store, ev(6, dst="A", serial="C1", gtin=G2))  # another GTIN: another thing
    (conflict,) = lv.serial_conflicts(store)
    assert (conflict.serial, conflict.location, conflict.last_location) == ("C1", "B", "A")
