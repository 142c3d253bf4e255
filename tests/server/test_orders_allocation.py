"""Allocation and backorders on a real ledger: never more held than is on the shelf, first-come,
lots, and backorders filled by later stock applied through ``Store.apply_batch``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.server import orders as od
from floorsync.server.backorders import list_backorders
from floorsync.server.ledger import Store
from tests.server.orderkit import (
    SITE,
    again,
    apply,
    ev,
    held,
    line_state,
    open_backorders,
    order_doc,
    over_allocated,
    receive,
    with_items,
)


@pytest.fixture
def shop(database: str | Path) -> Iterator[Store]:
    with Store(database) as store:
        yield with_items(store)


def test_the_first_order_gets_the_stock_and_the_second_is_backordered(shop: Store) -> None:
    apply(shop, receive("A", 6, "A-01"), receive("A", 4, "A-02"))
    od.accept(shop, order_doc("SO-1", ("A", 7)))
    od.accept(shop, order_doc("SO-2", ("A", 5)))
    assert held(shop, "SO-1") == {(1, "A-01"): 6, (1, "A-02"): 1}  # the largest line first
    assert held(shop, "SO-2") == {(1, "A-02"): 3}
    assert line_state(shop, "SO-2") == {1: (5, 3, 0, 0, 2)}
    (backorder,) = list_backorders(shop)
    assert (backorder.order_id, backorder.line, backorder.open_qty) == ("SO-2", 1, 2)
    assert backorder.why.startswith("stock held by other orders (on hand 10")
    assert over_allocated(shop) == []


def test_why_a_line_is_backordered(shop: Store) -> None:
    apply(shop, receive("B", 3, "B-01", lot="L1"))
    od.accept(shop, order_doc("SO-1", ("A", 2), ("B", 1, "L9"), ("B", 5)))
    why = {b.line: (b.open_qty, b.why) for b in list_backorders(shop)}
    assert why == {1: (2, "no stock"), 2: (1, "lot 'L9' not in stock"),
                   3: (2, "stock held by other orders (on hand 3, free 0)")}


def test_a_line_naming_a_lot_takes_that_lot_and_goes_first(shop: Store) -> None:
    apply(shop, receive("A", 5, "A-01", lot="L1"), receive("A", 3, "A-02", lot="L2"))
    # line 1 takes any lot, line 2 only L2: L2 goes to line 2 although line 1 comes first
    od.accept(shop, order_doc("SO-1", ("A", 6), ("A", 3, "L2")))
    rows = shop._query("SELECT line, location, lot, qty FROM order_allocations ORDER BY line, id")
    assert [tuple(r) for r in rows] == [(1, "A-01", "L1", 5), (2, "A-02", "L2", 3)]
    assert line_state(shop, "SO-1") == {1: (6, 5, 0, 0, 1), 2: (3, 3, 0, 0, 0)}


def test_stock_under_the_sku_and_under_a_gtin_of_it_both_count(shop: Store) -> None:
    apply(shop, ev("receive", "A", 2, dst="A-01", by_sku=True), receive("A", 3, "A-02"))
    view, _ = od.accept(shop, order_doc("SO-1", ("A", 5)))
    assert {(r.item, r.location, r.qty) for r in view.lines[0].reserved} == {
        ("SKU-A", "A-01", 2), (view.lines[0].reserved[0].item, "A-02", 3)}
    assert view.lines[0].backordered == 0


def test_goods_at_shipping_or_lost_are_not_allocated(shop: Store) -> None:
    apply(shop, receive("A", 5, "shipping"), receive("A", 5, "lost"), receive("A", 1, "DOCK-1"))
    view, _ = od.accept(shop, order_doc("SO-1", ("A", 3)))
    assert [(r.location, r.qty) for r in view.lines[0].reserved] == [("DOCK-1", 1)]
    assert view.lines[0].backordered == 2


def test_backorders_are_filled_by_due_date_then_priority_then_arrival(shop: Store) -> None:
    od.accept(shop, order_doc("LATE", ("A", 2), due="2026-12-20", priority=1))
    od.accept(shop, order_doc("SOON-LOW", ("A", 2), due="2026-12-05", priority=9))
    od.accept(shop, order_doc("SOON-HIGH", ("A", 2), due="2026-12-05", priority=2))
    od.accept(shop, order_doc("SOON-HIGH-2", ("A", 2), due="2026-12-05", priority=2))
    assert len(open_backorders(shop)) == 4
    first = receive("A", 3, "A-01")
    apply(shop, first)  # SOON-HIGH in full, then SOON-HIGH-2 (same due and priority, later) 1
    assert open_backorders(shop) == {("LATE", 1): 2, ("SOON-LOW", 1): 2, ("SOON-HIGH-2", 1): 1}
    fills = {b.order_id: b.fills for b in list_backorders(shop, status=None)}
    (fill,) = fills["SOON-HIGH"]
    assert (fill.qty, fill.how, fill.event_id, fill.location) == (2, "allocated", first.id,
                                                                   "A-01")
    assert held(shop, "SOON-HIGH") == {(1, "A-01"): 2}
    apply(shop, receive("A", 2, "A-02"))  # the rest of SOON-HIGH-2, then SOON-LOW partly
    assert open_backorders(shop) == {("LATE", 1): 2, ("SOON-LOW", 1): 1}
    assert line_state(shop, "SOON-LOW") == {1: (2, 1, 0, 0, 1)}
    assert [b.status for b in list_backorders(shop, order_id="SOON-HIGH", status=None)] == [
        "filled"]
    assert over_allocated(shop) == []


def test_a_replayed_receive_fills_nothing_twice(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 5)))
    event = receive("A", 2, "A-01")
    assert apply(shop, event) == ["applied"]
    before = (line_state(shop, "SO-1"), shop._query("SELECT * FROM backorder_fills"))
    assert apply(shop, again(event), again(event)) == ["duplicate", "duplicate"]
    assert (line_state(shop, "SO-1"), shop._query("SELECT * FROM backorder_fills")) == before
    assert open_backorders(shop) == {("SO-1", 1): 3}


def test_a_put_away_and_a_return_fill_backorders_too(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 3)))
    apply(shop, ev("return", "A", 1, dst="A-01"))
    apply(shop, receive("A", 2, "lost"))  # not pickable there: fills nothing
    assert open_backorders(shop) == {("SO-1", 1): 2}
    apply(shop, ev("putaway", "A", 2, src="lost", dst="A-02"))
    assert open_backorders(shop) == {}
    assert held(shop, "SO-1") == {(1, "A-01"): 1, (1, "A-02"): 2}


def test_a_new_order_does_not_jump_the_queue_of_backorders(shop: Store) -> None:
    """Stock that came by a way that runs no hook (a person's adjustment) goes to the waiting
    backorder first when the next order of that item arrives."""
    od.accept(shop, order_doc("OLD", ("A", 2), due="2026-12-31"))
    with shop._transaction() as cur:
        shop.post(cur, SITE, [("SKU-A", "", "A-01", 3.0)], type="adjust", operator="ann",
                  detail={"why": "found"})
    assert open_backorders(shop) == {("OLD", 1): 2}
    od.accept(shop, order_doc("NEW", ("A", 2), due="2026-12-01"))
    assert open_backorders(shop) == {("NEW", 1): 1}
    assert held(shop, "OLD") == {(1, "A-01"): 2} and held(shop, "NEW") == {(1, "A-01"): 1}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_orders_never_hold_more_than_the_shelf_and_stay_first_come(
    shop: Store, seed: int
) -> None:
    rng = random.Random(seed)
    items, lots = "ABCDE", ["", "L1", "L2"]
    apply(shop, *[receive(rng.choice(items), rng.randint(1, 9), f"B-{rng.randrange(6)}",
                          lot=rng.choice(lots) or None) for _ in range(60)])
    for n in range(12):
        lines = []
        for _ in range(rng.randint(1, 6)):
            lot = rng.choice(lots)
            lines.append((rng.choice(items), rng.randint(1, 8), lot) if lot else
                         (rng.choice(items), rng.randint(1, 8)))
        od.accept(shop, order_doc(f"SO-{n:02d}", *lines))
        if n % 4 == 3:  # stock keeps arriving: backorders fill
            apply(shop, *[receive(rng.choice(items), rng.randint(1, 6), f"B-{rng.randrange(6)}",
                                  lot=rng.choice(lots) or None) for _ in range(8)])
    assert over_allocated(shop) == []
    for order_id, line, qty, allocated, backordered, lot in shop._query(
        "SELECT order_id, line, qty, allocated, backordered, lot FROM order_lines"
    ):
        assert allocated + backordered == pytest.approx(qty), (order_id, line)
        lots_held = {r[0] for r in shop._query(
            "SELECT a.lot FROM order_allocations a WHERE order_id = ? AND line = ?"
            " AND qty > 0", (order_id, line))}
        assert not lot or lots_held <= {lot}
    # free stock of an item and an open backorder of it (any lot) never sit side by side
    for (sku,) in shop._query("SELECT DISTINCT sku FROM backorders WHERE status = 'open'"
                              " AND lot = ''"):
        gtin = shop._query("SELECT gtin FROM item_gtins WHERE sku = ?", (sku,))[0][0]
        free = shop._query(
            "SELECT SUM(s.quantity - COALESCE((SELECT SUM(a.qty) FROM order_allocations a"
            " WHERE a.item = s.item AND a.site = s.site AND a.location = s.location"
            " AND a.lot = s.lot AND a.qty > 0), 0)) FROM stock s WHERE s.item = ?",
            (gtin,))[0][0]
        assert free == pytest.approx(0), sku
