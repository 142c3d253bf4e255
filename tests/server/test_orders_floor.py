"""The floor's picks and ships against orders, through the real ``Store.apply_batch``: matched to
lines, never refused (an exception instead), replays change nothing, reservations stay true."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.server import orders as od
from floorsync.server.ledger import Store
from tests.server.orderkit import (
    SITE,
    again,
    apply,
    ev,
    exceptions,
    held,
    line_state,
    open_backorders,
    order_doc,
    over_allocated,
    pick,
    receive,
    ship,
    with_items,
)


@pytest.fixture
def shop(database: str | Path) -> Iterator[Store]:
    with Store(database) as store:
        with_items(store)
        apply(store, receive("A", 10, "A-01"), receive("A", 4, "A-02"),
              receive("B", 5, "B-01", lot="L1"), receive("B", 5, "B-02", lot="L2"))
        yield store


def wire_count(location: str, seen: list[tuple[str, float]]) -> wire.Event:
    return wire.Event(wire.new_event_id(), 10**6, wire.local_now(), "count", None, 0,
                      count=wire.Count(location, tuple(
                          wire.CountLine(wire.Item(sku=f"SKU-{i}"), q) for i, q in seen)))


def stock(store: Store, location: str) -> float:
    rows = store._query("SELECT COALESCE(SUM(quantity), 0) FROM stock WHERE location = ?",
                        (location,))
    return float(rows[0][0])


def test_an_expected_pick_uses_up_the_lines_reservation(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 6), ("B", 2, "L2")))
    assert held(shop, "SO-1") == {(1, "A-01"): 6, (2, "B-02"): 2}
    assert apply(shop, pick("SO-1", "A", 4, "A-01"), pick("SO-1", "B", 2, "B-02", lot="L2")
                 ) == ["applied", "applied"]
    assert line_state(shop, "SO-1") == {1: (6, 2, 4, 0, 0), 2: (2, 0, 2, 0, 0)}
    assert held(shop, "SO-1") == {(1, "A-01"): 2}
    assert exceptions(shop) == []
    assert od.get_order(shop, "SO-1").version > 1


def test_over_wrong_item_wrong_lot_and_unknown_orders_are_applied_and_raised(
    shop: Store
) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 3), ("B", 2, "L1")))
    over = pick("SO-1", "A", 5, "A-01")
    wrong_item = pick("SO-1", "C", 1, "A-02")
    wrong_lot = pick("SO-1", "B", 1, "B-02", lot="L2")
    nowhere = pick("SO-404", "A", 1, "A-02")
    results = apply(shop, over, wrong_item, wrong_lot, nowhere)
    assert results == ["applied"] * 4  # physical truth: never refused
    assert stock(shop, "A-01") == 5 and stock(shop, "B-02") == 4
    assert exceptions(shop) == [
        ("order_over", "SO-1", 1, over.id, 2),
        ("order_unexpected", "SO-1", None, wrong_item.id, None),
        ("order_unexpected", "SO-1", None, wrong_lot.id, None),
        ("order_unknown", "SO-404", None, nowhere.id, None),
    ]
    assert line_state(shop, "SO-1")[1] == (3, 0, 5, 0, 0)  # the over-pick is recorded
    detail = shop._query("SELECT detail FROM exceptions WHERE event_id = ?", (wrong_lot.id,))
    assert "asks for lot(s) 'L1'" in detail[0][0]
    assert od.get_order(shop, "SO-1").exceptions == tuple(
        r[0] for r in shop._query("SELECT id FROM exceptions WHERE kind LIKE 'order_%'"
                                  " AND kind <> 'order_unknown' ORDER BY id"))


def test_picks_against_a_closed_cancelled_or_foreign_order_are_unknown(shop: Store) -> None:
    od.accept(shop, order_doc("DONE", ("A", 1)))
    apply(shop, pick("DONE", "A", 1, "A-01"), ship("DONE", "A", 1, at="A-01"))
    assert od.get_order(shop, "DONE").status == "closed"
    od.accept(shop, order_doc("GONE", ("A", 1)))
    od.cancel(shop, "GONE", "ann", "customer called")
    od.accept(shop, order_doc("THEIRS", ("A", 1), site="wh2"))
    late = [pick("DONE", "A", 1, "A-01"), ship("GONE", "A", 1, at="A-01"),
            pick("THEIRS", "A", 1, "A-01")]
    assert apply(shop, *late) == ["applied"] * 3
    raised = exceptions(shop, "order_unknown")  # DONE's own ship raised order_ship_off_books
    assert [(k, o, e) for k, o, _, e, _ in raised] == [
        ("order_unknown", "DONE", late[0].id), ("order_unknown", "GONE", late[1].id),
        ("order_unknown", "THEIRS", late[2].id)]
    details = [d for (d,) in shop._query("SELECT detail FROM exceptions ORDER BY id")]
    assert any("the order is closed" in d for d in details)
    assert any("the order is cancelled" in d for d in details)
    assert any("order of site 'wh2'" in d for d in details)


def test_ships_close_lines_and_the_order(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 6), ("B", 12)))  # B: 10 on hand, 2 backordered
    apply(shop, pick("SO-1", "A", 6, "A-01"), pick("SO-1", "B", 5, "B-01", lot="L1"),
          pick("SO-1", "B", 5, "B-02", lot="L2"))
    ships = [ship("SO-1", "A", 6), ship("SO-1", "B", 10)]
    apply(shop, *ships)
    view = od.get_order(shop, "SO-1")
    assert [(ln.status, ln.shipped, ln.backordered) for ln in view.lines] == [
        ("closed", 6, 0), ("open", 10, 2)]
    assert view.status == "open"  # line 2 waits for its backorder
    apply(shop, receive("B", 2, "B-03"))
    assert held(shop, "SO-1") == {(2, "B-03"): 2}
    ships.append(ship("SO-1", "B", 2))
    apply(shop, pick("SO-1", "B", 2, "B-03"), ships[-1])
    view = od.get_order(shop, "SO-1")
    assert view.status == "closed" and view.closed_at is not None
    assert all(ln.status == "closed" for ln in view.lines)
    # picked without a `to`, shipped from DOCK-9: each ship took the goods off a second time
    assert exceptions(shop) == [("order_ship_off_books", "SO-1", ln, s.id, s.qty)
                                for ln, s in zip((1, 2, 2), ships, strict=True)]


def test_a_ship_without_a_pick_counts_as_picked(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 4)))
    apply(shop, ship("SO-1", "A", 4, at="A-01"))  # a door shipping straight from the shelf
    assert line_state(shop, "SO-1") == {1: (4, 0, 4, 4, 0)}
    assert held(shop, "SO-1") == {} and od.get_order(shop, "SO-1").status == "closed"


def test_a_replayed_batch_changes_nothing(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 3)))
    batch = [pick("SO-1", "A", 2, "A-01"), pick("SO-1", "C", 1, "A-01"),
             pick("SO-1", "A", 4, "A-01")]
    apply(shop, *batch)
    state = (line_state(shop, "SO-1"), exceptions(shop), held(shop, "SO-1"),
             od.get_order(shop, "SO-1").version)
    assert apply(shop, *[again(e) for e in batch]) == ["duplicate"] * 3
    assert apply(shop, again(batch[0]), again(batch[0])) == ["duplicate", "duplicate"]
    assert (line_state(shop, "SO-1"), exceptions(shop), held(shop, "SO-1"),
            od.get_order(shop, "SO-1").version) == state


def test_picked_goods_put_somewhere_are_kept_for_the_order_until_shipped(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 14)))  # every A on the shelf
    apply(shop, pick("SO-1", "A", 10, "A-01", to="PACK-1"),
          pick("SO-1", "A", 4, "A-02", to="PACK-1"))
    assert stock(shop, "PACK-1") == 14
    od.accept(shop, order_doc("SO-2", ("A", 3)))
    assert held(shop, "SO-2") == {} and open_backorders(shop) == {("SO-2", 1): 3}
    apply(shop, ship("SO-1", "A", 14, at="PACK-1"))
    assert od.get_order(shop, "SO-1").status == "closed"
    assert shop._query("SELECT COUNT(*) FROM order_allocations WHERE qty > 0"
                       " AND order_id = 'SO-1'") == [(0,)]
    assert over_allocated(shop) == []


def test_stock_taken_from_under_reservations_the_youngest_give_way_first(shop: Store) -> None:
    """At the shelf that came up short the youngest reservation gives way first; what gave way
    is allocated again from free stock or backordered (reservations elsewhere stay: a picker
    may be on the way to them)."""
    od.accept(shop, order_doc("SO-1", ("A", 9), due="2026-12-01"))
    od.accept(shop, order_doc("SO-2", ("A", 5), due="2026-12-02"))
    assert held(shop, "SO-1") == {(1, "A-01"): 9}
    assert held(shop, "SO-2") == {(1, "A-02"): 4, (1, "A-01"): 1}
    apply(shop, pick(None, "A", 5, "A-01"))  # a pick without the order: 5 left for 10 held
    assert over_allocated(shop) == []
    assert held(shop, "SO-2") == {(1, "A-02"): 4}  # its 1 at A-01 went first
    assert held(shop, "SO-1") == {(1, "A-01"): 5}
    assert open_backorders(shop) == {("SO-1", 1): 4, ("SO-2", 1): 1}
    assert line_state(shop, "SO-1") == {1: (9, 5, 0, 0, 4)}
    apply(shop, receive("A", 3, "A-03"))  # the first-come order is filled first
    assert open_backorders(shop) == {("SO-1", 1): 1, ("SO-2", 1): 1}


def test_a_count_that_finds_less_moves_the_reservation(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 3)))
    assert held(shop, "SO-1") == {(1, "A-01"): 3}
    counted = wire_count("A-01", [])  # A-01 is empty
    apply(shop, counted)
    assert held(shop, "SO-1") == {(1, "A-02"): 3}
    assert over_allocated(shop) == []


def test_a_pick_beyond_the_reservation_fills_the_backorder(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 20)))  # 14 held, 6 backordered
    apply(shop, pick("SO-1", "A", 10, "A-01"), pick("SO-1", "A", 4, "A-02"))
    # the floor finds 2 more on a shelf the books thought empty
    found = pick("SO-1", "A", 2, "A-03")
    apply(shop, found)
    assert line_state(shop, "SO-1") == {1: (20, 0, 16, 0, 4)}
    fills = shop._query("SELECT how, qty, event_id FROM backorder_fills")
    assert [tuple(f) for f in fills] == [("picked", 2, found.id)]
    assert exceptions(shop) == []


def test_a_receive_in_the_same_batch_as_a_pick_fills_after_the_pick(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("C", 2)))
    assert open_backorders(shop) == {("SO-1", 1): 2}
    arrived = ev("receive", "C", 3, dst="C-01")
    apply(shop, arrived, pick("SO-1", "A", 1, "A-01"))
    assert held(shop, "SO-1") == {(1, "C-01"): 2}
    assert exceptions(shop)[0][0] == "order_unexpected"
    assert shop._query("SELECT event_id FROM backorder_fills") == [(arrived.id,)]


def test_a_batch_of_another_site_leaves_this_sites_orders_alone(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("C", 2)))
    apply(shop, receive("C", 5, "C-01"), site="wh2")
    assert open_backorders(shop) == {("SO-1", 1): 2}
    assert od.get_order(shop, "SO-1").site == SITE
