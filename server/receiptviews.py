"""A receipt read back: its document from its tables, what arrived from the ledger's receive
events, and the view of both (expected, received and difference per line; pallets; what came
that it does not name; what closing it recorded).

Received is counted, never stored: the ledger's receive events are the truth (those made
against the receipt, and those without a document of an EPC or SSCC it lists), laid against the
document by ``server.receipttally``. A closed receipt counts what had arrived when it closed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from floorsync.server.receiptdocs import (
    LABEL_PREFIX,
    ReceiptDoc,
    ReceiptEpc,
    ReceiptLine,
    epc_ident,
    lot_text,
)
from floorsync.server.receipttally import TOLERANCE, Arrival, Layout, Tally, tally

HEADER = ("id, site, supplier, expected_date, location, source, status, version, created_at,"
          " created_by, closed_at, closed_by, seq")
_ARRIVALS = ("SELECT id, item, gtin, sku, lot, qty, epc, sscc, serial, received_at FROM events"
             " WHERE site = ? AND type = 'receive'")


@dataclass(frozen=True, slots=True)
class LineView:
    line: int
    item: str
    sku: str
    gtin: str | None
    lot: str | None
    sscc: str | None
    expected: float
    received: float
    difference: float  # received - expected
    status: str  # open: waiting | complete | short | over; closed: complete | short | over


@dataclass(frozen=True, slots=True)
class PalletView:
    sscc: str
    received: str | None  # 'sscc' (whole, by its label), 'epc' (some of its EPCs), None
    epcs_expected: int
    epcs_received: int
    missing_epcs: tuple[str, ...]
    repeats: float  # the pallet or its EPCs received again


@dataclass(frozen=True, slots=True)
class UnexpectedView:
    item: str
    lot: str | None
    qty: float
    events: int


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str  # over, short, unexpected
    line: int | None
    sscc: str | None
    item: str
    lot: str | None
    expected: float
    received: float
    difference: float
    detail: str
    exception_id: int | None


@dataclass(frozen=True, slots=True)
class RaisedException:
    id: int
    kind: str
    status: str
    subject: str  # line:N, pallet:SSCC, item:KEY|LOT, site:SITE


@dataclass(frozen=True, slots=True)
class Receipt:
    id: str
    site: str
    supplier: str
    expected_date: str
    location: str | None
    source: str
    status: str
    version: int
    created_at: str
    created_by: str | None
    closed_at: str | None
    closed_by: str | None
    label: str
    lines: tuple[LineView, ...]
    pallets: tuple[PalletView, ...]
    unexpected: tuple[UnexpectedView, ...]
    discrepancies: tuple[Discrepancy, ...]
    exceptions: tuple[RaisedException, ...]


@dataclass(frozen=True, slots=True)
class ReceiptSummary:
    id: str
    site: str
    supplier: str
    expected_date: str
    location: str | None
    source: str
    status: str
    version: int
    created_at: str
    closed_at: str | None
    lines: int
    pallets: int
    expected_qty: float
    cursor: int


class Documents:
    """Accepted receipts' documents, each read once: a document never changes under its id (a
    different one is refused), so what was read stays true. The most recently used are kept;
    the writer's hook and the readers share them."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._docs: OrderedDict[str, tuple[ReceiptDoc, Layout]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conn: sqlite3.Connection | sqlite3.Cursor, ident: str) -> ReceiptDoc | None:
        found = self.laid_out(conn, ident)
        return None if found is None else found[0]

    def laid_out(self, conn: sqlite3.Connection | sqlite3.Cursor, ident: str
                 ) -> tuple[ReceiptDoc, Layout] | None:
        with self._lock:
            found = self._docs.get(ident)
            if found is not None:
                self._docs.move_to_end(ident)
                return found
        doc = load_doc(conn, ident)
        return None if doc is None else self.keep(doc)

    def keep(self, doc: ReceiptDoc) -> tuple[ReceiptDoc, Layout]:
        """``doc`` as committed, with its layout."""
        found = (doc, Layout.of(doc))
        with self._lock:
            self._docs[doc.id] = found
            self._docs.move_to_end(doc.id)
            while len(self._docs) > self._size:
                self._docs.popitem(last=False)
        return found


