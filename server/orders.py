"""Outbound orders: the customer's document accepted in one transaction, its lines allocated,
what cannot be allocated backordered, its pick list for the floor, and what it still waits for.

The document (``POST /api/v1/orders``)::

    {"id": "SO-1001", "site": "wh1", "ship_to": "ACME Ltd, 1 Dock Road, Leeds",
     "priority": 3, "due": "2026-12-01",
     "lines": [{"line": 1, "item": "TSHIRT-M", "qty": 12},
               {"line": 2, "item": "09501101530003", "qty": 5, "lot": "L42"}]}

- ``id``: 1-64 of ``A-Z a-z 0-9 . _ -`` (it travels in events' ``doc`` and in a topic level),
  unique across sites; ``site``: the site that ships it; ``ship_to``: free text.
- ``priority``: 1 (first) to 9, default 5; ``due``: a date, ``YYYY-MM-DD``.
- ``lines``: 1 to 100,000; ``item`` a SKU or a GTIN of master data (stored as ordered, and as
  the SKU it belongs to), ``qty`` a positive number, ``lot`` optional (only that lot will do);
  ``line`` a positive number unique in the order, default its position.
- ``totes``: optional, up to 1000 tote ids (as ``id``; their order does not matter): the
  reusable totes (or pre-labelled cartons) the order is picked into. A tote holds one open
  order at a time: naming a tote another open order names is a 409 (``tote in use``). The
  floor's copy carries them, so a picker scanning a tote's label (``TOTE:{tote}`` by default)
  picks against its order, offline too.

All or nothing: a bad document is refused with every problem listed (``OrderRejected``, 422),
nothing written. The same document again changes nothing; another one under the same id is a
409. Accepting it first lets older backorders of its items take the stock free now (they were
there first), then allocates its lines (``server.allocation``) and backorders the rest
(``server.backorders``), in the same transaction.

The floor's picks and ships against it are matched by ``server.picking``. The floor selects an
order by scanning ``ORD:{id}`` (the label in its expected list, ``expected``) or one of its
totes; its ``version`` grows with every change of the order or its allocations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from floorsync.edge import wire
from floorsync.edge.expected import Expected, ExpectedLine
from floorsync.server import allocation, backorders, checks, orderdesk
from floorsync.server.allocation import Demand
from floorsync.server.errors import Invalid, Refused
from floorsync.server.gs1 import normalize_gtin
from floorsync.server.ledger import Store

STATUSES = ("open", "closed", "cancelled")
MAX_LINES = 100_000
MAX_LINE_NO = 10**9
MAX_REPORTED = 1000
MAX_TOTES = 1000
DEFAULT_PRIORITY = 5
LABEL_PREFIX = "ORD:"  # the label a handheld scans to select an order: ORD:{id}
_FIELDS = ("id", "site", "ship_to", "priority", "due", "lines", "totes")
_LINE_FIELDS = ("line", "item", "qty", "lot")
_LINE_KEYS = frozenset(_LINE_FIELDS)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: its line (the line number, when it has one), where
    (a JSON path) and why."""

    line: int | None
    path: str
    reason: str


