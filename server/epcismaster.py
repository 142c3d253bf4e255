"""What the EPCIS export needs of master data, read once per export: the GLN of a location
label (its own, or the nearest one above it in the tree), a site's GLN for business transaction
ids, an item's GTIN (a SKU's first) and its unit. Its size follows master data, not the ledger:
the caches of labels, GTINs and EPCs met in the ledger are cleared when they grow large.

Its answers are canonical GS1 Digital Links (what the filters compare); ``convert`` is how the
export writes them: None (as they are), or an ``EPCWriter``'s EPC URIs."""

from __future__ import annotations

import re
from collections.abc import Callable

from floorsync.server.epcisurn import EPCWriter
from floorsync.server.errors import Invalid
from floorsync.server.gs1 import (
    gln_uri,
    gtin_uri,
    normalize_gtin,
    normalize_sscc,
    parse_gln_label,
    parse_gs1_uri,
    sscc_uri,
)
from floorsync.server.queries import LedgerQueries

EACH = frozenset({"EA", "EACH", "H87", "C62", "PCE", "PCS"})  # counts of instances: no uom
_UOM = re.compile(r"[A-Z0-9]{2,3}\Z")  # a UN/ECE Rec. 20 code, as the schema's uom pattern
EPC_URI = re.compile(r"urn:epc:id:[a-z0-9]+:[A-Za-z0-9._:%*'()!;=,+~-]+\Z")
CACHE_LIMIT = 50_000
MAX_DEPTH = 64

# An item as EPCIS names it: an instance (its URI) or a class (URI, quantity, uom or None).
Instance = str
ClassQuantity = tuple[str, float, str | None]


class MasterView:
    def __init__(self, store: LedgerQueries, writer: EPCWriter | None = None) -> None:
        self.convert: Callable[[str], str] | None = None if writer is None else writer.uri
        self._labels: dict[str, dict[str, str]] = {}
        self._by_gln: dict[str, dict[tuple[str, str], str]] = {}
        self._site_gln: dict[str, str] = {}
        parents: dict[tuple[str, str], str | None] = {}
        own: dict[tuple[str, str], tuple[str, str]] = {}
        for site, code, kind, parent, gln, extension in store._query(
                "SELECT site, code, kind, parent, gln, gln_extension FROM locations"):
            self._labels.setdefault(site, {})[code] = code
            parents[(site, code)] = parent
            if gln:
                own[(site, code)] = (gln, extension)
                self._by_gln.setdefault(site, {})[(gln, extension)] = code
                if kind == "site":
                    self._site_gln[site] = gln
        for site, barcode, code in store._query(
                "SELECT site, barcode, code FROM location_barcodes"):
            self._labels.setdefault(site, {}).setdefault(barcode, code)
        self._gln: dict[tuple[str, str], str | None] = {}
        for key in parents:  # the nearest GLN at or above each location
            node: tuple[str, str] | None = key
            found: tuple[str, str] | None = None
            for _ in range(MAX_DEPTH):
                if node is None or (found := own.get(node)) is not None:
                    break
                parent = parents.get(node)
                node = (node[0], parent) if parent is not None else None
            self._gln[key] = None if found is None else gln_uri(*found)
        self._sku_gtin = dict(store._query(
            "SELECT sku, gtin FROM item_gtins ORDER BY sku, ordinal DESC"))
        units = dict(store._query("SELECT sku, unit FROM items"))
        self._uom: dict[str, str | None] = {}
        for gtin, sku in store._query("SELECT gtin, sku FROM item_gtins"):
            unit = str(units.get(sku, "EA")).upper()
            self._uom[gtin] = None if unit in EACH or not _UOM.match(unit) else unit
        self._places: dict[tuple[str, str], str | None] = {}
        self._gtins: dict[str, str | None] = {}

    def place(self, site: str, label: str | None) -> str | None:
        """The GLN URI of the location ``label`` names (a code, barcode or GLN label), or of
        the nearest location above it with one; None when master data gives none."""
        if label is None:
            return None
        key = (site, label)
        found = self._places.get(key, "")
        if found == "":
            code = self._labels.get(site, {}).get(label)
            if code is None and (gln := parse_gln_label(label)) is not None:
                code = self._by_gln.get(site, {}).get(gln)
            found = self._gln.get((site, code)) if code is not None else None
            if len(self._places) >= CACHE_LIMIT:
                self._places.clear()
            self._places[key] = found
        return found

    def transaction_id(self, site: str, ident: str) -> str | None:
        """A document's id as a business transaction, under the site's GLN as CBV names an id
        from a party's own system; None when the site has no GLN."""
        gln = self._site_gln.get(site)
        return None if gln is None else f"urn:epcglobal:cbv:bt:{gln}:{ident}"

    def gtin(self, gtin: str | None, sku: str | None) -> str | None:
        """A valid GTIN-14: the event's, else the first of the SKU's in master data."""
        text = gtin if gtin is not None else self._sku_gtin.get(sku or "")
        if text is None:
            return None
        found = self._gtins.get(text, "")
        if found == "":
            try:
                found = normalize_gtin(text)
            except Invalid:
                found = None
            if len(self._gtins) >= CACHE_LIMIT:
                self._gtins.clear()
            self._gtins[text] = found
        return found

    @staticmethod
    def sscc(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            return normalize_sscc(text)
        except Invalid:
            return None

    def what(self, gtin: str | None, sku: str | None, lot: str | None, serial: str | None,
             epc: str | None, sscc: str | None, qty: float
             ) -> tuple[Instance | None, ClassQuantity | None]:
        """An item as an instance or as a class with its quantity; (None, None) when it is
        neither (known only by a SKU master data gives no GTIN, or by bad keys)."""
        if epc is not None and EPC_URI.match(epc):
            key = parse_gs1_uri(epc)
            return (key.digital_link() if key is not None else epc), None
        found = self.gtin(gtin, sku)
        if found is not None:
            if serial:
                return gtin_uri(found, serial=serial), None
            return None, (gtin_uri(found, lot=lot or None), abs(qty), self._uom.get(found))
        if (unit := self.sscc(sscc)) is not None:
            return sscc_uri(unit), None
        return None, None