def load_doc(conn: sqlite3.Connection | sqlite3.Cursor, ident: str) -> ReceiptDoc | None:
    row = conn.execute("SELECT id, site, supplier, expected_date, location, source FROM receipts"
                       " WHERE id = ?", (ident,)).fetchone()
    if row is None:
        return None
    lines = tuple(ReceiptLine(int(n), item, sku, gtin, lot, float(qty), sscc)
                  for n, item, sku, gtin, lot, qty, sscc in conn.execute(
                      "SELECT line, item, sku, gtin, lot, qty, sscc FROM receipt_lines"
                      " WHERE receipt_id = ? ORDER BY line", (ident,)).fetchall())
    pallets = tuple(r[0] for r in conn.execute(
        "SELECT sscc FROM receipt_pallets WHERE receipt_id = ? ORDER BY ordinal",
        (ident,)).fetchall())
    epcs = tuple(ReceiptEpc(*r) for r in conn.execute(
        "SELECT epc, sscc, sku, gtin, serial FROM receipt_epcs WHERE receipt_id = ?"
        " ORDER BY ordinal",
        (ident,)).fetchall())
    return ReceiptDoc(row[0], row[1], row[2], row[3], row[4], lines, pallets, epcs, row[5])


def arrivals(conn: sqlite3.Connection | sqlite3.Cursor, doc: ReceiptDoc, cutoff: str | None
              ) -> list[Arrival]:
    """The receipt's receive events in ledger order: those naming it, and those without a
    document of an EPC or SSCC it lists; up to ``cutoff`` (received at) when given."""
    until = "" if cutoff is None else " AND received_at <= ?"
    extra = () if cutoff is None else (cutoff,)
    rows = conn.execute(f"{_ARRIVALS} AND doc_kind = 'receipt' AND doc_id = ?{until}",
                        (doc.site, doc.id, *extra)).fetchall()
    if doc.epcs:  # by the EPC as listed, and by GTIN + serial (any form of an SGTIN)
        rows += conn.execute(
            f"{_ARRIVALS} AND doc_id IS NULL AND epc IN (SELECT epc FROM receipt_epcs"
            f" WHERE receipt_id = ?){until}", (doc.site, doc.id, *extra)).fetchall()
        rows += conn.execute(
            f"{_ARRIVALS} AND doc_id IS NULL AND serial IS NOT NULL AND (serial, gtin) IN"
            " (SELECT serial, gtin FROM receipt_epcs WHERE receipt_id = ? AND serial IS NOT NULL)"
            f"{until}", (doc.site, doc.id, *extra)).fetchall()
    if doc.pallets:
        rows += conn.execute(
            f"{_ARRIVALS} AND doc_id IS NULL AND sscc IN (SELECT sscc FROM receipt_pallets"
            f" WHERE receipt_id = ?){until}", (doc.site, doc.id, *extra)).fetchall()
    # each event's master-data item: an SKU as sent, else its GTIN's (the GTINs that arrived)
    skus = {ln.sku for ln in doc.lines} | {e.sku for e in doc.epcs if e.sku}
    alias = {s: s for s in skus}
    gtins = sorted({r[2] for r in rows if r[2] is not None})
    for chunk in chunks(gtins):
        alias.update((g, s) for g, s in conn.execute(
            f"SELECT gtin, sku FROM item_gtins WHERE gtin IN ({','.join('?' * len(chunk))})",
            chunk).fetchall())
    seen: set[str] = set()
    out = []
    for ident, key, gtin, sku, lot, qty, epc, sscc, serial, _ in sorted(
            rows, key=lambda r: (r[9], r[0])):
        if ident in seen:  # found by its EPC and by its GTIN and serial: once
            continue
        seen.add(ident)
        out.append(Arrival(ident, key, alias.get(sku or "") or alias.get(gtin or ""), lot or "",
                           float(qty), _ident(epc, gtin, serial), pallet_of(sku, gtin, sscc)))
    return out


def _ident(epc: str | None, gtin: str | None, serial: str | None) -> str | None:
    return epc_ident(epc, gtin, serial) if epc or (gtin and serial) else None


def pallet_of(sku: str | None, gtin: str | None, sscc: str | None) -> str | None:
    """The SSCC of an event whose item is the pallet itself (no item inside named)."""
    return sscc if sscc is not None and sku is None and gtin is None else None


