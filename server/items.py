"""Items: keyed by SKU; each GTIN (stored as GTIN-14, check digit verified; GTIN-8, -12 and -13
are zero-padded) belongs to one item. Read and written one by one or by CSV import."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from floorsync.server.csvimport import (
    ImportRejected,
    ImportSummary,
    RowError,
    read_csv,
    split_multi,
)
from floorsync.server.errors import Conflict, Invalid, MasterDataError, NotFound
from floorsync.server.gs1 import normalize_gtin
from floorsync.server.ledger import utc_now
from floorsync.server.mastertables import MasterTables, _chunks, _key, _marks, _text

TRACKING = ("none", "lot", "serial")
MAX_GTINS = 32

ITEM_COLUMNS = ("sku", "gtins", "description", "tracking", "unit")

_UNIT = re.compile(r"[A-Za-z0-9._-]{1,16}\Z")
_ITEM_COLUMNS_SQL = "sku, description, tracking, unit, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """An item as a client describes it (before normalisation)."""

    sku: str
    gtins: tuple[str, ...] = ()
    description: str = ""
    tracking: str = "none"
    unit: str = "EA"


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    gtins: tuple[str, ...]
    description: str
    tracking: str
    unit: str
    created_at: str
    updated_at: str


def normalize_item(spec: ItemSpec) -> ItemSpec:
    gtins = tuple(dict.fromkeys(normalize_gtin(g) for g in spec.gtins if g.strip()))
    if len(gtins) > MAX_GTINS:
        raise Invalid("too many GTINs", f"an item has at most {MAX_GTINS} GTINs")
    if spec.tracking not in TRACKING:
        raise Invalid("invalid tracking", f"tracking must be one of {', '.join(TRACKING)}"
                      f" (got {spec.tracking[:20]!r})")
    unit = spec.unit.strip()
    if not _UNIT.match(unit):
        raise Invalid("invalid unit", f"unit must be 1-16 characters of A-Z a-z 0-9 . _ -"
                      f" (got {unit[:20]!r})")
    return ItemSpec(_key(spec.sku, "SKU"), gtins, _text(spec.description, "description", 256),
                    spec.tracking, unit)


class ItemMaster(MasterTables):
    """Items: reads, writes and the CSV import."""

    # --- items: reads -----------------------------------------------------------------------

    def item(self, sku: str) -> Item:
        found = self._items("sku = ?", [sku])
        if not found:
            raise NotFound("unknown item", f"no item with SKU {sku[:80]!r}")
        return found[0]

    def items(
        self, *, after: str | None = None, limit: int = 100, tracking: str | None = None
    ) -> list[Item]:
        where, params = ["sku > ?"], [after or ""]
        if tracking is not None:
            where.append("tracking = ?")
            params.append(tracking)
        return self._items(" AND ".join(where), params, limit)

    def item_by_gtin(self, gtin: str) -> Item:
        key = normalize_gtin(gtin)
        found = self._items("sku IN (SELECT sku FROM item_gtins WHERE gtin = ?)", [key])
        if not found:
            raise NotFound("unknown GTIN", f"no item has GTIN {key}")
        return found[0]

    def _items(self, where: str, params: list[Any], limit: int | None = None) -> list[Item]:
        sql = f"SELECT {_ITEM_COLUMNS_SQL} FROM items WHERE {where} ORDER BY sku"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._store._query(sql, params)
        gtins: dict[str, list[str]] = {}
        skus = [r[0] for r in rows]
        for chunk in _chunks(skus):
            for sku, gtin in self._store._query(
                f"SELECT sku, gtin FROM item_gtins WHERE sku IN ({_marks(chunk)})"
                " ORDER BY sku, ordinal", chunk,
            ):
                gtins.setdefault(sku, []).append(gtin)
        return [Item(sku, tuple(gtins.get(sku, ())), d, t, u, c, m) for sku, d, t, u, c, m in rows]

    # --- items: writes ----------------------------------------------------------------------

    def create_item(self, spec: ItemSpec) -> Item:
        spec = normalize_item(spec)
        with self._write() as cur:
            if self._item_exists(cur, spec.sku):
                raise Conflict("item exists", f"SKU {spec.sku} exists; PUT /items/{spec.sku}"
                               " updates it")
            self._check_gtins(cur, spec)
            self._write_items(cur, [spec], set(), utc_now())
        return self.item(spec.sku)

    def update_item(self, spec: ItemSpec) -> Item:
        """Replace an existing item's fields (its GTINs too)."""
        spec = normalize_item(spec)
        with self._write() as cur:
            if not self._item_exists(cur, spec.sku):
                raise NotFound("unknown item", f"no item with SKU {spec.sku}")
            self._check_gtins(cur, spec)
            self._write_items(cur, [spec], {spec.sku}, utc_now())
        return self.item(spec.sku)

    @staticmethod
    def _item_exists(cur: sqlite3.Cursor, sku: str) -> bool:
        return cur.execute("SELECT 1 FROM items WHERE sku = ?", (sku,)).fetchone() is not None

    @staticmethod
    def _check_gtins(cur: sqlite3.Cursor, spec: ItemSpec) -> None:
        if not spec.gtins:
            return
        for gtin, owner in cur.execute(
            f"SELECT gtin, sku FROM item_gtins WHERE gtin IN ({_marks(spec.gtins)})"
            " ORDER BY gtin", spec.gtins,
        ):
            if owner != spec.sku:
                raise Conflict("GTIN in use", f"GTIN {gtin} belongs to SKU {owner}")

    @staticmethod
    def _write_items(
        cur: sqlite3.Cursor, specs: Sequence[ItemSpec], existing: set[str], now: str
    ) -> None:
        new = [s for s in specs if s.sku not in existing]
        old = [s for s in specs if s.sku in existing]
        cur.executemany(
            f"INSERT INTO items ({_ITEM_COLUMNS_SQL}) VALUES (?, ?, ?, ?, ?, ?)",
            [(s.sku, s.description, s.tracking, s.unit, now, now) for s in new],
        )
        cur.executemany(
            "UPDATE items SET description = ?, tracking = ?, unit = ?, updated_at = ?"
            " WHERE sku = ?",
            [(s.description, s.tracking, s.unit, now, s.sku) for s in old],
        )
        # every delete before any insert: GTINs may move between items of one import
        cur.executemany("DELETE FROM item_gtins WHERE sku = ?", [(s.sku,) for s in old])
        cur.executemany(
            "INSERT INTO item_gtins (gtin, sku, ordinal) VALUES (?, ?, ?)",
            [(g, s.sku, i) for s in specs for i, g in enumerate(s.gtins)],
        )

    def import_items(self, text: str) -> ImportSummary:
        """Upsert every row of an items CSV, or none. A column left out keeps what an existing
        item has (new items get the default); an empty cell sets the default (no GTINs, empty
        description, tracking none, unit EA)."""
        table = read_csv(text, "items", ITEM_COLUMNS, ("sku",))
        errors = list(table.errors)
        parsed: list[tuple[int, ItemSpec]] = []
        first_line: dict[str, int] = {}
        for line, row in table.rows:
            try:
                spec = normalize_item(ItemSpec(
                    sku=row["sku"], gtins=split_multi(row.get("gtins", "")),
                    description=row.get("description", ""),
                    tracking=row.get("tracking") or "none", unit=row.get("unit") or "EA",
                ))
            except MasterDataError as exc:
                errors.append(RowError(line, exc.detail))
                continue
            if spec.sku in first_line:
                errors.append(RowError(line, f"duplicate SKU {spec.sku} (also on line"
                                             f" {first_line[spec.sku]})"))
                continue
            first_line[spec.sku] = line
            parsed.append((line, spec))
        absent = [c for c in ("gtins", "description", "tracking", "unit")
                  if c not in table.columns]
        with self._write() as cur:
            skus = [s.sku for _, s in parsed]
            existing = {i.sku: i for i in self._items_in(cur, skus)}
            specs: list[tuple[int, ItemSpec]] = []
            for line, spec in parsed:
                if spec.sku in existing and absent:
                    spec = replace(spec, **{c: getattr(existing[spec.sku], c) for c in absent})
                specs.append((line, spec))
            gtin_line: dict[str, tuple[int, str]] = {}
            in_file = set(skus)
            all_gtins = sorted({g for _, s in specs for g in s.gtins})
            owners: dict[str, str] = {}
            for chunk in _chunks(all_gtins):
                owners.update(cur.execute(
                    f"SELECT gtin, sku FROM item_gtins WHERE gtin IN ({_marks(chunk)})", chunk
                ).fetchall())
            for line, spec in specs:
                for gtin in spec.gtins:
                    if gtin in gtin_line:
                        other_line, other = gtin_line[gtin]
                        errors.append(RowError(line, f"GTIN {gtin} is also on line {other_line}"
                                                     f" (SKU {other})"))
                        break
                    gtin_line[gtin] = (line, spec.sku)
                    owner = owners.get(gtin)
                    if owner is not None and owner != spec.sku and owner not in in_file:
                        errors.append(RowError(line, f"GTIN {gtin} belongs to SKU {owner}"))
                        break
            if errors:
                raise ImportRejected("items", errors)
            self._write_items(cur, [s for _, s in specs], set(existing), utc_now())
        return ImportSummary(created=len(specs) - len(existing), updated=len(existing))

    @staticmethod
    def _items_in(cur: sqlite3.Cursor, skus: Sequence[str]) -> list[Item]:
        found: list[Item] = []
        for chunk in _chunks(list(skus)):
            rows = cur.execute(
                f"SELECT {_ITEM_COLUMNS_SQL} FROM items WHERE sku IN ({_marks(chunk)})", chunk
            ).fetchall()
            gtins: dict[str, list[str]] = {}
            for sku, gtin in cur.execute(
                f"SELECT sku, gtin FROM item_gtins WHERE sku IN ({_marks(chunk)})"
                " ORDER BY sku, ordinal", chunk,
            ):
                gtins.setdefault(sku, []).append(gtin)
            found += [Item(s, tuple(gtins.get(s, ())), d, t, u, c, m) for s, d, t, u, c, m in rows]
        return found
