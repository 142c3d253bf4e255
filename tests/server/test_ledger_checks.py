"""The ledger's checks on a real SQLite file: events are applied, and where the warehouse
disagrees an exception row is raised (unknown item or location, negative stock, a serial in two
places, events dated before a count, rejections); floor counts are kept with their lines."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from floorsync.edge import wire
from floorsync.server import ledger
from floorsync.server import ledgerviews as lv
from floorsync.server.errors import StoreError
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Incoming, Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData

SITE, DEV = "wh1", "hh-01"
G = "09501101530003"  # SKU-1's GTIN
G2 = "04006381333931"  # a valid GTIN master data does not know (until a test adds it)
G3 = "09501101530010"
GLN = "0614141123452"
SSCC = "106141412345678908"
BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

_seq = itertools.count(1)

_EXC = ("id", "kind", "status", "site", "device", "event_id", "last_event_id", "occurrences",
        "rejection_id", "count_id", "held_by_count_id", "item", "lot", "location", "serial",
        "quantity", "detail", "resolved_at", "resolved_by", "reason")


@pytest.fixture
def md(store: Store) -> MasterData:
    return MasterData(store)


def t(minutes: float = 0) -> str:
    """An event time ``minutes`` after 10:00Z on 2026-03-01."""
    return wire.format_time(BASE + timedelta(minutes=minutes))


def ev(
    type: str = "receive", *, qty: float = 1, src: str | None = None, dst: str | None = None,
    gtin: str | None = G, sku: str | None = None, lot: str | None = None,
    serial: str | None = None, epc: str | None = None, sscc: str | None = None,
    time: str | None = None,
) -> wire.Event:
    return wire.Event(
        id=wire.new_event_id(), seq=next(_seq), time=time or t(), type=type,
        item=wire.Item(gtin=gtin, sku=sku, lot=lot, serial=serial, epc=epc, sscc=sscc),
        qty=qty, from_=src, to=dst, operator="op-1",
    )


def count(
    location: str, *seen: tuple[str, str | None, float], time: str | None = None,
    items: tuple[wire.Item, ...] = (),
) -> wire.Event:
    lines = tuple(wire.CountLine(wire.Item(gtin=g, lot=lot), q) for g, lot, q in seen)
    lines += tuple(wire.CountLine(i, 1) for i in items)
    return wire.Event(
        id=wire.new_event_id(), seq=next(_seq), time=time or t(), type="count", item=None,
        qty=0, operator="counter-1", count=wire.Count(location, lines),
    )


def through_wire(site: str, device: str, events: tuple[wire.Event, ...]) -> wire.Batch:
    """Encoded and decoded, as the service sees it; every test event must be valid."""
    batch = wire.decode_batch(
        wire.encode_batch(wire.Batch(site, device, wire.utc_now(), events,
                                     ack_statuses=wire.EDGE_ACK_STATUSES)))
    assert batch.invalid == (), batch.invalid
    return batch


def apply(store: Store, *events: wire.Event, site: str = SITE, device: str = DEV) -> list[str]:
    results = store.apply_batch(through_wire(site, device, events), source="mqtt")
    return [r.status for r in results]


def exceptions(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    where, params = ("", []) if kind is None else (" WHERE kind = ?", [kind])
    rows = store._query(f"SELECT {', '.join(_EXC)} FROM exceptions{where} ORDER BY id", params)
    return [dict(zip(_EXC, row, strict=True)) for row in rows]


def on_hand(store: Store) -> dict[tuple[str, str, str | None], float]:
    return {(r.item, r.location, r.lot): r.quantity for r in store.stock()}


def moved(store: Store, event_id: str) -> list[tuple[str, str, float]]:
    return [(m.item, m.location, m.qty) for m in store.movements(limit=10_000)
            if m.event_id == event_id]


def held(store: Store) -> list[tuple[Any, ...]]:
    return store._query(
        "SELECT exception_id, event_id, site, device, type, item, lot, location, qty, event_time"
        " FROM held_movements ORDER BY id"
    )


def known_items(md: MasterData) -> None:
    md.create_item(ItemSpec("SKU-1", gtins=(G,)))


def known_locations(md: MasterData, site: str = SITE) -> None:
    """The site, bins A (labelled LBL-A and a unicode barcode) and B, and a GLN-labelled dock."""
    md.create_location(LocationSpec(site, site, "site"))
    md.create_location(LocationSpec(site, "A", "bin", barcodes=("LBL-A", "Gang-Ü-7")))
    md.create_location(LocationSpec(site, "B", "bin"))
    if site == SITE:  # GLN + extension are unique across sites
        md.create_location(LocationSpec(site, "DOCK", "zone", gln=GLN, gln_extension="400"))


# --- unknown item -------------------------------------------------------------------------


def test_unknown_item_is_applied_and_raised_with_its_fields(store: Store, md: MasterData) -> None:
    known_items(md)
    e = ev(gtin=G2, qty=4, dst="A", lot="L9")
    assert apply(store, e) == ["applied"]
    assert on_hand(store) == {(G2, "A", "L9"): 4}
    (x,) = exceptions(store)
    assert (x["kind"], x["status"], x["site"], x["device"], x["event_id"], x["last_event_id"],
            x["occurrences"], x["item"], x["location"]) == (
        "unknown_item", "open", SITE, DEV, e.id, e.id, 1, G2, None)
    assert G2 in x["detail"] and "not in master data" in x["detail"]


def test_no_item_master_data_means_no_item_check(store: Store, md: MasterData) -> None:
    apply(store, ev(gtin=G2, dst="A"))
    assert exceptions(store) == []
    known_items(md)  # the first item switches the check on (MasterData drops the caches)
    apply(store, ev(gtin=G2, dst="A"))
    assert [x["kind"] for x in exceptions(store)] == ["unknown_item"]


def test_sku_or_gtin_known_is_enough(store: Store, md: MasterData) -> None:
    known_items(md)
    apply(store,
          ev(sku="SKU-1", gtin=None, dst="A"),  # SKU only
          ev(sku="SKU-NEW", gtin=G, dst="A"),  # unknown SKU, known GTIN
          ev(sku="SKU-X", gtin=G2, dst="A"))  # neither: stock is kept under the SKU
    (x,) = exceptions(store)
    assert (x["kind"], x["item"]) == ("unknown_item", "SKU-X")
    assert on_hand(store)[("SKU-X", "A", None)] == 1


def test_unknown_item_one_open_record_within_and_across_batches(
    store: Store, md: MasterData,
) -> None:
    known_items(md)
    first, second, third = (ev(gtin=G2, dst="A") for _ in range(3))
    other = ev(gtin=G3, dst="A")
    apply(store, first, second)
    apply(store, third, other)
    rows = exceptions(store)
    assert [(x["item"], x["occurrences"], x["event_id"], x["last_event_id"]) for x in rows] == [
        (G2, 3, first.id, third.id), (G3, 1, other.id, other.id)]
    assert on_hand(store)[(G2, "A", None)] == 3


def test_unknown_item_across_several_batches_of_one_transaction(
    store: Store, md: MasterData,
) -> None:
    known_items(md)
    a, b = ev(gtin=G2, dst="A"), ev(gtin=G2, dst="A")
    store.apply_batches([Incoming(through_wire(SITE, DEV, (a,)), "mqtt"),
                         Incoming(through_wire(SITE, "hh-02", (b,)), "mqtt")])
    (x,) = exceptions(store)
    assert (x["device"], x["event_id"], x["last_event_id"], x["occurrences"]) == (
        DEV, a.id, b.id, 2)


def test_a_new_record_once_the_open_one_is_dismissed(store: Store, md: MasterData) -> None:
    known_items(md)
    apply(store, ev(gtin=G2, dst="A"))
    (first,) = exceptions(store)
    # A person dismisses it, here by plain SQL on the writer. The writer's caches still list it
    # as open (they are reloaded only when dropped), so the next event bumps the dismissed one...
    with store._transaction() as cur:
        cur.execute("UPDATE exceptions SET status = 'dismissed' WHERE id = ?", (first["id"],))
    apply(store, ev(gtin=G2, dst="A"))
    assert [(x["id"], x["occurrences"]) for x in exceptions(store)] == [(first["id"], 2)]
    # ...until they are dropped, as server.exceptionlog.resolve does after changing a record
    # (Store.reload_checks, inside the writer's transaction).
    with store._transaction() as cur:
        cur.execute("UPDATE exceptions SET reason = 'not ours' WHERE id = ?", (first["id"],))
        store.reload_checks()
    again = ev(gtin=G2, dst="A")
    apply(store, again)
    rows = exceptions(store)
    assert [(x["status"], x["occurrences"]) for x in rows] == [("dismissed", 2), ("open", 1)]
    assert rows[1]["event_id"] == again.id


def test_item_added_to_master_data_is_known_from_then_on(store: Store, md: MasterData) -> None:
    known_items(md)
    apply(store, ev(gtin=G2, dst="A"))
    md.create_item(ItemSpec("SKU-2", gtins=(G2,)))
    apply(store, ev(gtin=G2, dst="A"))
    md.import_items("sku,gtins\nSKU-3,09501101530010\n")
    apply(store, ev(gtin=G3, dst="A"))
    (x,) = exceptions(store)
    assert (x["item"], x["occurrences"], x["status"]) == (G2, 1, "open")


def test_logistic_units_and_foreign_tags_are_not_items(store: Store, md: MasterData) -> None:
    known_items(md)
    apply(store,
          ev(gtin=None, sscc=SSCC, dst="A"),
          ev(gtin=None, epc="urn:epc:id:grai:0614141.12345.400", dst="A"))
    assert exceptions(store) == []
    assert on_hand(store) == {(SSCC, "A", None): 1,
                              ("urn:epc:id:grai:0614141.12345.400", "A", None): 1}


def test_unknown_items_in_a_count_are_raised(store: Store, md: MasterData) -> None:
    known_items(md)
    c = count("A", (G, None, 2), (G2, None, 3), items=(wire.Item(sscc=SSCC),))
    apply(store, c)
    (x,) = exceptions(store)
    assert (x["kind"], x["item"], x["event_id"]) == ("unknown_item", G2, c.id)
    assert on_hand(store) == {(G, "A", None): 2, (G2, "A", None): 3, (SSCC, "A", None): 1}


# --- unknown location ---------------------------------------------------------------------


def test_unknown_location_is_applied_and_raised(store: Store, md: MasterData) -> None:
    known_locations(md)
    e = ev("move", src="A", dst="Z-99", qty=2)
    apply(store, e)
    (x,) = exceptions(store, "unknown_location")
    assert (x["kind"], x["site"], x["device"], x["event_id"], x["location"], x["item"]) == (
        "unknown_location", SITE, DEV, e.id, "Z-99", None)
    assert "'Z-99'" in x["detail"] and SITE in x["detail"]
    assert on_hand(store) == {(G, "A", None): -2, (G, "Z-99", None): 2}
    assert [r["kind"] for r in exceptions(store)] == ["unknown_location", "negative_stock"]


def test_unknown_location_dedupe_per_site_and_location(store: Store, md: MasterData) -> None:
    known_locations(md)
    known_locations(md, "wh2")
    a, b, c = ev(dst="Z-99"), ev(dst="Z-99"), ev("move", src="Z-99", dst="Z-98")
    apply(store, a, b)
    apply(store, c)
    d = ev(dst="Z-99")
    apply(store, d, site="wh2")
    apply(store, ev(dst="Z-99"), site="wh3")  # no locations in master data: not checked
    rows = exceptions(store, "unknown_location")
    assert [(x["site"], x["location"], x["occurrences"], x["event_id"], x["last_event_id"])
            for x in rows] == [
        (SITE, "Z-99", 3, a.id, c.id), (SITE, "Z-98", 1, c.id, c.id),
        ("wh2", "Z-99", 1, d.id, d.id)]


def test_barcode_is_kept_as_the_location_code(store: Store, md: MasterData) -> None:
    known_locations(md)
    r = ev(dst="LBL-A", qty=5)
    m = ev("move", src="LBL-A", dst="Gang-Ü-7", qty=1)
    apply(store, r, m)
    assert exceptions(store) == []
    assert moved(store, r.id) == [(G, "A", 5)]
    assert moved(store, m.id) == [(G, "A", -1), (G, "A", 1)]
    assert on_hand(store) == {(G, "A", None): 5}


@pytest.mark.parametrize("label", [
    "urn:epc:id:sgln:0614141.12345.400",
    "(414)0614141123452(254)400",
    "4140614141123452\x1d254400",
    "https://id.gs1.org/414/0614141123452/254/400",
])
def test_gln_labels_resolve_to_the_location(store: Store, md: MasterData, label: str) -> None:
    known_locations(md)
    e = ev(dst=label, qty=3)
    apply(store, e)
    assert exceptions(store) == []
    assert moved(store, e.id) == [(G, "DOCK", 3)]


@pytest.mark.parametrize("label", [
    "]C14140614141123452254400",  # a GS1-128 scan with its symbology identifier
    "URN:EPC:ID:SGLN:0614141.12345.400",  # URN scheme and namespace are case-insensitive
])
def test_gln_labels_master_data_reads_resolve_too(
    store: Store, md: MasterData, label: str,
) -> None:
    # master data (parse_gln_label, GET /locations/by-barcode) reads these as DOCK's GLN + 400
    known_locations(md)
    assert md.by_barcode(label, SITE).code == "DOCK"
    e = ev(dst=label, qty=1)
    apply(store, e)
    assert moved(store, e.id) == [(G, "DOCK", 1)]
    assert exceptions(store) == []


def test_gln_without_the_extension_is_another_place(store: Store, md: MasterData) -> None:
    known_locations(md)
    apply(store, ev(dst=GLN))  # DOCK is GLN + extension 400; the bare GLN names no location
    (x,) = exceptions(store)
    assert (x["kind"], x["location"]) == ("unknown_location", GLN)


def test_count_by_barcode_is_kept_under_the_code(store: Store, md: MasterData) -> None:
    known_locations(md)
    apply(store, ev(dst="A", qty=5))
    c = count("LBL-A", (G, None, 2))
    apply(store, c)
    assert store._query("SELECT location FROM counts") == [("A",)]
    assert store._query("SELECT location, count_id FROM location_counts") == [("A", 1)]
    assert on_hand(store) == {(G, "A", None): 2}
    assert exceptions(store) == []


def test_count_of_an_unknown_location_is_raised(store: Store, md: MasterData) -> None:
    known_locations(md)
    c = count("Z-99", (G, None, 2))
    apply(store, c)
    (x,) = exceptions(store)
    assert (x["kind"], x["location"], x["event_id"]) == ("unknown_location", "Z-99", c.id)
    assert store._query("SELECT location, status FROM counts") == [("Z-99", "posted")]
    assert on_hand(store) == {(G, "Z-99", None): 2}


# --- negative stock -----------------------------------------------------------------------


def test_negative_stock_raised_updated_and_cleared(store: Store) -> None:
    pick = ev("pick", src="A", qty=5, lot="L1")
    assert apply(store, pick) == ["applied"]
    assert on_hand(store) == {(G, "A", "L1"): -5}
    (x,) = exceptions(store)
    assert (x["kind"], x["status"], x["site"], x["device"], x["event_id"], x["item"],
            x["location"], x["lot"], x["quantity"]) == (
        "negative_stock", "open", SITE, DEV, pick.id, G, "A", "L1", -5)
    assert "went to -5" in x["detail"] and "'L1'" in x["detail"]

    more = ev("ship", src="A", qty=2, lot="L1")
    apply(store, more)
    (x,) = exceptions(store)
    assert (x["quantity"], x["occurrences"], x["event_id"], x["last_event_id"]) == (
        -7, 2, pick.id, more.id)

    apply(store, ev(dst="A", qty=3, lot="L1"))  # better, still below zero: not an occurrence
    (x,) = exceptions(store)
    assert (x["status"], x["quantity"], x["occurrences"]) == ("open", -4, 2)

    apply(store, ev(dst="A", qty=10, lot="L1"))
    (x,) = exceptions(store)
    assert (x["status"], x["quantity"], x["resolved_by"], x["reason"]) == (
        "cleared", 6, "floorsync", "on-hand back to 6")
    assert x["resolved_at"] is not None

    again = ev("pick", src="A", qty=9, lot="L1")
    apply(store, again)  # the cleared record stays cleared; a new one is raised
    rows = exceptions(store)
    assert [(r["status"], r["quantity"], r["event_id"]) for r in rows] == [
        ("cleared", 6, pick.id), ("open", -3, again.id)]


def test_negative_stock_judges_the_net_effect_of_a_batch(store: Store) -> None:
    apply(store, ev("pick", src="A", qty=5), ev(dst="A", qty=5))  # out and back: zero
    assert exceptions(store) == []
    apply(store, ev(dst="B", qty=2), ev("pick", src="B", qty=3), ev("pick", src="B", qty=1))
    (x,) = exceptions(store)
    assert (x["location"], x["quantity"], x["occurrences"]) == ("B", -2, 1)


def test_unrelated_count_mid_batch_does_not_raise_negative_stock(store: Store) -> None:
    # Same net effect as above, with a count of another location between the two events.
    apply(store, ev("pick", src="A", qty=5), count("C"), ev(dst="A", qty=5))
    assert on_hand(store) == {}
    assert exceptions(store) == []


def test_negative_stock_float_dust_is_zero(store: Store) -> None:
    apply(store, ev(dst="A", qty=0.3))
    apply(store, ev("pick", src="A", qty=0.1), ev("pick", src="A", qty=0.2))
    assert exceptions(store) == []


def test_count_clears_a_negative_line(store: Store) -> None:
    apply(store, ev("pick", src="A", qty=3))
    apply(store, count("A", (G, None, 1), time=t(60)))
    (x,) = exceptions(store)
    assert (x["kind"], x["status"], x["quantity"]) == ("negative_stock", "cleared", 1)


def test_huge_quantities(store: Store) -> None:
    apply(store, ev(dst="A", qty=10**12))
    first, second = ev("pick", src="A", qty=10**12), ev("pick", src="A", qty=10**12)
    apply(store, first, second)
    (x,) = exceptions(store)  # one batch: judged once, by the last event taking from the line
    assert (x["quantity"], x["event_id"], x["occurrences"]) == (-1e12, second.id, 1)
    assert "-1e+12" in x["detail"]
    assert on_hand(store) == {(G, "A", None): -1e12}


# --- serials and EPCs ---------------------------------------------------------------------


def serial_rows(store: Store) -> list[tuple[Any, ...]]:
    return store._query("SELECT identity, serial, location, event_time FROM serial_locations"
                        " ORDER BY identity, serial")


def test_serial_arriving_elsewhere_conflicts(store: Store) -> None:
    first = ev(serial="S1", dst="A", time=t(0))
    second = ev(serial="S1", dst="B", time=t(5))
    apply(store, first)
    apply(store, second)
    (x,) = exceptions(store)
    assert (x["kind"], x["event_id"], x["serial"], x["item"], x["location"]) == (
        "serial_conflict", second.id, "S1", G, "B")
    assert "'S1'" in x["detail"] and "'A'" in x["detail"] and first.id in x["detail"]
    assert on_hand(store) == {(G, "A", None): 1, (G, "B", None): 1}  # applied all the same
    assert serial_rows(store) == [(G, "S1", "B", "2026-03-01T10:05:00.000000+00:00")]


def test_serial_moves_where_the_ledger_has_it(store: Store) -> None:
    apply(store, ev(serial="S1", dst="A", time=t(0)),
          ev("move", serial="S1", src="A", dst="B", time=t(1)),
          ev("pick", serial="S1", src="B", time=t(2)),  # out of every location
          ev("return", serial="S1", dst="C", time=t(3)))  # back from nowhere: fine
    assert exceptions(store) == []
    assert serial_rows(store) == [(G, "S1", "C", "2026-03-01T10:03:00.000000+00:00")]


def test_serial_taken_from_the_wrong_place_conflicts(store: Store) -> None:
    apply(store, ev(serial="S1", dst="A", time=t(0)))
    pick = ev("pick", serial="S1", src="C", time=t(1))
    apply(store, pick)
    (x,) = exceptions(store, "serial_conflict")
    assert (x["event_id"], x["location"]) == (pick.id, "C")
    assert "taken from 'C'" in x["detail"]
    # the pick drove C negative too: that is its own exception
    assert [r["kind"] for r in exceptions(store)] == ["serial_conflict", "negative_stock"]


def test_late_serial_event_neither_conflicts_nor_moves_it(store: Store) -> None:
    apply(store, ev(serial="S1", dst="A", time=t(10)))
    apply(store, ev(serial="S1", dst="B", time=t(0)))  # older than what the ledger knows
    assert exceptions(store) == []
    assert serial_rows(store) == [(G, "S1", "A", "2026-03-01T10:10:00.000000+00:00")]


def test_same_serial_of_two_gtins_are_two_things(store: Store) -> None:
    apply(store, ev(serial="S1", dst="A", time=t(0)), ev(gtin=G3, serial="S1", dst="B", time=t(1)))
    assert exceptions(store) == []
    assert [r[:3] for r in serial_rows(store)] == [(G, "S1", "A"), (G3, "S1", "B")]


def test_epc_in_two_places_conflicts(store: Store) -> None:
    epc = "urn:epc:id:sgtin:0614141.112345.400"
    apply(store, ev(gtin=None, epc=epc, dst="A", time=t(0)))
    second = ev(gtin=None, epc=epc, dst="B", time=t(1))
    apply(store, second)
    (x,) = exceptions(store)
    assert (x["kind"], x["serial"], x["item"], x["location"], x["event_id"]) == (
        "serial_conflict", epc, epc, "B", second.id)
    assert x["detail"].startswith(f"EPC {epc!r}")
    assert [r[:3] for r in serial_rows(store)] == [("epc", epc, "B")]


# --- late after count ---------------------------------------------------------------------


def test_pick_dated_before_a_count_is_held(store: Store) -> None:
    apply(store, ev(dst="A", qty=10, time=t(-120)))
    c = count("A", (G, None, 8), time=t(0))
    apply(store, c)
    late = ev("pick", src="A", qty=2, time=t(-60))
    (result,) = store.apply_batch(through_wire(SITE, DEV, (late,)), source="mqtt")
    assert on_hand(store) == {(G, "A", None): 8}
    assert moved(store, late.id) == []
    (x,) = exceptions(store)
    (count_id,) = store._query("SELECT id FROM counts WHERE event_id = ?", [c.id])[0]
    assert (x["kind"], x["event_id"], x["item"], x["location"], x["quantity"], x["lot"]) == (
        "late_after_count", late.id, G, "A", -2, None)
    # the ack and the exception both say which count held it
    assert x["count_id"] == x["held_by_count_id"] == count_id
    assert result == wire.Result(
        late.id, "held", f"late_after_count: its change at 'A' is held by count {count_id}"
        f" (exception {x['id']}), not applied")
    assert "'A'" in x["detail"] and "2026-03-01T10:00:00.000000+00:00" in x["detail"]
    assert held(store) == [(x["id"], late.id, SITE, DEV, "pick", G, "", "A", -2, late.time)]
    assert store._query("SELECT COUNT(*) FROM events WHERE id = ?", [late.id]) == [(1,)]


def test_a_sender_that_does_not_know_held_hears_applied_with_the_reason(store: Store) -> None:
    """An older edge drops a whole ack with a status it does not know: it is answered as
    before (applied), with the reason saying what happened."""
    apply(store, count("A", time=t(0)))
    late = ev("pick", src="A", time=t(-1))
    older = wire.decode_batch(wire.encode_batch(wire.Batch(SITE, DEV, wire.utc_now(), (late,))))
    assert older.ack_statuses == ()
    (result,) = store.apply_batch(older, source="mqtt")
    assert result.status == "applied"
    assert result.reason is not None and result.reason.startswith("late_after_count: ")
    assert "held by count 1" in result.reason
    assert store.apply_batch(older, source="mqtt")[0] == wire.Result(late.id, "duplicate")


def test_times_are_compared_as_instants(store: Store) -> None:
    apply(store, count("A", (G, None, 8), time=t(0)))
    late = ev(dst="A", time="2026-03-01T11:30:00.000+02:00")  # 09:30Z: text sorts after 10:00Z
    after = ev(dst="A", time="2026-03-01T05:30:00.000-05:00")  # 10:30Z
    apply(store, late, after)
    assert [h[1] for h in held(store)] == [late.id]
    assert on_hand(store) == {(G, "A", None): 9}


def test_move_from_counted_to_uncounted_applies_only_the_uncounted_side(store: Store) -> None:
    apply(store, ev(dst="A", qty=10, time=t(-120)), count("A", (G, None, 10), time=t(0)))
    move = ev("move", src="A", dst="B", qty=4, time=t(-30))
    (result,) = store.apply_batch(through_wire(SITE, DEV, (move,)), source="mqtt")
    assert result.status == "held" and result.reason is not None
    assert result.reason.endswith("not applied; the rest applied")
    assert moved(store, move.id) == [(G, "B", 4)]
    assert on_hand(store) == {(G, "A", None): 10, (G, "B", None): 4}
    (x,) = exceptions(store)
    assert (x["kind"], x["location"], x["quantity"]) == ("late_after_count", "A", -4)
    assert [(h[0], h[7], h[8]) for h in held(store)] == [(x["id"], "A", -4)]
    assert lv.check_stock(store) == []  # held rows are not ledger rows: stock = sum(ledger)


def test_move_between_two_counted_locations_holds_both_sides(store: Store) -> None:
    apply(store, count("A", time=t(0)), count("B", time=t(0)))
    move = ev("move", src="A", dst="B", qty=4, time=t(-30))
    apply(store, move)
    assert moved(store, move.id) == [] and on_hand(store) == {}
    rows = exceptions(store)
    assert [(x["kind"], x["location"], x["quantity"]) for x in rows] == [
        ("late_after_count", "A", -4), ("late_after_count", "B", 4)]
    assert [(h[0], h[7], h[8]) for h in held(store)] == [
        (rows[0]["id"], "A", -4), (rows[1]["id"], "B", 4)]


def test_events_after_the_count_apply(store: Store) -> None:
    apply(store, count("A", (G, None, 5), time=t(0)))
    apply(store, ev("pick", src="A", qty=2, time=t(1)), ev(dst="A", qty=1, time=t(0)))
    assert on_hand(store) == {(G, "A", None): 4}  # the same instant as the count is not before
    assert exceptions(store) == [] and held(store) == []


def test_count_in_a_batch_holds_the_older_events_after_it(store: Store) -> None:
    before = ev(dst="A", qty=3, time=t(-10))  # before the count in the batch: counted over
    after = ev(dst="A", qty=7, time=t(-5))  # after the count in the batch, dated before it
    apply(store, before, count("A", (G, None, 1), time=t(0)), after)
    assert on_hand(store) == {(G, "A", None): 1}
    assert [h[1] for h in held(store)] == [after.id]


def test_resent_held_event_is_a_duplicate_and_holds_nothing_twice(store: Store) -> None:
    apply(store, count("A", time=t(0)))
    late = ev("pick", src="A", time=t(-1))
    apply(store, late)
    assert apply(store, late) == ["duplicate"]
    assert len(held(store)) == 1
    assert len(exceptions(store)) == 1
    assert on_hand(store) == {}


def test_late_edge_count_is_recorded_and_held(store: Store) -> None:
    apply(store, ev(dst="A", qty=10, time=t(-120)))
    first = count("A", (G, None, 8), time=t(0))
    apply(store, first)
    late = count("A", (G, None, 3), time=t(-60))
    assert apply(store, late) == ["held"]
    assert on_hand(store) == {(G, "A", None): 8}
    counts = store._query("SELECT id, status, event_id, adjustment_event_id, counted_at"
                          " FROM counts ORDER BY id")
    assert counts == [
        (1, "posted", first.id, first.id, "2026-03-01T10:00:00.000000+00:00"),
        (2, "late", late.id, None, "2026-03-01T09:00:00.000000+00:00")]
    # expected is on-hand at the late count's own time (10, before the first count took 2)
    assert store._query("SELECT item, lot, counted, expected, on_hand_at_close, adjustment"
                        " FROM count_lines WHERE count_id = 2") == [(G, "", 3, 10, 8, None)]
    (x,) = exceptions(store)
    assert (x["kind"], x["count_id"], x["held_by_count_id"], x["event_id"], x["location"],
            x["quantity"]) == ("late_after_count", 2, 1, late.id, "A", -7)
    assert [(h[0], h[1], h[4], h[7], h[8]) for h in held(store)] == [
        (x["id"], late.id, "count", "A", -7)]
    assert store._query("SELECT location, count_id FROM location_counts") == [("A", 1)]


# --- counts -------------------------------------------------------------------------------


def test_edge_count_keeps_counted_expected_and_adjustment(store: Store) -> None:
    apply(store, ev(dst="A", qty=10, time=t(-60)), ev(gtin=G2, dst="A", qty=4, time=t(-60)),
          ev(dst="B", qty=1, time=t(-60)))
    c = count("A", (G, None, 7), (G, "L2", 3), time="2026-03-01T12:00:00.000+02:00")
    apply(store, c)
    (row,) = store._query(
        "SELECT id, site, location, origin, status, counted_at, event_id, started_by,"
        " closed_at IS NOT NULL, adjustment_event_id FROM counts")
    assert row == (1, SITE, "A", "edge", "posted", "2026-03-01T10:00:00.000000+00:00", c.id,
                   "counter-1", 1, c.id)
    lines = store._query("SELECT item, lot, counted, expected, on_hand_at_close, adjustment"
                         " FROM count_lines WHERE count_id = 1 ORDER BY item, lot")
    assert lines == [(G2, "", 0, 4, 4, -4), (G, "", 7, 10, 10, -3), (G, "L2", 3, 0, 0, 3)]
    assert on_hand(store) == {(G, "A", None): 7, (G, "A", "L2"): 3, (G, "B", None): 1}
    assert sorted(moved(store, c.id)) == [(G2, "A", -4), (G, "A", -3), (G, "A", 3)]
    assert store._query("SELECT location, counted_at, count_id FROM location_counts") == [
        ("A", "2026-03-01T10:00:00.000000+00:00", 1)]


def test_location_counts_only_move_forward(store: Store) -> None:
    apply(store, count("A", time=t(0)))
    apply(store, count("A", time=t(60)))
    apply(store, count("A", time=t(30)))
    apply(store, count("A", time=t(60)))  # the same instant: posted, not later than the latest
    assert store._query("SELECT status FROM counts ORDER BY id") == [
        ("posted",), ("posted",), ("late",), ("posted",)]
    assert store._query("SELECT counted_at, count_id FROM location_counts") == [
        ("2026-03-01T11:00:00.000000+00:00", 2)]


# --- rejections ---------------------------------------------------------------------------


def test_invalid_event_is_a_rejection_and_an_exception(store: Store) -> None:
    good = ev(dst="A")
    bad_id = "0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c"
    raw = json.dumps({"v": 1, "site": SITE, "device": DEV, "sent_at": wire.utc_now(),
                      "events": [wire.event_to_dict(good),
                                 {"id": bad_id, "seq": 9, "type": "teleport"}]})
    results = store.apply_batch(wire.decode_batch(raw), source="http", raw=raw)
    assert [r.status for r in results] == ["applied", "rejected"]
    (rejection,) = store.rejections()
    (x,) = exceptions(store)
    assert (x["kind"], x["rejection_id"], x["event_id"], x["site"], x["device"]) == (
        "rejected", rejection.id, bad_id, SITE, DEV)
    assert x["detail"] == rejection.reason and "teleport" in x["detail"]


def test_record_rejection_raises_one_exception_per_row(store: Store) -> None:
    store.record_rejection(source="mqtt", reason="spoofed", payload="{}", site="s",
                           device="d", event_ids=["a", "b"])
    rows = exceptions(store)
    ids = [r.id for r in store.rejections()]
    assert [(x["kind"], x["rejection_id"], x["event_id"], x["detail"]) for x in rows] == [
        ("rejected", ids[0], "a", "spoofed"), ("rejected", ids[1], "b", "spoofed")]


# --- posting, rollback --------------------------------------------------------------------


def test_post_applies_inside_the_callers_transaction(store: Store, md: MasterData) -> None:
    known_items(md)
    apply(store, count("A", time=t(0)))
    with store._transaction() as cur:
        event_id = store.post(cur, SITE, [(G2, "", "A", -3.0)], type="adjust",
                              operator="alice", detail={"why": "damaged"})
    assert moved(store, event_id) == [(G2, "A", -3)]
    (x,) = exceptions(store)  # master data and counts are not checked: a person decided
    assert (x["kind"], x["event_id"], x["device"], x["quantity"]) == (
        "negative_stock", event_id, ledger.API_DEVICE, -3)
    (row,) = store._query("SELECT type, operator, source, detail FROM events WHERE id = ?",
                          [event_id])
    assert row == ("adjust", "alice", "http", '{"why":"damaged"}')
    with pytest.raises(ValueError), store._transaction() as cur:
        store.post(cur, SITE, [], type="adjust", operator="alice", detail={})


def test_rolled_back_post_leaves_no_cached_exception(store: Store) -> None:
    with pytest.raises(RuntimeError), store._transaction() as cur:
        store.post(cur, SITE, [(G, "", "A", -1.0)], type="adjust", operator="a", detail={})
        raise RuntimeError("the caller's own work failed")
    assert exceptions(store) == [] and on_hand(store) == {}
    pick = ev("pick", src="A", qty=2)
    apply(store, pick)
    (x,) = exceptions(store)
    assert (x["event_id"], x["quantity"], x["occurrences"]) == (pick.id, -2, 1)


def test_failed_batch_leaves_no_cached_exception(
    store: Store, md: MasterData, monkeypatch: pytest.MonkeyPatch,
) -> None:
    known_items(md)
    # The last statement of a batch fails, after its unknown-item record was raised (and cached).
    monkeypatch.setattr(ledger, "_UPSERT_DEVICE_SEEN", "INSERT INTO no_such_table VALUES (?)")
    with pytest.raises(StoreError):
        apply(store, ev(gtin=G2, dst="A"))
    monkeypatch.undo()
    assert exceptions(store) == [] and on_hand(store) == {}
    e = ev(gtin=G2, dst="A")
    apply(store, e)
    (x,) = exceptions(store)
    assert (x["kind"], x["event_id"], x["occurrences"]) == ("unknown_item", e.id, 1)


# --- odd input ----------------------------------------------------------------------------


def test_unicode_location_labels(store: Store, md: MasterData) -> None:
    known_locations(md)
    odd = "Halle Ä/Regal 3 🚚"
    e = ev(dst=odd, qty=2)
    apply(store, e)
    (x,) = exceptions(store)
    assert (x["kind"], x["location"]) == ("unknown_location", odd)
    assert odd in x["detail"]
    assert on_hand(store) == {(G, odd, None): 2}


def test_observe_checks_nothing_and_moves_nothing(store: Store, md: MasterData) -> None:
    known_items(md)
    known_locations(md)
    apply(store, count("A", time=t(0)))
    o = ev("observe", gtin=G2, serial="S9", dst="Z-99", time=t(-5))
    assert apply(store, o) == ["applied"]
    assert exceptions(store) == [] and held(store) == [] and moved(store, o.id) == []
    assert serial_rows(store) == [] and on_hand(store) == {}
    assert store._query("SELECT type FROM events WHERE id = ?", [o.id]) == [("observe",)]


# --- found in review ------------------------------------------------------------------------


def test_a_floor_count_dated_before_applied_moves_keeps_them(store: Store) -> None:
    """An offline handheld's count arrives after later receives were applied: it is judged
    against on-hand at its own time, and the later receive stays."""
    apply(store, ev(dst="A", qty=10, time=t(0)))
    apply(store, ev(dst="A", qty=5, time=t(10)))
    late_count = count("A", (G, None, 10), time=t(5))
    apply(store, late_count)
    assert on_hand(store) == {(G, "A", None): 15}
    assert store._query("SELECT counted, expected, on_hand_at_close, adjustment"
                        " FROM count_lines") == [(10, 10, 15, 0)]
    # and one that did find a difference applies only the difference
    apply(store, count("A", (G, None, 12), time=t(7)))
    assert on_hand(store) == {(G, "A", None): 17}
    assert exceptions(store) == []


def test_a_count_mid_batch_is_judged_at_its_time(store: Store) -> None:
    """Within one batch, a count dated before an earlier event of the batch keeps that event."""
    apply(store, ev(dst="A", qty=10, time=t(0)), ev(dst="A", qty=5, time=t(10)),
          count("A", (G, None, 9), time=t(5)))
    assert on_hand(store) == {(G, "A", None): 14}


def test_a_partly_held_move_tracks_the_serial_to_its_destination(store: Store) -> None:
    apply(store, ev(dst="A", serial="S1", time=t(0)))
    apply(store, count("A", time=t(10)))  # counted empty: S1 had left
    apply(store, ev("move", src="A", dst="B", serial="S1", time=t(5)))  # A side held, B applied
    assert on_hand(store)[(G, "B", None)] == 1
    apply(store, ev("pick", src="B", serial="S1", time=t(20)))
    assert exceptions(store, "serial_conflict") == []
    assert store._query("SELECT location FROM serial_locations") == [(None,)]


def test_a_refused_write_keeps_the_caches(store: Store) -> None:
    from floorsync.server import exceptionlog
    from floorsync.server.errors import Refused

    apply(store, ev(dst="A"))
    caches = store._caches
    assert caches is not None
    with pytest.raises(Refused):
        exceptionlog.resolve(store, 999, action="dismiss", by="a", reason="r")
    assert store._caches is caches  # nothing was changed: no reload on the ingest thread


def test_a_late_count_needs_its_adjustment_said(store: Store) -> None:
    from floorsync.server import exceptionlog
    from floorsync.server.errors import BadRequest

    apply(store, ev(dst="A", qty=10, time=t(-120)))
    apply(store, count("A", (G, None, 8), time=t(0)))
    apply(store, count("A", (G, None, 3), time=t(-60)))
    (x,) = exceptions(store, "late_after_count")
    with pytest.raises(BadRequest):
        exceptionlog.resolve(store, x["id"], action="adjust", by="a")
    assert on_hand(store) == {(G, "A", None): 8}
    exceptionlog.resolve(store, x["id"], action="dismiss", by="a", reason="older recount")
    assert exceptions(store, "late_after_count")[0]["status"] == "dismissed"


def test_a_line_whose_first_batch_nets_to_zero_is_still_looked_back_at(store: Store) -> None:
    apply(store, ev(dst="A", qty=5, time=t(0)), ev("pick", src="A", qty=5, time=t(420)))
    apply(store, count("A", (G, None, 5), time=t(300)))  # saw the 5 before the pick
    assert on_hand(store) == {}  # the pick after the count is kept: 0, not 5
    assert store._query("SELECT counted, expected, adjustment FROM count_lines") == [(5, 5, 0)]


def test_a_move_held_at_its_destination_still_moves_the_serial(store: Store) -> None:
    from floorsync.server import exceptionlog

    apply(store, ev(dst="B", serial="S1", time=t(0)))
    apply(store, count("A", time=t(60)))
    apply(store, ev("move", src="B", dst="A", serial="S1", time=t(30)))  # A side held
    (late,) = exceptions(store, "late_after_count")
    exceptionlog.resolve(store, late["id"], action="adjust", by="lead")
    apply(store, ev("pick", src="A", serial="S1", time=t(90)))
    assert exceptions(store, "serial_conflict") == []
    assert on_hand(store) == {}


def test_float_noise_is_not_a_count_difference(store: Store) -> None:
    apply(store, ev(dst="A", qty=0.1, time=t(0)), ev(dst="A", qty=0.2, time=t(1)))
    c = count("A", (G, None, 0.3), time=t(10))
    apply(store, c)
    assert moved(store, c.id) == []
    assert store._query("SELECT adjustment FROM count_lines") == [(0,)]


def test_a_correction_posted_before_an_earlier_dated_count_arrives_is_not_doubled(
    store: Store,
) -> None:
    from floorsync.server import exceptionlog

    apply(store, ev("pick", src="A", qty=3, time=t(0)))  # the books go to -3
    (negative,) = exceptions(store, "negative_stock")
    exceptionlog.resolve(store, negative["id"], action="adjust", by="lead")  # +3: books at 0
    apply(store, count("A", time=t(5)))  # an earlier count (saw nothing) arrives late
    assert on_hand(store) == {}  # 0, not 3: the correction is not counted a second time


# --- sites ----------------------------------------------------------------------------------


def test_two_sites_with_the_same_location_code_keep_apart(store: Store) -> None:
    apply(store, ev(dst="A-01", qty=5, time=t(0)), site="wh1")
    apply(store, ev(dst="A-01", qty=2, time=t(0)), site="wh2")
    apply(store, count("A-01", (G, None, 4), time=t(30)), site="wh1")  # wh1's A-01 only
    apply(store, ev("pick", src="A-01", qty=1, time=t(10)), site="wh2")  # not late at wh2
    assert {(r.site, r.location): r.quantity for r in store.stock()} == {
        ("wh1", "A-01"): 4, ("wh2", "A-01"): 1}
    assert exceptions(store, "late_after_count") == []
    apply(store, ev("pick", src="A-01", qty=3, time=t(40)), site="wh2")  # wh2 goes negative
    (negative,) = exceptions(store, "negative_stock")
    assert (negative["site"], negative["quantity"]) == ("wh2", -2)
    assert [r.quantity for r in store.stock(site="wh1")] == [4]


def test_a_serial_received_at_another_site_is_a_conflict(store: Store) -> None:
    apply(store, ev(dst="A-01", serial="S1", time=t(0)), site="wh1")
    apply(store, ev(dst="A-01", serial="S1", time=t(10)), site="wh2")  # same code, other site
    (conflict,) = exceptions(store, "serial_conflict")
    assert conflict["site"] == "wh2" and "of site 'wh1'" in conflict["detail"]


def test_a_resolution_posts_at_the_exceptions_own_site(store: Store) -> None:
    from floorsync.server import exceptionlog
    from floorsync.server.errors import BadRequest

    apply(store, ev("pick", src="A", qty=2, time=t(0)), site="wh2")
    (negative,) = exceptions(store, "negative_stock")
    with pytest.raises(BadRequest, match="site"):
        exceptionlog.resolve(store, negative["id"], action="adjust", by="a", site="wh1")
    exceptionlog.resolve(store, negative["id"], action="adjust", by="a", site="wh2")
    assert {(r.site, r.location): r.quantity for r in store.stock()} == {}


def test_stock_of_one_location_is_read_through_an_index(sqlite_store: Store) -> None:
    plan = sqlite_store._query("EXPLAIN QUERY PLAN SELECT item FROM stock WHERE location = ?",
                               ("A",))
    assert any("stock_location" in row[3] for row in plan), plan


def test_the_serial_views_tell_sites_apart(store: Store) -> None:
    from floorsync.server import ledgerviews as lv

    apply(store, ev(dst="A", serial="S2", time=t(0)), site="wh1")
    apply(store, ev(dst="A", serial="S2", time=t(10)), site="wh2")
    (conflict,) = lv.serial_conflicts(store)
    assert (conflict.site, conflict.last_site, conflict.location) == ("wh2", "wh1", "A")
    found = lv.find_serial(store, "S2")
    assert found is not None and (found.whereabouts[0].site, found.whereabouts[0].location) == (
        "wh2", "A")
