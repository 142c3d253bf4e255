"""Backorders: a customer's demand we cannot meet for lack of stock, and how it got met.

An order line whose quantity cannot all be allocated gets a backorder for the rest: the quantity,
since when, and why (no stock; the lot asked for is not in stock; the stock there is held by
other orders). A line has at most one open backorder; more shortage adds to it. When stock turns
up (a receive, put-away, return, move or adjustment applied, an order cancelled), the open
backorders of that item at that site are filled **first-come: by the order's due date, then its
priority (1 first), then when the order arrived**, each fill recorded with the stock it was
allocated from and the movement that brought it. A line the floor picks beyond what was allocated
(stock the books did not know) fills its backorder too (``how = picked``).

Not the backlog: the backlog is work we have not done yet (allocated, not picked; picked, not
shipped: ``orders.backlog``). A backorder is demand we cannot even start on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from floorsync.server import allocation
from floorsync.server.allocation import Allocation, Demand, Outcome
from floorsync.server.checks import TOLERANCE
from floorsync.server.ledger import Store

STATUSES = ("open", "filled", "cancelled")
# first-come: due date, priority, arrival; then the line's own number
_QUEUE = "o.due, o.priority, o.received_at, o.seq, b.line"


@dataclass(frozen=True, slots=True)
class Fill:
    id: int
    filled_at: str
    qty: float
    how: str  # allocated (stock found for it) or picked (the floor picked it anyway)
    event_id: str | None  # the movement that brought the stock, or the pick
    item: str | None  # the stock line allocated from (as stock keys it)
    location: str | None
    lot: str | None


@dataclass(frozen=True, slots=True)
class Backorder:
    id: int
    order_id: str
    line: int
    site: str
    sku: str
    lot: str | None
    qty: float  # backordered over its life
    open_qty: float  # still waiting for stock
    since: str
    why: str
    status: str
    closed_at: str | None
    due: str
    priority: int
    fills: tuple[Fill, ...]


def why_short(outcome: Outcome) -> str:
    lot = outcome.demand.lot
    if outcome.on_hand <= TOLERANCE:
        return f"lot {lot!r} not in stock" if lot else "no stock"
    return (f"stock held by other orders (on hand {outcome.on_hand:g}, free"
            f" {outcome.free:g})")


def record_short(cur: sqlite3.Cursor, outcomes: Iterable[Outcome], now: str) -> set[str]:
    """A backorder for what each outcome lacks (added to the line's open one, if any);
    returns the orders touched."""
    touched: set[str] = set()
    for outcome in outcomes:
        short = outcome.short
        if not short:
            continue
        d = outcome.demand
        row = cur.execute("SELECT id FROM backorders WHERE order_id = ? AND line = ?"
                          " AND status = 'open'", (d.order_id, d.line)).fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO backorders (order_id, line, site, sku, lot, qty, open_qty, since, why)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.order_id, d.line, d.site, d.sku, d.lot, short, short, now, why_short(outcome)))
        else:
            cur.execute("UPDATE backorders SET qty = qty + ?, open_qty = open_qty + ?, why = ?"
                        " WHERE id = ?", (short, short, why_short(outcome), row[0]))
        cur.execute("UPDATE order_lines SET backordered = backordered + ? WHERE order_id = ?"
                    " AND line = ?", (short, d.order_id, d.line))
        touched.add(d.order_id)
    return touched


def any_open(cur: sqlite3.Cursor, site: str) -> bool:
    return cur.execute("SELECT 1 FROM backorders WHERE site = ? AND status = 'open' LIMIT 1",
                       (site,)).fetchone() is not None


def fill(
    cur: sqlite3.Cursor, site: str, skus: Iterable[str], now: str,
    cause: Callable[[Allocation], str | None] = lambda a: None,
) -> set[str]:
    """Fill the open backorders of ``skus`` at ``site`` from the stock free now, first-come;
    ``cause`` names the movement that brought an allocation's stock. Returns the orders
    touched."""
    wanted = sorted(set(skus))
    if not wanted:
        return set()
    select = ("SELECT b.id, b.order_id, b.line, b.sku, b.lot, b.open_qty FROM backorders b"
              " JOIN orders o ON o.id = b.order_id WHERE b.status = 'open' AND b.site = ?")
    rows: list[tuple[int, str, int, str, str, float]]
    if len(wanted) <= 500:
        rows = cur.execute(f"{select} AND b.sku IN ({','.join('?' * len(wanted))})"
                           f" ORDER BY {_QUEUE}", [site, *wanted]).fetchall()
    else:  # the site's whole queue, kept to these items
        keep = set(wanted)
        rows = [r for r in cur.execute(f"{select} ORDER BY {_QUEUE}", (site,)) if r[3] in keep]
    if not rows:
        return set()
    outcomes = allocation.allocate(
        cur, [Demand(order_id, line, site, sku, lot, qty)
              for _, order_id, line, sku, lot, qty in rows], now)
    touched: set[str] = set()
    for (ident, order_id, line, *_), outcome in zip(rows, outcomes, strict=True):
        if not outcome.allocations:
            continue
        cur.executemany(
            "INSERT INTO backorder_fills (backorder_id, filled_at, qty, how, event_id, item,"
            " location, lot, allocation_id) VALUES (?, ?, ?, 'allocated', ?, ?, ?, ?, ?)",
            [(ident, now, a.qty, cause(a), a.item, a.location, a.lot or None, a.id)
             for a in outcome.allocations])
        _shrink(cur, ident, order_id, line, outcome.allocated, now)
        touched.add(order_id)
    return touched


def fill_by_pick(cur: sqlite3.Cursor, order_id: str, line: int, qty: float, now: str,
                 event_id: str, item: str, location: str | None, lot: str) -> float:
    """The floor picked ``qty`` of a line beyond what was allocated to it: the line's open
    backorder shrinks by as much of it as it holds; returns that much."""
    row = cur.execute("SELECT id, open_qty FROM backorders WHERE order_id = ? AND line = ?"
                      " AND status = 'open'", (order_id, line)).fetchone()
    if row is None:
        return 0.0
    taken = min(qty, float(row[1]))
    cur.execute(
        "INSERT INTO backorder_fills (backorder_id, filled_at, qty, how, event_id, item,"
        " location, lot) VALUES (?, ?, ?, 'picked', ?, ?, ?, ?)",
        (row[0], now, taken, event_id, item, location, lot or None))
    _shrink(cur, int(row[0]), order_id, line, taken, now)
    return taken


def _shrink(cur: sqlite3.Cursor, ident: int, order_id: str, line: int, qty: float,
            now: str) -> None:
    cur.execute(
        "UPDATE backorders SET open_qty = CASE WHEN open_qty - ? > ? THEN open_qty - ? ELSE 0"
        " END, status = CASE WHEN open_qty - ? > ? THEN 'open' ELSE 'filled' END,"
        " closed_at = CASE WHEN open_qty - ? > ? THEN NULL ELSE ? END WHERE id = ?",
        (qty, TOLERANCE, qty, qty, TOLERANCE, qty, TOLERANCE, now, ident))
    cur.execute(
        "UPDATE order_lines SET backordered = CASE WHEN backordered - ? > ? THEN backordered - ?"
        " ELSE 0 END WHERE order_id = ? AND line = ?", (qty, TOLERANCE, qty, order_id, line))


def cancel(cur: sqlite3.Cursor, order_id: str, now: str) -> None:
    """The order is cancelled: its open backorders wait for nothing any more."""
    cur.execute("UPDATE backorders SET status = 'cancelled', closed_at = ? WHERE order_id = ?"
                " AND status = 'open'", (now, order_id))
    cur.execute("UPDATE order_lines SET backordered = 0 WHERE order_id = ?", (order_id,))


# --- reads ----------------------------------------------------------------------------------

_COLUMNS = ("b.id, b.order_id, b.line, b.site, b.sku, b.lot, b.qty, b.open_qty, b.since, b.why,"
            " b.status, b.closed_at, o.due, o.priority")


def sku_of(store: Store, item: str) -> str:
    """The SKU of a SKU or GTIN of master data; the text itself when master data has neither."""
    found = store._query(
        "SELECT sku FROM items WHERE sku = ? UNION SELECT sku FROM item_gtins WHERE gtin = ?",
        (item, item))
    return str(found[0][0]) if found else item


def list_backorders(
    store: Store, *, site: str | None = None, item: str | None = None,
    status: str | None = "open", order_id: str | None = None, after: int | None = None,
    limit: int = 100,
) -> list[Backorder]:
    """Backorders in the order they were opened, after id ``after``, with their fills;
    ``item`` a SKU or any GTIN of it."""
    where, params = ["b.id > ?"], list[Any]([after or 0])
    if site is not None:
        where.append("b.site = ?")
        params.append(site)
    if item is not None:
        where.append("b.sku = ?")
        params.append(sku_of(store, item))
    if status is not None:
        where.append("b.status = ?")
        params.append(status)
    if order_id is not None:
        where.append("b.order_id = ?")
        params.append(order_id)
    rows = store._query(
        f"SELECT {_COLUMNS} FROM backorders b JOIN orders o ON o.id = b.order_id"
        f" WHERE {' AND '.join(where)} ORDER BY b.id LIMIT ?", [*params, limit])
    return _with_fills(store, rows)


def _with_fills(store: Store, rows: Sequence[Sequence[Any]]) -> list[Backorder]:
    fills: dict[int, list[Fill]] = {}
    ids = [int(r[0]) for r in rows]
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for b, *rest in store._query(
            "SELECT backorder_id, id, filled_at, qty, how, event_id, item, location, lot"
            f" FROM backorder_fills WHERE backorder_id IN ({','.join('?' * len(chunk))})"
            " ORDER BY id", chunk,
        ):
            ident, at, qty, how, event_id, item, location, lot = rest
            fills.setdefault(b, []).append(
                Fill(ident, at, float(qty), how, event_id, item, location, lot))
    return [
        Backorder(int(ident), order_id, line, site, sku, lot or None, float(qty), float(open_qty),
                  since, why, status, closed_at, due, priority, tuple(fills.get(int(ident), ())))
        for ident, order_id, line, site, sku, lot, qty, open_qty, since, why, status, closed_at,
        due, priority in rows
    ]
