"""Expected receipts (ASN, purchase orders): accepted whole, verified as the goods arrive, closed
with their discrepancies.

- **Accept**: a document (``server.receiptdocs``) is checked against master data, then kept in
  one transaction, idempotent by id: the same document again changes nothing, a different one
  under the same id is refused (409).
- **Verify**: receive events carrying ``doc: {kind: receipt, id}`` (and, without a doc, those of
  an EPC or SSCC an open receipt lists) are laid against its lines (``server.receipttally``);
  the view (``server.receiptviews``) shows expected, received and difference per line. The
  book's batch hook (``server.receiptchecks``) raises ``receipt_over``, ``receipt_unexpected``
  and ``receipt_unknown`` as they arrive, never refusing or changing a movement.
- **Close**: what was expected and did not come raises ``receipt_short``; every difference is
  recorded with the receipt; its expected list is withdrawn from the floor.

The floor's copy of an open receipt is ``expected(...)``; ``open_expected()`` gives them all
(``server.docpublish`` sends them). Listeners hear of each new or closed receipt after commit.
"""

from __future__ import annotations

import logging
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

from floorsync.edge import expected as floor
from floorsync.server.errors import Refused
from floorsync.server.gs1 import parse_gln_label
from floorsync.server.ledger import Store
from floorsync.server.receiptchecks import KIND, OPEN_EXCEPTION, check_batch, raise_exception
from floorsync.server.receiptdocs import (
    Master,
    ReceiptDoc,
    ReceiptRejected,
    read_receipt,
    to_expected,
    wanted_keys,
)
from floorsync.server.receiptepcis import Given, from_epcis
from floorsync.server.receipttally import tally
from floorsync.server.receiptviews import (
    HEADER,
    Documents,
    Receipt,
    ReceiptSummary,
    arrivals,
    chunks,
    discrepancies,
    view,
)

log = logging.getLogger(__name__)

STATUSES = ("open", "closed")
# (kind, site, id, the expected list; None: withdrawn), called after the commit
Listener = Callable[[str, str, str, floor.Expected | None], None]


_books: weakref.WeakKeyDictionary[Store, ReceiptBook] = weakref.WeakKeyDictionary()


def book_of(store: Store) -> ReceiptBook:
    """The store's one receipt book (its batch hook is added once, however many apps start)."""
    book = _books.get(store)
    if book is None:
        book = _books[store] = ReceiptBook(store)
    return book


