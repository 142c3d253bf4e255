"""What the floor expects against a document, as the central service sends it to the edges.

A receiving door has to say at once, even cut off from the central service, whether a case was
expected, over or unexpected; a picker scanning a wrong item has to hear it. So the documents'
expected lists travel ahead of the goods: one **retained** MQTT message per open document on
``floorsync/v1/{site}/docs/{kind}/{id}`` (QoS 1), replaced whenever the document changes
(``version`` grows) and withdrawn by an empty retained message when it closes. Edges subscribe
to ``floorsync/v1/{site}/docs/#`` and keep the highest version of each in their own database.

- ``kind``: ``receipt`` (an ASN or purchase order: what should arrive) or ``order`` (an outbound
  order's pick list: what should leave); the same words as ``wire.DocRef``.
- ``lines``: class-level quantities (``item`` by GTIN or SKU, with ``lot`` when the document
  names one) and serialised items (``item.epc``, the pure-identity URI, quantity 1); an order's
  line may name the ``location`` to pick from.
- ``pallets``: for receipts, SSCC pallets with their child EPCs and/or GTIN quantities (an
  EPCIS AggregationEvent from the supplier gives exactly this).
- ``labels``: barcode texts that select the document on a handheld (the ASN or order label).
- ``totes``: an order's totes (ids, as the order names them): a handheld scanning a tote's
  label (the edge's ``tote_label_prefix`` + the id) picks against the order. Sent only when
  there are some, so an order without totes is the message it was before; an edge from before
  totes ignores the field (decoding reads the keys it knows).

Standard library only, like ``wire``: the server imports this module too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from floorsync.edge import wire

DOC_TOPIC_KIND = "docs"
MAX_LINES = 100_000
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExpectedLine:
    item: wire.Item
    qty: float
    location: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedPallet:
    sscc: str
    epcs: tuple[str, ...] = ()
    lines: tuple[ExpectedLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Expected:
    """One open document as the floor sees it."""

    kind: str
    id: str
    site: str
    version: int
    location: str | None = None  # the door or staging location it is expected at; None: any
    lines: tuple[ExpectedLine, ...] = ()
    pallets: tuple[ExpectedPallet, ...] = ()
    labels: tuple[str, ...] = ()
    totes: tuple[str, ...] = ()


def docs_topic(site: str, kind: str, doc_id: str) -> str:
    if kind not in wire.DOC_KINDS:
        raise wire.WireError(f"kind must be one of {sorted(wire.DOC_KINDS)}")
    return (f"{wire.TOPIC_ROOT}/{wire.check_name(site, 'site')}/{DOC_TOPIC_KIND}/{kind}/"
            f"{wire.check_name(doc_id, 'document id')}")


def docs_filter(site: str) -> str:
    """What an edge of ``site`` subscribes to: every document of its site."""
    return f"{wire.TOPIC_ROOT}/{wire.check_name(site, 'site')}/{DOC_TOPIC_KIND}/#"


def parse_docs_topic(topic: str) -> tuple[str, str, str]:
    """``floorsync/v1/{site}/docs/{kind}/{id}`` -> (site, kind, id); WireError otherwise."""
    parts = topic.split("/")
    if (len(parts) != 6 or f"{parts[0]}/{parts[1]}" != wire.TOPIC_ROOT
            or parts[3] != DOC_TOPIC_KIND or parts[4] not in wire.DOC_KINDS):
        raise wire.WireError(f"not a floorsync v1 document topic: {topic[:200]!r}")
    return wire.check_name(parts[2], "site"), parts[4], wire.check_name(parts[5], "document id")


def _line_to_dict(line: ExpectedLine) -> dict[str, Any]:
    out: dict[str, Any] = {"item": wire.item_to_dict(line.item), "qty": line.qty}
    if line.location is not None:
        out["location"] = line.location
    return out


def encode_expected(doc: Expected) -> bytes:
    data: dict[str, Any] = {
        "v": wire.VERSION, "kind": doc.kind, "id": doc.id, "site": doc.site,
        "version": doc.version, "location": doc.location,
        "lines": [_line_to_dict(line) for line in doc.lines],
        "pallets": [{"sscc": p.sscc, "epcs": list(p.epcs),
                     "lines": [_line_to_dict(line) for line in p.lines]} for p in doc.pallets],
        "labels": list(doc.labels),
    }
    if doc.totes:
        data["totes"] = list(doc.totes)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _line_from_dict(data: object, where: str) -> ExpectedLine:
    if not isinstance(data, dict):
        raise wire.WireError(f"{where} must be an object")
    item = wire.item_from_dict(data.get("item"), f"{where}.item")
    qty = data.get("qty")
    if isinstance(qty, bool) or not isinstance(qty, int | float) or not math.isfinite(qty) \
            or qty <= 0:
        raise wire.WireError(f"{where}.qty must be a positive number")
    location = data.get("location")
    if location is not None and (not isinstance(location, str) or not 0 < len(location) <= 256):
        raise wire.WireError(f"{where}.location must be a string of 1-256 characters")
    return ExpectedLine(item, float(qty), location)


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise wire.WireError(f"{where}{key} must be a list")
    if len(value) > MAX_LINES:
        raise wire.WireError(f"{where}{key}: more than {MAX_LINES} entries")
    return value


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise wire.WireError(f"{what} must be a string of 1-{limit} characters")
    return value


def decode_expected(payload: bytes | str) -> Expected:
    """Validate one document message; raises WireError with the reason."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise wire.WireError(f"document message over {MAX_PAYLOAD_BYTES} bytes")
    data = wire.load_json(payload, "document message")
    if not isinstance(data, dict):
        raise wire.WireError("document message must be an object")
    if data.get("v") != wire.VERSION:
        raise wire.WireError(f"unsupported document version {data.get('v')!r}")
    kind = data.get("kind")
    if not wire.is_one_of(kind, wire.DOC_KINDS):
        raise wire.WireError(f"kind must be one of {sorted(wire.DOC_KINDS)}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise wire.WireError("version must be a positive integer")
    location = data.get("location")
    pallets = []
    for n, raw in enumerate(_list(data, "pallets", "")):
        if not isinstance(raw, dict):
            raise wire.WireError(f"pallets[{n}] must be an object")
        epcs = tuple(_text(e, f"pallets[{n}].epcs") for e in _list(raw, "epcs", f"pallets[{n}]."))
        lines = tuple(_line_from_dict(line, f"pallets[{n}].lines[{i}]")
                      for i, line in enumerate(_list(raw, "lines", f"pallets[{n}].")))
        pallets.append(ExpectedPallet(_text(raw.get("sscc"), f"pallets[{n}].sscc", 18), epcs,
                                      lines))
    return Expected(
        kind=kind,
        id=wire.check_name(data.get("id"), "document id"),
        site=wire.check_name(data.get("site"), "site"),
        version=version,
        location=None if location is None else _text(location, "location"),
        lines=tuple(_line_from_dict(line, f"lines[{i}]")
                    for i, line in enumerate(_list(data, "lines", ""))),
        pallets=tuple(pallets),
        labels=tuple(_text(label, "labels", 512) for label in _list(data, "labels", "")),
        totes=tuple(wire.check_name(tote, f"totes[{i}]")
                    for i, tote in enumerate(_list(data, "totes", ""))),
    )
