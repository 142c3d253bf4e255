"""An expected receipt as a document: read, checked line by line, and made canonical.

A receipt (an ASN or a purchase order) says what should arrive at a site: lines of item and
quantity (with a lot when the supplier names one) and, optionally, SSCC pallets with their
child EPCs and GTIN quantities. A document is judged whole: every bad line or field is listed
with its JSON path (``$.lines[3].qty``) and nothing is kept, so the sender can fix all of it at
once. Items must be known to master data (a receipt is not physical truth: an item the
warehouse cannot name is a mistake in the document, not on the floor).

The native JSON form::

    {"id": "ASN-4711", "site": "wh1", "supplier": "ACME", "expected_date": "2026-11-23",
     "location": "DOCK-1",
     "lines": [{"gtin": "09501101530003", "qty": 24, "lot": "L1"}, {"sku": "SKU-7", "qty": 5}],
     "pallets": [{"sscc": "106141411234567897", "epcs": ["urn:epc:id:sgtin:0614141.812345.6789"],
                  "lines": [{"gtin": "09501101530003", "qty": 10}]}]}

``line`` (a positive integer) may number the lines; all or none do. Without it they are
numbered in document order, the loose lines first, then each pallet's. ``qty`` is in the item's
unit of measure (master data's ``unit``); ``uom``, when given, must name that unit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from floorsync.edge import expected, wire
from floorsync.server.errors import ServerError
from floorsync.server.gs1 import gs1_check_digit, parse_gs1_uri

MAX_LINES = expected.MAX_LINES  # lines, and EPCs, per document: what one floor message holds
MAX_ERRORS = 1000  # listed in a 422; the count says how many there were
MAX_TEXT = 200
LABEL_PREFIX = "ASN:"  # the receipt's label on the paperwork: ASN:{id} selects it on a handheld
SOURCES = ("json", "epcis")

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_LOT = re.compile(r"[\x21-\x7e]{1,64}\Z")  # printable ASCII without blanks (GS1 AI 10 and more)
_EPC = re.compile(r"urn:epc:id:[a-z0-9]{2,12}:[!-~]{1,100}\Z")
_TOP = frozenset({"id", "site", "supplier", "expected_date", "location", "lines", "pallets"})
_LINE = frozenset({"line", "gtin", "sku", "lot", "qty", "uom"})
_PALLET = frozenset({"sscc", "epcs", "lines"})


@dataclass(frozen=True, slots=True)
class DocError:
    """One bad place of a document: its JSON path and why."""

    path: str
    reason: str


class ReceiptRejected(ServerError):
    """A document that cannot be accepted; ``errors`` lists every bad place. Nothing was kept."""

    status = 422

    def __init__(self, errors: Iterable[DocError], total: int | None = None) -> None:
        listed = tuple(errors)[:MAX_ERRORS]
        self.total = len(listed) if total is None else total
        shown = "; ".join(f"{e.path}: {e.reason}" for e in listed[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{self.total} error(s) in the receipt: {shown}{more}")
        self.errors = listed
        self.title = "invalid receipt"
        self.detail = f"{self.total} error(s): {shown}{more}; nothing was kept"


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    line: int
    item: str  # as the ledger keys items: the SKU if the document named one, else the GTIN
    sku: str  # the master-data item it resolved to
    gtin: str | None  # GTIN-14: the one named, else the item's first (what a door matches)
    lot: str  # '' when the document names none (then any lot matches)
    qty: float
    sscc: str | None = None  # the pallet it is on


@dataclass(frozen=True, slots=True)
class ReceiptEpc:
    epc: str  # as the document gave it: a pure identity URI (what doors send) or Digital Link
    sscc: str  # its pallet
    sku: str | None  # the item of an SGTIN; None for other EPC schemes
    gtin: str | None
    serial: str | None = None

    @property
    def ident(self) -> str:
        return epc_ident(self.epc, self.gtin, self.serial)


@dataclass(frozen=True, slots=True)
class ReceiptDoc:
    """A receipt as accepted: normalised (GTIN-14, location code, master-data SKU)."""

    id: str
    site: str
    supplier: str
    expected_date: str  # YYYY-MM-DD
    location: str | None
    lines: tuple[ReceiptLine, ...]
    pallets: tuple[str, ...]  # SSCCs, in document order
    epcs: tuple[ReceiptEpc, ...] = ()
    source: str = "json"

    def canonical(self) -> bytes:
        """The document's content, one way only (the same receipt gives the same bytes)."""
        body = {
            "id": self.id, "site": self.site, "supplier": self.supplier,
            "expected_date": self.expected_date, "location": self.location,
            "lines": [[ln.line, ln.item, ln.sku, ln.gtin, ln.lot, ln.qty, ln.sscc]
                      for ln in self.lines],
            "pallets": list(self.pallets),
            "epcs": sorted([e.ident, e.sscc] for e in self.epcs),
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


@dataclass(frozen=True, slots=True)
class Master:
    """What master data says about the keys a document names (read in one go beforehand)."""

    sku_of_gtin: Mapping[str, str]  # GTIN-14 -> SKU
    units: Mapping[str, str]  # SKU -> its unit of measure (every SKU master data knows here)
    first_gtin: Mapping[str, str]  # SKU -> its first GTIN
    location: Callable[[str, str], tuple[str, bool]]  # (site, label) -> (code, known)


@dataclass(slots=True)
class _Reader:
    """One document being read: its errors, and its lines as they are found good."""

    master: Master
    errors: list[DocError] = field(default_factory=list)
    numbered: bool = False  # the document numbers its lines (then all must be)
    position: int = 0  # lines met so far, good or bad: the number of an unnumbered line
    lines: list[ReceiptLine] = field(default_factory=list)
    by_number: dict[int, str] = field(default_factory=dict)  # line number -> its path
    by_key: dict[tuple[str, str, str | None], str] = field(default_factory=dict)

    def bad(self, path: str, reason: str) -> None:
        self.errors.append(DocError(path, reason))


def sscc_ok(text: object) -> bool:
    return (isinstance(text, str) and len(text) == 18 and text.isascii() and text.isdigit()
            and int(text[-1]) == gs1_check_digit(text[:-1]))


def epc_ident(epc: str | None, gtin: str | None, serial: str | None) -> str:
    """What a serialised thing is matched by: GTIN and serial when known (an SGTIN's URN or
    Digital Link, or a barcode with AI 21 give the same), else the EPC URI itself."""
    if gtin and serial:
        return f"gs:{gtin.zfill(14)}:{serial}"
    return f"epc:{epc}"


def sgtin(epc: str) -> tuple[str, str] | None:
    """(GTIN-14, serial) of an SGTIN as a pure identity URI or a GS1 Digital Link."""
    key = parse_gs1_uri(epc)
    if key is None or key.kind != "sgtin" or key.gtin is None or key.serial is None:
        return None
    return key.gtin, key.serial


@lru_cache(maxsize=1 << 16)
def gtin14(text: str) -> str | None:
    """A GTIN-8/12/13/14 as GTIN-14 with its check digit verified; None if it is not one.
    Remembered: a document's GTINs are read twice (what to ask master data, then each line)."""
    if not (text.isascii() and text.isdigit() and len(text) in (8, 12, 13, 14)):
        return None
    value = text.zfill(14)
    if int(value) == 0 or int(value[-1]) != gs1_check_digit(value[:-1]):
        return None
    return value


def wanted_keys(data: object) -> tuple[set[str], set[str]]:
    """(GTIN-14s, SKUs) a document names, read leniently: what to ask master data about."""
    gtins: set[str] = set()
    skus: set[str] = set()

    def lines(value: object) -> None:
        for line in listed(value):
            if isinstance(line, dict):
                if isinstance(line.get("gtin"), str) and (g := gtin14(line["gtin"])):
                    gtins.add(g)
                if isinstance(line.get("sku"), str):
                    skus.add(line["sku"])

    def listed(value: object) -> list[Any]:
        return value if isinstance(value, list) else []

    if isinstance(data, dict):
        lines(data.get("lines"))
        for pallet in listed(data.get("pallets")):
            if isinstance(pallet, dict):
                lines(pallet.get("lines"))
                for epc in listed(pallet.get("epcs")):
                    if isinstance(epc, str) and (gs := sgtin(epc)):
                        gtins.add(gs[0])
    return gtins, skus


def _text(r: _Reader, value: object, path: str, required: bool = True) -> str | None:
    if value is None:
        if required:
            r.bad(path, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        r.bad(path, "must be a non-empty string")
        return None
    value = value.strip()
    if len(value) > MAX_TEXT:
        r.bad(path, f"is longer than {MAX_TEXT} characters")
        return None
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value) or not _unicode(value):
        r.bad(path, "holds control characters or is not valid Unicode")
        return None
    return value


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(r: _Reader, value: object, path: str) -> str | None:
    try:
        return wire.check_name(value, path.removeprefix("$."))
    except wire.WireError:
        r.bad(path, "must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or"
              f" digit), got {str(value)[:40]!r}" if value is not None else "is required")
        return None


def _date(r: _Reader, value: object, path: str) -> str | None:
    if value is None:
        r.bad(path, "is required")
        return None
    if not isinstance(value, str) or not _DATE.match(value):
        r.bad(path, f"must be a date as YYYY-MM-DD, got {str(value)[:40]!r}")
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        r.bad(path, f"is not a calendar date: {value!r}")
        return None


def _qty(r: _Reader, value: object, path: str) -> float | None:
    if value is None:
        r.bad(path, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.bad(path, f"must be a number, got {json.dumps(value)[:40]}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        r.bad(path, "must be finite")
        return None
    if value <= 0:
        r.bad(path, f"must be positive, got {value:g}")
        return None
    if value > wire.MAX_QTY:
        r.bad(path, f"must be at most {wire.MAX_QTY}")
        return None
    return float(value)


def _unknown_fields(r: _Reader, data: dict[str, Any], allowed: frozenset[str], path: str
                    ) -> None:
    for key in data:
        if key not in allowed:
            r.bad(f"{path}.{key}" if path else f"$.{key}",
                  f"is not a field of a receipt (fields: {', '.join(sorted(allowed))})")


def _list(r: _Reader, value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.bad(path, "must be a list")
        return []
    return value


def _line(r: _Reader, data: object, path: str, sscc: str | None) -> None:
    """One line: checked, numbered, and kept in ``r.lines`` when good."""
    r.position += 1
    if not isinstance(data, dict):
        r.bad(path, "must be an object")
        return
    before = len(r.errors)
    if not data.keys() <= _LINE:
        _unknown_fields(r, data, _LINE, path)
    number = data.get("line")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                               or not 1 <= number <= 10**9):
        r.bad(f"{path}.line", "must be an integer from 1 to 1000000000")
    elif number is None and r.numbered:
        r.bad(f"{path}.line", "some lines are numbered: number them all, or none")
    raw_gtin, raw_sku = data.get("gtin"), data.get("sku")
    gtin = sku = None
    if raw_gtin is None and raw_sku is None:
        r.bad(path, "names no item: give gtin or sku")
    if raw_gtin is not None:
        if not isinstance(raw_gtin, str) or (gtin := gtin14(raw_gtin.strip())) is None:
            r.bad(f"{path}.gtin", f"is not a GTIN (8, 12, 13 or 14 digits, check digit"
                  f" verified): {str(raw_gtin)[:40]!r}")
        elif gtin not in r.master.sku_of_gtin:
            r.bad(f"{path}.gtin", f"GTIN {gtin} is not in master data")
    if raw_sku is not None:
        if not isinstance(raw_sku, str) or not raw_sku.strip():
            r.bad(f"{path}.sku", "must be a non-empty string")
        elif raw_sku not in r.master.units:
            r.bad(f"{path}.sku", f"SKU {raw_sku[:64]!r} is not in master data")
        else:
            sku = raw_sku
    if gtin is not None and gtin in r.master.sku_of_gtin:
        owner = r.master.sku_of_gtin[gtin]
        if sku is not None and owner != sku:
            r.bad(path, f"GTIN {gtin} is of SKU {owner!r}, not {sku!r}")
        sku = sku or owner
    lot = data.get("lot")
    if lot is not None and (not isinstance(lot, str) or not _LOT.match(lot)):
        r.bad(f"{path}.lot", "must be 1-64 printable ASCII characters without blanks")
    qty = _qty(r, data.get("qty"), f"{path}.qty")
    uom = data.get("uom")
    if uom is not None and sku is not None and uom != r.master.units.get(sku):
        r.bad(f"{path}.uom", f"{str(uom)[:16]!r} is not the unit item {sku!r} is kept in"
              f" ({r.master.units.get(sku)!r}); quantities are in the item's unit")
    if len(r.errors) > before or sku is None or qty is None:
        return
    number = number or r.position
    if number in r.by_number:
        r.bad(f"{path}.line", f"line {number} is also {r.by_number[number]}")
        return
    r.by_number[number] = path
    key = (sku, lot or "", sscc)
    if key in r.by_key:
        r.bad(path, f"duplicate line: item {sku!r}{lot_text(lot or '')} is also {r.by_key[key]}")
        return
    r.by_key[key] = path
    item = raw_sku if raw_sku is not None else gtin
    assert item is not None
    r.lines.append(ReceiptLine(number, item, sku, gtin or r.master.first_gtin.get(sku),
                               lot or "", qty, sscc))


def lot_text(lot: str) -> str:
    return f" lot {lot!r}" if lot else ""


def read_receipt(data: object, master: Master, *, source: str = "json") -> ReceiptDoc:
    """Check a native receipt document against master data; ``ReceiptRejected`` lists every
    bad place (JSON paths), so nothing of a bad document is ever half kept."""
    r = _Reader(master)
    if not isinstance(data, dict):
        raise ReceiptRejected([DocError("$", "a receipt must be a JSON object")])
    _unknown_fields(r, data, _TOP, "")
    doc_id = _name(r, data.get("id"), "$.id")
    site = _name(r, data.get("site"), "$.site")
    supplier = _text(r, data.get("supplier"), "$.supplier")
    when = _date(r, data.get("expected_date"), "$.expected_date")
    location = _text(r, data.get("location"), "$.location", required=False)
    if location is not None and site is not None:
        code, known = master.location(site, location)
        if not known:
            r.bad("$.location", f"location {location!r} is not in master data for site {site!r}")
        location = code
    raw_lines = _list(r, data.get("lines"), "$.lines")
    raw_pallets = _list(r, data.get("pallets"), "$.pallets")
    r.numbered = any(isinstance(line, dict) and "line" in line for line in raw_lines) or any(
        isinstance(line, dict) and "line" in line for pallet in raw_pallets
        if isinstance(pallet, dict) and isinstance(pallet.get("lines"), list)
        for line in pallet["lines"])
    for i, line in enumerate(raw_lines):
        _line(r, line, f"$.lines[{i}]", None)
    pallets: list[str] = []
    epcs: list[ReceiptEpc] = []
    seen_pallets: dict[str, str] = {}
    seen_epcs: dict[str, str] = {}
    for n, pallet in enumerate(raw_pallets):
        path = f"$.pallets[{n}]"
        if not isinstance(pallet, dict):
            r.bad(path, "must be an object")
            continue
        _unknown_fields(r, pallet, _PALLET, path)
        sscc = pallet.get("sscc")
        if not sscc_ok(sscc):
            r.bad(f"{path}.sscc", f"is not an SSCC (18 digits, check digit verified):"
                  f" {str(sscc)[:40]!r}")
            sscc = None
        elif sscc in seen_pallets:
            r.bad(f"{path}.sscc", f"SSCC {sscc} is also {seen_pallets[sscc]}")
            sscc = None
        else:
            assert isinstance(sscc, str)
            seen_pallets[sscc] = path
            pallets.append(sscc)
        for i, epc in enumerate(_list(r, pallet.get("epcs"), f"{path}.epcs")):
            where = f"{path}.epcs[{i}]"
            gs = sgtin(epc) if isinstance(epc, str) else None
            if not isinstance(epc, str) or not (gs or _EPC.match(epc)):
                r.bad(where, "is not an EPC: a pure identity URI (urn:epc:id:...) or an SGTIN"
                      f" as GS1 Digital Link: {str(epc)[:60]!r}")
                continue
            if epc.startswith("urn:epc:id:sgtin:") and gs is None:
                r.bad(where, f"is not a valid SGTIN URI: {epc[:60]!r}")
                continue
            match_key = epc_ident(epc, *(gs or (None, None)))
            if match_key in seen_epcs:
                r.bad(where, f"EPC {epc} is also {seen_epcs[match_key]}")
                continue
            seen_epcs[match_key] = where
            if gs is not None and gs[0] not in master.sku_of_gtin:
                r.bad(where, f"GTIN {gs[0]} of this EPC is not in master data")
            elif sscc is not None:
                gtin, serial = gs or (None, None)
                epcs.append(ReceiptEpc(epc, sscc, master.sku_of_gtin.get(gtin or ""), gtin,
                                       serial))
        for i, line in enumerate(_list(r, pallet.get("lines"), f"{path}.lines")):
            _line(r, line, f"{path}.lines[{i}]", sscc)
    if not r.position and not raw_pallets and "lines" in data:
        r.bad("$.lines", "a receipt expects something: give lines or pallets")
    elif not r.position and not raw_pallets:
        r.bad("$.lines", "is required (or pallets)")
    if r.position > MAX_LINES:
        r.bad("$.lines", f"more than {MAX_LINES} lines in one receipt")
    if len(seen_epcs) > MAX_LINES:
        r.bad("$.pallets", f"more than {MAX_LINES} EPCs in one receipt")
    if r.errors:
        raise ReceiptRejected(r.errors, len(r.errors))
    assert doc_id is not None and site is not None and supplier is not None and when is not None
    return ReceiptDoc(doc_id, site, supplier, when, location, tuple(r.lines), tuple(pallets),
                      tuple(epcs), source)


def to_expected(doc: ReceiptDoc, version: int) -> expected.Expected:
    """What the floor gets: the loose lines, the pallets with their EPCs and lines, the label."""
    def line(ln: ReceiptLine) -> expected.ExpectedLine:
        return expected.ExpectedLine(wire.Item(gtin=ln.gtin, sku=ln.sku, lot=ln.lot or None),
                                     ln.qty)

    by_pallet: dict[str, list[expected.ExpectedLine]] = {}
    for ln in doc.lines:
        if ln.sscc is not None:
            by_pallet.setdefault(ln.sscc, []).append(line(ln))
    epcs: dict[str, list[str]] = {}
    for e in doc.epcs:
        epcs.setdefault(e.sscc, []).append(e.epc)
    return expected.Expected(
        kind="receipt", id=doc.id, site=doc.site, version=version, location=doc.location,
        lines=tuple(line(ln) for ln in doc.lines if ln.sscc is None),
        pallets=tuple(expected.ExpectedPallet(s, tuple(epcs.get(s, ())),
                                              tuple(by_pallet.get(s, ())))
                      for s in doc.pallets),
        labels=(f"{LABEL_PREFIX}{doc.id}",),
    )
