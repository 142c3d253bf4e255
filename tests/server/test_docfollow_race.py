"""The follower when a document closes between its scan of the open documents' versions and its
read of that document (server/docfollow.py ``Follower.changes``): another writer's commit lands
in between. Real store on both engines, a real commit by another store object in that gap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.edge import expected as floor
from floorsync.server import docfollow, orders, picking
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from tests.server.orderkit import SITE, apply, order_doc, receive, with_items


@pytest.fixture
def writer(database: Path | str, store: Store) -> Iterator[Store]:
    with_items(store)
    with Store(database) as other:
        picking.install(other)
        book_of(other)
        yield other


def test_a_document_closed_between_the_scan_and_its_read_is_withdrawn(
        store: Store, writer: Store) -> None:
    orders.accept(writer, order_doc("SO-1", ("A", 5)))  # backordered: nothing in stock
    follower = docfollow.Follower(store)
    assert [(d.kind, d.id) for d in follower.everything()] == [("order", "SO-1")]
    assert apply(writer, receive("A", 5, "A-01")) == ["applied"]  # fills it: a new version
    render = follower._render
    cancelled: list[str] = []

    def closed_first(kind: str, ident: str) -> floor.Expected | None:
        if not cancelled:  # committed after the scan saw it open, before it is read
            orders.cancel(writer, ident, "closed meanwhile", None)
            cancelled.append(ident)
        return render(kind, ident)

    follower._render = closed_first  # type: ignore[method-assign]
    assert follower.changes() == [((SITE, "order", "SO-1"), None)]
    assert cancelled == ["SO-1"]
    assert follower.changes() == []  # nothing left over: the next poll has nothing to say
