"""The floor's copy of an order (its pick list as ``edge.expected``) told after every committed
change: accepted, picked, filled, shipped (withdrawn), cancelled (withdrawn)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.edge.expected import Expected, decode_expected, encode_expected
from floorsync.server import orderdesk, picking
from floorsync.server import orders as od
from floorsync.server.ledger import Store
from tests.server.orderkit import SITE, G, apply, order_doc, pick, receive, ship, with_items

Told = tuple[str, str, str, Expected | None]


@pytest.fixture
def shop(database: str | Path) -> Iterator[tuple[Store, list[Told]]]:
    told: list[Told] = []

    def listen(kind: str, site: str, ident: str, expected: Expected | None) -> None:
        told.append((kind, site, ident, expected))

    with Store(database) as store:
        with_items(store)
        apply(store, receive("A", 5, "A-01"), receive("B", 2, "B-01", lot="L1"))
        desk = picking.install(store)
        desk.add_listener(listen)
        yield store, told
        desk.remove_listener(listen)


def heard(store: Store, told: list[Told]) -> list[Told]:
    desk = picking.install(store)
    assert desk.wait_idle()
    out = list(told)
    told.clear()
    return out


def test_the_floor_hears_each_committed_change_of_an_order(
    shop: tuple[Store, list[Told]]
) -> None:
    store, told = shop
    od.accept(store, order_doc("SO-1", ("A", 3), ("B", 2, "L1"), ("C", 1)))
    ((kind, site, ident, copy),) = heard(store, told)
    assert (kind, site, ident) == ("order", SITE, "SO-1")
    assert copy is not None and copy.kind == "order" and copy.labels == ("ORD:SO-1",)
    assert copy.version == od.get_order(store, "SO-1").version
    assert [(ln.item.sku, ln.item.gtin, ln.item.lot, ln.qty, ln.location) for ln in copy.lines] \
        == [("SKU-A", G["A"], None, 3, "A-01"), ("SKU-B", G["B"], "L1", 2, "B-01")]
    assert decode_expected(encode_expected(copy)) == copy  # the wire form round-trips

    apply(store, pick("SO-1", "A", 3, "A-01"))
    ((_, _, _, copy),) = heard(store, told)
    assert copy is not None and [ln.item.sku for ln in copy.lines] == ["SKU-B"]
    assert copy.version == od.get_order(store, "SO-1").version

    apply(store, receive("D", 4, "D-01"))  # nothing of the order: nothing to tell
    assert heard(store, told) == []

    apply(store, receive("C", 1, "C-01"))  # fills its backorder: a new line to pick
    ((_, _, _, copy),) = heard(store, told)
    assert copy is not None and ("SKU-C", 1, "C-01") in [
        (ln.item.sku, ln.qty, ln.location) for ln in copy.lines]

    apply(store, ship("SO-1", "A", 3), ship("SO-1", "B", 2, lot="L1"), ship("SO-1", "C", 1))
    assert heard(store, told) == [("order", SITE, "SO-1", None)]  # closed: withdrawn


def test_a_cancel_withdraws_and_tells_the_order_that_got_the_stock(
    shop: tuple[Store, list[Told]]
) -> None:
    store, told = shop
    od.accept(store, order_doc("SO-1", ("A", 5)))
    od.accept(store, order_doc("SO-2", ("A", 2)))
    heard(store, told)
    od.cancel(store, "SO-1", "ann", None)
    news = {ident: copy for _, _, ident, copy in heard(store, told)}
    assert news["SO-1"] is None
    copy = news["SO-2"]
    assert copy is not None and [(ln.qty, ln.location) for ln in copy.lines] == [(2, "A-01")]
    assert od.expected(store) == [copy]


def test_a_closed_store_is_not_kept_alive_by_its_order_desk(tmp_path: Path) -> None:
    def use() -> weakref.ref[Store]:
        with Store(tmp_path / "gone.db") as store:
            picking.install(store)
            assert store in orderdesk._desks
            return weakref.ref(store)

    gone = use()
    gc.collect()
    assert gone() is None
