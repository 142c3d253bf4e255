"""Handheld scan workflows: one state machine per scanning device, durable at every step.

The floor's order is "scan the location, then the items, then the destination". What a scan
means depends on the mode and on what came before it; the state that gives it that meaning
(a ``Session``) is saved in the outbox in the same transaction as the events it produces, so a
good-read beep stands for both the events and the state on disk, and a restarted agent resumes
exactly where the operator left off.

Modes (command labels ``CMD:RECEIVE``, ``CMD:PUTAWAY``, ...; ``PUT-AWAY`` and ``PUT_AWAY`` too):

- receive, return: the location (the destination), then items; one event per item scan.
- pick, pack, ship: the source location, then items; one event per item scan.
- adjust: the location, then items; one ``adjust`` per item scan, +qty unless a quantity
  label says otherwise (``QTY:-2``); the location goes in ``to``.
- putaway, move: the source, then items (kept pending, durably), then the destination: that
  scan sends the pending items as events in one transaction, one event per distinct item
  (quantities summed). The source stays, for the next items; ``CMD:DONE`` ends it.
- count: a location, then items (pending), then ``CMD:DONE`` or the next location: one
  ``count`` event with the full set seen; nothing seen is a count of zero.

An event made of several scans (putaway, move, count) carries the time of the scan that completed
it: the moment the stock really moved, or the count was closed.

Other labels:

- Quantity: ``QTY:n`` (or ``CMD:QTY:n``), a whole or decimal number, sets the quantity of the
  next item scan; it multiplies the code's own quantity (GS1 AI 30/37), so ``QTY:5`` then a case
  label with 37=12 is 60. Repeated scans count one each. Negative only in adjust; zero never.
- ``CMD:UNDO`` takes back the latest thing not yet sent: a quantity label, else the last pending
  item scan, else (receive, return, pick, pack, ship, adjust) the item event just sent, by sending
  a compensating ``adjust`` at that location, else the location. Events a destination or count
  completed are not undone (bad read "already sent"): the stock really moved, move it back.
- ``CMD:DONE`` finishes a count or ends a location/source; ``CMD:CLEAR`` drops the session
  (pending scans included) and keeps the mode.
- A mode label while items are pending or a count is open is refused: finish or clear first.
  With ``fixed_mode`` the configured mode is the only one; other mode labels are refused.

Documents (``edge.documents``): in receive mode, a receipt's label (one of its ``labels``, or
``ASN:{id}``, the ``receipt_label_prefix``) or the SSCC of one of its pallets selects it; the
item scans that follow are receives with ``doc`` = the receipt and the edge's check: expected
(on it, within what is left), over (beyond), unexpected (not on it). In pick mode an order's
label (``ORD:{id}``), or the label of one of its totes (``TOTE:{tote}``, the
``tote_label_prefix``; the order names its totes and the edge's copy carries them), does the
same for picks: a picker with a cart of totes scans the tote, then the items, and the picks
count against that tote's order (the tote is not a stock location: ``to`` stays empty, as with
``ORD:``, unless ``pick_to`` is set). A tote no open order of this edge's copies names (a free
tote, one of another site's order, or its order not here yet) is a bad read saying so. In ship
mode the same labels select the order for ship events: each carries the order's doc without a
check of the edge (its copy says what is left to pick, not to ship), and the central service
ships its lines. Over and unexpected get bad-read feedback while the event is kept (physical
truth wins: nothing is refused for a document). A label of the prefixed form for a document
this edge has no copy of selects it with check ``unknown``. The selection lasts until
``CMD:DONE``, ``CMD:CLEAR``, a mode change or another document's label.

Staging (``pick_to``, the edge's ``[workflow] pick_to``): where the floor carries picked goods to
an outbound staging lane and ships from there, every pick made in pick mode names that lane as
its ``to``, so the goods stay on the books there (staged for the order's line, centrally) until
a ship from the lane takes them off once. Picks without an order stage too: the goods went to
the lane all the same, and a ship from there would otherwise take them off a second time with
no order to tell. ``CMD:UNDO`` of a staged pick sends two adjusts: back at the source, out of
the lane. Unset (the default), a pick names no ``to`` and takes the goods off the books.

The same code (text and AIM id) again within ``duplicate_window_ms`` of the time it last counted
is ignored with good-read feedback (like a scanner's same-symbol timeout: not an error, and the
operator must not re-scan). A scan that makes no sense where it comes gets bad-read feedback
with a message and is recorded as a floor exception; the session stays as it was.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any

from floorsync.devices.base import ScanRead
from floorsync.devices.codes import interpret
from floorsync.devices.identity import Identity
from floorsync.edge import wire
from floorsync.edge.documents import (
    BAD_CHECKS,
    MOVEMENT,
    Against,
    Claim,
    DocumentBook,
    Undoing,
    book_for,
)
from floorsync.edge.outbox import Outbox

log = logging.getLogger(__name__)

MODES = ("receive", "putaway", "move", "pick", "pack", "ship", "count", "return", "adjust")
QUANTITY_PREFIX = "QTY:"
RECEIPT_LABEL_PREFIX = "ASN:"
ORDER_LABEL_PREFIX = "ORD:"
TOTE_LABEL_PREFIX = "TOTE:"
DEFAULT_DUPLICATE_WINDOW_MS = 500
_CONTEXT_VERSION = 1
# Where the session's location goes on an event of each mode; putaway/move add the destination.
_ROLE = {
    "receive": "to", "return": "to", "adjust": "to",
    "pick": "from", "pack": "from", "ship": "from", "putaway": "from", "move": "from",
    "count": "at",
}
_WANTED = {"to": "destination", "from": "source location", "at": "location"}
_PENDING_MODES = ("putaway", "move", "count")  # items wait in the session until completed
_QTY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
# Modes besides its own (MOVEMENT) where a document's label selects it: the events carry the
# document without the edge's check, for the central service to match (a ship closes lines).
_UNCHECKED = {"order": ("ship",)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scan did: events kept (numbered, on disk), and good or bad feedback with why."""

    events: tuple[wire.Event, ...]
    good: bool
    message: str


