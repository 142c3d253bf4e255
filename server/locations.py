"""The location tree: per site, the root has kind ``site`` and the site's name as its code;
below it zones, aisles and bins. A location sits inside one of the same or a higher level (a zone
in a zone, a bin in an aisle or directly in a zone), never the reverse, and never inside itself.
Every site has the virtual locations of ``VIRTUAL`` under its root. A location is found by its
code, by the barcodes on its labels (unique per site), or by its GLN + extension (SGLN)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
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
from floorsync.server.gs1 import (
    normalize_gln,
    normalize_gln_extension,
    parse_gln_label,
    resolve_gln,
)
from floorsync.server.ledger import utc_now
from floorsync.server.mastertables import MasterTables, _chunks, _key, _marks, _text

KINDS = ("site", "zone", "aisle", "bin", "virtual")
VIRTUAL = ("receiving", "shipping", "customer", "supplier", "lost")
RESERVED_SITES = frozenset({"by-barcode"})  # would shadow GET /locations/by-barcode/{text}
_RANK = {"site": 0, "zone": 1, "aisle": 2, "bin": 3}  # a location's parent ranks <= itself
MAX_DEPTH = 32
MAX_BARCODES = 32

LOCATION_COLUMNS = (
    "site", "code", "kind", "parent", "name", "barcodes", "gln", "gln_extension", "sgln"
)
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


class LocationMaster(MasterTables):
    """The location tree: reads, writes and the CSV import."""

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
