"""A document's expected lines as the floor matches items against them. Pure: no database.

A document (``edge.expected``) becomes a ``Sheet`` of entries, each with a key that does not
depend on the entry's place in the document (pallet, item, location), so the tallies kept
against it survive a new version that reorders or adds lines. Three kinds of entry, counted as
the central service counts a receipt (``server.receipttally``):

- ``unit``: a line of a GTIN or SKU (a lot when the document names one) and a quantity, loose
  or on a pallet. Items fill these lines: the lines of the item's own lot first, then lines
  naming no lot, then (an item without a lot) lines of other lots; each up to its quantity, the
  rest over.
- ``epc``: a serialised item the document lists (a pallet's child EPC, or a line of one EPC):
  expected once, again it is over. It confirms its pallet; it fills no unit line.
- ``pallet``: a pallet's SSCC. Received by its SSCC, a pallet is received whole: what is left
  of its unit lines is filled. Again, it is over.

An item is matched at the most specific level it and the document share, and only there: the
same EPC (or GTIN + serial, which an SGTIN's URI gives), then an SSCC, then the GTIN, then the
SKU. A serialised case already received is over, never taken for a class line's unit. The same
key twice is one entry (quantities summed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from floorsync.edge import wire
from floorsync.edge.expected import Expected, ExpectedLine

MatchKey = tuple[str, ...]
UNIT, EPC, PALLET = "unit", "epc", "pallet"


@dataclass(frozen=True, slots=True)
class Line:
    key: str
    kind: str  # UNIT, EPC, PALLET
    item: wire.Item
    qty: float
    location: str | None = None
    pallet: str | None = None  # the SSCC of the pallet it is on (a pallet entry: its own)


@dataclass(frozen=True, slots=True)
class Sheet:
    """One open document, ready for matching."""

    doc: Expected
    first_at: float  # when this edge first had the document (any version): the earliest first
    lines: dict[str, Line]
    index: dict[MatchKey, tuple[str, ...]]  # match key -> entry keys, in document order

    @classmethod
    def of(cls, doc: Expected, first_at: float) -> Sheet:
        lines: dict[str, Line] = {}

        def add(line: Line) -> None:
            known = lines.get(line.key)
            lines[line.key] = line if known is None else Line(
                known.key, known.kind, known.item, known.qty + line.qty, known.location,
                known.pallet)

        for entry in doc.lines:
            add(_line(entry))
        for p in doc.pallets:
            add(_line(ExpectedLine(wire.Item(sscc=p.sscc), 1), p.sscc))
            for epc in p.epcs:
                add(_line(ExpectedLine(wire.Item(epc=epc), 1), p.sscc))
            for entry in p.lines:
                add(_line(entry, p.sscc))
        index: dict[MatchKey, list[str]] = {}
        for line in lines.values():
            for key in line_keys(line.item):
                index.setdefault(key, []).append(line.key)
        return cls(doc, first_at, lines, {k: tuple(v) for k, v in index.items()})

    def total(self, kind: str = UNIT) -> float:
        """What the document expects of one kind: units, EPCs or pallets."""
        return sum(line.qty for line in self.lines.values() if line.kind == kind)

    def on_pallet(self, sscc: str) -> list[Line]:
        """The unit lines a pallet carries."""
        return [line for line in self.lines.values() if line.kind == UNIT and line.pallet == sscc]

    def candidates(self, item: wire.Item, location: str | None = None) -> list[Line]:
        """The entries ``item`` counts against, in the order they fill (one kind only); empty:
        not on this document. ``location``: lines naming it come before lines naming none (an
        order's pick locations), after the lot order."""
        for level in scan_levels(item):
            found = [self.lines[k] for k in self.index.get(level, ())]
            if level[0] in ("gtin", "sku"):
                found = [line for line in found if line.kind == UNIT and (
                    not line.item.lot or not item.lot or line.item.lot == item.lot)]
            if len(found) > 1:
                found.sort(key=lambda line: (_lot_rank(line, item),
                                             _location_rank(line, location)))
            if found:
                return found
        return []


def _lot_rank(line: Line, item: wire.Item) -> int:
    if line.item.lot and line.item.lot == item.lot:
        return 0
    return 1 if not line.item.lot else 2


def _location_rank(line: Line, location: str | None) -> int:
    if line.location is None:
        return 1
    return 0 if line.location == location else 2


def _line(entry: ExpectedLine, pallet: str | None = None) -> Line:
    item = entry.item
    kind = EPC if item.epc else PALLET if item.sscc and not item.gtin and not item.sku else UNIT
    if kind == PALLET:
        pallet = item.sscc
    key = json.dumps([kind, pallet, wire.item_to_dict(item), entry.location],
                     separators=(",", ":"), sort_keys=True)
    return Line(key, kind, item, 1 if kind != UNIT else entry.qty, entry.location, pallet)


def _gtin(value: str) -> str:
    """GTIN-8/12/13 as GTIN-14, so a label and a document that write it differently agree."""
    return value.zfill(14) if value.isdigit() and len(value) < 14 else value


def line_keys(item: wire.Item) -> list[MatchKey]:
    """What a document's entry is found by."""
    if item.epc:
        keys: list[MatchKey] = [("epc", item.epc)]
        gs = sgtin_parts(item.epc)
        if gs is not None:
            keys.append(("gs", *gs))
        sscc = sscc_of(item.epc)
        if sscc is not None:
            keys.append(("sscc", sscc))
        return keys
    if item.sscc and not item.gtin and not item.sku:
        return [("sscc", item.sscc)]
    keys = []
    if item.gtin:
        keys.append(("gtin", _gtin(item.gtin)))
    if item.sku:
        keys.append(("sku", item.sku))
    return keys


def scan_levels(item: wire.Item) -> Iterable[MatchKey]:
    """What a scanned or read item is looked up by, most specific first."""
    if item.epc:
        yield ("epc", item.epc)
    if item.gtin and item.serial:
        yield ("gs", _gtin(item.gtin), item.serial)
    if item.sscc:
        yield ("sscc", item.sscc)
    if item.gtin:
        yield ("gtin", _gtin(item.gtin))
    if item.sku:
        yield ("sku", item.sku)


def _check_digit(digits: str) -> str:
    total = 3 * sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2]))
    return str((10 - total % 10) % 10)


def sgtin_parts(uri: str) -> tuple[str, str] | None:
    """``urn:epc:id:sgtin:CP.IR.SERIAL`` -> (GTIN-14, serial); None for anything else."""
    prefix = "urn:epc:id:sgtin:"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix):].split(".")
    if len(parts) != 3 or not (parts[0] + parts[1]).isdigit() or not parts[2]:
        return None
    company, reference, serial = parts
    if len(company) + len(reference) != 13:
        return None
    body = reference[0] + company + reference[1:]
    return body + _check_digit(body), unquote(serial)


def sscc_of(uri: str) -> str | None:
    """``urn:epc:id:sscc:CP.SR`` -> the 18-digit SSCC; None for anything else."""
    prefix = "urn:epc:id:sscc:"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix):].split(".")
    if len(parts) != 2 or not "".join(parts).isdigit() or len(parts[0]) + len(parts[1]) != 17:
        return None
    body = parts[1][0] + parts[0] + parts[1][1:]
    return body + _check_digit(body)
