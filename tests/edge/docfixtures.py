"""Documents for the edge's tests: receipts and orders as the central service publishes them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from floorsync.devices.sim import sgtin96_hex, sscc96_hex
from floorsync.edge import wire
from floorsync.edge.documents import DocumentBook
from floorsync.edge.expected import (
    Expected,
    ExpectedLine,
    ExpectedPallet,
    docs_topic,
    encode_expected,
)
from floorsync.edge.outbox import Outbox

SITE = "wh1"
GTIN_A, GTIN_B, GTIN_C = "09501101530003", "04012345000009", "04000000000006"
DOOR_GTIN = "80614141123458"  # the GTIN of the SGTIN-96 tags case(n) below


def case_tag(n: int) -> str:
    """A case's SGTIN-96 tag (hex), GTIN DOOR_GTIN, serial n."""
    return sgtin96_hex("0614141", "812345", n)


def case_uri(n: int) -> str:
    return f"urn:epc:id:sgtin:0614141.812345.{n}"


def pallet_tag(n: int) -> tuple[str, str]:
    """A pallet's SSCC-96 tag (hex) and its SSCC."""
    serial_ref = f"1{n:09d}"
    body = serial_ref[0] + "0614141" + serial_ref[1:]
    total = 3 * sum(map(int, body[-1::-2])) + sum(map(int, body[-2::-2]))
    return sscc96_hex("0614141", serial_ref), body + str((10 - total % 10) % 10)


def line(qty: float, gtin: str | None = None, lot: str | None = None, sku: str | None = None,
         epc: str | None = None, location: str | None = None) -> ExpectedLine:
    return ExpectedLine(wire.Item(gtin=gtin, sku=sku, lot=lot, epc=epc), qty, location)


def receipt(doc_id: str, *lines: ExpectedLine, version: int = 1, location: str | None = None,
            pallets: tuple[ExpectedPallet, ...] = (), site: str = SITE,
            labels: tuple[str, ...] | None = None) -> Expected:
    return Expected("receipt", doc_id, site, version, location, tuple(lines), pallets,
                    (f"ASN:{doc_id}",) if labels is None else labels)


def order(doc_id: str, *lines: ExpectedLine, version: int = 1, site: str = SITE) -> Expected:
    return Expected("order", doc_id, site, version, None, tuple(lines), (), (f"ORD:{doc_id}",))


def topic(doc: Expected, site: str | None = None) -> str:
    return docs_topic(site or doc.site, doc.kind, doc.id)


def give(book: DocumentBook, *docs: Expected) -> list[str]:
    """Hand documents to a book as the syncer does with each MQTT message."""
    return [book.receive(topic(d), encode_expected(d)) for d in docs]


def attributions(outbox: Outbox) -> list[tuple[Any, ...]]:
    return outbox.db.conn.execute(
        "SELECT event_id, kind, doc_id, line, source, outcome, matched, over, unexpected"
        " FROM doc_attributions ORDER BY rowid").fetchall()


def payloads(path: Path) -> dict[str, dict[str, Any]]:
    """The outbox's events as they go on the wire, by id (read on a connection of its own)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, payload FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()
    return {i: json.loads(p) for i, p in rows}


def doc_exceptions(outbox: Outbox) -> list[tuple[str, str | None]]:
    """Floor exceptions recorded about document messages, oldest first: (reason, raw)."""
    return [(reason, raw) for _, source, reason, raw in reversed(outbox.exceptions(1000))
            if source == "docs"]
