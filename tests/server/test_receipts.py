"""Expected receipts in the ledger's own terms: accepted whole and once, verified by real receive
events applied through ``Store.apply_batch``, closed with their discrepancies."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.edge import expected as floor
from floorsync.edge import wire
from floorsync.server import receipts
from floorsync.server.errors import Refused
from floorsync.server.ledger import Store
from floorsync.server.locations import LocationSpec
from floorsync.server.masterdata import MasterData
from floorsync.server.receiptdocs import ReceiptRejected
from floorsync.server.receipts import ReceiptBook, book_of
from tests.server.helpers import batch, fail_insert, mend_insert
from tests.server.receiptfixtures import (
    GTIN_A,
    GTIN_B,
    GTIN_C,
    PALLET_1,
    PALLET_2,
    document,
    epc,
    load_items,
    receive,
)

TABLES = ("receipts", "receipt_lines", "receipt_pallets", "receipt_epcs")


@pytest.fixture
def book(store: Store) -> Iterator[ReceiptBook]:
    load_items(store)
    yield book_of(store)


def rows(store: Store, table: str) -> int:
    return int(store._query(f"SELECT COUNT(*) FROM {table}")[0][0])


def exceptions(store: Store, kind: str | None = None) -> list[tuple[object, ...]]:
    where = "" if kind is None else f" WHERE kind = '{kind}'"
    return store._query("SELECT kind, status, item, lot, quantity, occurrences, event_id,"
                        f" last_event_id, detail FROM exceptions{where} ORDER BY id")


def on_hand(store: Store) -> float:
    return float(store._query("SELECT COALESCE(SUM(quantity), 0) FROM stock")[0][0])


def apply(store: Store, *events: object, site: str = "wh1") -> list[str]:
    results = store.apply_batch(batch(site, "door-1", *events), source="mqtt")  # type: ignore[arg-type]
    return [r.status for r in results]


# --- accepting ------------------------------------------------------------------------------


def test_a_receipt_is_kept_with_its_lines_pallets_and_expected_list(book: ReceiptBook) -> None:
    receipt, created = book.accept(document(), by="tok")
    assert created and receipt.status == "open" and receipt.version == 1
    assert receipt.label == "ASN:ASN-1" and receipt.location == "DOCK-1"
    assert [(ln.line, ln.item, ln.sku, ln.lot, ln.sscc, ln.expected, ln.received, ln.status)
            for ln in receipt.lines] == [
        (1, GTIN_A, "SKU-A", None, None, 10, 0, "waiting"),
        (2, "SKU-B", "SKU-B", "L1", None, 5, 0, "waiting"),
        (3, GTIN_A, "SKU-A", "P1", PALLET_1, 4, 0, "waiting"),
    ]
    assert [(p.sscc, p.epcs_expected, p.received) for p in receipt.pallets] == [
        (PALLET_1, 3, None), (PALLET_2, 0, None)]
    sent = book.expected("ASN-1")
    assert sent is not None
    assert floor.decode_expected(floor.encode_expected(sent)) == sent  # the wire takes it
    assert (sent.kind, sent.site, sent.version, sent.location, sent.labels) == (
        "receipt", "wh1", 1, "DOCK-1", ("ASN:ASN-1",))
    assert [(ln.item.gtin, ln.item.sku, ln.item.lot, ln.qty) for ln in sent.lines] == [
        (GTIN_A, "SKU-A", None, 10), (GTIN_B, "SKU-B", "L1", 5)]  # B named by SKU: its GTIN too
    assert [(p.sscc, p.epcs, [ln.qty for ln in p.lines]) for p in sent.pallets] == [
        (PALLET_1, (epc(1), epc(2), epc(3)), [4]), (PALLET_2, (), [])]
    assert book.open_expected() == [sent]


def test_the_same_document_again_changes_nothing_and_another_under_its_id_is_refused(
    book: ReceiptBook, store: Store
) -> None:
    first, _ = book.accept(document())
    again = document()
    again["lines"][0]["gtin"] = GTIN_A.lstrip("0")  # GTIN-13 of the same item: the same line
    again = dict(reversed(list(again.items())))  # key order means nothing
    second, created = book.accept(again)
    assert not created and second == first
    assert [rows(store, t) for t in TABLES] == [1, 3, 2, 3]
    changed = document()
    changed["lines"][0]["qty"] = 11
    with pytest.raises(Refused) as refused:
        book.accept(changed)
    assert refused.value.status == 409
    assert book.receipt("ASN-1").lines[0].expected == 10  # the first stands
    assert [rows(store, t) for t in TABLES] == [1, 3, 2, 3]


def test_a_bad_document_names_every_bad_place_and_keeps_nothing(
    book: ReceiptBook, store: Store
) -> None:
    bad = document(expected_date="23.11.2026", colour="red", lines=[
        {"gtin": "09501101530004", "qty": 1},  # check digit
        {"gtin": "09501101530010", "qty": 1},  # a GTIN nobody has
        {"sku": "SKU-A", "qty": "5"},  # a number as text
        {"sku": "SKU-B", "qty": -2},
        {"sku": "SKU-A", "qty": 0},
        {"qty": 3},  # no item
        {"sku": "NOPE", "qty": 1, "lot": "has blank"},
        {"gtin": GTIN_B, "sku": "SKU-A", "qty": 1},  # GTIN of another SKU
        {"sku": "SKU-A", "qty": 2},  # a duplicate of the next one, by GTIN
        {"gtin": GTIN_A, "qty": 3},
        "not a line",
    ], pallets=[
        {"sscc": "106141411234567890", "epcs": ["urn:epc:id:sgtin:0614141.812345.1", "junk",
                                                "https://id.gs1.org/01/80614141123458/21/1"]},
        {"sscc": PALLET_2, "epcs": ["urn:epc:id:sgtin:0614141.812346.1"]},  # GTIN unknown
        {"sscc": PALLET_2},
    ])
    with pytest.raises(ReceiptRejected) as rejected:
        book.accept(bad)
    found = {e.path: e.reason for e in rejected.value.errors}
    assert sorted(found) == sorted([
        "$.colour", "$.expected_date",
        "$.lines[0].gtin", "$.lines[1].gtin", "$.lines[2].qty", "$.lines[3].qty",
        "$.lines[4].qty", "$.lines[5]", "$.lines[6].sku", "$.lines[6].lot", "$.lines[7]",
        "$.lines[9]", "$.lines[10]",
        "$.pallets[0].sscc", "$.pallets[0].epcs[1]", "$.pallets[0].epcs[2]",
        "$.pallets[1].epcs[0]", "$.pallets[2].sscc",
    ])
    assert "must be a number" in found["$.lines[2].qty"]
    assert "not in master data" in found["$.lines[1].gtin"]
    assert "duplicate line" in found["$.lines[9]"] and "$.lines[8]" in found["$.lines[9]"]
    assert "YYYY-MM-DD" in found["$.expected_date"]
    assert "also $.pallets[0].epcs[0]" in found["$.pallets[0].epcs[2]"]  # URN and Digital Link
    assert rejected.value.total == len(found)
    assert [rows(store, t) for t in TABLES] == [0, 0, 0, 0]


@pytest.mark.parametrize("garbage", [None, [], "ASN", 7, {"id": "ASN-1"}, {"lines": {}},
                                     document(id="no/slash"), document(site=""),
                                     document(expected_date="2026-02-30"),
                                     document(lines=[], pallets=[]), document(supplier="\x00"),
                                     document(location="NOWHERE")])
def test_garbage_and_truncated_documents_are_refused_whole(
    book: ReceiptBook, store: Store, garbage: object
) -> None:
    MasterData(store).create_location(LocationSpec("wh1", "wh1", "site"))
    MasterData(store).create_location(LocationSpec("wh1", "DOCK-1", "bin", "wh1"))
    with pytest.raises(ReceiptRejected) as rejected:
        book.accept(garbage)
    assert rejected.value.errors
    assert [rows(store, t) for t in TABLES] == [0, 0, 0, 0]


def test_a_document_is_one_transaction(book: ReceiptBook, store: Store) -> None:
    """A failure while its lines are written (a real database abort at the 2nd EPC) leaves
    nothing of it; the same document goes in whole afterwards."""
    fail_insert(store, "receipt_epcs", "NEW.ordinal = 1", "disk on fire")
    with pytest.raises(Exception, match="disk on fire"):
        book.accept(document())
    assert [rows(store, t) for t in TABLES] == [0, 0, 0, 0]
    mend_insert(store, "receipt_epcs")
    assert book.accept(document())[1]
    assert [rows(store, t) for t in TABLES] == [1, 3, 2, 3]


# --- verifying against what arrives ---------------------------------------------------------


def test_expected_over_and_later_overs_add_to_one_record(book: ReceiptBook, store: Store
                                                          ) -> None:
    book.accept(document())
    assert apply(store, receive(qty=6), receive(qty=4)) == ["applied", "applied"]
    line = book.receipt("ASN-1").lines[0]
    assert (line.received, line.difference, line.status) == (10, 0, "complete")
    assert exceptions(store) == []
    # the loose line is full: A without a lot goes on to the pallet's lot line, then over
    over = receive(qty=6)
    assert apply(store, over) == ["applied"]
    lines = book.receipt("ASN-1").lines
    assert [(ln.line, ln.received, ln.status) for ln in lines] == [
        (1, 10, "complete"), (2, 0, "waiting"), (3, 6, "over")]
    (raised,) = exceptions(store, "receipt_over")
    assert raised[:6] == ("receipt_over", "open", GTIN_A, "P1", 2.0, 1)
    assert raised[6] == over.id
    again = receive(qty=1)
    apply(store, again)
    (raised,) = exceptions(store, "receipt_over")
    assert raised[4:8] == (3.0, 2, over.id, again.id)
    assert on_hand(store) == 17  # every movement applied as it was


def test_unexpected_items_and_lots_raise_one_record_each(book: ReceiptBook, store: Store) -> None:
    book.accept(document())
    first, second = receive(gtin=None, sku="SKU-D", qty=2), receive(gtin=None, sku="SKU-D")
    wrong_lot = receive(gtin=GTIN_B, lot="L9", qty=3)
    assert apply(store, first, second, wrong_lot) == ["applied"] * 3
    found = {(x[2], x[3]): x for x in exceptions(store, "receipt_unexpected")}
    assert set(found) == {("SKU-D", None), (GTIN_B, "L9")}
    assert found[("SKU-D", None)][4:8] == (3.0, 2, first.id, second.id)
    receipt = book.receipt("ASN-1")
    assert [(u.item, u.lot, u.qty, u.events) for u in receipt.unexpected] == [
        (GTIN_B, "L9", 3, 1), ("SKU-D", None, 3, 2)]
    assert receipt.lines[1].received == 0  # lot L9 is not the L1 expected
    assert on_hand(store) == 6


def test_a_lotless_scan_fills_a_lot_line_and_a_sku_line_takes_any_of_its_gtins(
    book: ReceiptBook, store: Store
) -> None:
    book.accept(document())
    apply(store, receive(gtin=GTIN_B, qty=2), receive(gtin=None, sku="SKU-B", lot="L1", qty=3))
    line = book.receipt("ASN-1").lines[1]
    assert (line.received, line.status) == (5, "complete")
    assert exceptions(store) == []


def test_unknown_closed_and_other_sites_receipts_raise_and_never_refuse(
    book: ReceiptBook, store: Store
) -> None:
    book.accept(document())
    stray = [receive(doc="ASN-404", qty=2), receive(doc="ASN-404", qty=3)]
    assert apply(store, *stray) == ["applied", "applied"]
    (unknown,) = exceptions(store, "receipt_unknown")
    assert unknown[:2] == ("receipt_unknown", "open") and unknown[4:8] == (
        5.0, 2, stray[0].id, stray[1].id)
    assert "'ASN-404' is unknown" in str(unknown[8])
    assert apply(store, receive(), site="wh2") == ["applied"]
    assert "is for site 'wh1'" in str(exceptions(store, "receipt_unknown")[1][8])
    apply(store, receive(qty=3))
    book.close("ASN-1", by="boss")
    late = receive(qty=7)
    assert apply(store, late) == ["applied"]
    closed = exceptions(store, "receipt_unknown")[2]
    assert "was closed at" in str(closed[8]) and closed[6] == late.id
    assert book.receipt("ASN-1").lines[0].received == 3  # counted up to its close only
    assert on_hand(store) == 5 + 1 + 3 + 7


def test_a_pallet_by_its_sscc_is_received_whole_and_again_is_over(book: ReceiptBook,
                                                                    store: Store) -> None:
    book.accept(document())
    apply(store, receive(gtin=GTIN_A, lot="P1", qty=1))  # a case of it first, by barcode
    pallet = receive(doc=None, gtin=None, sscc=PALLET_1,
                     epc_uri="urn:epc:id:sscc:0614141.1234567890")
    assert apply(store, pallet) == ["applied"]  # no doc: the receipt's SSCC finds it
    receipt = book.receipt("ASN-1")
    assert receipt.pallets[0].received == "sscc" and receipt.pallets[0].missing_epcs == ()
    assert receipt.lines[2].received == 4  # what was left of it is filled, no more
    assert exceptions(store) == []
    apply(store, receive(doc=None, gtin=GTIN_C, serial="2", epc_uri=epc(2)))  # confirms only
    assert exceptions(store) == [] and book.receipt("ASN-1").pallets[0].repeats == 0
    apply(store, receive(gtin=None, sscc=PALLET_1))
    (over,) = exceptions(store, "receipt_over")
    assert over[2] == PALLET_1 and book.receipt("ASN-1").pallets[0].repeats == 1


def test_listed_epcs_count_once_by_urn_or_gtin_and_serial_and_a_repeat_is_over(
    book: ReceiptBook, store: Store
) -> None:
    book.accept(document())
    door = receive(doc=None, gtin=GTIN_C, serial="1", epc_uri=epc(1))
    handheld = receive(gtin=GTIN_C, serial="3")  # a barcode with AI 21: no EPC, same case
    assert apply(store, door, handheld, door) == ["applied", "applied", "duplicate"]
    apply(store, door)  # the same event re-sent later: still once
    pallet = book.receipt("ASN-1").pallets[0]
    assert (pallet.received, pallet.epcs_received, pallet.missing_epcs) == (
        "epc", 2, (epc(2),))
    assert exceptions(store) == []
    assert book.receipt("ASN-1").lines[0].received == 0  # listed cases fill no class line
    apply(store, receive(doc=None, gtin=GTIN_C, serial="1", epc_uri=epc(1)))  # read again
    (over,) = exceptions(store, "receipt_over")
    assert over[2] == PALLET_1
    apply(store, receive(doc=None, gtin=GTIN_C, serial="99", epc_uri=epc(99)))  # not listed,
    assert exceptions(store, "receipt_unexpected") == []  # no doc: not this receipt's business


def test_a_replayed_batch_counts_and_raises_nothing_twice(book: ReceiptBook, store: Store
                                                          ) -> None:
    book.accept(document())
    events = [receive(qty=15), receive(gtin=None, sku="SKU-D"), receive(doc="NOPE")]
    twice = batch("wh1", "door-1", *events)
    store.apply_batch(twice, source="mqtt")
    before = exceptions(store)
    assert [r.status for r in store.apply_batch(twice, source="mqtt")] == ["duplicate"] * 3
    assert exceptions(store) == before and len(before) == 3
    assert book.receipt("ASN-1").lines[0].received == 10


def test_other_movements_and_documents_are_left_alone(book: ReceiptBook, store: Store) -> None:
    book.accept(document())
    order = replace(receive(qty=4), doc=wire.DocRef("order", "ASN-1"))  # an order's own id
    apply(store, receive(type="putaway", qty=1), receive(qty=2), order)
    assert book.receipt("ASN-1").lines[0].received == 2
    assert [x for x in exceptions(store) if str(x[0]).startswith("receipt_")] == []


# --- closing --------------------------------------------------------------------------------


def test_closing_records_discrepancies_raises_shorts_and_withdraws(book: ReceiptBook,
                                                                    store: Store) -> None:
    heard: list[tuple[str, str, str, floor.Expected | None]] = []
    book.add_listener(lambda *told: heard.append(told))
    book.accept(document())
    apply(store, receive(qty=15), receive(gtin=None, sku="SKU-D"),
          receive(doc=None, gtin=GTIN_C, serial="1", epc_uri=epc(1)))
    closed = book.close("ASN-1", by="boss")
    assert (closed.status, closed.version, closed.closed_by) == ("closed", 2, "boss")
    assert [(d.kind, d.line, d.sscc, d.item, d.expected, d.received, d.difference)
            for d in closed.discrepancies] == [
        ("short", 2, None, "SKU-B", 5, 0, -5),
        ("over", 3, PALLET_1, GTIN_A, 4, 5, 1),
        ("short", None, PALLET_1, PALLET_1, 3, 1, -2),
        ("short", None, PALLET_2, PALLET_2, 1, 0, -1),
        ("unexpected", None, None, "SKU-D", 0, 1, 1),
    ]
    shorts = exceptions(store, "receipt_short")
    assert [(x[2], x[4]) for x in shorts] == [("SKU-B", -5.0), (PALLET_1, -2.0),
                                              (PALLET_2, -1.0)]
    assert all(d.exception_id is not None for d in closed.discrepancies)
    assert [ln.status for ln in closed.lines] == ["complete", "short", "over"]
    assert book.expected("ASN-1") is None and book.open_expected() == []
    assert [(k, s, i, e is None) for k, s, i, e in heard] == [
        ("receipt", "wh1", "ASN-1", False), ("receipt", "wh1", "ASN-1", True)]
    with pytest.raises(Refused) as again:
        book.close("ASN-1", by="boss")
    assert again.value.status == 409
    with pytest.raises(Refused) as unknown:
        book.close("ASN-2", by="boss")
    assert unknown.value.status == 404
    assert len(exceptions(store, "receipt_short")) == 3


def test_a_receipt_may_arrive_after_its_goods(book: ReceiptBook, store: Store) -> None:
    """Cases read before the ASN was entered (no doc) count once it lists them."""
    apply(store, receive(doc=None, gtin=GTIN_C, serial="2", epc_uri=epc(2)))
    book.accept(document())
    assert book.receipt("ASN-1").pallets[0].epcs_received == 1


def test_the_book_is_one_per_store(tmp_path: Path) -> None:
    with Store(tmp_path / "l.db") as store:
        load_items(store)
        assert book_of(store) is book_of(store)
        book_of(store).accept(document())
        apply(store, receive(qty=15))
        assert len(exceptions(store, "receipt_over")) == 1  # one hook, one record


def test_a_closed_store_is_not_kept_alive_by_its_book(tmp_path: Path) -> None:
    def use() -> weakref.ref[Store]:
        with Store(tmp_path / "gone.db") as store:
            book_of(store).receipts()
            assert store in receipts._books
            return weakref.ref(store)

    gone = use()
    gc.collect()
    assert gone() is None
