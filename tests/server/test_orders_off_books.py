"""A ship of goods an order line's picks already took off the books (picked without a ``to``)
takes them off a second time: raised as ``order_ship_off_books`` naming the order, the line, the
quantity, the ship and the pick, the ledger left as the floor said. A staged pick (``to``) and a
ship from the lane raise nothing. Through the real ``Store.apply_batch``, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.server import db
from floorsync.server import exceptionlog as xl
from floorsync.server import orders as od
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from floorsync.server.migrations import MIGRATIONS
from tests.server.orderkit import (
    G,
    again,
    apply,
    exceptions,
    line_state,
    order_doc,
    pick,
    receive,
    ship,
    with_items,
)

KIND = "order_ship_off_books"


@pytest.fixture
def shop(database: str | Path) -> Iterator[Store]:
    with Store(database) as store:
        with_items(store)
        apply(store, receive("A", 10, "A-01"), receive("A", 5, "DOCK-9"), receive("B", 4, "B-01"))
        yield store


def stock(store: Store, location: str, item: str = "A") -> float:
    rows = store._query("SELECT COALESCE(SUM(quantity), 0) FROM stock WHERE location = ?"
                        " AND item = ?", (location, G[item]))
    return float(rows[0][0])


def off_books(store: Store, order_id: str) -> dict[int, float]:
    return {ln: float(q) for ln, q in store._query(
        "SELECT line, picked_off_books FROM order_lines WHERE order_id = ? ORDER BY line",
        (order_id,))}


def detail(store: Store) -> tuple[str, str | None]:
    ((text, location),) = store._query(
        "SELECT detail, location FROM exceptions WHERE kind = ?", (KIND,))
    return text, location


def test_a_ship_after_an_off_the_books_pick_is_raised_and_posted_as_said(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 3), ("B", 1)))
    picked = pick("SO-1", "A", 3, "A-01")
    apply(shop, picked, pick("SO-1", "B", 1, "B-01"))
    assert off_books(shop, "SO-1") == {1: 3, 2: 1}
    shipped = ship("SO-1", "A", 3)  # from DOCK-9, which holds 5 units of A of its own
    assert apply(shop, shipped) == ["applied"]
    assert exceptions(shop) == [(KIND, "SO-1", 1, shipped.id, 3)]
    text, location = detail(shop)
    assert location == "DOCK-9" and shipped.id in text and picked.id in text
    assert "order SO-1 line 1: 3 of it already taken off the books" in text
    # physical truth: the ledger posts both movements as the floor reported them
    assert (stock(shop, "A-01"), stock(shop, "DOCK-9")) == (7, 2)
    assert off_books(shop, "SO-1") == {1: 0, 2: 1} and line_state(shop, "SO-1")[1][2:4] == (3, 3)
    assert apply(shop, again(shipped)) == ["duplicate"] and len(exceptions(shop)) == 1
    # an operator puts DOCK-9 right and closes it
    (ident,) = [i for (i,) in shop._query("SELECT id FROM exceptions WHERE kind = ?", (KIND,))]
    row, _ = xl.resolve(shop, ident, action="adjust", by="ann", reason="double removal",
                        lines=[xl.AdjustmentLine(G["A"], "DOCK-9", 3)])
    assert row.status == "adjusted" and stock(shop, "DOCK-9") == 5


def test_staged_picks_shipped_from_the_lane_raise_nothing(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 4)))
    apply(shop, pick("SO-1", "A", 4, "A-01", to="STAGE"))
    assert off_books(shop, "SO-1") == {1: 0} and stock(shop, "STAGE") == 4
    apply(shop, ship("SO-1", "A", 4, at="STAGE"))
    assert exceptions(shop, "") == []  # no order exception, no negative stock anywhere
    assert (stock(shop, "A-01"), stock(shop, "STAGE")) == (6, 0)
    assert od.get_order(shop, "SO-1").status == "closed"


def test_a_ship_takes_the_staged_first_and_counts_its_own_unpicked(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("A", 8)))
    first = pick("SO-1", "A", 2, "A-01")
    apply(shop, pick("SO-1", "A", 2, "A-01", to="STAGE"), first)
    apply(shop, ship("SO-1", "A", 2, at="STAGE"))  # the staged two: nothing to say
    assert exceptions(shop) == [] and off_books(shop, "SO-1") == {1: 2}
    later = ship("SO-1", "A", 6, at="A-01")  # the off-books two again, and four never picked
    apply(shop, later)
    assert exceptions(shop) == [(KIND, "SO-1", 1, later.id, 2)]
    assert first.id in detail(shop)[0]
    assert off_books(shop, "SO-1") == {1: 0} and line_state(shop, "SO-1")[1][2:4] == (8, 8)
    od.accept(shop, order_doc("SO-2", ("A", 1)))
    apply(shop, ship("SO-2", "A", 1, at="A-01"))  # shipped straight from the shelf
    assert len(exceptions(shop)) == 1


def test_a_pick_and_its_ship_in_one_batch(shop: Store) -> None:
    od.accept(shop, order_doc("SO-1", ("B", 2)))
    picked, shipped = pick("SO-1", "B", 2, "B-01"), ship("SO-1", "B", 2)
    apply(shop, picked, shipped)
    assert exceptions(shop) == [(KIND, "SO-1", 1, shipped.id, 2)]
    assert picked.id in detail(shop)[0]


@pytest.fixture
def empty(engine: str, tmp_path: Path) -> Iterator[str | Path]:
    """A store not yet migrated: a new SQLite file, or an empty PostgreSQL database."""
    if engine == "sqlite":
        yield tmp_path / "old.db"
        return
    from tests import pgkit

    with pgkit.database() as url:
        yield url


def test_the_migration_fills_what_open_lines_picked_off_the_books(
    empty: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines as 0017 left them (the hook of then kept no such figure): picked, shipped and
    staged say what is off the books."""
    before = next(n for n, (name, _) in enumerate(MIGRATIONS)
                  if name == "0018_order_ship_off_books")
    with monkeypatch.context() as patch:
        patch.setattr(db, "MIGRATIONS", MIGRATIONS[:before])
        with Store(empty) as old:
            MasterData(old).import_items("sku,gtins\nSKU-A," + G["A"] + "\n")
            apply(old, receive("A", 10, "A-01"))
            for order in (order_doc("SO-1", ("A", 5)), order_doc("SO-2", ("A", 2)),
                          order_doc("SO-3", ("A", 1))):
                od.accept(old, order)
            with old._transaction() as cur:  # SO-1: 4 picked, 1 of them staged; SO-2 shipped
                cur.execute("UPDATE order_lines SET picked = 4 WHERE order_id = 'SO-1'")
                cur.execute("INSERT INTO order_allocations (order_id, line, site, item,"
                            " location, lot, allocated, qty, staged, allocated_at) VALUES"
                            " ('SO-1', 1, 'wh1', ?, 'STAGE', '', 1, 1, TRUE, 'now')", (G["A"],))
                cur.execute("UPDATE order_lines SET picked = 2, shipped = 2, status = 'closed'"
                            " WHERE order_id = 'SO-2'")
    with Store(empty) as store:
        with_items(store)
        assert [off_books(store, o) for o in ("SO-1", "SO-2", "SO-3")] == [
            {1: 3}, {1: 0}, {1: 0}]
        shipped = ship("SO-1", "A", 5, at="STAGE")
        apply(store, shipped)
        assert exceptions(store) == [(KIND, "SO-1", 1, shipped.id, 3)]
        with pytest.raises(Exception, match=r"(?i)check"), store._transaction() as cur:
            cur.execute("INSERT INTO exceptions (kind, raised_at, detail)"  # others: refused
                        " VALUES ('whatever', 'now', 'x')")


def test_a_ship_releases_only_what_is_staged_where_it_ships_from(shop: Store) -> None:
    """3 picked off the books, 2 picked to the lane STAGE-1; a ship of 3 from the door is the 3
    already off the books (the lane's 2 are still there), and the lane's ship raises nothing."""
    od.accept(shop, order_doc("SO-4", ("A", 5)))
    apply(shop, pick("SO-4", "A", 3, "A-01"), pick("SO-4", "A", 2, "A-01", to="STAGE-1"))
    assert off_books(shop, "SO-4") == {1: 3}
    from_door = ship("SO-4", "A", 3)
    assert apply(shop, from_door) == ["applied"]
    assert exceptions(shop) == [(KIND, "SO-4", 1, from_door.id, 3)]
    staged = shop._query("SELECT location, qty FROM order_allocations WHERE order_id = 'SO-4'"
                         " AND staged AND qty > 0")
    assert [(loc, float(q)) for loc, q in staged] == [("STAGE-1", 2)]
    assert apply(shop, ship("SO-4", "A", 2, at="STAGE-1")) == ["applied"]
    assert len(exceptions(shop)) == 1 and stock(shop, "STAGE-1") == 0
    assert line_state(shop, "SO-4")[1][2:4] == (5, 5)
