"""A batch a central replica applies (server/replica.py) goes through the documents' batch
hooks as one the HTTP app's ingest applies: a receive fills a backorder, a scan against an
unknown receipt raises receipt_unknown. Real PostgreSQL; the replica's own decode-and-apply
path (``Replica._process``, what it runs for each fetched group), without NATS."""

from __future__ import annotations

from floorsync.edge import wire
from floorsync.server import orders
from floorsync.server.ledger import Store
from floorsync.server.replica import SUBJECT_PREFIX, Replica, subject_of
from tests.server import orderkit as k


def _through_replica(url: str, *events: wire.Event) -> list[str]:
    replica = Replica(["nats://127.0.0.1:1"], url)  # no NATS needed for _process
    subject = SUBJECT_PREFIX + subject_of(wire.events_topic(k.SITE, k.DEV))
    batch = wire.Batch(k.SITE, k.DEV, wire.utc_now(), events)
    try:
        _group, results = replica._process([(subject, wire.encode_batch(batch))])
    finally:
        replica._close_store()
    (applied,) = results
    assert applied is not None
    return [r.status for r in applied]


def test_a_receive_applied_by_a_replica_fills_the_backorder(pg_url: str) -> None:
    with Store(pg_url) as central:
        k.with_items(central)
        (line,) = orders.accept(central, k.order_doc("SO-R1", ("A", 5)))[0].lines
        assert (line.allocated, line.backordered) == (0, 5)
        assert _through_replica(pg_url, k.receive("A", 5, "DOCK-1")) == ["applied"]
        (line,) = orders.get_order(central, "SO-R1").lines
        assert (line.allocated, line.backordered) == (5, 0)


def test_a_scan_against_an_unknown_receipt_applied_by_a_replica_raises(pg_url: str) -> None:
    with Store(pg_url) as central:
        k.with_items(central)
        scan = wire.Event(wire.new_event_id(), 1, wire.local_now(), "receive",
                          wire.Item(gtin=k.G["B"]), 1, None, "DOCK-1", "op-1",
                          doc=wire.DocRef("receipt", "ASN-NONE", "unknown"))
        assert _through_replica(pg_url, scan) == ["applied"]  # kept, never refused
        rows = central._query("SELECT kind, event_id FROM exceptions")
        assert [tuple(r) for r in rows] == [("receipt_unknown", scan.id)]