class OrderRejected(Refused):
    """A bad document: nothing was written; ``errors`` lists every problem (the first 1000)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        lines = {p.line for p in problems if p.line is not None}
        shown = "" if len(problems) <= MAX_REPORTED else f" (the first {MAX_REPORTED} listed)"
        super().__init__(422, "invalid order", f"{len(problems)} problem(s), {len(lines)} bad"
                         f" line(s){shown}; nothing was accepted")
        self.errors = tuple(problems[:MAX_REPORTED])


@dataclass(frozen=True, slots=True)
class OrderLine:
    line: int
    item: str  # as ordered: a SKU, or a GTIN-14
    sku: str  # the master-data item
    lot: str  # '' any lot
    qty: float


@dataclass(frozen=True, slots=True)
class OrderDoc:
    id: str
    site: str
    ship_to: str
    priority: int
    due: str
    lines: tuple[OrderLine, ...]
    totes: tuple[str, ...] = ()  # sorted: a set

    def digest(self) -> str:
        """Of the canonical form: the same order sent again has the same digest. Totes are part
        of it (another tote list is another document); an order without totes has the digest
        it had before orders had totes."""
        form: list[Any] = [self.id, self.site, self.ship_to, self.priority, self.due,
                           [[ln.line, ln.item, ln.lot, ln.qty] for ln in self.lines]]
        if self.totes:
            form.append(list(self.totes))
        canonical = json.dumps(form, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Reserved:
    """Stock held for a line: where, under which key, and whether it is picked goods (staged)."""

    item: str
    location: str
    lot: str | None
    qty: float
    staged: bool


@dataclass(frozen=True, slots=True)
class LineView:
    line: int
    item: str
    sku: str
    lot: str | None
    ordered: float
    allocated: float  # held on the shelf for it, not picked yet
    picked: float
    shipped: float
    backordered: float  # waiting for stock
    status: str
    picked_at: str | None
    closed_at: str | None
    reserved: tuple[Reserved, ...]


@dataclass(frozen=True, slots=True)
class OrderView:
    id: str
    site: str
    ship_to: str
    priority: int
    due: str
    status: str
    version: int
    received_at: str
    updated_at: str
    closed_at: str | None
    cancelled_by: str | None
    reason: str | None
    lines: tuple[LineView, ...]
    exceptions: tuple[int, ...]  # ids of the exceptions the floor's events raised against it
    totes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderSummary:
    seq: int
    id: str
    site: str
    ship_to: str
    priority: int
    due: str
    status: str
    version: int
    received_at: str
    updated_at: str
    closed_at: str | None
    lines: int
    ordered: float
    allocated: float
    picked: float
    shipped: float
    backordered: float


@dataclass(frozen=True, slots=True)
class PickLine:
    line: int
    sku: str
    item: str  # the stock key at the location (what the shelf holds it as)
    lot: str | None
    location: str
    qty: float


@dataclass(frozen=True, slots=True)
class PickList:
    order_id: str
    site: str
    status: str
    version: int
    lines: tuple[PickLine, ...]  # in location order: the walk
    totes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BacklogLine:
    """Work not done yet on an order line: ``allocated`` (held, not picked) or ``picked`` (not
    shipped), since when (the oldest reservation; the first pick) and how long ago."""

    order_id: str
    line: int
    site: str
    sku: str
    lot: str | None
    state: str
    qty: float
    since: str
    age_s: float


def now_text() -> str:
    return checks.utc_text(datetime.now(UTC))


# --- the document ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """A document as far as it parsed; lines whose item could still be looked up."""

    header: dict[str, Any]
    lines: list[tuple[int, int | None, str | None, str, float | None]]  # index, no, item, lot, qty
    totes: tuple[str, ...] = ()


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON: no database stores it
        return False
    return True


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or not (value.isascii() or _unicode(value)):
        return None
    return value


def _parse(data: object) -> tuple[_Draft, list[Problem]]:
    problems: list[Problem] = []
    header: dict[str, Any] = {}
    if not isinstance(data, dict):
        return _Draft(header, []), [Problem(None, "$", "an order is a JSON object")]
    for key in data:
        if key not in _FIELDS:
            problems.append(Problem(None, str(key)[:60],
                                    f"unknown field (fields: {', '.join(_FIELDS)})"))
    for key in ("id", "site"):
        try:
            header[key] = wire.check_name(data.get(key), key)
        except wire.WireError as exc:
            problems.append(Problem(None, key, str(exc)))
    ship_to = _text(data.get("ship_to"), 1000)
    if ship_to is None:
        problems.append(Problem(None, "ship_to", "ship_to must be text of 1-1000 characters"))
    header["ship_to"] = ship_to
    priority = data.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 9:
        problems.append(Problem(None, "priority", "priority must be a whole number from 1"
                                f" (first) to 9 (got {str(priority)[:20]!r})"))
    header["priority"] = priority
    due = data.get("due")
    try:
        if not isinstance(due, str) or not _DATE.match(due):
            raise ValueError
        date.fromisoformat(due)
    except ValueError:
        problems.append(Problem(None, "due", "due must be a date as YYYY-MM-DD"
                                f" (got {str(due)[:40]!r})"))
    header["due"] = due
    totes = _totes(data.get("totes", []), problems)
    raw_lines = data.get("lines")
    if not isinstance(raw_lines, list) or not 1 <= len(raw_lines) <= MAX_LINES:
        problems.append(Problem(None, "lines", f"lines must be a list of 1-{MAX_LINES} lines"))
        return _Draft(header, [], totes), problems
    lines: list[tuple[int, int | None, str | None, str, float | None]] = []
    seen: dict[int, int] = {}
    for i, raw in enumerate(raw_lines):
        where = f"lines[{i}]"
        if not isinstance(raw, dict):
            problems.append(Problem(i + 1, where, "a line is a JSON object"))
            continue
        no = raw.get("line", i + 1)
        if isinstance(no, bool) or not isinstance(no, int) or not 1 <= no <= MAX_LINE_NO:
            problems.append(Problem(i + 1, f"{where}.line", "line must be a whole number from 1"
                                    f" to {MAX_LINE_NO}"))
            no = None
        elif no in seen:
            problems.append(Problem(no, f"{where}.line", f"line {no} twice (also"
                                    f" lines[{seen[no]}])"))
        else:
            seen[no] = i
        label = no if no is not None else i + 1
        for key in sorted(map(str, raw.keys() - _LINE_KEYS)):  # JSON keys are text
            hint = " (the quantity is qty)" if key in ("quantity", "qty_ordered") else ""
            problems.append(Problem(label, f"{where}.{key[:60]}",
                                    f"unknown field{hint}; fields: {', '.join(_LINE_FIELDS)}"))
        item = _text(raw.get("item"), 256)
        if item is None:
            problems.append(Problem(label, f"{where}.item", "item must be a SKU or a GTIN"))
        item = item.strip() if item else None
        lot_raw = raw.get("lot")
        lot = "" if lot_raw is None else _text(lot_raw, 256)
        if lot is None:
            problems.append(Problem(label, f"{where}.lot", "lot must be text of 1-256"
                                    " characters, or left out for any lot"))
            lot = ""
        qty = raw.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, int | float) or not math.isfinite(qty) \
                or not 0 < qty <= wire.MAX_QTY:
            problems.append(Problem(label, f"{where}.qty", "qty must be a number above 0 and at"
                                    f" most {wire.MAX_QTY} (got {str(qty)[:40]!r})"))
            qty = None
        lines.append((i, no, item, lot, None if qty is None else float(qty)))
    return _Draft(header, lines, totes), problems


def _totes(raw: object, problems: list[Problem]) -> tuple[str, ...]:
    """The order's tote ids, sorted (a set: their order is not content)."""
    if not isinstance(raw, list) or len(raw) > MAX_TOTES:
        problems.append(Problem(None, "totes", f"totes must be a list of at most {MAX_TOTES}"
                                " tote ids"))
        return ()
    seen: dict[str, int] = {}
    for i, tote in enumerate(raw):
        try:
            name = wire.check_name(tote, "a tote id")
        except wire.WireError as exc:
            problems.append(Problem(None, f"totes[{i}]", str(exc)))
            continue
        if name in seen:
            problems.append(Problem(None, f"totes[{i}]", f"tote {name} twice (also"
                                    f" totes[{seen[name]}])"))
        seen.setdefault(name, i)
    return tuple(sorted(seen))


