"""The backlog (work not done yet, with its age), never mixed with backorders (demand we cannot
meet for lack of stock): built from a real receipt, real orders and real floor events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server import backlog as bl
from floorsync.server import orders
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from tests.server import orderkit as ok
from tests.server.receiptfixtures import GTIN_A, document, load_items, receive


def later() -> datetime:
    """An hour from now: what was done now has waited an hour by then."""
    return datetime.now(UTC) + timedelta(hours=1)


def test_receipts_open_and_received_not_put_away(store: Store) -> None:
    load_items(store)
    book_of(store).accept(document(), by="tok")
    assert bl.backlog(store, "wh1").receipts[0].received == 0
    store.apply_batch(wire.Batch("wh1", "door-1", wire.utc_now(),
                                 (receive(qty=6), receive(qty=1))), source="mqtt")
    found = bl.backlog(store, "wh1", later())
    (receipt,) = found.receipts
    assert (receipt.id, receipt.expected, receipt.received) == ("ASN-1", 19, 7)
    assert receipt.age_s > 0
    (line,) = found.not_put_away
    assert (line.location, line.item, line.qty) == ("DOCK-1", GTIN_A, 7)
    assert 3500 < line.age_s < 3700  # received just now, seen an hour later
    # put four away: three wait, since the oldest receive after the last move out
    away = wire.Event(wire.new_event_id(), 90, wire.local_now(), "putaway",
                      wire.Item(gtin=GTIN_A), 4, "DOCK-1", "A-01-01", "op-1")
    results = store.apply_batch(wire.Batch("wh1", "hh-1", wire.utc_now(), (away,)), source="mqtt")
    assert [r.status for r in results] == ["applied"]
    (line,) = bl.backlog(store, "wh1", later()).not_put_away
    assert line.qty == 3
    book_of(store).close("ASN-1", by="tok")
    assert bl.backlog(store, "wh1").receipts == []
    assert bl.backlog(store, "elsewhere").not_put_away == []


def test_order_lines_exceptions_and_devices_but_no_backorders(store: Store) -> None:
    ok.with_items(store)
    ok.apply(store, ok.receive("A", 5, "A-01"))
    orders.accept(store, ok.order_doc("SO-1", ("A", 3), ("B", 2)))  # B: none in stock
    ok.apply(store, ok.pick("SO-1", "A", 1, "A-01", to="PACK-1"))
    ok.apply(store, ok.pick("SO-9", "A", 1, "A-01", to="PACK-1"))  # unknown order: exception
    store.update_presence("wh1", "hh-01", wire.Status(
        "online", wire.utc_now(), backlog=12, last_seq=3, oldest_unsynced_s=40.0))
    found = bl.backlog(store, "wh1", later())
    states = {(b.order_id, b.line, b.state): b.qty for b in found.order_lines}
    assert states == {("SO-1", 1, "allocated"): 2, ("SO-1", 1, "picked"): 1}
    assert all(b.age_s > 3500 for b in found.order_lines)
    assert ("SO-1", 2) not in {(b.order_id, b.line) for b in found.order_lines}  # a backorder
    assert ok.open_backorders(store) == {("SO-1", 2): 2}
    assert [(e.kind, e.open) for e in found.exceptions] == [("order_unknown", 1)]
    (device,) = found.devices
    assert (device.device, device.backlog, device.oldest_unsynced_s) == ("hh-01", 12, 40.0)


def test_the_backlog_endpoint_reads_and_refuses_bad_sites(client: TestClient, store: Store
                                                          ) -> None:
    load_items(store)
    book_of(store).accept(document(), by="tok")
    found = client.get("/api/v1/backlog", params={"site": "wh1"})
    assert found.status_code == 200, found.text
    body = found.json()
    assert [r["id"] for r in body["receipts"]] == ["ASN-1"]
    assert set(body) == {"generated_at", "receipts", "not_put_away", "order_lines",
                         "exceptions", "devices"}
    assert client.get("/api/v1/backlog", params={"site": "a/b"}).status_code == 422
