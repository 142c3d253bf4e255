"""Master data: items and the location tree, with their all-or-nothing CSV imports.

Items are keyed by SKU; each GTIN (stored as GTIN-14, check digit verified; GTIN-8, -12 and -13
are zero-padded) belongs to one item. Locations form a tree per site: the root has kind ``site``
and the site's name as its code; below it zones, aisles and bins. A location sits inside one of
the same or a higher level (a zone in a zone, a bin in an aisle or directly in a zone), never
the reverse, and never inside itself. Every site has the virtual locations of ``VIRTUAL`` under
its root. A location is found by its code, by the barcodes on its labels (unique per site), or by
its GLN + extension (SGLN).

Every write is one transaction on the store's single writer and is checked inside it (``BEGIN
IMMEDIATE`` holds the write lock, so a check never races another write); reads use the store's
per-thread readers. The ledger's apply path checks events against master data from the store's
in-memory caches (``server.checks``), which every write here drops.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from floorsync.server.errors import Conflict, Invalid, MasterDataError, NotFound
from floorsync.server.gs1 import (
    normalize_gln,
    normalize_gln_extension,
    normalize_gtin,
    parse_gln_label,
    resolve_gln,
)
from floorsync.server.ledger import Store, utc_now

TRACKING = ("none", "lot", "serial")
KINDS = ("site", "zone", "aisle", "bin", "virtual")
VIRTUAL = ("receiving", "shipping", "customer", "supplier", "lost")
RESERVED_SITES = frozenset({"by-barcode"})  # would shadow GET /locations/by-barcode/{text}
_RANK = {"site": 0, "zone": 1, "aisle": 2, "bin": 3}  # a location's parent ranks <= itself
MAX_DEPTH = 32
MAX_GTINS = 32
MAX_BARCODES = 32
MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 1000
MULTI_SEPARATORS = re.compile(r"[|;]")

ITEM_COLUMNS = ("sku", "gtins", "description", "tracking", "unit")
LOCATION_COLUMNS = (
    "site", "code", "kind", "parent", "name", "barcodes", "gln", "gln_extension", "sgln"
)
_ALIASES = {"gtin": "gtins", "barcode": "barcodes"}

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_UNIT = re.compile(r"[A-Za-z0-9._-]{1,16}\Z")


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


class ImportRejected(MasterDataError):
    """Some rows of an import are bad: nothing was written. ``errors`` lists them by line."""

    def __init__(self, what: str, errors: Iterable[RowError]) -> None:
        ordered = sorted(errors, key=lambda e: e.line)
        rows = "row" if len(ordered) == 1 else "rows"
        shown = "" if len(ordered) <= MAX_REPORTED_ERRORS else (
            f" (the first {MAX_REPORTED_ERRORS} are listed)")
        super().__init__(
            "import rejected",
            f"{len(ordered)} {rows} of the {what} file with errors{shown}; nothing was imported",
        )
        self.errors = tuple(ordered[:MAX_REPORTED_ERRORS])
        self.total = len(ordered)


# --- records --------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class LocationSpec:
    """A location as a client describes it; ``parent`` None means the site's root."""

    site: str
    code: str
    kind: str
    parent: str | None = None
    name: str = ""
    barcodes: tuple[str, ...] = ()
    gln: str | None = None
    gln_extension: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    site: str
    code: str
    kind: str
    parent: str | None
    name: str
    barcodes: tuple[str, ...]
    gln: str | None
    gln_extension: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ImportSummary:
    created: int
    updated: int


# --- normalisation --------------------------------------------------------------------------