class ReceiptBook:
    """The receipts of one ledger database; use ``book_of(store)``."""

    def __init__(self, store: Store) -> None:
        # weakly: ``_books`` keeps the book while the store lives, and a book holding its store
        # would keep that entry (and the store) for ever
        self._store = cast(Store, weakref.proxy(store))
        self._listeners: list[Listener] = []
        self._docs = Documents()
        store.add_batch_hook(partial(check_batch, self._docs))

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _tell(self, site: str, ident: str, expected: floor.Expected | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(KIND, site, ident, expected)
            except Exception:
                log.exception("receipt listener %r failed", listener)

    # --- accept ---------------------------------------------------------------------------

    def accept(self, data: object, *, by: str | None = None, source: str = "json"
               ) -> tuple[Receipt, bool]:
        """Keep a receipt document; (the receipt, whether it is new). The same document again
        is answered with the receipt as kept; a different one under its id: 409."""
        return self.accept_doc(read_receipt(data, self._master(data), source=source), by=by)

    def accept_epcis(self, document: object, given: Given, *, by: str | None = None
                     ) -> tuple[Receipt, bool]:
        """A supplier's EPCIS 2.0 document (``server.receiptepcis``), judged as a native one;
        errors are named by their place in the EPCIS document."""
        converted = from_epcis(document, given, self._site_of_gln)
        data = converted.receipt
        try:
            doc = read_receipt(data, self._master(data), source="epcis")
        except ReceiptRejected as exc:
            errors = converted.judged(list(exc.errors))
            raise ReceiptRejected(errors, exc.total - len(exc.errors) + len(errors)) from None
        if converted.errors:
            raise ReceiptRejected(converted.errors)
        return self.accept_doc(doc, by=by)

    def accept_doc(self, doc: ReceiptDoc, *, by: str | None = None) -> tuple[Receipt, bool]:
        digest = doc.digest()
        with self._store._transaction() as cur:
            row = cur.execute("SELECT digest, site FROM receipts WHERE id = ?",
                              (doc.id,)).fetchone()
            if row is not None:
                if row[0] != digest:
                    raise Refused(409, "receipt exists", f"receipt {doc.id!r} (site {row[1]!r})"
                                  " was accepted with other content; a receipt is not changed"
                                  " under its id")
                created = False
            else:
                self._insert(cur, doc, digest, by)
                created = True
        self._docs.keep(doc)  # as kept (the same digest: the same content)
        receipt = self.receipt(doc.id)
        if created and self._listeners:
            self._tell(doc.site, doc.id, to_expected(doc, receipt.version))
        return receipt, created

    def _insert(self, cur: sqlite3.Cursor, doc: ReceiptDoc, digest: str, by: str | None
                ) -> None:
        now = self._store._arrivals.next()
        cur.execute(
            "INSERT INTO receipts (id, site, supplier, expected_date, location, source, digest,"
            " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc.id, doc.site, doc.supplier, doc.expected_date, doc.location, doc.source, digest,
             now, by),
        )
        cur.executemany(
            "INSERT INTO receipt_pallets (receipt_id, sscc, ordinal) VALUES (?, ?, ?)",
            [(doc.id, sscc, n) for n, sscc in enumerate(doc.pallets)],
        )
        cur.executemany(
            "INSERT INTO receipt_lines (receipt_id, line, item, sku, gtin, lot, qty, sscc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(doc.id, ln.line, ln.item, ln.sku, ln.gtin, ln.lot, ln.qty, ln.sscc)
             for ln in doc.lines],
        )
        cur.executemany(
            "INSERT INTO receipt_epcs (receipt_id, ident, epc, sscc, sku, gtin, serial, ordinal)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(doc.id, e.ident, e.epc, e.sscc, e.sku, e.gtin, e.serial, n)
             for n, e in enumerate(doc.epcs)],
        )

    def _master(self, data: object) -> Master:
        """Master data about the keys ``data`` names, read before the write transaction."""
        gtins, skus = wanted_keys(data)
        query = self._store._query
        sku_of_gtin: dict[str, str] = {}
        units: dict[str, str] = {}
        for gtin, sku, unit in _chunked(
                query, "SELECT g.gtin, g.sku, i.unit FROM item_gtins g JOIN items i"
                " ON i.sku = g.sku WHERE g.gtin IN", sorted(gtins)):
            sku_of_gtin[gtin], units[sku] = sku, unit
        first: dict[str, str] = {}
        for sku, unit, gtin in _chunked(
                query, "SELECT i.sku, i.unit, (SELECT g.gtin FROM item_gtins g WHERE g.sku = i.sku"
                " ORDER BY g.ordinal LIMIT 1) FROM items i WHERE i.sku IN", sorted(skus)):
            units[sku] = unit  # an SKU named by itself: its first GTIN goes to the floor
            if gtin is not None:
                first[sku] = gtin
        return Master(sku_of_gtin, units, first, self._location)

    def _site_of_gln(self, gln: str, extension: str) -> str | None:
        found = self._store._query("SELECT site FROM locations WHERE gln = ? AND gln_extension = ?",
                                   (gln, extension))
        return str(found[0][0]) if found else None

    def _location(self, site: str, label: str) -> tuple[str, bool]:
        """The location code of ``label`` (code, barcode or GLN label); a site without
        locations in master data is not checked (as the ledger does)."""
        query = self._store._query
        if not query("SELECT 1 FROM locations WHERE site = ? LIMIT 1", (site,)):
            return label, True
        found = query("SELECT code FROM location_barcodes WHERE site = ? AND barcode = ?"
                      " UNION ALL SELECT code FROM locations WHERE site = ? AND code = ?",
                      (site, label, site, label))
        if found:
            return str(found[0][0]), True
        gln = parse_gln_label(label)
        if gln is not None:
            found = query("SELECT code FROM locations WHERE site = ? AND gln = ?"
                          " AND gln_extension = ?", (site, *gln))
            if found:
                return str(found[0][0]), True
        return label, False

    # --- reads ----------------------------------------------------------------------------

    def receipt(self, ident: str) -> Receipt:
        conn = self._store._reader()
        header = conn.execute(f"SELECT {HEADER} FROM receipts WHERE id = ?",
                              (ident,)).fetchone()
        if header is None:
            raise Refused(404, "unknown receipt", f"no receipt {ident[:80]!r}")
        found = self._docs.laid_out(conn, ident)
        assert found is not None
        return view(conn, header, *found)

    def receipts(self, *, status: str | None = None, site: str | None = None,
                 after: int | None = None, limit: int = 100) -> list[ReceiptSummary]:
        where, params = ["r.seq > ?"], list[Any]([after or 0])
        for column, value in (("status", status), ("site", site)):
            if value is not None:
                where.append(f"r.{column} = ?")
                params.append(value)
        rows = self._store._query(
            "SELECT r.id, r.site, r.supplier, r.expected_date, r.location, r.source, r.status,"
            " r.version, r.created_at, r.closed_at,"
            " (SELECT COUNT(*) FROM receipt_lines l WHERE l.receipt_id = r.id),"
            " (SELECT COUNT(*) FROM receipt_pallets p WHERE p.receipt_id = r.id),"
            " (SELECT COALESCE(SUM(qty), 0) FROM receipt_lines l WHERE l.receipt_id = r.id)"
            " + (SELECT COUNT(*) FROM receipt_epcs e WHERE e.receipt_id = r.id), r.seq"
            f" FROM receipts r WHERE {' AND '.join(where)} ORDER BY r.seq LIMIT ?",
            [*params, limit],
        )
        return [ReceiptSummary(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), r[8], r[9],
                               int(r[10]), int(r[11]), float(r[12]), int(r[13])) for r in rows]

    def expected(self, ident: str) -> floor.Expected | None:
        """The floor's copy of an open receipt; None when it is closed or unknown."""
        conn = self._store._reader()
        row = conn.execute("SELECT version FROM receipts WHERE id = ? AND status = 'open'",
                           (ident,)).fetchone()
        doc = self._docs.get(conn, ident)
        return None if row is None or doc is None else to_expected(doc, int(row[0]))

    def open_expected(self) -> list[floor.Expected]:
        """Every open receipt as the floor gets it (what a (re)connecting publisher sends)."""
        conn = self._store._reader()
        out = []
        for ident, version in conn.execute(
                "SELECT id, version FROM receipts WHERE status = 'open' ORDER BY seq").fetchall():
            doc = self._docs.get(conn, ident)
            if doc is not None:
                out.append(to_expected(doc, int(version)))
        return out

    # --- close ----------------------------------------------------------------------------

    def close(self, ident: str, *, by: str) -> Receipt:
        """Record what differs, raise ``receipt_short`` for what did not come, withdraw the
        expected list from the floor."""
        with self._store._transaction() as cur:
            header = cur.execute("SELECT site, status, location FROM receipts WHERE id = ?",
                                 (ident,)).fetchone()
            if header is None:
                raise Refused(404, "unknown receipt", f"no receipt {ident[:80]!r}")
            site, status, location = header
            if status != "open":
                raise Refused(409, "receipt closed", f"receipt {ident!r} is already closed")
            found = self._docs.laid_out(cur, ident)
            assert found is not None
            doc, layout = found
            now = self._store._arrivals.next()
            counted = tally(layout, arrivals(cur, doc, None))
            rows = discrepancies(doc, counted)
            recorded = []
            for n, (kind, line, sscc, item, lot, exp, got, detail) in enumerate(rows, start=1):
                subject = (f"line:{line}" if line is not None else
                           f"pallet:{sscc}" if kind != "unexpected" else f"item:{item}|{lot}")
                xkind = f"receipt_{kind}"
                found = cur.execute(OPEN_EXCEPTION, (ident, xkind, subject)).fetchone()
                exception_id = None if found is None else int(found[0])
                if kind == "short" and exception_id is None:
                    exception_id = raise_exception(
                        cur, ident, site, xkind, subject, now, None, None, item, lot, location,
                        got - exp, f"receipt {ident!r} closed: {detail}")
                recorded.append((ident, n, kind, line, sscc, item, lot, exp, got, got - exp,
                                 detail, exception_id))
            cur.executemany(
                "INSERT INTO receipt_discrepancies (receipt_id, n, kind, line, sscc, item, lot,"
                " expected, received, difference, detail, exception_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recorded)
            cur.execute("UPDATE receipts SET status = 'closed', version = version + 1,"
                        " closed_at = ?, closed_by = ? WHERE id = ?", (now, by, ident))
        self._tell(site, ident, None)
        return self.receipt(ident)


def _chunked(query: Callable[..., list[Any]], sql: str, values: Sequence[Any], tail: str = ""
             ) -> list[Any]:
    rows: list[Any] = []
    for chunk in chunks(values, 2000):
        rows += query(f"{sql} ({','.join('?' * len(chunk))}){tail}", list(chunk))
    return rows
