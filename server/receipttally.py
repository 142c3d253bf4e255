"""What arrived against a receipt: its receive events laid against its lines and pallets.

Each receive event counts once, at one level, in ledger order:

- a **pallet** (an event whose item is the SSCC itself) of the receipt is received whole, as the
  document describes it: what is left of its lines is filled and its EPCs are covered; the
  same pallet received again is a repeat (over);
- a **serialised item** the receipt lists (matched by GTIN and serial, which an SGTIN's URN or
  Digital Link and a barcode with AI 21 all give, else by its EPC URI) is received and its
  pallet seen; it fills no line. The same one again is a repeat (over); the first read of one
  on a pallet received by its SSCC only confirms it;
- anything else is an **item**: it fills the lines of its master-data item in order (lines of
  its own lot first, then lines without a lot; an event without a lot fills lot lines last),
  each up to its quantity, and what is left over goes to the last of them (over). An item, lot
  or pallet the receipt does not name is **unexpected**.

The edge counts the same way against its copy (``edge/doclines.py``), so a door's check and the
central tally agree on what they both saw.

Pure functions over what ``server.receipts`` read from the ledger; no database here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from floorsync.server.receiptdocs import ReceiptDoc, ReceiptLine

TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Arrival:
    """A receive event as a receipt counts it."""

    event_id: str
    key: str  # the item as the ledger keeps it (SKU, else GTIN, else SSCC, else EPC)
    sku: str | None  # the master-data item, when the receipt's items know the key
    lot: str
    qty: float
    ident: str | None = None  # a serialised item's match key (receiptdocs.epc_ident)
    pallet: str | None = None  # the SSCC, when the event is the pallet itself


@dataclass(slots=True)
class PalletCount:
    by: str | None = None  # 'sscc': received whole; 'epc': some of its EPCs; None: not seen
    epcs: set[str] = field(default_factory=set)
    repeats: float = 0.0  # the pallet, or one of its EPCs, received again
    repeat_events: set[str] = field(default_factory=set)


@dataclass(slots=True)
class UnexpectedCount:
    qty: float = 0.0
    events: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Tally:
    received: dict[int, float]  # line number -> received
    over_events: dict[int, set[str]]  # line number -> the events that took it past expected
    pallets: dict[str, PalletCount]
    unexpected: dict[tuple[str, str], UnexpectedCount]  # (item key, lot)


@dataclass(frozen=True, slots=True)
class Layout:
    """A receipt's document as arrivals are laid against it (made once per document: a
    document never changes, and a large one is laid against at every batch that hits it)."""

    numbers: tuple[int, ...]
    pallets: tuple[str, ...]
    epcs: Mapping[str, str]  # a listed serialised item's match key -> its pallet's SSCC
    by_sku: Mapping[str, list[ReceiptLine]]
    on_pallet: Mapping[str, list[ReceiptLine]]

    @classmethod
    def of(cls, doc: ReceiptDoc) -> Layout:
        on_pallet: dict[str, list[ReceiptLine]] = {}
        by_sku: dict[str, list[ReceiptLine]] = {}
        for ln in doc.lines:
            by_sku.setdefault(ln.sku, []).append(ln)
            if ln.sscc is not None:
                on_pallet.setdefault(ln.sscc, []).append(ln)
        return cls(tuple(ln.line for ln in doc.lines), doc.pallets,
                   {e.ident: e.sscc for e in doc.epcs}, by_sku, on_pallet)


def tally(layout: Layout, arrivals: Iterable[Arrival]) -> Tally:
    """Lay ``arrivals`` (in ledger order) against the receipt."""
    on_pallet, by_sku, epcs = layout.on_pallet, layout.by_sku, layout.epcs
    result = Tally(dict.fromkeys(layout.numbers, 0.0), {},
                   {s: PalletCount() for s in layout.pallets}, {})
    for a in arrivals:
        if a.pallet is not None:
            _pallet(result, a, on_pallet)
        elif a.ident is not None and a.ident in epcs:
            _listed(result.pallets[epcs[a.ident]], a, a.ident)
        else:
            _item(result, a, _candidates(by_sku.get(a.sku or "", ()), a.lot))
    return result


def _pallet(result: Tally, a: Arrival, on_pallet: Mapping[str, list[ReceiptLine]]) -> None:
    count = result.pallets.get(a.pallet or "")
    if count is None:
        _unexpected(result, a)
        return
    if count.by == "sscc":
        count.repeats += a.qty
        count.repeat_events.add(a.event_id)
        return
    count.by = "sscc"
    received = result.received
    for ln in on_pallet.get(a.pallet or "", ()):
        if ln.qty - received[ln.line] > TOLERANCE:
            received[ln.line] = ln.qty


def _listed(pallet: PalletCount, a: Arrival, ident: str) -> None:
    if ident in pallet.epcs:
        pallet.repeats += a.qty
        pallet.repeat_events.add(a.event_id)
    else:
        pallet.epcs.add(ident)
        pallet.by = pallet.by or "epc"


def _item(result: Tally, a: Arrival, candidates: list[ReceiptLine]) -> None:
    if not candidates:
        _unexpected(result, a)
        return
    left, received = a.qty, result.received
    for ln in candidates:
        room = ln.qty - received[ln.line]
        if room > TOLERANCE and left > TOLERANCE:
            take = min(room, left)
            received[ln.line] += take
            left -= take
    if left > TOLERANCE:
        last = candidates[-1].line
        received[last] += left
        result.over_events.setdefault(last, set()).add(a.event_id)


def _unexpected(result: Tally, a: Arrival) -> None:
    count = result.unexpected.setdefault((a.key, a.lot), UnexpectedCount())
    count.qty += a.qty
    count.events.add(a.event_id)


def _candidates(lines: Sequence[ReceiptLine], lot: str) -> list[ReceiptLine]:
    """The lines an item of ``lot`` fills, in order: its own lot's, then those naming none;
    an item without a lot fills any line of the item (lot-less ones first)."""
    own = [ln for ln in lines if ln.lot == lot and lot]
    free = [ln for ln in lines if not ln.lot]
    other = [ln for ln in lines if ln.lot and not lot]
    return own + free + other