@dataclass(frozen=True, slots=True)
class PendingScan:
    """An item scan waiting for its destination or the end of its count."""

    item: wire.Item
    qty: float
    raw: str
    symbology: str | None


@dataclass(frozen=True, slots=True)
class Sent:
    """The single item event just sent, which CMD:UNDO can still compensate."""

    type: str
    item: wire.Item
    qty: float
    location: str
    id: str | None = None  # its event id: an undo takes back what it was counted as
    to: str | None = None  # where a staged pick put it (pick_to): an undo takes it out again


@dataclass(frozen=True, slots=True)
class Chosen:
    """The document the item scans are made against, and the pallet scanned, if one was."""

    kind: str
    id: str
    pallet: str | None = None
    tote: str | None = None  # the order's tote whose label selected it


@dataclass(frozen=True, slots=True)
class Session:
    """A device's workflow state: all that gives the next scan its meaning."""

    mode: str
    location: str | None = None  # receive/return/adjust: where; others: the source; count: place
    pending: tuple[PendingScan, ...] = ()
    qty: float | None = None  # a quantity label waiting for the next item
    last: Sent | None = None  # undoable by compensation
    sent: int = 0  # events the last completing scan sent (not undoable)
    doc: Chosen | None = None  # receive against a receipt, pick against an order

    @property
    def busy(self) -> bool:
        """Something would be lost by switching mode: pending items or an open count."""
        return bool(self.pending) or (self.mode == "count" and self.location is not None)

    def to_json(self) -> str:
        """Compact: each distinct scanned code once, then a scan is [code index, qty], so a long
        count stays a small write (3000 scans of 10 codes: about 25 kB)."""
        codes: dict[tuple[str, str | None], int] = {}  # the same code is the same item
        firsts: list[PendingScan] = []
        scans = []
        for p in self.pending:
            index = codes.setdefault((p.raw, p.symbology), len(codes))
            if index == len(firsts):
                firsts.append(p)
            scans.append((index, p.qty))
        return json.dumps({
            "v": _CONTEXT_VERSION, "mode": self.mode, "location": self.location, "qty": self.qty,
            "codes": [{"item": wire.item_to_dict(p.item), "raw": p.raw, "symbology": p.symbology}
                      for p in firsts],
            "scans": scans,
            "last": None if self.last is None else {
                "type": self.last.type, "item": wire.item_to_dict(self.last.item),
                "qty": self.last.qty, "location": self.last.location, "id": self.last.id,
                **({} if self.last.to is None else {"to": self.last.to})},
            "sent": self.sent,
            "doc": None if self.doc is None else {
                "kind": self.doc.kind, "id": self.doc.id, "pallet": self.doc.pallet,
                **({} if self.doc.tote is None else {"tote": self.doc.tote})},
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Session:
        """Raises ValueError (WireError included) for a context this version cannot read."""
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"saved state is not an object: {text[:80]!r}")
        if data.get("v") != _CONTEXT_VERSION or data.get("mode") not in MODES:
            raise ValueError(f"unknown context version or mode: {text[:80]!r}")
        codes = [(wire.item_from_dict(c["item"]), str(c["raw"]), c.get("symbology"))
                 for c in data.get("codes", ())]

        def scan(index: int, qty: float) -> PendingScan:
            item, raw, symbology = codes[index]
            return PendingScan(item, qty, raw, symbology)

        last = data.get("last")
        qty = data.get("qty")
        location = data.get("location")
        if not (qty is None or _is_number(qty)) or not (location is None
                                                       or isinstance(location, str)):
            raise ValueError(f"saved state has a bad qty or location: {text[:80]!r}")
        if not all(isinstance(i, int) and _is_number(q) for i, q in data.get("scans", ())):
            raise ValueError(f"saved state has bad scans: {text[:80]!r}")
        doc = data.get("doc")
        chosen = None
        if doc is not None:
            if not isinstance(doc, dict) or doc.get("kind") not in MOVEMENT:
                raise ValueError(f"saved state has a bad document: {text[:80]!r}")
            pallet, tote = doc.get("pallet"), doc.get("tote")
            chosen = Chosen(doc["kind"], wire.check_name(doc.get("id"), "document id"),
                            None if pallet is None else str(pallet),
                            None if tote is None else wire.check_name(tote, "tote"))
        return cls(
            mode=data["mode"],
            location=data.get("location"),
            pending=tuple(scan(i, qty) for i, qty in data.get("scans", ())),
            qty=data.get("qty"),
            last=None if last is None else Sent(last["type"], wire.item_from_dict(last["item"]),
                                                last["qty"], last["location"], last.get("id"),
                                                last.get("to")),
            sent=int(data.get("sent", 0)),
            doc=chosen,
        )


class _Refused(Exception):
    """A scan that makes no sense where it comes; the message is for the operator."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _acceptable(step: _Step) -> None:
    """Refuse, before anything is kept, what the central service would reject: an operator
    hears a bad read now rather than a good one for an event that never counts."""
    totals: dict[wire.Item, float] = {}
    for scan in step.session.pending:
        totals[scan.item] = totals.get(scan.item, 0) + scan.qty
    if step.session.qty is not None:
        totals[wire.Item(sku="quantity label")] = step.session.qty
    if any(abs(q) > wire.MAX_QTY for q in totals.values()):
        raise _Refused(f"quantity over {wire.MAX_QTY}: scan a smaller quantity")
    for event in step.events:
        try:  # the same check the central service makes (seq is given by the outbox)
            wire.event_from_dict(json.loads(wire.encode_event(
                wire.Event(event.id, 1, event.time, event.type, event.item, event.qty,
                           event.from_, event.to, event.operator, event.read, event.count))))
        except wire.WireError as exc:
            raise _Refused(f"the central service would refuse this: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Step:
    session: Session
    message: str
    events: tuple[wire.Event, ...] = field(default=())
    claims: tuple[Claim | None, ...] = ()  # per event: the document it is counted against


class HandheldWorkflow:
    """One state machine per scanning device; ``handle`` commits before it returns.

    ``store`` is the outbox: events and the session commit together under ``key`` (the device
    name), and the session saved there is resumed at start (it wins over ``mode``, which is the
    mode of a device without one). ``handle`` lets OutboxError through: nothing was kept and the
    session did not move, so the caller gives bad-read feedback and the operator scans again.
    ``documents`` is the outbox's document book (by default the one ``book_for`` gives).
    """

    def __init__(
        self,
        *,
        store: Outbox,
        key: str,
        mode: str = "receive",
        fixed_mode: bool = False,
        operator: str | None = None,
        location_prefixes: tuple[str, ...] = ("LOC:",),
        location_patterns: tuple[str, ...] = (),
        command_prefix: str = "CMD:",
        quantity_prefix: str = QUANTITY_PREFIX,
        receipt_label_prefix: str = RECEIPT_LABEL_PREFIX,
        order_label_prefix: str = ORDER_LABEL_PREFIX,
        tote_label_prefix: str = TOTE_LABEL_PREFIX,
        pick_to: str | None = None,
        duplicate_window_ms: float = DEFAULT_DUPLICATE_WINDOW_MS,
        tz: tzinfo | None = None,
        documents: DocumentBook | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        self.store = store
        self.tz = tz  # event times in this zone's offset; None: the host's
        self.key = key
        self.default_mode = mode
        self.fixed_mode = fixed_mode
        self.operator = operator
        self.location_prefixes = location_prefixes
        self.location_patterns = location_patterns
        self.command_prefix = command_prefix
        self.quantity_prefix = quantity_prefix
        self.label_prefixes = (("receipt", receipt_label_prefix), ("order", order_label_prefix))
        self.tote_label_prefix = tote_label_prefix
        self.pick_to = pick_to or None  # "" is off, as in the config
        self.documents = documents if documents is not None else book_for(store)
        self.duplicate_window_s = duplicate_window_ms / 1000
        self._last_good: tuple[str, str | None, datetime] | None = None
        self.session = self._fixed(self._load())

    def _load(self) -> Session:
        text = self.store.context(self.key)
        if text is None:
            return Session(self.default_mode)
        try:
            return Session.from_json(text)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:  # kept
            reason = f"saved workflow state unreadable, starting afresh: {exc}"
            log.error("%s: %s", self.key, reason)
            self.store.record_exception(self.key, reason, text)
            return Session(self.default_mode)

    def _fixed(self, session: Session) -> Session:
        """A fixed-mode device returns to its mode once a session of another mode is finished."""
        if self.fixed_mode and session.mode != self.default_mode and not session.busy:
            return Session(self.default_mode)
        return session

    # --- the entry point ------------------------------------------------------------------

    def handle(self, read: ScanRead) -> Outcome:
        """Apply one scan; when this returns, its events and the new session are on disk."""
        if read.error or read.text is None:
            return self._refuse(read, f"unreadable scan: {read.error or 'no text'}")
        code = read.text.strip(" \t\r\n")
        last = self._last_good
        if (last is not None and last[0] == code and last[1] == read.symbology
                and 0 <= (read.at - last[2]).total_seconds() < self.duplicate_window_s):
            return Outcome((), True, "same code again: ignored")
        try:
            step = self._step(code, read)
            _acceptable(step)
        except _Refused as exc:
            return self._refuse(read, str(exc))
        session = self._fixed(step.session)
        kept: list[wire.Event] = []
        message = step.message
        if step.events or session is not self.session:  # an idle step returns the same one
            claims = step.claims or (None,) * len(step.events)
            done = self.documents.keep(step.events, claims, source=self.key,
                                       context=(self.key, session.to_json()))
            kept = done.events
            notes = [n for n in done.notes if n is not None]
            if notes:
                message = f"{message}; {'; '.join(notes)}"
        self.session = session
        self._last_good = (code, read.symbology, read.at)
        bad = any(e.doc is not None and e.doc.check in BAD_CHECKS for e in kept)
        if bad:  # over, unexpected: said with the bad-read signal, and kept all the same
            message = f"{message} (kept: do not scan it again)"
        return Outcome(tuple(kept), not bad, message)

    def _refuse(self, read: ScanRead, reason: str) -> Outcome:
        raw = read.raw.decode("utf-8", "replace") if read.raw else read.text
        self.store.record_exception(self.key, reason, raw)
        return Outcome((), False, reason)

    def _step(self, code: str, read: ScanRead) -> _Step:
        s = self.session
        prefix = self.quantity_prefix
        if prefix and code[:len(prefix)].upper() == prefix.upper():
            return self._quantity(s, code[len(prefix):])
        chosen = self._document_label(code)
        if chosen is not None:
            return self._choose(s, chosen)
        identity = interpret(
            code, read.symbology, location_prefixes=self.location_prefixes,
            location_patterns=self.location_patterns, command_prefix=self.command_prefix,
        )
        if identity.kind == "command":
            return self._command(s, identity.command or "", read)
        if identity.kind == "location":
            return self._location(s, identity.location or identity.gln or "", read)
        if identity.kind == "container" and identity.sscc and s.mode == "receive":
            receipt = self.documents.receipt_of_pallet(identity.sscc)
            if receipt is not None:  # a pallet of an open receipt: selects it, receives nothing
                return self._choose(s, Chosen("receipt", receipt, identity.sscc))
        if identity.kind in ("item", "container"):
            return self._item(s, identity, read)
        raise _Refused(f"not a label this workflow knows: {identity.error or identity.kind}")

    # --- labels ---------------------------------------------------------------------------

    def _command(self, s: Session, command: str, read: ScanRead) -> _Step:
        word = command.strip().upper()
        prefix = self.quantity_prefix.upper()
        if prefix and word.startswith(prefix):
            return self._quantity(s, word[len(prefix):])
        word = word.replace("-", "").replace("_", "").replace(" ", "")
        if word == "UNDO":
            return self._undo(s, read)
        if word == "DONE":
            return self._done(s, read)
        if word == "CLEAR":
            dropped = f", {len(s.pending)} pending scan(s) dropped" if s.pending else ""
            return _Step(Session(s.mode), f"cleared{dropped}; {s.mode}: scan the {_want(s.mode)}")
        mode = word.lower()
        if mode not in MODES:
            raise _Refused(f"unknown command {command!r}")
        if self.fixed_mode and mode != self.default_mode:
            raise _Refused(f"this scanner is fixed to {self.default_mode}")
        if s.busy:
            raise _Refused(f"{_open_work(s)}: finish it (destination or CMD:DONE) or CMD:CLEAR")
        return _Step(Session(mode), f"{mode}: scan the {_want(mode)}")

    def _quantity(self, s: Session, text: str) -> _Step:
        text = text.strip()
        if not _QTY.fullmatch(text):
            raise _Refused(f"not a quantity: {text!r} (labels read QTY:12, QTY:-2, QTY:2.5)")
        value = float(text)
        qty: float = int(value) if value.is_integer() else value
        if qty == 0 or abs(qty) > wire.MAX_QTY:
            raise _Refused(f"quantity {text} is out of range")
        if qty < 0 and s.mode != "adjust":
            raise _Refused(f"negative quantities only in adjust (mode is {s.mode})")
        return _Step(replace(s, qty=qty), f"quantity {qty} for the next item")

    def _document_label(self, code: str) -> Chosen | None:
        """A document's own label, or a label of the documented form (``ASN:{id}``)."""
        found = self.documents.by_label(code)
        if found is not None:
            return Chosen(*found)
        prefix = self.tote_label_prefix
        if prefix and code[:len(prefix)].upper() == prefix.upper():
            return self._tote(code[len(prefix):].strip())
        for kind, prefix in self.label_prefixes:
            if prefix and code[:len(prefix)].upper() == prefix.upper():
                doc_id = code[len(prefix):].strip()
                try:
                    return Chosen(kind, wire.check_name(doc_id, f"{kind} id"))
                except wire.WireError as exc:
                    raise _Refused(f"a {kind} label without a usable id: {exc}") from None
        return None

    def _tote(self, text: str) -> Chosen:
        """A tote's label: the open order whose copy names it. Not known here, it selects
        nothing (unlike ``ORD:{id}``, a tote does not say which order it is for)."""
        try:
            tote = wire.check_name(text, "tote id")
        except wire.WireError as exc:
            raise _Refused(f"a tote label without a usable id: {exc}") from None
        order = self.documents.order_of_tote(tote)
        if order is None:
            site = f" of site {self.documents.site}" if self.documents.site else ""
            raise _Refused(f"tote {tote}: no open order{site} names it here (a free tote, a"
                           " tote of another site's order, or its order not yet come to this"
                           " edge): scan the order's label")
        return Chosen("order", order, tote=tote)

    def _choose(self, s: Session, chosen: Chosen) -> _Step:
        mode = MOVEMENT[chosen.kind]
        unchecked = s.mode in _UNCHECKED.get(chosen.kind, ())
        if s.mode != mode and not unchecked:
            raise _Refused(f"a {chosen.kind} label in {s.mode} mode: scan CMD:{mode.upper()}"
                           " first")
        sheet = self.documents.get(chosen.kind, chosen.id)
        where = s.location
        if where is None and sheet is not None and chosen.kind == "receipt":
            where = sheet.doc.location  # the receipt's door, unless the operator named one
        after = replace(s, doc=chosen, location=where, last=None, sent=0)
        what = (f"{chosen.kind} {chosen.id}" + (f" pallet {chosen.pallet}" if chosen.pallet else "")
                + (f" tote {chosen.tote}" if chosen.tote else ""))
        if unchecked:
            what += " (checked centrally)"
        elif sheet is None:
            what += " (not known here: checked centrally)"
        else:
            what += f" ({sheet.total():g} unit(s) expected)"
        then = "the items" if where is not None else f"the {_want(mode)}, then the items"
        return _Step(after, f"{s.mode} against {what}: scan {then}")

    def _location(self, s: Session, where: str, read: ScanRead) -> _Step:
        if not where:
            raise _Refused("location label without a location")
        if s.mode == "count":
            if s.location is None:
                return _Step(replace(s, location=where, last=None, sent=0),
                             f"counting {where}: scan the items, then CMD:DONE")
            if where == s.location:
                return _Step(s, f"counting {where}: {_scans(s)} so far")
            event = self._count_event(s, read)
            return _Step(replace(s, location=where, pending=(), last=None, sent=1),
                         f"count of {s.location} kept; counting {where}", (event,))
        if s.mode in ("putaway", "move"):
            if s.location is None:
                return _Step(replace(s, location=where, last=None, sent=0),
                             f"{s.mode} from {where}: scan the items")
            if not s.pending:
                raise _Refused(f"{s.mode} from {s.location}: no items pending; scan items first"
                               " (CMD:DONE or CMD:UNDO to change the source)")
            if where == s.location:
                raise _Refused(f"{where} is the source: scan the destination")
            events = self._move_events(s, where, read)
            return _Step(replace(s, pending=(), last=None, sent=len(events)),
                         f"{s.mode} {s.location} -> {where}: {_scans(s)} kept", events)
        return _Step(replace(s, location=where, last=None, sent=0),
                     f"{s.mode} {'at' if _ROLE[s.mode] == 'to' else 'from'} {where}:"
                     " scan the items")

    def _item(self, s: Session, identity: Identity, read: ScanRead) -> _Step:
        if s.location is None:
            raise _Refused(f"{s.mode}: scan the {_want(s.mode)} before items")
        item = wire.Item(gtin=identity.gtin, lot=identity.lot, serial=identity.serial,
                         sscc=identity.sscc, epc=identity.epc)
        if item.key() is None:
            raise _Refused("the code names no item")
        qty = (identity.quantity or 1) * (1 if s.qty is None else s.qty)
        if qty == 0 or (qty < 0 and s.mode != "adjust"):
            raise _Refused(f"quantity {qty} is not possible for a {s.mode}")
        raw = read.raw.decode("utf-8", "replace")
        if s.mode in _PENDING_MODES:
            pending = (*s.pending, PendingScan(item, qty, raw, read.symbology))
            after = replace(s, pending=pending, qty=None, last=None, sent=0)
            then = "CMD:DONE" if s.mode == "count" else "the destination"
            return _Step(after, f"{item.key()} x{qty} ({_scans(after)}); more, or {then}")
        where = s.location
        to = self.pick_to if s.mode == "pick" else None
        event = self._event(s.mode, item, qty, where, to, read,
                            wire.SourceRead("barcode", raw=raw, symbology=read.symbology))
        claim = None
        if s.doc is not None and MOVEMENT[s.doc.kind] == s.mode:
            claim = Against(s.doc.kind, s.doc.id, s.doc.pallet, where)
        elif s.doc is not None and s.mode in _UNCHECKED.get(s.doc.kind, ()):
            event = replace(event, doc=wire.DocRef(s.doc.kind, s.doc.id))
        return _Step(replace(s, qty=None, last=Sent(s.mode, item, qty, where, event.id, to),
                     sent=0),
                     f"{s.mode} {item.key()} x{qty} {'at' if _ROLE[s.mode] == 'to' else 'from'}"
                     f" {where}{'' if to is None else f' to {to}'}", (event,), (claim,))

    def _undo(self, s: Session, read: ScanRead) -> _Step:
        if s.qty is not None:
            return _Step(replace(s, qty=None), f"quantity {s.qty} undone")
        if s.pending:
            gone = s.pending[-1]
            after = replace(s, pending=s.pending[:-1])
            return _Step(after, f"undone: {gone.item.key()} x{gone.qty} ({_scans(after)})")
        if s.last is not None:
            back = -s.last.qty if _ROLE[s.last.type] == "to" else s.last.qty
            event = self._event("adjust", s.last.item, back, s.last.location, None, read,
                                wire.SourceRead("barcode", raw=read.raw.decode("utf-8", "replace"),
                                                symbology=read.symbology))
            claim = None if s.last.id is None else Undoing(s.last.id)
            events: tuple[wire.Event, ...] = (event,)
            claims: tuple[Claim | None, ...] = (claim,)
            out = ""
            if s.last.to is not None:  # a staged pick: out of the lane again
                events += (self._event("adjust", s.last.item, -s.last.qty, s.last.to, None,
                                       read, event.read),)
                claims += (None,)
                out = f", adjust {-s.last.qty:+g} at {s.last.to}"
            return _Step(replace(s, last=None),
                         f"undone: {s.last.type} {s.last.item.key()} x{s.last.qty}"
                         f" (adjust {back:+g} at {s.last.location}{out} kept)", events, claims)
        if s.sent:
            raise _Refused(f"already sent ({s.sent} event(s)): cannot undo; scan it back instead")
        if s.location is not None:
            return _Step(replace(s, location=None), f"undone: location {s.location}")
        raise _Refused("nothing to undo")

    def _done(self, s: Session, read: ScanRead) -> _Step:
        if s.mode == "count":
            if s.location is None:
                raise _Refused("no count open: scan a location first")
            event = self._count_event(s, read)
            return _Step(Session("count", sent=1),
                         f"count of {s.location} sent ({_scans(s)})", (event,))
        if s.pending:
            raise _Refused(f"{_open_work(s)}: scan the destination (or CMD:CLEAR)")
        if s.location is None:
            raise _Refused("nothing to finish")
        return _Step(Session(s.mode), f"done with {s.location}; scan the {_want(s.mode)}")

    # --- events ---------------------------------------------------------------------------

    def _event(self, kind: str, item: wire.Item, qty: float, where: str, to: str | None,
               read: ScanRead, source: wire.SourceRead | None) -> wire.Event:
        role = "to" if kind == "adjust" else _ROLE[kind]
        return wire.Event(
            id=wire.new_event_id(), seq=0,  # numbered by the outbox
            time=wire.format_time(read.at.astimezone(self.tz)), type=kind, item=item, qty=qty,
            from_=where if role == "from" else None, to=where if role == "to" else to,
            operator=self.operator, read=source,
        )

    def _move_events(self, s: Session, to: str, read: ScanRead) -> tuple[wire.Event, ...]:
        """One event per distinct item, quantities summed; the read is its first scan's."""
        assert s.location is not None
        return tuple(
            self._event(s.mode, first.item, qty, s.location, to, read,
                        wire.SourceRead("barcode", raw=first.raw, symbology=first.symbology))
            for first, qty in _grouped(s.pending)
        )

    def _count_event(self, s: Session, read: ScanRead) -> wire.Event:
        assert s.location is not None
        seen = tuple(wire.CountLine(p.item, qty) for p, qty in _grouped(s.pending))
        return wire.Event(
            id=wire.new_event_id(), seq=0, time=wire.format_time(read.at.astimezone(self.tz)),
            type="count", item=None, qty=0, operator=self.operator,
            count=wire.Count(s.location, seen),
        )


def _grouped(pending: tuple[PendingScan, ...]) -> list[tuple[PendingScan, float]]:
    """Pending scans by item, in the order first seen: (first scan, total quantity)."""
    totals: dict[wire.Item, tuple[PendingScan, float]] = {}
    for p in pending:
        first, qty = totals.get(p.item, (p, 0))
        totals[p.item] = (first, qty + p.qty)
    return list(totals.values())


def _want(mode: str) -> str:
    return _WANTED[_ROLE[mode]]


def _scans(s: Session) -> str:
    total = sum(p.qty for p in s.pending)
    return f"{len(s.pending)} scan(s), {total:g} unit(s)"


def _open_work(s: Session) -> str:
    if s.mode == "count":
        return f"count of {s.location} open ({_scans(s)})"
    return f"{s.mode} from {s.location}: {_scans(s)} pending"