def _key(value: str, what: str) -> str:
    value = value.strip()
    if not _KEY.match(value):
        raise Invalid(f"invalid {what}",
                      f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ - (got {value[:80]!r})")
    return value


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise Invalid(f"invalid {what}", f"{what} is longer than {limit} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise Invalid(f"invalid {what}", f"{what} holds control characters")
    return value


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


def normalize_location(spec: LocationSpec) -> LocationSpec:
    site, code = _key(spec.site, "site"), _key(spec.code, "code")
    if site in RESERVED_SITES:
        raise Invalid("invalid site", f"{site!r} is reserved")
    kind = spec.kind.strip()
    if kind not in KINDS:
        raise Invalid("invalid kind", f"kind must be one of {', '.join(KINDS)} (got {kind[:20]!r})")
    parent = _key(spec.parent, "parent") if spec.parent and spec.parent.strip() else None
    if kind == "site":
        if code != site:
            raise Invalid("invalid site location", f"a site's code is its site name ({site})")
        if parent is not None:
            raise Invalid("invalid site location", "a site has no parent")
    elif code == site:
        raise Invalid("invalid code", f"{code} is the site's own code; its kind is site")
    elif kind == "virtual":
        if code not in VIRTUAL:
            raise Invalid("invalid virtual location",
                          f"virtual locations are {', '.join(VIRTUAL)} (got {code!r})")
        if parent not in (None, site):
            raise Invalid("invalid virtual location", "a virtual location sits under its site")
        parent = site
    else:
        if code in VIRTUAL:
            raise Invalid("invalid code", f"{code} is reserved for the virtual location")
        parent = parent or site
    barcodes = tuple(dict.fromkeys(
        b for b in (_text(b, "barcode", 128) for b in spec.barcodes) if b
    ))
    if len(barcodes) > MAX_BARCODES:
        raise Invalid("too many barcodes", f"a location has at most {MAX_BARCODES} barcodes")
    extension = normalize_gln_extension(spec.gln_extension)
    gln = normalize_gln(spec.gln) if spec.gln and spec.gln.strip() else None
    if extension and gln is None:
        raise Invalid("invalid GLN extension", "a GLN extension needs a GLN")
    return LocationSpec(site, code, kind, parent, _text(spec.name, "name", 128), barcodes, gln,
                        extension)


def split_multi(cell: str) -> tuple[str, ...]:
    """A CSV cell holding several values separated by ``|`` or ``;``."""
    return tuple(v.strip() for v in MULTI_SEPARATORS.split(cell) if v.strip())


# --- the location tree ----------------------------------------------------------------------

_Node = tuple[str, str | None]  # kind, parent


def tree_problem(
    spec: LocationSpec, node: Callable[[str], _Node | None], child_kinds: Iterable[str]
) -> MasterDataError | None:
    """Why ``spec`` cannot sit where it says in the tree that ``node`` reads, or None.

    ``node(code)`` answers for the tree as it will be (``spec`` itself excluded from its walk);
    ``child_kinds`` are the kinds of the locations that will sit directly inside ``spec``.
    """
    if spec.kind == "site":
        return None
    site, code, kind, parent = spec.site, spec.code, spec.kind, spec.parent
    assert parent is not None  # normalize_location fills it
    above = node(parent)
    if above is None:
        if parent == site:
            return NotFound("unknown site", f"site {site} does not exist: create its site"
                            f" location (kind site, code {site}) first")
        return NotFound("unknown parent", f"parent {site}/{parent} does not exist")
    if above[0] == "virtual":
        return Conflict("invalid parent", f"{parent} is virtual and holds no locations")
    if _RANK[above[0]] > _RANK.get(kind, 0):
        return Conflict("invalid parent",
                        f"{_a(kind)} cannot sit inside {_a(above[0])} ({parent})")
    chain, seen, here = [code, parent], {code}, parent
    while True:
        if here in seen:
            return Conflict("cycle", f"{site}/{code} would sit inside itself: "
                            f"{' in '.join(chain)}")
        seen.add(here)
        up = node(here)
        if up is None or up[1] is None:
            break
        here = up[1]
        chain.append(here)
        if len(chain) > MAX_DEPTH:
            return Conflict("too deep", f"{site}/{code} would be deeper than {MAX_DEPTH} levels")
    for child in sorted(set(child_kinds)):
        if _RANK.get(child, 0) < _RANK.get(kind, 0):
            return Conflict("invalid kind",
                            f"{code} holds {_a(child)}; it cannot become {_a(kind)}")
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _reader(tree: dict[tuple[str, str], _Node], site: str) -> Callable[[str], _Node | None]:
    return lambda code: tree.get((site, code))


# --- CSV ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CsvRows:
    columns: frozenset[str]
    rows: tuple[tuple[int, dict[str, str]], ...]
    errors: tuple[RowError, ...]


def read_csv(text: str, what: str, known: Sequence[str], required: Sequence[str]) -> CsvRows:
    """Rows of a CSV file with a header, each with its first physical line number.

    The delimiter is ``,`` unless the header holds more ``;`` or tabs. A bad header rejects
    the file at once; rows of the wrong width are returned as errors.
    """
    text = text.removeprefix("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ImportRejected(what, [RowError(1, "a header row naming the columns is required;"
                                                    f" columns: {', '.join(known)}")])
        names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        problems = [f"unknown column {h!r}" for h in names if h not in known]
        problems += [f"column {h!r} twice" for h in sorted({h for h in names if
                                                            names.count(h) > 1})]
        problems += [f"required column {c!r} missing" for c in required if c not in names]
        if problems:
            raise ImportRejected(what, [RowError(1, "; ".join(problems) +
                                                 f" (columns: {', '.join(known)})")])
        rows: list[tuple[int, dict[str, str]]] = []
        errors: list[RowError] = []
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(rows) + len(errors) >= MAX_IMPORT_ROWS:
                raise ImportRejected(what, [RowError(start, f"more than {MAX_IMPORT_ROWS} rows;"
                                                            " split the file")])
            if len(cells) != len(names):
                errors.append(RowError(start, f"{len(cells)} cells, the header has {len(names)}"))
                continue
            rows.append((start, {n: c.strip() for n, c in zip(names, cells, strict=True)}))
    except csv.Error as exc:
        raise ImportRejected(what, [RowError(reader.line_num, f"unreadable CSV: {exc}")]) from None
    return CsvRows(frozenset(names), tuple(rows), tuple(errors))


