"""Receipts for tests: master data they name, documents, and receive events against them."""

from __future__ import annotations

import copy
from typing import Any

from floorsync.edge import wire
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData

GTIN_A = "09501101530003"  # SKU-A
GTIN_B = "04006381333931"  # SKU-B
GTIN_C = "80614141123458"  # SKU-C: the SGTINs urn:epc:id:sgtin:0614141.812345.{serial}
PALLET_1 = "106141411234567897"
PALLET_2 = "106141411234567903"


def load_items(store: Store) -> None:
    MasterData(store).import_items(
        f"sku,gtins\nSKU-A,{GTIN_A}\nSKU-B,{GTIN_B}\nSKU-C,{GTIN_C}\nSKU-D,\n")


def epc(serial: int | str) -> str:
    return f"urn:epc:id:sgtin:0614141.812345.{serial}"


def document(ident: str = "ASN-1", site: str = "wh1", **changes: Any) -> dict[str, Any]:
    """Loose lines of A (10, any lot) and B (5 of lot L1); pallet 1 with three EPCs of C and
    4 of A on it; pallet 2 with nothing listed."""
    doc: dict[str, Any] = {
        "id": ident, "site": site, "supplier": "ACME", "expected_date": "2026-11-23",
        "location": "DOCK-1",
        "lines": [{"gtin": GTIN_A, "qty": 10}, {"sku": "SKU-B", "qty": 5, "lot": "L1"}],
        "pallets": [{"sscc": PALLET_1, "epcs": [epc(1), epc(2), epc(3)],
                     "lines": [{"gtin": GTIN_A, "qty": 4, "lot": "P1"}]},
                    {"sscc": PALLET_2}],
    }
    doc.update(copy.deepcopy(changes))
    return doc


_seq = iter(range(1, 10**9))


def receive(*, doc: str | None = "ASN-1", gtin: str | None = GTIN_A,
            sku: str | None = None, lot: str | None = None, qty: float = 1,
            epc_uri: str | None = None, serial: str | None = None, sscc: str | None = None,
            to: str = "DOCK-1", type: str = "receive") -> wire.Event:
    """A receive (by default against ASN-1); ``doc=None``: made against no document."""
    item = wire.Item(gtin=gtin, sku=sku, lot=lot, serial=serial, epc=epc_uri, sscc=sscc)
    ref = None if doc is None else wire.DocRef("receipt", doc, "expected")
    return wire.Event(id=wire.new_event_id(), seq=next(_seq), time=wire.local_now(), type=type,
                      item=item, qty=qty, to=to if type == "receive" else None,
                      from_="DOCK-1" if type != "receive" else None, doc=ref)
