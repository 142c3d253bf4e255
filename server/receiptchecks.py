"""What arriving goods raise against receipts: the batch hook of the ledger.

It runs inside each applied batch's transaction (``Store.add_batch_hook``) with the batch's new
events. Receive events made against a receipt (``doc: {kind: receipt, id}``), and those without
a document of an EPC or SSCC an open receipt of their site lists, are laid against it; what goes
over it, what it does not name and events against a receipt that is unknown, of another site
or closed raise ``receipt_over``, ``receipt_unexpected`` and ``receipt_unknown``. One open
record per line, pallet, item or (receipt, site): later events add occurrences and move its
quantity, as the ledger does for unknown items. The movement itself is never refused nor
changed: physical truth wins.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from floorsync.edge import wire
from floorsync.server.ledger import AppliedBatch
from floorsync.server.receiptdocs import epc_ident, lot_text
from floorsync.server.receipttally import TOLERANCE, tally
from floorsync.server.receiptviews import Documents, arrivals, chunks, pallet_of

KIND = "receipt"
_INSERT_EXCEPTION = (
    "INSERT INTO exceptions (kind, raised_at, site, device, event_id, last_event_id, item, lot,"
    " location, quantity, detail, occurrences) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " RETURNING id"
)
OPEN_EXCEPTION = (
    "SELECT x.id FROM receipt_exceptions r JOIN exceptions x ON x.id = r.exception_id"
    " WHERE r.receipt_id = ? AND r.kind = ? AND r.subject = ? AND x.status = 'open'"
)


def check_batch(docs: Documents, cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
    """Receive events against receipts: over, unexpected and unknown raise exceptions."""
    by_doc: dict[str, list[wire.Event]] = {}
    loose: list[wire.Event] = []
    for event in applied.events:
        if event.type != "receive":
            continue
        if event.doc is not None:
            if event.doc.kind == KIND:
                by_doc.setdefault(event.doc.id, []).append(event)
        elif event.item is not None and (event.item.epc or event.item.sscc
                                         or event.item.serial):
            loose.append(event)
    if loose:
        for ident, event in _owners(cur, applied.site, loose):
            by_doc.setdefault(ident, []).append(event)
    for ident, events in by_doc.items():
        header = cur.execute("SELECT site, status, closed_at FROM receipts WHERE id = ?",
                             (ident,)).fetchone()
        if header is None or header[0] != applied.site or header[1] != "open":
            _unknown(cur, applied, ident, events, header)
        else:
            _judge(docs, cur, applied, ident, events)


def _judge(docs: Documents, cur: sqlite3.Cursor, applied: AppliedBatch, ident: str,
           fresh: list[wire.Event]) -> None:
    found = docs.laid_out(cur, ident)
    assert found is not None
    doc, layout = found
    counted = tally(layout, arrivals(cur, doc, None))
    events = {e.id: e for e in fresh}
    by_line = {ln.line: ln for ln in doc.lines}
    for number, overs in counted.over_events.items():
        ln, got = by_line[number], counted.received[number]
        over = got - ln.qty
        if over > TOLERANCE and (hit := [e for e in fresh if e.id in overs]):
            _flag(cur, applied, ident, "receipt_over", f"line:{ln.line}", hit, ln.item,
                  ln.lot, over, f"receipt {ident!r} line {ln.line}: {got:g} of"
                  f" {ln.item!r}{lot_text(ln.lot)} received, {ln.qty:g} expected")
    for sscc, pallet in counted.pallets.items():
        if pallet.repeats > TOLERANCE and (hit := [e for e in fresh
                                                   if e.id in pallet.repeat_events]):
            _flag(cur, applied, ident, "receipt_over", f"pallet:{sscc}", hit, sscc, "",
                  pallet.repeats, f"receipt {ident!r} pallet {sscc}: received again"
                  f" ({pallet.repeats:g} repeated receipt(s) of the pallet or its EPCs)")
    for (key, lot), unexpected in counted.unexpected.items():
        hit = [events[i] for i in unexpected.events if i in events]
        if hit:
            hit.sort(key=lambda e: fresh.index(e))
            _flag(cur, applied, ident, "receipt_unexpected", f"item:{key}|{lot}", hit, key,
                  lot, unexpected.qty, f"receipt {ident!r} does not expect {key!r}"
                  f"{lot_text(lot)}: {unexpected.qty:g} received")


def raise_exception(cur: sqlite3.Cursor, ident: str, site: str, kind: str, subject: str, now: str,
           device: str | None, event_id: str | None, item: str | None, lot: str,
           location: str | None, quantity: float, detail: str,
           last_event_id: str | None = None, occurrences: int = 1) -> int:
    cur.execute(_INSERT_EXCEPTION, (kind, now, site, device, event_id, last_event_id or event_id,
                                    item, lot or None, location, quantity, detail, occurrences))
    exception_id = int(cur.fetchone()[0])
    cur.execute("INSERT INTO receipt_exceptions (exception_id, receipt_id, site, kind, subject)"
                " VALUES (?, ?, ?, ?, ?)", (exception_id, ident, site, kind, subject))
    return exception_id


def _flag(cur: sqlite3.Cursor, applied: AppliedBatch, ident: str, kind: str, subject: str,
          hit: list[wire.Event], item: str, lot: str, quantity: float, detail: str) -> None:
    """One open record per subject: raised by the first event, later ones add occurrences."""
    found = cur.execute(OPEN_EXCEPTION, (ident, kind, subject)).fetchone()
    if found is None:
        raise_exception(cur, ident, applied.site, kind, subject, applied.received_at,
                        applied.device, hit[0].id, item, lot, hit[0].to, quantity, detail,
                        hit[-1].id, len(hit))
        return
    cur.execute("UPDATE exceptions SET occurrences = occurrences + ?, last_event_id = ?,"
                " quantity = ?, detail = ? WHERE id = ?",
                (len(hit), hit[-1].id, quantity, detail, int(found[0])))


def _unknown(cur: sqlite3.Cursor, applied: AppliedBatch, ident: str, events: list[wire.Event],
             header: Sequence[Any] | None) -> None:
    """Receive events against a receipt the service does not have open for their site."""
    if header is None:
        why = "is unknown"
    elif header[0] != applied.site:
        why = f"is for site {header[0]!r}"
    else:
        why = f"was closed at {header[2]}"
    qty = sum(e.qty for e in events)
    first = events[0]
    item = first.item.key() if first.item is not None else None
    detail = (f"receipt {ident!r} {why}: {len(events)} receive event(s) of site"
              f" {applied.site!r} made against it are applied and not counted on it")
    subject = f"site:{applied.site}"
    found = cur.execute(OPEN_EXCEPTION, (ident, "receipt_unknown", subject)).fetchone()
    if found is None:
        lot = (first.item.lot or "") if first.item else ""
        raise_exception(cur, ident, applied.site, "receipt_unknown", subject,
                        applied.received_at, applied.device, first.id, item, lot, first.to, qty,
                        detail, events[-1].id, len(events))
        return
    cur.execute("UPDATE exceptions SET occurrences = occurrences + ?, last_event_id = ?,"
                " quantity = COALESCE(quantity, 0) + ? WHERE id = ?",
                (len(events), events[-1].id, qty, int(found[0])))


def _owners(cur: sqlite3.Cursor, site: str, events: list[wire.Event]
            ) -> list[tuple[str, wire.Event]]:
    """Events without a document whose EPC or SSCC an open receipt of ``site`` lists."""
    epcs: dict[str, list[wire.Event]] = {}
    ssccs: dict[str, list[wire.Event]] = {}
    for event in events:
        it = event.item
        assert it is not None
        for ident in {epc_ident(it.epc, it.gtin, it.serial), epc_ident(it.epc, None, None)}:
            if it.epc or ident.startswith("gs:"):
                epcs.setdefault(ident, []).append(event)
        if (pallet := pallet_of(it.sku, it.gtin, it.sscc)) is not None:
            ssccs.setdefault(pallet, []).append(event)
    found: dict[str, tuple[str, wire.Event]] = {}
    for table, column, wanted in (("receipt_epcs", "ident", epcs),
                                  ("receipt_pallets", "sscc", ssccs)):
        for chunk in chunks(sorted(wanted)):
            for ident, value in cur.execute(
                f"SELECT t.receipt_id, t.{column} FROM {table} t JOIN receipts r"
                f" ON r.id = t.receipt_id WHERE t.{column} IN ({','.join('?' * len(chunk))})"
                " AND r.status = 'open' AND r.site = ?", [*chunk, site]).fetchall():
                for event in wanted[value]:
                    found.setdefault(event.id, (ident, event))
    order = {e.id: n for n, e in enumerate(events)}
    return sorted(found.values(), key=lambda pair: order[pair[1].id])