# --- the service ----------------------------------------------------------------------------

_ITEM_COLUMNS_SQL = "sku, description, tracking, unit, created_at, updated_at"
_LOCATION_COLUMNS_SQL = (
    "site, code, kind, parent, name, gln, gln_extension, created_at, updated_at"
)
_UPSERT_LOCATION = (
    "INSERT INTO locations (site, code, kind, parent, name, gln, gln_extension, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (site, code) DO UPDATE SET kind = excluded.kind, parent = excluded.parent,"
    " name = excluded.name, gln = excluded.gln, gln_extension = excluded.gln_extension,"
    " updated_at = excluded.updated_at"
)


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


class MasterData:
    """Items and locations in the store's database, written through its one writer."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction; after it the ledger's checks see the new master data."""
        with self._store._transaction() as cur:
            yield cur
            self._store.reload_checks()  # inside the writer lock: no apply sees it half

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

    # --- locations: reads -------------------------------------------------------------------

    def location(self, site: str, code: str) -> Location:
        found = self._locations("site = ? AND code = ?", [site, code])
        if not found:
            raise NotFound("unknown location", f"no location {site[:64]}/{code[:64]}")
        return found[0]

    def locations(
        self,
        *,
        site: str | None = None,
        parent: str | None = None,
        kind: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[Location]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("site", site), ("parent", parent), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after is not None:
            where.append("(site > ? OR (site = ? AND code > ?))")
            params += [after[0], after[0], after[1]]
        return self._locations(" AND ".join(where) or "1 = 1", params, limit)

    def children(
        self, site: str, code: str, *, after: str | None = None, limit: int = 100
    ) -> list[Location]:
        self.location(site, code)
        return self.locations(
            site=site, parent=code, after=None if after is None else (site, after), limit=limit
        )

    def path(self, site: str, code: str) -> list[Location]:
        """The location's ancestors from its site down, then the location itself."""
        rows = self._store._query(
            "WITH RECURSIVE up (code, parent, depth) AS ("
            " SELECT code, parent, 0 FROM locations WHERE site = ? AND code = ?"
            " UNION ALL SELECT l.code, l.parent, up.depth + 1 FROM locations l"
            " JOIN up ON l.site = ? AND l.code = up.parent WHERE up.depth < ?)"
            " SELECT code, depth FROM up",
            (site, code, site, MAX_DEPTH),
        )
        if not rows:
            raise NotFound("unknown location", f"no location {site[:64]}/{code[:64]}")
        depth: dict[str, int] = dict(rows)
        codes = list(depth)
        found = self._locations(f"site = ? AND code IN ({_marks(codes)})", [site, *codes])
        return sorted(found, key=lambda loc: -depth[loc.code])

    def by_barcode(self, text: str, site: str | None = None) -> Location:
        """The location a scanned label names: one of its barcodes, else its GLN (+ extension)
        as an SGLN URI, GS1 element string (AI 414/254) or Digital Link, else its code."""
        label = text.strip()
        scope, params = ("", []) if site is None else (" AND site = ?", [site])
        rows: list[Any]
        rows = self._store._query(
            f"SELECT site, code FROM location_barcodes WHERE barcode = ?{scope}", [label, *params]
        )
        gln = parse_gln_label(label) if not rows else None
        if gln is not None:
            rows = self._store._query(
                f"SELECT site, code FROM locations WHERE gln = ? AND gln_extension = ?{scope}",
                [*gln, *params],
            )
        if not rows:
            rows = self._store._query(
                f"SELECT site, code FROM locations WHERE code = ?{scope}", [label, *params]
            )
        if not rows:
            where = "" if site is None else f" in site {site[:64]}"
            raise NotFound("unknown label", f"no location has the label {label[:128]!r}{where}")
        if len(rows) > 1:
            sites = ", ".join(sorted(s for s, _ in rows))
            raise Conflict("ambiguous label", f"{label[:128]!r} names a location in sites"
                           f" {sites}; pass ?site=")
        return self.location(*rows[0])

    def _locations(
        self, where: str, params: list[Any], limit: int | None = None
    ) -> list[Location]:
        sql = f"SELECT {_LOCATION_COLUMNS_SQL} FROM locations WHERE {where} ORDER BY site, code"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._store._query(sql, params)
        barcodes = self._barcodes(self._store._query, [(r[0], r[1]) for r in rows])
        return [
            Location(s, c, k, p, n, tuple(barcodes.get((s, c), ())), g, e, at, up)
            for s, c, k, p, n, g, e, at, up in rows
        ]

    @staticmethod
    def _barcodes(
        query: Callable[[str, Sequence[Any]], list[Any]], keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[str]]:
        by_site: dict[str, list[str]] = {}
        for site, code in keys:
            by_site.setdefault(site, []).append(code)
        out: dict[tuple[str, str], list[str]] = {}
        for site, codes in by_site.items():
            for chunk in _chunks(codes):
                for code, barcode in query(
                    "SELECT code, barcode FROM location_barcodes"
                    f" WHERE site = ? AND code IN ({_marks(chunk)}) ORDER BY code, ordinal",
                    [site, *chunk],
                ):
                    out.setdefault((site, code), []).append(barcode)
        return out

    # --- locations: writes ------------------------------------------------------------------

    def create_location(self, spec: LocationSpec) -> Location:
        """A new location; a new site gets its virtual locations in the same transaction."""
        spec = normalize_location(spec)
        with self._write() as cur:
            if self._node(cur, spec.site, spec.code) is not None:
                raise Conflict("location exists", f"{spec.site}/{spec.code} exists; PUT"
                               f" /locations/{spec.site}/{spec.code} updates it")
            self._check_labels(cur, spec)
            problem = tree_problem(spec, lambda c: self._node(cur, spec.site, c), ())
            if problem is not None:
                raise problem
            self._write_locations(cur, [spec], utc_now())
        return self.location(spec.site, spec.code)

    def update_location(self, spec: LocationSpec) -> Location:
        """Replace an existing location's kind, parent, name, barcodes and GLN."""
        spec = normalize_location(spec)
        with self._write() as cur:
            if self._node(cur, spec.site, spec.code) is None:
                raise NotFound("unknown location", f"no location {spec.site}/{spec.code}")
            self._check_labels(cur, spec)
            kinds = [k for (k,) in cur.execute(
                "SELECT DISTINCT kind FROM locations WHERE site = ? AND parent = ?",
                (spec.site, spec.code),
            )]
            problem = tree_problem(spec, lambda c: self._node(cur, spec.site, c), kinds)
            if problem is not None:
                raise problem
            self._write_locations(cur, [spec], utc_now())
        return self.location(spec.site, spec.code)

    def ensure_virtual(self, site: str) -> list[Location]:
        """The site's virtual locations, made now if missing (and the site's root with them)."""
        site = normalize_location(LocationSpec(site, site, "site")).site
        with self._write() as cur:
            self._ensure_virtual(cur, site, utc_now(), root=True)
        return self.locations(site=site, kind="virtual", limit=len(VIRTUAL))

    @staticmethod
    def _ensure_virtual(cur: sqlite3.Cursor, site: str, now: str, *, root: bool) -> None:
        rows: list[tuple[str, str, str | None]] = [(code, "virtual", site) for code in VIRTUAL]
        if root:
            rows.insert(0, (site, "site", None))
        cur.executemany(
            "INSERT INTO locations (site, code, kind, parent, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, code) DO NOTHING",
            [(site, code, kind, parent, now, now) for code, kind, parent in rows],
        )

    @staticmethod
    def _node(cur: sqlite3.Cursor, site: str, code: str) -> _Node | None:
        row = cur.execute(
            "SELECT kind, parent FROM locations WHERE site = ? AND code = ?", (site, code)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    @staticmethod
    def _check_labels(cur: sqlite3.Cursor, spec: LocationSpec) -> None:
        if spec.barcodes:
            for barcode, code in cur.execute(
                "SELECT barcode, code FROM location_barcodes"
                f" WHERE site = ? AND barcode IN ({_marks(spec.barcodes)}) ORDER BY barcode",
                [spec.site, *spec.barcodes],
            ):
                if code != spec.code:
                    raise Conflict("barcode in use",
                                   f"barcode {barcode!r} labels {spec.site}/{code}")
        if spec.gln is not None:
            row = cur.execute(
                "SELECT site, code FROM locations WHERE gln = ? AND gln_extension = ?",
                (spec.gln, spec.gln_extension),
            ).fetchone()
            if row is not None and tuple(row) != (spec.site, spec.code):
                raise Conflict("GLN in use", f"GLN {spec.gln} extension"
                               f" {spec.gln_extension or '(none)'} names {row[0]}/{row[1]}")

    def _write_locations(
        self, cur: sqlite3.Cursor, specs: Sequence[LocationSpec], now: str
    ) -> None:
        keys = [(s.site, s.code) for s in specs]
        # clear the labels first, so labels moving between locations of one import never clash
        cur.executemany("UPDATE locations SET gln = NULL WHERE site = ? AND code = ?", keys)
        cur.executemany("DELETE FROM location_barcodes WHERE site = ? AND code = ?", keys)
        cur.executemany(_UPSERT_LOCATION, [
            (s.site, s.code, s.kind, s.parent, s.name, s.gln, s.gln_extension, now, now)
            for s in specs
        ])
        cur.executemany(
            "INSERT INTO location_barcodes (site, barcode, code, ordinal) VALUES (?, ?, ?, ?)",
            [(s.site, b, s.code, i) for s in specs for i, b in enumerate(s.barcodes)],
        )
        for site in sorted({s.site for s in specs if s.kind == "site"}):
            self._ensure_virtual(cur, site, now, root=False)

    def import_locations(self, text: str) -> ImportSummary:
        """Upsert every row of a locations CSV, or none. Rows may come in any order (a parent
        after its children). A column left out keeps what an existing location has; an empty
        cell sets the default (no parent = under the site root, no barcodes, no GLN)."""
        table = read_csv(text, "locations", LOCATION_COLUMNS, ("site", "code", "kind"))
        errors: dict[int, str] = {e.line: e.reason for e in table.errors}
        parsed: list[tuple[int, LocationSpec]] = []
        first_line: dict[tuple[str, str], int] = {}
        bad_keys: dict[tuple[str, str], int] = {}  # rows that failed, by the key they meant
        for line, row in table.rows:
            try:
                gln, extension = resolve_gln(
                    row.get("gln"), row.get("gln_extension", ""), row.get("sgln")
                )
                spec = normalize_location(LocationSpec(
                    site=row["site"], code=row["code"], kind=row["kind"],
                    parent=row.get("parent") or None, name=row.get("name", ""),
                    barcodes=split_multi(row.get("barcodes", "")), gln=gln,
                    gln_extension=extension,
                ))
            except MasterDataError as exc:
                errors[line] = exc.detail
                bad_keys.setdefault((row["site"].strip(), row["code"].strip()), line)
                continue
            key = (spec.site, spec.code)
            if key in first_line:
                errors[line] = f"duplicate location {spec.site}/{spec.code} (also on line" \
                               f" {first_line[key]})"
                continue
            first_line[key] = line
            parsed.append((line, spec))
        keep = {c: c for c in ("parent", "name", "barcodes") if c not in table.columns}
        if not {"gln", "gln_extension", "sgln"} & table.columns:
            keep |= {"gln": "gln", "gln_extension": "gln_extension"}

        with self._write() as cur:
            sites = sorted({s.site for _, s in parsed})
            tree: dict[tuple[str, str], _Node] = {}
            gln_owner: dict[tuple[str, str], tuple[str, str]] = {}
            current: dict[tuple[str, str], tuple[str | None, str, str | None, str]] = {}
            for site in sites:
                for code, kind, parent, name, gln, ext in cur.execute(
                    "SELECT code, kind, parent, name, gln, gln_extension FROM locations"
                    " WHERE site = ?", (site,),
                ):
                    tree[(site, code)] = (kind, parent)
                    current[(site, code)] = (parent, name, gln, ext)
            for site, code, gln, ext in cur.execute(
                "SELECT site, code, gln, gln_extension FROM locations WHERE gln IS NOT NULL"
            ):
                gln_owner[(gln, ext)] = (site, code)
            barcode_owner: dict[tuple[str, str], str] = {}
            existing_barcodes: dict[tuple[str, str], list[str]] = {}
            for site in sites:
                for barcode, code in cur.execute(
                    "SELECT barcode, code FROM location_barcodes WHERE site = ?"
                    " ORDER BY code, ordinal", (site,),
                ):
                    barcode_owner[(site, barcode)] = code
                    existing_barcodes.setdefault((site, code), []).append(barcode)

            specs: list[tuple[int, LocationSpec]] = []
            for line, spec in parsed:
                key = (spec.site, spec.code)
                if key in current and keep:
                    was = current[key]
                    now_has: dict[str, Any] = {
                        "parent": was[0], "name": was[1], "gln": was[2], "gln_extension": was[3],
                        "barcodes": tuple(existing_barcodes.get(key, ())),
                    }
                    spec = replace(spec, **{c: now_has[c] for c in keep})
                specs.append((line, spec))
            in_file = {(s.site, s.code) for _, s in specs}

            # labels: unique within the file, and not taken by a location outside it
            seen_barcode: dict[tuple[str, str], int] = {}
            seen_gln: dict[tuple[str, str], int] = {}
            for line, spec in specs:
                for barcode in spec.barcodes:
                    owner = barcode_owner.get((spec.site, barcode))
                    if (spec.site, barcode) in seen_barcode:
                        errors.setdefault(line, f"barcode {barcode!r} is also on line"
                                                f" {seen_barcode[(spec.site, barcode)]}")
                    elif owner is not None and (spec.site, owner) not in in_file:
                        errors.setdefault(line, f"barcode {barcode!r} labels"
                                                f" {spec.site}/{owner}")
                    seen_barcode.setdefault((spec.site, barcode), line)
                if spec.gln is not None:
                    gkey = (spec.gln, spec.gln_extension)
                    holder = gln_owner.get(gkey)
                    if gkey in seen_gln:
                        errors.setdefault(line, f"GLN {spec.gln} extension"
                                                f" {spec.gln_extension or '(none)'} is also on"
                                                f" line {seen_gln[gkey]}")
                    elif holder is not None and holder not in in_file:
                        errors.setdefault(line, f"GLN {spec.gln} names {holder[0]}/{holder[1]}")
                    seen_gln.setdefault(gkey, line)

            # the tree as it will be
            for _, spec in specs:
                tree[(spec.site, spec.code)] = (spec.kind, spec.parent)
            child_kinds: dict[tuple[str, str], set[str]] = {}  # of stored children the file
            for (site, code), (kind, parent) in tree.items():  # leaves out (rows check theirs)
                if parent is not None and (site, code) not in in_file:
                    child_kinds.setdefault((site, parent), set()).add(kind)
            for line, spec in specs:
                if line in errors:
                    continue
                if spec.parent is not None and (spec.site, spec.parent) in bad_keys:
                    errors[line] = (f"parent {spec.site}/{spec.parent} is on line"
                                    f" {bad_keys[(spec.site, spec.parent)]}, which has errors")
                    continue
                problem = tree_problem(
                    spec, _reader(tree, spec.site), child_kinds.get((spec.site, spec.code), ())
                )
                if problem is not None:
                    errors[line] = problem.detail
            if errors:
                raise ImportRejected("locations", [RowError(n, r) for n, r in errors.items()])
            self._write_locations(cur, [s for _, s in specs], utc_now())
        updated = sum(1 for _, s in specs if (s.site, s.code) in current)
        return ImportSummary(created=len(specs) - updated, updated=updated)
