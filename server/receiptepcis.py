"""A supplier's EPCIS 2.0 document as an expected receipt.

A despatch advice in EPCIS terms is a set of AggregationEvents: each packs (``ADD``) or was
seen packed (``OBSERVE``) children on a parent, here an SSCC pallet: ``childEPCs`` are its
serialised cases, ``childQuantityList`` its class-level quantities (a GTIN, or a GTIN and lot).
The document is first validated against the GS1 schema (``server.epcisread``: every error by
its JSON path), then turned into a native receipt (``server.receiptdocs``) and judged like one;
an error found there is named by where it came from in the EPCIS document.

What the native form says in its header comes from the document, or from the request when the
document does not say it (query parameters override it):

- ``id``: the receipt's business transaction: ``desadv`` first, then ``po``, then any; from
  ``urn:epcglobal:cbv:bt:{GLN}:{ref}`` the ``ref`` (the form the EPCIS export writes), else the
  last segment of the URI. It must be a valid receipt id;
- ``site``: the site whose master data has the GLN of a ``location`` destination;
- ``supplier``: the ``owning_party`` (else ``possessing_party``) source, as given;
- ``expected_date``: the first aggregation's date where it happened (its despatch date);
- ``location`` (the door): only from the request.

ObjectEvents and other event types, and DELETE aggregations (unpacking), expect nothing and are
skipped; a document with no ADD or OBSERVE aggregation is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any

from floorsync.server import epcisread
from floorsync.server.gs1 import parse_gs1_uri
from floorsync.server.receiptdocs import DocError, ReceiptRejected

ACTIONS = ("ADD", "OBSERVE")
TRANSACTION_TYPES = ("desadv", "po")  # in the order they name a receipt
PARTY_TYPES = ("owning_party", "possessing_party")
_FIELDS = {".qty": ".quantity", ".gtin": ".epcClass", ".lot": ".epcClass", ".uom": ".uom"}


@dataclass(frozen=True, slots=True)
class Given:
    """What the request says beside the document (query parameters)."""

    id: str | None = None
    site: str | None = None
    supplier: str | None = None
    expected_date: str | None = None
    location: str | None = None


@dataclass(slots=True)
class Converted:
    """The native receipt and where each of its places came from in the EPCIS document."""

    receipt: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)  # native JSON path -> EPCIS JSON path
    errors: list[DocError] = field(default_factory=list)  # what the conversion found wrong

    def judged(self, errors: list[DocError]) -> list[DocError]:
        """The conversion's errors and the native judgement's (``errors``) by EPCIS path; a
        header field the document lacks is said once, by the conversion."""
        lacking = {f"$.{name}" for name in ("id", "site", "supplier")} - {
            f"$.{name}" for name in self.receipt}
        return self.errors + [self.where(e) for e in errors if e.path not in lacking]

    def where(self, error: DocError) -> DocError:
        """``error`` named by its place in the EPCIS document (the native path if unmapped)."""
        path = error.path
        for native in sorted(self.paths, key=len, reverse=True):
            if path == native or path.startswith(native + ".") or path.startswith(native + "["):
                rest = path[len(native):]
                return DocError(self.paths[native] + _FIELDS.get(rest, rest), error.reason)
        return error


def is_epcis(data: object) -> bool:
    return isinstance(data, dict) and data.get("type") in ("EPCISDocument",
                                                          "EPCISQueryDocument")


def from_epcis(document: object, given: Given,
               site_of_gln: Callable[[str, str], str | None]) -> Converted:
    """The receipt an EPCIS document expects, with what is wrong in it (``errors``, to be
    listed with the receipt's own); ``ReceiptRejected`` for schema errors and for a document
    that expects nothing. ``site_of_gln(gln, ext)``: the site whose master data has that GLN."""
    problems = epcisread.validate(document)
    if problems:
        raise ReceiptRejected([_schema_error(p) for p in problems])
    assert isinstance(document, Mapping)
    where, raw_events = epcisread.event_list(document)
    out = Converted({"pallets": []})
    errors = out.errors
    pallets: dict[str, dict[str, Any]] = {}
    lines: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
    first: tuple[str, epcisread.AggregationEvent] | None = None
    for i, raw in enumerate(raw_events):
        path = f"$.{where}[{i}]"
        if not isinstance(raw, Mapping) or raw.get("type") != "AggregationEvent":
            continue
        event = epcisread.read_event(raw)
        if not isinstance(event, epcisread.AggregationEvent) or event.action not in ACTIONS:
            continue
        first = first or (path, event)
        key = event.parent.key if event.parent is not None else None
        if key is None or key.kind != "sscc" or key.sscc is None:
            errors.append(DocError(f"{path}.parentID", "the parent must be an SSCC (a pallet):"
                                   f" {str(raw.get('parentID'))[:80]!r}"))
            continue
        sscc = key.sscc
        pallet = pallets.get(sscc)
        if pallet is None:
            pallet = pallets[sscc] = {"sscc": sscc, "epcs": [], "lines": []}
            native = f"$.pallets[{len(out.receipt['pallets'])}]"
            out.receipt["pallets"].append(pallet)
            out.paths[native] = path
            out.paths[f"{native}.sscc"] = f"{path}.parentID"
        native = f"$.pallets[{out.receipt['pallets'].index(pallet)}]"
        for j, child in enumerate(raw.get("childEPCs") or ()):
            out.paths[f"{native}.epcs[{len(pallet['epcs'])}]"] = f"{path}.childEPCs[{j}]"
            pallet["epcs"].append(child)
        for m, quantity in enumerate(event.child_quantities):
            _quantity(out, errors, lines, pallet, native, f"{path}.childQuantityList[{m}]",
                      quantity)
    if first is None:
        raise ReceiptRejected([DocError(f"$.{where}", "no AggregationEvent (ADD or OBSERVE)"
                                        " packs anything on a pallet: nothing to expect")])
    _header(out, errors, given, first, raw_events, where, site_of_gln)
    return out


def _schema_error(problem: str) -> DocError:
    path, _, message = problem.partition(": ")
    return DocError("$" if path == "(document)" else f"$.{path}", message)


def _quantity(out: Converted, errors: list[DocError],
              lines: dict[tuple[str, str, str, str | None], dict[str, Any]],
              pallet: dict[str, Any], native: str, path: str,
              quantity: epcisread.Quantity) -> None:
    key = quantity.epc_class.key
    if key is None or key.kind not in ("gtin", "lgtin") or key.gtin is None:
        errors.append(DocError(f"{path}.epcClass", "must be a GTIN class (urn:epc:idpat:sgtin:"
                               "...*, urn:epc:class:lgtin:... or a GTIN Digital Link)"))
        return
    if quantity.quantity is None:
        errors.append(DocError(f"{path}.quantity", "an expected receipt needs the quantity"))
        return
    ident = (pallet["sscc"], key.gtin, key.lot or "", quantity.uom)
    line = lines.get(ident)
    if line is not None:  # the same class twice on one pallet: one line
        line["qty"] += quantity.quantity
        return
    line = {"gtin": key.gtin, "qty": quantity.quantity}
    if key.lot:
        line["lot"] = key.lot
    if quantity.uom is not None:
        line["uom"] = quantity.uom
    lines[ident] = line
    out.paths[f"{native}.lines[{len(pallet['lines'])}]"] = path
    pallet["lines"].append(line)


def _header(out: Converted, errors: list[DocError], given: Given,
            first: tuple[str, epcisread.AggregationEvent],
            raw_events: list[Any], where: str,
            site_of_gln: Callable[[str, str], str | None]) -> None:
    path, event = first
    receipt = out.receipt
    aggregations = [(f"$.{where}[{i}]", raw) for i, raw in enumerate(raw_events)
                    if isinstance(raw, Mapping) and raw.get("type") == "AggregationEvent"
                    and raw.get("action") in ACTIONS]
    for name, value in (("id", given.id), ("site", given.site), ("supplier", given.supplier),
                        ("expected_date", given.expected_date), ("location", given.location)):
        if value is not None:
            receipt[name] = value
            out.paths[f"$.{name}"] = f"?{name}"
    if "id" not in receipt:
        found = _transaction(aggregations)
        if found is None:
            errors.append(DocError(f"$.{where}", "no bizTransaction (desadv or po) names the"
                                   " receipt: give ?id="))
        else:
            receipt["id"], out.paths["$.id"] = found
    if "site" not in receipt:
        found = _destination(aggregations, site_of_gln)
        if found is None:
            errors.append(DocError(f"{path}.destinationList", "no location destination whose"
                                   " GLN master data knows: give ?site="))
        else:
            receipt["site"], out.paths["$.site"] = found
    if "supplier" not in receipt:
        found = _party(aggregations)
        if found is None:
            errors.append(DocError(f"{path}.sourceList", "no owning_party or possessing_party"
                                   " source names the supplier: give ?supplier="))
        else:
            receipt["supplier"], out.paths["$.supplier"] = found
    if "expected_date" not in receipt:
        offset = event.time_zone_offset
        sign = -1 if offset.startswith("-") else 1
        hours, _, minutes = offset[1:].partition(":")
        zone = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
        receipt["expected_date"] = event.event_time.astimezone(zone).date().isoformat()
        out.paths["$.expected_date"] = f"{path}.eventTime"


def _transaction(aggregations: list[tuple[str, Mapping[str, Any]]]) -> tuple[str, str] | None:
    """(receipt id, its path) from the first desadv, else po, else any business transaction."""
    found: list[tuple[int, str, str]] = []
    for path, raw in aggregations:
        for k, item in enumerate(raw.get("bizTransactionList") or ()):
            kind = epcisread.cbv_word("btt", item.get("type"))
            rank = TRANSACTION_TYPES.index(kind) if kind in TRANSACTION_TYPES else 2
            found.append((rank, f"{path}.bizTransactionList[{k}].bizTransaction",
                          str(item.get("bizTransaction", ""))))
    if not found:
        return None
    _, where, text = min(found, key=lambda f: f[0])
    if text.startswith("urn:epcglobal:cbv:bt:"):
        return text.rsplit(":", 1)[-1], where
    return text.rstrip("/").replace(":", "/").rsplit("/", 1)[-1], where


def _destination(aggregations: list[tuple[str, Mapping[str, Any]]],
                 site_of_gln: Callable[[str, str], str | None]) -> tuple[str, str] | None:
    for path, raw in aggregations:
        for k, item in enumerate(raw.get("destinationList") or ()):
            if epcisread.cbv_word("sdt", item.get("type")) != "location":
                continue
            key = parse_gs1_uri(str(item.get("destination", "")))
            if key is not None and key.kind == "sgln" and key.gln is not None:
                site = site_of_gln(key.gln, key.extension)
                if site is not None:
                    return site, f"{path}.destinationList[{k}].destination"
    return None


def _party(aggregations: list[tuple[str, Mapping[str, Any]]]) -> tuple[str, str] | None:
    for wanted in PARTY_TYPES:
        for path, raw in aggregations:
            for k, item in enumerate(raw.get("sourceList") or ()):
                if epcisread.cbv_word("sdt", item.get("type")) == wanted:
                    return str(item.get("source")), f"{path}.sourceList[{k}].source"
    return None