def view(conn: sqlite3.Connection, header: Sequence[Any], doc: ReceiptDoc, layout: Layout
         ) -> Receipt:
    """The receipt of ``header`` (its row, ``HEADER``'s columns) and ``doc``, its document."""
    ident, status, closed_at = header[0], header[6], header[10]
    counted = tally(layout, arrivals(conn, doc, closed_at))
    lines = []
    for ln in doc.lines:
        got = counted.received[ln.line]
        diff = got - ln.qty
        state = ("over" if diff > TOLERANCE else "complete" if diff > -TOLERANCE else
                 "short" if status == "closed" or got > TOLERANCE else "waiting")
        lines.append(LineView(ln.line, ln.item, ln.sku, ln.gtin, ln.lot or None, ln.sscc, ln.qty,
                              got, diff, state))
    by_pallet: dict[str, list[ReceiptEpc]] = {}
    for e in doc.epcs:
        by_pallet.setdefault(e.sscc, []).append(e)
    pallets = []
    for sscc in doc.pallets:
        count = counted.pallets[sscc]
        listed = by_pallet.get(sscc, [])
        covered = count.by == "sscc"
        missing = () if covered else tuple(e.epc for e in listed if e.ident not in count.epcs)
        pallets.append(PalletView(sscc, count.by, len(listed), len(listed) - len(missing),
                                  missing, count.repeats))
    unexpected = tuple(UnexpectedView(key, lot or None, u.qty, len(u.events))
                       for (key, lot), u in sorted(counted.unexpected.items()))
    discrepancies = tuple(
        Discrepancy(kind, line, sscc, item, lot or None, float(e), float(r), float(d), detail,
                    exc)
        for kind, line, sscc, item, lot, e, r, d, detail, exc in conn.execute(
            "SELECT kind, line, sscc, item, lot, expected, received, difference, detail,"
            " exception_id FROM receipt_discrepancies WHERE receipt_id = ? ORDER BY n",
            (ident,)).fetchall())
    raised = tuple(RaisedException(int(i), k, s, subject) for i, k, s, subject in conn.execute(
        "SELECT x.id, x.kind, x.status, r.subject FROM receipt_exceptions r"
        " JOIN exceptions x ON x.id = r.exception_id WHERE r.receipt_id = ? ORDER BY x.id",
        (ident,)).fetchall())
    (_, site, supplier, expected_date, location, source, _, version, created_at, created_by, _,
     closed_by) = header[:12]
    return Receipt(ident, site, supplier, expected_date, location, source, status, int(version),
                   created_at, created_by, closed_at, closed_by, f"{LABEL_PREFIX}{ident}",
                   tuple(lines), tuple(pallets), unexpected, discrepancies, raised)


def discrepancies(doc: ReceiptDoc, counted: Tally
                   ) -> list[tuple[str, int | None, str | None, str, str, float, float, str]]:
    """(kind, line, sscc, item, lot, expected, received, detail) of everything that differs."""
    out: list[tuple[str, int | None, str | None, str, str, float, float, str]] = []
    for ln in doc.lines:
        got = counted.received[ln.line]
        if abs(got - ln.qty) > TOLERANCE:
            kind = "over" if got > ln.qty else "short"
            out.append((kind, ln.line, ln.sscc, ln.item, ln.lot, ln.qty, got,
                        f"line {ln.line}: {got:g} of {ln.item!r}{lot_text(ln.lot)} received,"
                        f" {ln.qty:g} expected"))
    listed: dict[str, list[ReceiptEpc]] = {}
    for e in doc.epcs:
        listed.setdefault(e.sscc, []).append(e)
    for sscc in doc.pallets:
        count = counted.pallets[sscc]
        epcs = listed.get(sscc, [])
        missing = ([] if count.by == "sscc" else
                   [e.epc for e in epcs if e.ident not in count.epcs])
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                               if len(missing) > 5 else "")
            out.append(("short", None, sscc, sscc, "", len(epcs), len(epcs) - len(missing),
                        f"pallet {sscc}: {len(missing)} of its {len(epcs)} EPCs not received"
                        f" ({shown})"))
        elif count.by is None and not epcs and not any(ln.sscc == sscc for ln in doc.lines):
            out.append(("short", None, sscc, sscc, "", 1, 0, f"pallet {sscc} not received"))
        if count.repeats > TOLERANCE:
            out.append(("over", None, sscc, sscc, "", 1, 1 + count.repeats,
                        f"pallet {sscc}: received again ({count.repeats:g} repeats)"))
    for (key, lot), unexpected in sorted(counted.unexpected.items()):
        out.append(("unexpected", None, None, key, lot, 0.0, unexpected.qty,
                    f"{unexpected.qty:g} of {key!r}{lot_text(lot)} received, not on the receipt"))
    return out


def chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]
