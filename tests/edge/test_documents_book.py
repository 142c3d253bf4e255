"""The edge's document book on a real outbox: reception (versions, withdrawal, garbage), lookups,
and counting in the events' own transaction (lines filled in order, over, unexpected, EPCs,
pallets, unknown documents), across restarts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.devices.codes import interpret_epc
from floorsync.edge import wire
from floorsync.edge.doclines import sgtin_parts, sscc_of
from floorsync.edge.documents import Against, AtDoor, DocumentBook, Undoing, read_tallies
from floorsync.edge.errors import OutboxError, OutboxFull
from floorsync.edge.expected import ExpectedPallet, docs_topic, encode_expected
from floorsync.edge.outbox import Outbox
from tests.edge.docfixtures import (
    GTIN_A,
    GTIN_B,
    GTIN_C,
    SITE,
    attributions,
    case_tag,
    case_uri,
    doc_exceptions,
    give,
    line,
    order,
    pallet_tag,
    receipt,
    topic,
)
from tests.factories import event


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db")


def receive(gtin: str = GTIN_A, lot: str | None = None, qty: float = 1, **item: str
            ) -> wire.Event:
    e = event(gtin=gtin, lot=lot, qty=qty)
    return replace(e, item=wire.Item(gtin=gtin, lot=lot, **item) if gtin else wire.Item(**item))


def checks(book: DocumentBook, events: list[wire.Event], claim: object,
           source: str = "hh-1") -> list[str | None]:
    kept = book.keep(events, [claim] * len(events), source=source)  # type: ignore[list-item]
    return [None if e.doc is None else e.doc.check for e in kept.events]


# --- reception ----------------------------------------------------------------------------


def test_versions_only_go_up_and_a_withdrawn_document_stays_withdrawn(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    v1, v2, v3 = (receipt("ASN-1", line(n, GTIN_A), version=n) for n in (1, 2, 3))
    assert give(book, v2, v1, v2) == ["kept", "older", "same"]
    sheet = book.get("receipt", "ASN-1")
    assert sheet is not None and sheet.doc == v2
    assert book.receive(topic(v2), b"") == "withdrawn"
    assert book.get("receipt", "ASN-1") is None and book.by_label("ASN:ASN-1") is None
    assert give(book, v2, v1) == ["older", "older"]  # a late copy does not reopen it
    assert book.receive(topic(v2), b"") == "ignored"
    assert give(book, v3) == ["kept"]  # a newer version does
    assert book.receive(topic(receipt("ASN-9")), b"") == "ignored"  # never had it


def test_documents_and_tallies_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        book = DocumentBook(outbox, SITE)
        give(book, receipt("ASN-1", line(2, GTIN_A), location="DOCK-1"), order("SO-1"))
        assert checks(book, [receive(), receive()], Against("receipt", "ASN-1")) == [
            "expected", "expected"]
    with Outbox(path) as outbox:
        book = DocumentBook(outbox, SITE)  # nothing in memory: all from the database
        assert [(s.doc.kind, s.doc.id) for s in book.open()] == [("receipt", "ASN-1"),
                                                                 ("order", "SO-1")]
        assert book.by_label("ORD:SO-1") == ("order", "SO-1")
        assert checks(book, [receive()], Against("receipt", "ASN-1")) == ["over"]


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[]", "must be an object"),
    (b'{"v": 1, "kind": "receipt"}', "version must be"),
])
def test_garbage_is_recorded_and_the_book_goes_on(outbox: Outbox, payload: bytes,
                                                  reason: str) -> None:
    book = DocumentBook(outbox, SITE)
    good = receipt("ASN-1", line(1, GTIN_A))
    assert book.receive(topic(good), payload) == "refused"
    assert give(book, good) == ["kept"]
    (found,) = doc_exceptions(outbox)
    assert reason in found[0] and (found[1] or "").startswith(topic(good))
    assert book.refused == 1


def test_every_truncation_of_a_document_is_refused_never_half_kept(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    doc = receipt("ASN-1", line(24, GTIN_A, lot="L1"), line(1, epc=case_uri(6789)),
                  pallets=(ExpectedPallet(pallet_tag(1)[1], (case_uri(6790),),
                                          (line(12, GTIN_B),)),))
    whole = encode_expected(doc)
    for cut in range(1, len(whole)):
        assert book.receive(topic(doc), whole[:cut]) == "refused"
    assert book.get("receipt", "ASN-1") is None and outbox.documents() == []
    assert len(doc_exceptions(outbox)) == len(whole) - 1
    assert book.receive(topic(doc), whole) == "kept"


def test_another_sites_or_a_mismatched_document_is_ignored_and_recorded(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    other = receipt("ASN-1", line(1, GTIN_A), site="wh2")
    assert book.receive(topic(other), encode_expected(other)) == "refused"  # other site's topic
    assert book.receive(topic(other, SITE), encode_expected(other)) == "refused"  # its payload
    mine = receipt("ASN-2", line(1, GTIN_A))
    assert book.receive(docs_topic(SITE, "receipt", "ASN-3"), encode_expected(mine)) == "refused"
    assert book.receive(docs_topic(SITE, "order", "ASN-2"), encode_expected(mine)) == "refused"
    assert book.receive("floorsync/v1/wh1/docs/invoice/X", b"{}") == "refused"
    reasons = [r for r, _ in doc_exceptions(outbox)]
    assert "site 'wh2'" in reasons[0] and "'wh2'" in reasons[1]
    assert "on the topic of receipt ASN-3" in reasons[2] and "order ASN-2" in reasons[3]
    assert "not a floorsync v1 document topic" in reasons[4]
    assert book.open() == [] and outbox.documents() == []


# --- counting -----------------------------------------------------------------------------


def test_lines_fill_in_order_and_the_rest_is_over(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    give(book, receipt("ASN-1", line(10, GTIN_A, lot="L1"), line(5, GTIN_A), line(3, GTIN_B)))
    at = Against("receipt", "ASN-1")
    assert checks(book, [receive(lot="L1", qty=8)], at) == ["expected"]
    assert checks(book, [receive(lot="L2", qty=5)], at) == ["expected"]  # the lot-less line
    # a case of 4 without a lot: 2 left on L1, then none elsewhere: over by 2
    assert checks(book, [receive(qty=4)], at) == ["over"]
    assert checks(book, [receive(GTIN_C)], at) == ["unexpected"]
    assert checks(book, [receive(GTIN_B, qty=3)], at) == ["expected"]
    rows = [(r[5], r[6], r[7], r[8]) for r in attributions(outbox)]
    assert rows == [("expected", 8, 0, 0), ("expected", 5, 0, 0), ("over", 2, 2, 0),
                    ("unexpected", 0, 0, 1), ("expected", 3, 0, 0)]


def test_an_epc_is_expected_once_then_over_and_never_fills_a_class_line(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    give(book, receipt("ASN-1", line(1, epc=case_uri(7)), line(5, "80614141123458")))
    at = Against("receipt", "ASN-1")
    tagged = receive("80614141123458", serial="7")  # a GS1 label of the same case: GTIN + serial
    assert checks(book, [tagged], at) == ["expected"]
    assert checks(book, [receive(epc=case_uri(7), gtin="")], at) == ["over"]
    assert checks(book, [receive("80614141123458", serial="8")], at) == ["expected"]  # class


def test_a_pallet_received_by_its_sscc_fills_its_lines(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    sscc = pallet_tag(1)[1]
    give(book, receipt("ASN-1", line(2, GTIN_A), pallets=(
        ExpectedPallet(sscc, (case_uri(1),), (line(10, GTIN_B),)),)))
    assert book.receipt_of_pallet(sscc) == "ASN-1"
    door = AtDoor("DOCK-1")
    tag = interpret_epc(pallet_tag(1)[0])  # the pallet's own tag, as a door decodes it
    assert tag.sscc == sscc

    def pallet() -> wire.Event:
        return receive("", sscc=tag.sscc or "", epc=tag.epc or "")

    assert checks(book, [pallet(), receive(GTIN_B), pallet()], door, "door:d1") == [
        "expected", "over", "over"]  # its lines are full: the case after it is over
    assert checks(book, [receive(epc=case_uri(1), gtin="")], door, "door:d1") == ["expected"]
    assert checks(book, [receive(GTIN_A, qty=2)], door, "door:d1") == ["expected"]


def test_an_unknown_document_is_checked_unknown_and_counted_by_nobody(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    kept = book.keep([receive()], [Against("receipt", "ASN-404")], source="hh-1")
    assert kept.events[0].doc == wire.DocRef("receipt", "ASN-404", "unknown")
    assert kept.bad == [] and "not known here" in (kept.notes[0] or "")
    assert attributions(outbox) == []


def test_an_undo_takes_back_what_its_event_was_counted_as(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    give(book, receipt("ASN-1", line(1, GTIN_A)))
    at = Against("receipt", "ASN-1")
    first = book.keep([receive()], [at], source="hh-1").events[0]
    second = book.keep([receive()], [at], source="hh-1").events[0]
    assert second.doc is not None and second.doc.check == "over"
    back = replace(event(type="adjust", qty=-1), item=second.item)
    (undone,) = book.keep([back], [Undoing(second.id)], source="hh-1").events
    assert undone.doc == wire.DocRef("receipt", "ASN-1", "over")
    (undone,) = book.keep([replace(back, id=wire.new_event_id())], [Undoing(first.id)],
                          source="hh-1").events
    assert undone.doc == wire.DocRef("receipt", "ASN-1", "expected")
    assert checks(book, [receive()], at) == ["expected"]  # the unit is free again


def test_nothing_is_counted_when_the_outbox_refuses_the_events(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", cap_bytes=100) as outbox:
        book = DocumentBook(outbox, SITE)
        give(book, receipt("ASN-1", line(1, GTIN_A)))
        with pytest.raises(OutboxFull):
            book.keep([receive()], [Against("receipt", "ASN-1")], source="hh-1")
        assert attributions(outbox) == []
        outbox.cap_bytes = 10 * 1024 * 1024
        assert checks(book, [receive()], Against("receipt", "ASN-1")) == ["expected"]


def test_an_event_id_kept_once_is_counted_once(outbox: Outbox) -> None:
    book = DocumentBook(outbox, SITE)
    give(book, receipt("ASN-1", line(1, GTIN_A)))
    once = receive()
    book.keep([once], [Against("receipt", "ASN-1")], source="hh-1")
    with pytest.raises(OutboxError):  # the same id again: refused whole, nothing counted
        book.keep([once], [Against("receipt", "ASN-1")], source="hh-1")
    assert len(attributions(outbox)) == 1
    assert checks(book, [receive()], Against("receipt", "ASN-1")) == ["over"]


def test_the_outbox_keeps_an_events_doc(outbox: Outbox) -> None:
    """The outbox numbers events by building them anew: the doc must go with them."""
    doc = wire.DocRef("order", "SO-1", "unexpected")
    (kept,) = outbox.add([replace(event(), doc=doc)])
    assert kept.doc == doc
    (payload,) = outbox.db.conn.execute("SELECT payload FROM outbox").fetchone()
    assert wire.event_from_dict(json.loads(payload)).doc == doc


def test_uri_conversions_agree_with_the_tag_decoder() -> None:
    for n in (0, 7, 274877906943):
        found = interpret_epc(case_tag(n))
        assert sgtin_parts(found.epc or "") == (found.gtin, found.serial)
    hex_tag, sscc = pallet_tag(42)
    assert sscc_of(interpret_epc(hex_tag).epc or "") == sscc == interpret_epc(hex_tag).sscc
    assert sgtin_parts("urn:epc:id:sgtin:0614141.812345.a%2Fb") == ("80614141123458", "a/b")
    for bad in ("urn:epc:id:sgtin:0614141.81234.1", "urn:epc:id:sgtin:x.812345.1",
                "urn:epc:id:sscc:0614141.123", "urn:epc:id:grai:0614141.12345.1"):
        assert sgtin_parts(bad) is None and sscc_of(bad) is None


def test_an_orders_copy_is_what_is_left_only_picks_not_yet_applied_count_against_it(
        tmp_path: Path) -> None:
    """The central service republishes an order as its picks are applied (what is still to
    pick): a pick it acked before the new copy came is in that copy, one not yet acked is not."""
    path = tmp_path / "outbox.db"
    at = Against("order", "SO-1")

    def pick() -> wire.Event:
        return replace(event(type="pick", gtin=GTIN_A, lot=None), item=wire.Item(gtin=GTIN_A))

    with Outbox(path) as outbox:
        book = DocumentBook(outbox, SITE)
        give(book, order("SO-1", line(3, GTIN_A)))
        first, second = (book.keep([pick()], [at], source="hh-1").events[0] for _ in range(2))
        outbox.take(10)
        outbox.settle([wire.Result(first.id, "applied")])  # the central service has the first
        give(book, order("SO-1", line(2, GTIN_A), version=2))  # what is left: 2, as it says
        # the second is not applied yet: of the 2 left, it takes one
        assert checks(book, [pick()], at) == ["expected"]
        assert checks(book, [pick()], at) == ["over"]
        (tally,) = read_tallies(path)
        assert (tally["expected"], tally["picked"], tally["over"], tally["short"]) == (2, 2, 1, 0)
        outbox.settle([wire.Result(second.id, "applied")])
    with Outbox(path) as outbox:  # after a restart: the same, from the database
        book = DocumentBook(outbox, SITE)
        assert checks(book, [pick()], at) == ["over"]
        give(book, order("SO-1", line(1, GTIN_A), version=3))  # the central service caught up
        assert checks(book, [pick()], at) == ["over"]  # the picks it has not applied fill it
