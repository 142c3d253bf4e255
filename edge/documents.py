"""The documents' expected lists on the edge, offline-first: received, kept, looked up, counted.

A door or a receiving handheld must say at once, cut off from the central service too, whether
a case was expected, over or unexpected. So the expected lists travel ahead of the goods
(``edge.expected``: one retained MQTT message per open document) and live here:

- **Received** by the syncer (``edge.sync`` subscribes to ``docs_filter(site)`` on every
  connect) and kept in the outbox database before the broker gets its PUBACK: the highest
  version of each document; an empty message withdraws it (a tombstone keeps its version, so a
  late copy of an older one is not taken back). A message that cannot be read, names another
  site or disagrees with its topic is recorded as a floor exception and ignored: never fatal.
- **Looked up** from memory (``DocumentBook``, rebuilt from the database at start): a label or
  a pallet's SSCC selects a document on a handheld; the receipts open at a door's location.
- **Counted** (``keep``): each event made against a document gets ``doc`` with the edge's
  check, and an ``Attribution`` row written in the same outbox transaction as the event. The
  running tallies are sums of those rows, so a crash never counts twice, and an event id kept
  once (a door pass rebuilt from its journal has the id it had) is counted once. The book's
  lock is held from the check to the commit, so two doors or scanners never both take a line's
  last unit. A receipt's copy says what the whole document expects: everything counted against
  it counts. An order's copy says what is still to pick (the central service publishes a new
  version as picks are applied): only picks the central service had not applied when the copy
  came count against it (not yet acked, or acked after it came).

Physical truth wins: nothing here refuses an event. Over and unexpected are recorded with the
event (and said: bad-read feedback on a handheld, a log line at a door); the central service
raises the exception.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floorsync.edge import wire
from floorsync.edge.doclines import EPC, PALLET, UNIT, Line, Sheet
from floorsync.edge.expected import decode_expected, encode_expected, parse_docs_topic
from floorsync.edge.outbox import NOT_APPLIED_BY, Attribution, HoldChanges, Outbox

log = logging.getLogger(__name__)

SOURCE = "docs"  # floor exceptions about document messages are recorded under this source
# A tombstone outlives any copy of its document a broker may still hold for this edge (the
# edge's session expires after 7 days; edge.sync.SESSION_EXPIRY_S).
TOMBSTONE_S = 8 * 24 * 3600
MOVEMENT = {"receipt": "receive", "order": "pick"}  # what a document's events are
BAD_CHECKS = frozenset({"over", "unexpected"})  # the operator hears a bad read
TOLERANCE = 1e-9  # quantities may be decimal: what is left below this is nothing
LEFT_TO_DO = frozenset({"order"})  # kinds whose copy says what is left, not the whole


@dataclass(frozen=True, slots=True)
class Against:
    """Check against this document (a handheld's selected receipt or order): ``pallet`` and
    ``location`` say which of its lines come first."""

    kind: str
    id: str
    pallet: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class AtDoor:
    """Check a door's receive against the receipts open at its location."""

    location: str


@dataclass(frozen=True, slots=True)
class Undoing:
    """A compensating event: takes back what ``event_id`` was counted as, with its doc."""

    event_id: str


Claim = Against | AtDoor | Undoing


@dataclass(frozen=True, slots=True)
class Kept:
    """Events kept (numbered, on disk, with their doc) and, per event, what its check says
    (None: counted against no document)."""

    events: list[wire.Event]
    notes: tuple[str | None, ...]

    @property
    def bad(self) -> list[str]:
        """What the operator must hear about: over and unexpected."""
        return [note for event, note in zip(self.events, self.notes, strict=True)
                if note is not None and event.doc is not None and event.doc.check in BAD_CHECKS]


_books: weakref.WeakKeyDictionary[Outbox, DocumentBook] = weakref.WeakKeyDictionary()
_books_lock = threading.Lock()


def book_for(outbox: Outbox, site: str | None = None) -> DocumentBook:
    """The one book of an outbox: the syncer that fills it and the scanners and doors that
    count against it must share its memory and its lock."""
    with _books_lock:
        book = _books.get(outbox)
        if book is None:
            book = _books[outbox] = DocumentBook(outbox, site)
        elif site is not None and book.site is None:
            book.site = site
        return book


class DocumentBook:
    """The open documents of one edge, in memory over the outbox database."""

    def __init__(self, outbox: Outbox, site: str | None = None) -> None:
        self.outbox = outbox
        self.site = site
        self._lock = threading.Lock()  # held from a check to its commit
        self._sheets: dict[tuple[str, str], Sheet] = {}
        self._labels: dict[str, tuple[str, str]] = {}
        self._pallets: dict[str, str] = {}  # SSCC -> receipt id
        self._totes: dict[str, str] = {}  # tote -> order id
        self._at: dict[str | None, tuple[str, ...]] = {}  # location -> receipt ids
        self._taken: dict[tuple[str, str, str], float] = {}  # (kind, id, line) -> matched
        self._last: dict[str, tuple[str, str]] = {}  # source -> the document it counted last
        self.refused = 0  # messages recorded as floor exceptions
        self._load()

    def _load(self) -> None:
        came: dict[tuple[str, str], float] = {}
        for stored in self.outbox.documents():
            try:
                doc = decode_expected(stored.payload)
            except wire.WireError as exc:  # written by this code; kept, said, skipped
                self.outbox.record_exception(SOURCE, f"stored document unreadable: {exc}",
                                             stored.payload[:512])
                continue
            self._sheets[(doc.kind, doc.id)] = Sheet.of(doc, stored.first_at)
            came[(doc.kind, doc.id)] = stored.received_at
        lines, self._last = self.outbox.attributed()
        self._taken = {(kind, doc, line): qty for kind, doc, line, qty in lines}
        for kind, doc_id in self._sheets:
            if kind in LEFT_TO_DO:
                self._count_since(kind, doc_id, came[(kind, doc_id)])
        self._reindex()
        if self._sheets:
            log.info("%d open document(s) kept here: %s", len(self._sheets),
                     ", ".join(f"{k} {i}" for k, i in list(self._sheets)[:10]))

    def _count_since(self, kind: str, doc_id: str, came: float) -> None:
        """A copy saying what is left: count against it only what the central service had not
        applied when it came."""
        self._taken = {k: v for k, v in self._taken.items() if k[:2] != (kind, doc_id)}
        for line, _, matched, _, _ in self.outbox.not_applied_by(kind, doc_id, came):
            if line:
                key = (kind, doc_id, line)
                self._taken[key] = self._taken.get(key, 0.0) + matched

    def _reindex(self) -> None:
        """The lookups, made anew after a change (documents change rarely; lookups are hot)."""
        labels: dict[str, tuple[str, str]] = {}
        pallets: dict[str, str] = {}
        totes: dict[str, str] = {}
        at: dict[str | None, list[str]] = {}
        for (kind, doc_id), sheet in self._sheets.items():
            for label in sheet.doc.labels:
                labels[label] = (kind, doc_id)
            for tote in sheet.doc.totes:
                totes[tote] = doc_id
            if kind == "receipt":
                for pallet in sheet.doc.pallets:
                    pallets[pallet.sscc] = doc_id
                at.setdefault(sheet.doc.location, []).append(doc_id)
        self._labels, self._pallets, self._totes = labels, pallets, totes
        self._at = {k: tuple(v) for k, v in at.items()}

    # --- reception ------------------------------------------------------------------------

    def receive(self, topic: str, payload: bytes) -> str:
        """One message on ``docs_filter(site)``, kept before this returns: 'kept', 'same',
        'older', 'withdrawn', 'ignored' (a withdrawal of a document not here) or 'refused'
        (recorded as a floor exception). Raises OutboxError when the database fails."""
        try:
            site, kind, doc_id = parse_docs_topic(topic)
        except wire.WireError as exc:
            return self._refuse(topic, payload, str(exc))
        if self.site is not None and site != self.site:
            return self._refuse(topic, payload, f"a document of site {site!r} on an edge of"
                                                f" site {self.site!r}: ignored")
        if not payload:
            with self._lock:
                gone = self.outbox.withdraw_document(kind, doc_id, time.time() - TOMBSTONE_S)
                if gone:
                    self._sheets.pop((kind, doc_id), None)
                    self._taken = {k: v for k, v in self._taken.items()
                                   if k[:2] != (kind, doc_id)}
                    self._last = {s: d for s, d in self._last.items() if d != (kind, doc_id)}
                    self._reindex()
            if gone:
                log.info("%s %s withdrawn (closed)", kind, doc_id)
            return "withdrawn" if gone else "ignored"
        try:
            doc = decode_expected(payload)
        except wire.WireError as exc:
            return self._refuse(topic, payload, f"unreadable document: {exc}")
        if (doc.site, doc.kind, doc.id) != (site, kind, doc_id):
            return self._refuse(topic, payload, f"{doc.kind} {doc.id} of site {doc.site!r} on"
                                                f" the topic of {kind} {doc_id} of {site!r}:"
                                                " ignored")
        with self._lock:
            outcome, first_at = self.outbox.keep_document(kind, doc_id, doc.version,
                                                          encode_expected(doc).decode())
            if outcome == "kept":
                self._sheets[(kind, doc_id)] = Sheet.of(doc, first_at)
                if kind in LEFT_TO_DO:
                    self._count_since(kind, doc_id, time.time())
                self._reindex()
        if outcome == "kept":
            log.info("%s %s version %d kept (%d line(s), %d pallet(s))", kind, doc_id,
                     doc.version, len(doc.lines), len(doc.pallets))
        else:
            log.debug("%s %s version %d: %s version here", kind, doc_id, doc.version, outcome)
        return outcome

    def _refuse(self, topic: str, payload: bytes, reason: str) -> str:
        self.refused += 1
        log.warning("document message on %s refused: %s", topic[:200], reason)
        raw = f"{topic[:200]} {payload[:400].decode('utf-8', 'replace')}"
        self.outbox.record_exception(SOURCE, reason, raw)
        return "refused"

    # --- lookups --------------------------------------------------------------------------

    def get(self, kind: str, doc_id: str) -> Sheet | None:
        return self._sheets.get((kind, doc_id))

    def open(self) -> list[Sheet]:
        """Every open document, the earliest first."""
        return sorted(self._sheets.values(), key=lambda s: (s.first_at, s.doc.kind, s.doc.id))

    def by_label(self, text: str) -> tuple[str, str] | None:
        """The document a scanned label selects (its ``labels``): (kind, id)."""
        return self._labels.get(text)

    def receipt_of_pallet(self, sscc: str) -> str | None:
        return self._pallets.get(sscc)

    def order_of_tote(self, tote: str) -> str | None:
        """The open order (of this edge's site) whose copy names this tote."""
        return self._totes.get(tote)

    def expects_at(self, location: str) -> bool:
        """Any receipt open at this location (or at any)? Without the lock: a door's fast way
        past the book when nothing is expected there."""
        at = self._at
        return location in at or None in at

    def _receipts_at(self, location: str, last: tuple[str, str] | None) -> list[Sheet]:
        """Receipts open at a door, in the order a read is tried against them: the one this
        door counted against ``last`` (the truck being unloaded), those naming this location
        before those naming none, then the one this edge had first, then by id."""
        ids = (*self._at.get(location, ()), *self._at.get(None, ()))
        sheets = [self._sheets[("receipt", i)] for i in ids]
        return sorted(sheets, key=lambda s: (("receipt", s.doc.id) != last,
                                             s.doc.location != location, s.first_at, s.doc.id))

    # --- counting -------------------------------------------------------------------------

    def keep(self, events: Sequence[wire.Event], claims: Sequence[Claim | None], *, source: str,
             context: tuple[str, str] | None = None, holds: HoldChanges | None = None) -> Kept:
        """``Outbox.add`` with each claimed event checked and counted: its ``doc`` set, its
        attribution in the same transaction. Raises what ``Outbox.add`` raises, nothing
        counted then."""
        if not any(claim is not None for claim in claims):
            kept = self.outbox.add(events, context=context, holds=holds)
            return Kept(kept, (None,) * len(kept))
        with self._lock:
            count = _Count(self, source)
            out: list[wire.Event] = []
            notes: list[str | None] = []
            for event, claim in zip(events, claims, strict=True):
                found = None if claim is None else self._check(event, claim, count)
                if found is None:
                    out.append(event)
                    notes.append(None)
                    continue
                doc, note = found
                e = event  # positional construction: dataclasses.replace costs 8 us an event
                out.append(wire.Event(e.id, e.seq, e.time, e.type, e.item, e.qty, e.from_, e.to,
                                      e.operator, e.read, e.count, doc))
                notes.append(note)
            kept = self.outbox.add(out, context=context, holds=holds, attributions=count.rows)
            for key, qty in count.taking.items():
                self._taken[key] = self._taken.get(key, 0.0) + qty
            if count.last is not None:
                self._last[source] = count.last
        return Kept(kept, tuple(notes))

    def _check(self, event: wire.Event, claim: Claim, count: _Count
               ) -> tuple[wire.DocRef, str] | None:
        if isinstance(claim, Undoing):
            return count.undo(event, self.outbox.attribution(claim.event_id))
        if event.item is None or not event.qty > 0:
            return None
        if isinstance(claim, AtDoor):
            sheets = self._receipts_at(claim.location, count.last)
            if not sheets:
                return None
            tried = [(sheet, sheet.candidates(event.item)) for sheet in sheets]
            for sheet, lines in tried:  # a receipt with room for it,
                if any(count.left(sheet, line) > TOLERANCE for line in lines):
                    return count.count(sheet, lines, event)
            for sheet, lines in tried:  # else one expecting it (over),
                if lines:
                    return count.count(sheet, lines, event)
            return count.unexpected(sheets[0], event)  # else the first open at the door
        found = self._sheets.get((claim.kind, claim.id))
        if found is None:
            return (wire.DocRef(claim.kind, claim.id, "unknown"),
                    f"{claim.kind} {claim.id} is not known here: checked centrally")
        lines = found.candidates(event.item, claim.location)
        if not lines:
            return count.unexpected(found, event)
        return count.count(found, lines, event)


class _Count:
    """One ``keep``'s counting: the rows it writes and what it takes from the lines, on top of
    the book's tallies until the commit."""

    def __init__(self, book: DocumentBook, source: str) -> None:
        self.book = book
        self.source = source
        self.rows: list[Attribution] = []
        self.taking: dict[tuple[str, str, str], float] = {}
        # the document the source counted against last, as of the event being checked: the
        # same whether a door's movements are kept one by one or in one go
        self.last = book._last.get(source)

    def left(self, sheet: Sheet, line: Line) -> float:
        key = (sheet.doc.kind, sheet.doc.id, line.key)
        return line.qty - self.book._taken.get(key, 0.0) - self.taking.get(key, 0.0)

    def _row(self, sheet: Sheet, event: wire.Event, line: str, outcome: str, matched: float,
             over: float = 0.0, unexpected: float = 0.0) -> None:
        kind, doc_id = sheet.doc.kind, sheet.doc.id
        if line:
            key = (kind, doc_id, line)
            self.taking[key] = self.taking.get(key, 0.0) + matched
        self.rows.append(Attribution(event.id, kind, doc_id, line, self.source, outcome,
                                     matched, over, unexpected))
        self.last = (kind, doc_id)

    def count(self, sheet: Sheet, lines: list[Line], event: wire.Event
              ) -> tuple[wire.DocRef, str]:
        """Fill the lines in order, each up to what it has left; the rest is over (on the last
        line). A pallet received by its SSCC fills what is left of its unit lines."""
        kind, doc_id = sheet.doc.kind, sheet.doc.id
        takes: list[tuple[Line, float]] = []
        rest = event.qty
        for line in lines:
            room = self.left(sheet, line)
            if room > TOLERANCE and rest > TOLERANCE:
                take = min(room, rest)
                takes.append((line, take))
                rest -= take
        check = "expected" if rest <= TOLERANCE else "over"
        over = max(rest, 0.0)
        last = lines[-1]
        for line, take in takes:
            self._row(sheet, event, line.key, check, take, over if line is last else 0.0)
        if over > TOLERANCE and not any(line is last for line, _ in takes):
            self._row(sheet, event, last.key, check, 0.0, over)
        what = _describe(event.item)
        if lines[0].kind == PALLET and takes:
            for line in sheet.on_pallet(lines[0].pallet or ""):
                room = self.left(sheet, line)
                if room > TOLERANCE:
                    self._row(sheet, event, line.key, check, room)
            what = f"pallet {lines[0].pallet}"
        if check == "over":
            note = f"{kind} {doc_id}: OVER {what} x{over:g} beyond what it expects"
        elif lines[0].kind == UNIT:
            total = sum(line.qty for line in lines)
            done = total - sum(max(self.left(sheet, line), 0.0) for line in lines)
            note = f"{kind} {doc_id}: expected {what} ({done:g} of {total:g})"
        else:
            note = f"{kind} {doc_id}: expected {what}"
        return wire.DocRef(kind, doc_id, check), note

    def unexpected(self, sheet: Sheet, event: wire.Event) -> tuple[wire.DocRef, str]:
        kind, doc_id = sheet.doc.kind, sheet.doc.id
        self._row(sheet, event, "", "unexpected", 0.0, 0.0, event.qty)
        return (wire.DocRef(kind, doc_id, "unexpected"),
                f"{kind} {doc_id}: UNEXPECTED {_describe(event.item)} x{event.qty:g}"
                " (not on it)")

    def undo(self, event: wire.Event, was: list[Attribution]
             ) -> tuple[wire.DocRef, str] | None:
        """A compensating event takes back what the undone one was counted as, with its doc."""
        if not was:  # counted against nothing (or its document closed since)
            return None
        first = was[0]
        for row in was:
            if row.line:
                key = (row.kind, row.doc_id, row.line)
                self.taking[key] = self.taking.get(key, 0.0) - row.matched
            self.rows.append(Attribution(event.id, row.kind, row.doc_id, row.line, self.source,
                                         row.outcome, -row.matched, -row.over, -row.unexpected))
            self.last = (row.kind, row.doc_id)
        return (wire.DocRef(first.kind, first.doc_id, first.outcome),
                f"{first.kind} {first.doc_id}: {first.outcome} taken back")


def _describe(item: wire.Item | None) -> str:
    if item is None:
        return "?"
    if item.epc:
        return item.epc
    text = item.key() or "?"
    return f"{text} lot {item.lot}" if item.lot else text


# --- edge status ----------------------------------------------------------------------------


def read_tallies(outbox: Path | str) -> list[dict[str, Any]]:
    """Each open document's tallies, read-only (``floorsync edge status``): what it expects
    (units; EPCs and pallets apart), what this edge counted against it (received or picked),
    over, unexpected, short (expected minus counted, in units), EPCs and pallets seen; and per
    source (a door ``door:NAME``, a handheld by name). An order's copy says what is left to
    pick: its figures are this edge's picks the central service had not applied when it
    came."""
    path = Path(outbox)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    out = []
    try:
        conn.execute("PRAGMA busy_timeout=2000")
        docs = conn.execute(
            "SELECT kind, id, payload, first_at, received_at FROM documents"
            " WHERE payload IS NOT NULL ORDER BY first_at, kind, id").fetchall()
        for kind, doc_id, payload, first_at, came in docs:
            try:
                sheet = Sheet.of(decode_expected(payload), first_at)
            except wire.WireError:
                continue
            rows = conn.execute(
                NOT_APPLIED_BY if kind in LEFT_TO_DO else
                "SELECT line, source, SUM(matched), SUM(over), SUM(unexpected)"
                " FROM doc_attributions WHERE kind = ?1 AND doc_id = ?2 GROUP BY line, source",
                (kind, doc_id, came) if kind in LEFT_TO_DO else (kind, doc_id)).fetchall()
            out.append(_tally(sheet, rows))
    except sqlite3.Error:  # an outbox from before documents: none
        return []
    finally:
        conn.close()
    return out


def _tally(sheet: Sheet, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    word = "received" if sheet.doc.kind == "receipt" else "picked"
    total = {word: 0.0, "over": 0.0, "unexpected": 0.0}
    by: dict[str, dict[str, float]] = {}
    seen: dict[str, set[str]] = {EPC: set(), PALLET: set()}
    for line_key, source, matched, over, unexpected in rows:
        line = sheet.lines.get(line_key)
        mine = by.setdefault(source, {word: 0.0, "over": 0.0, "unexpected": 0.0})
        counted = matched if line is not None and line.kind == UNIT else 0.0
        if line is not None and line.kind != UNIT and matched > TOLERANCE:
            seen[line.kind].add(line.key)
        for name, qty in ((word, counted), ("over", over), ("unexpected", unexpected)):
            mine[name] += qty
            total[name] += qty
    expected = sheet.total(UNIT)
    return {
        "kind": sheet.doc.kind, "id": sheet.doc.id, "version": sheet.doc.version,
        "location": sheet.doc.location, "expected": expected, **total,
        "short": max(0.0, expected - total[word]),
        "epcs": sheet.total(EPC), "epcs_seen": len(seen[EPC]),
        "pallets": sheet.total(PALLET), "pallets_seen": len(seen[PALLET]), "by": by,
    }


def format_tallies(entries: list[dict[str, Any]]) -> list[str]:
    """One line per open document for ``edge status``."""
    lines = []
    for d in entries:
        word = "received" if d["kind"] == "receipt" else "picked"
        where = f" at {d['location']}" if d["location"] else ""
        more = "".join(f"; {name} {d[name + '_seen']} of {d[name]:g}"
                       for name in ("epcs", "pallets") if d[name])
        sources = ", ".join(f"{s} {v[word]:g}/{v['over']:g}/{v['unexpected']:g}"
                            for s, v in sorted(d["by"].items()))
        lines.append(
            f"{d['kind']:<12}{d['id']} v{d['version']}{where}: expected {d['expected']:g},"
            f" {word} {d[word]:g}, over {d['over']:g}, unexpected {d['unexpected']:g},"
            f" short {d['short']:g}{more}"
            + (f" ({word}/over/unexpected: {sources})" if sources else ""))
    return lines