def _resolve(cur: sqlite3.Cursor, draft: _Draft) -> tuple[dict[int, tuple[str, str]],
                                                         list[Problem]]:
    """Each line's item as ordered (a SKU, or a GTIN as GTIN-14) and its SKU in master data,
    by line index; the lines whose item master data does not know."""
    problems: list[Problem] = []
    wanted: dict[int, str] = {}  # index -> the text to look up
    gtins: dict[int, str] = {}
    for i, _no, item, _lot, _qty in draft.lines:
        if item is None:
            continue
        wanted[i] = item
        if item.isascii() and item.isdigit() and len(item) in (8, 12, 13, 14):
            with contextlib.suppress(Invalid):  # a bad check digit: an unknown item
                gtins[i] = normalize_gtin(item)
    skus = _known(cur, "SELECT sku, sku FROM items WHERE sku IN ({})", set(wanted.values()))
    by_gtin = _known(cur, "SELECT gtin, sku FROM item_gtins WHERE gtin IN ({})",
                     set(gtins.values()))
    found: dict[int, tuple[str, str]] = {}
    for i, no, item, _lot, _qty in draft.lines:
        if item is None:
            continue
        if item in skus:
            found[i] = (item, skus[item])
        elif i in gtins and gtins[i] in by_gtin:
            found[i] = (gtins[i], by_gtin[gtins[i]])
        else:
            problems.append(Problem(no if no is not None else i + 1, f"lines[{i}].item",
                                    f"unknown item {item[:80]!r}: not a SKU or GTIN of master"
                                    " data"))
    return found, problems


def _known(cur: sqlite3.Cursor, sql: str, keys: Iterable[str]) -> dict[str, str]:
    keys = sorted(keys)
    out: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        out.update(cur.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
    return out


def accept(store: Store, data: object) -> tuple[OrderView, bool]:
    """Accept an order document in one transaction: (the order, whether it is new). The same
    document again changes nothing; another under the same id is refused (409); a bad one is
    refused with every problem (``OrderRejected``), nothing written."""
    draft, problems = _parse(data)
    now = now_text()
    with store._transaction() as cur:
        found, unknown = _resolve(cur, draft)
        problems = sorted([*problems, *unknown],
                          key=lambda p: (p.line is not None, p.line or 0, p.path))
        if problems:
            raise OrderRejected(problems)
        h = draft.header
        doc = OrderDoc(h["id"], h["site"], h["ship_to"], h["priority"], h["due"], tuple(sorted(
            (OrderLine(no or i + 1, found[i][0], found[i][1], lot, qty or 0.0)
             for i, no, _item, lot, qty in draft.lines), key=lambda ln: ln.line)), draft.totes)
        digest = doc.digest()
        row = cur.execute("SELECT digest FROM orders WHERE id = ?", (doc.id,)).fetchone()
        created = row is None
        if not created and row[0] != digest:
            raise Refused(409, "order exists", f"order {doc.id} was accepted with other content;"
                          " an order is not changed by sending it again (cancel it and send"
                          " one under a new id)")
        if created:
            _totes_free(cur, doc)
        touched = _insert(cur, doc, digest, now) if created else set()
    orderdesk.changed(store, touched)
    return get_order(store, doc.id), created


def _totes_free(cur: sqlite3.Cursor, doc: OrderDoc) -> None:
    """A tote holds one open order's picks: one another open order names is refused (409)."""
    taken: list[tuple[str, str, str]] = []
    totes = list(doc.totes)
    for i in range(0, len(totes), 500):
        chunk = totes[i:i + 500]
        taken += cur.execute(
            "SELECT t.tote, t.order_id, o.site FROM order_totes t JOIN orders o"
            f" ON o.id = t.order_id WHERE o.status = 'open' AND t.tote IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY t.tote", chunk).fetchall()
    if taken:
        named = "; ".join(f"tote {tote} is on open order {order} (site {site})"
                          for tote, order, site in taken[:20])
        raise Refused(409, "tote in use", f"{named}: a tote holds one open order at a time"
                      " (ship or cancel that order, or name other totes)")


def _insert(cur: sqlite3.Cursor, doc: OrderDoc, digest: str, now: str) -> set[str]:
    """The order, allocated and backordered; returns the orders that changed (it, and those
    whose backorders took stock first)."""
    cur.execute(
        "INSERT INTO orders (id, site, ship_to, priority, due, digest, received_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (doc.id, doc.site, doc.ship_to, doc.priority, doc.due, digest, now, now))
    cur.executemany(
        "INSERT INTO order_lines (order_id, line, item, sku, lot, qty) VALUES (?, ?, ?, ?, ?, ?)",
        [(doc.id, ln.line, ln.item, ln.sku, ln.lot, ln.qty) for ln in doc.lines])
    cur.executemany("INSERT INTO order_totes (order_id, tote) VALUES (?, ?)",
                    [(doc.id, tote) for tote in doc.totes])
    # older backorders of these items first (stock may have come by a way that filled nothing:
    # an adjustment, a count), then this order's lines in line order
    touched = backorders.fill(cur, doc.site, {ln.sku for ln in doc.lines}, now)
    outcomes = allocation.allocate(
        cur, [Demand(doc.id, ln.line, doc.site, ln.sku, ln.lot, ln.qty) for ln in doc.lines], now)
    backorders.record_short(cur, outcomes, now)
    touch(cur, touched - {doc.id}, now)
    return touched | {doc.id}


def cancel(store: Store, order_id: str, by: str, reason: str | None) -> OrderView:
    """Cancel an open order: its stock is free again (first for other orders' backorders), its
    backorders cancelled; picked goods stay where they are (the floor puts them away)."""
    now = now_text()
    with store._transaction() as cur:
        row = cur.execute("SELECT site, status FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise Refused(404, "unknown order", f"no order {order_id[:80]!r}")
        site, status = row
        if status != "open":
            raise Refused(409, "wrong state", f"order {order_id} is {status}, not open")
        skus = [s for (s,) in cur.execute(
            "SELECT DISTINCT sku FROM order_lines WHERE order_id = ?", (order_id,))]
        cur.execute("UPDATE order_allocations SET qty = 0 WHERE order_id = ? AND qty > 0",
                    (order_id,))
        cur.execute("UPDATE order_lines SET allocated = 0, status = 'cancelled', closed_at = ?"
                    " WHERE order_id = ? AND status = 'open'", (now, order_id))
        backorders.cancel(cur, order_id, now)
        cur.execute("UPDATE orders SET status = 'cancelled', cancelled_by = ?, reason = ?,"
                    " closed_at = ? WHERE id = ?", (by, reason, now, order_id))
        touched = {order_id} | backorders.fill(cur, site, skus, now)
        touch(cur, touched, now)
    orderdesk.changed(store, touched)
    return get_order(store, order_id)


def touch(cur: sqlite3.Cursor, order_ids: Iterable[str], now: str) -> None:
    """These orders changed (lines, allocations, state): their version grows."""
    cur.executemany("UPDATE orders SET version = version + 1, updated_at = ? WHERE id = ?",
                    [(now, i) for i in sorted(set(order_ids))])


def close_if_done(cur: sqlite3.Cursor, order_id: str, now: str) -> None:
    """An order whose lines are all closed (shipped) or cancelled is closed."""
    cur.execute(
        "UPDATE orders SET status = 'closed', closed_at = ? WHERE id = ? AND status = 'open'"
        " AND NOT EXISTS (SELECT 1 FROM order_lines WHERE order_id = ? AND status = 'open')",
        (now, order_id, order_id))


# --- reads ----------------------------------------------------------------------------------

_ORDER = ("id, site, ship_to, priority, due, status, version, received_at, updated_at,"
          " closed_at, cancelled_by, reason")


def get_order(store: Store, order_id: str) -> OrderView:
    conn = store._reader()
    row = conn.execute(f"SELECT {_ORDER} FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise Refused(404, "unknown order", f"no order {order_id[:80]!r}")
    reserved: dict[int, list[Reserved]] = {}
    for line, item, location, lot, qty, staged in conn.execute(
        "SELECT line, item, location, lot, qty, staged FROM order_allocations"
        " WHERE order_id = ? AND qty > 0 ORDER BY line, id", (order_id,),
    ):
        reserved.setdefault(line, []).append(
            Reserved(item, location, lot or None, float(qty), bool(staged)))
    lines = tuple(
        LineView(line, item, sku, lot or None, float(qty), float(al), float(pk), float(sh),
                 float(bo), status, picked_at, closed_at, tuple(reserved.get(line, ())))
        for line, item, sku, lot, qty, al, pk, sh, bo, status, picked_at, closed_at
        in conn.execute(
            "SELECT line, item, sku, lot, qty, allocated, picked, shipped, backordered, status,"
            " picked_at, closed_at FROM order_lines WHERE order_id = ? ORDER BY line",
            (order_id,)))
    raised = tuple(int(i) for (i,) in conn.execute(
        "SELECT exception_id FROM order_exceptions WHERE order_id = ? ORDER BY exception_id",
        (order_id,)))
    ident, site, ship_to, priority, due, status, version, rx, updated, closed, by, reason = row
    return OrderView(ident, site, ship_to, priority, due, status, version, rx, updated, closed,
                     by, reason, lines, raised, _order_totes(conn, order_id))


def _order_totes(conn: Any, order_id: str) -> tuple[str, ...]:
    return tuple(t for (t,) in conn.execute(
        "SELECT tote FROM order_totes WHERE order_id = ? ORDER BY tote", (order_id,)))


def list_orders(
    store: Store, *, status: str | None = None, site: str | None = None,
    after: int | None = None, limit: int = 100,
) -> list[OrderSummary]:
    """Orders in the order they arrived, after ``seq`` ``after``, with their lines' totals."""
    where, params = ["seq > ?"], list[Any]([after or 0])
    for column, value in (("status", status), ("site", site)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = store._query(
        f"SELECT seq, {_ORDER} FROM orders WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
        [*params, limit])
    totals: dict[str, tuple[Any, ...]] = {}
    ids = [r[1] for r in rows]
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for order_id, *sums in store._query(
            "SELECT order_id, COUNT(*), SUM(qty), SUM(allocated), SUM(picked), SUM(shipped),"
            f" SUM(backordered) FROM order_lines WHERE order_id IN ({','.join('?' * len(chunk))})"
            " GROUP BY order_id", chunk,
        ):
            totals[order_id] = tuple(sums)
    out = []
    for seq, ident, site_, ship_to, priority, due, st, version, rx, up, closed, *_ in rows:
        n, *sums = totals.get(ident, (0, 0, 0, 0, 0, 0))
        out.append(OrderSummary(seq, ident, site_, ship_to, priority, due, st, version, rx, up,
                                closed, int(n), *(float(s or 0) for s in sums)))
    return out


def pick_list(store: Store, order_id: str) -> PickList:
    """What to pick for an order now: each reservation on the shelf, in location order."""
    conn = store._reader()
    row = conn.execute("SELECT site, status, version FROM orders WHERE id = ?",
                       (order_id,)).fetchone()
    if row is None:
        raise Refused(404, "unknown order", f"no order {order_id[:80]!r}")
    site, status, version = row
    return PickList(order_id, site, status, version, tuple(
        PickLine(line, sku, item, lot or None, location, float(qty))
        for line, sku, item, lot, location, qty in conn.execute(
            "SELECT a.line, l.sku, a.item, a.lot, a.location, SUM(a.qty) FROM order_allocations a"
            " JOIN order_lines l ON l.order_id = a.order_id AND l.line = a.line"
            " WHERE a.order_id = ? AND a.qty > 0 AND NOT a.staged AND l.status = 'open'"
            " GROUP BY a.location, a.line, a.item, a.lot, l.sku"
            " ORDER BY a.location, a.line, a.item, a.lot", (order_id,))),
        _order_totes(conn, order_id))


def expected_of(store: Store, order_id: str) -> Expected | None:
    """An open order's pick list as the floor gets it (``edge.expected``); None once it is not
    open (the floor's copy is withdrawn). The label ``ORD:{id}`` selects it on a handheld, and
    so does the label of one of its ``totes`` (the edge's ``tote_label_prefix`` + the tote);
    each line names the item by SKU and GTIN (the stock's own key when it is a GTIN, else the
    item's first GTIN), its lot when it has one, and the location to pick from."""
    try:
        picks = pick_list(store, order_id)
    except Refused:
        return None
    if picks.status != "open":
        return None
    gtins: dict[str, str] = {}
    skus = sorted({p.sku for p in picks.lines})
    for i in range(0, len(skus), 500):
        chunk = skus[i:i + 500]
        gtins.update(store._query(
            "SELECT sku, gtin FROM item_gtins WHERE sku IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY ordinal DESC", chunk))
    return Expected(
        kind="order", id=order_id, site=picks.site, version=picks.version,
        lines=tuple(ExpectedLine(
            wire.Item(sku=p.sku, gtin=p.item if p.item != p.sku else gtins.get(p.sku),
                      lot=p.lot), p.qty, p.location) for p in picks.lines),
        labels=(LABEL_PREFIX + order_id,), totes=picks.totes)


def floor_copy(store: Store, order_id: str) -> tuple[str, Expected | None] | None:
    """(The order's site, its expected list or None once it is not open); None: no order."""
    found = store._query("SELECT site FROM orders WHERE id = ?", (order_id,))
    return None if not found else (found[0][0], expected_of(store, order_id))


def expected(store: Store, site: str | None = None) -> list[Expected]:
    """Every open order's expected list (of ``site``): what the floor should hold."""
    ids = [i for (i,) in store._query(
        "SELECT id FROM orders WHERE status = 'open'" + (" AND site = ?" if site else "")
        + " ORDER BY seq", (site,) if site else ())]
    return [e for e in (expected_of(store, i) for i in ids) if e is not None]


def backlog(store: Store, site: str | None = None, now: datetime | None = None
            ) -> list[BacklogLine]:
    """Work not done yet on open orders: lines allocated and not picked, lines picked and not
    shipped, each with how long it has waited (the backlog; backorders are apart)."""
    moment = now or datetime.now(UTC)
    out: list[BacklogLine] = []
    for order_id, line, site_, sku, lot, allocated, waiting, picked_at, since in store._query(
        "SELECT l.order_id, l.line, o.site, l.sku, l.lot, l.allocated, l.picked - l.shipped,"
        " l.picked_at, (SELECT MIN(a.allocated_at) FROM order_allocations a"
        " WHERE a.order_id = l.order_id AND a.line = l.line AND a.qty > 0 AND NOT a.staged)"
        " FROM order_lines l JOIN orders o ON o.id = l.order_id"
        " WHERE l.status = 'open' AND o.status = 'open'"
        " AND (l.allocated > ? OR l.picked - l.shipped > ?)" + (" AND o.site = ?" if site else "")
        + " ORDER BY o.seq, l.line",
        (checks.TOLERANCE, checks.TOLERANCE, *((site,) if site else ())),
    ):
        for state, qty, at in (("allocated", allocated, since), ("picked", waiting, picked_at)):
            if qty > checks.TOLERANCE and at is not None:
                out.append(BacklogLine(order_id, line, site_, sku, lot or None, state, float(qty),
                                       at, (moment - checks.utc(at)).total_seconds()))
    return out
