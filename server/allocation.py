"""Allocation: stock on hand reserved for order lines, in one set-based statement per pass.

Available stock is on hand minus what is allocated, per stock line (item key, site, location,
lot), never below zero. An order line's item is a SKU of master data; its stock may be kept under
the SKU or any GTIN of it (the ledger keeps what the floor scanned), so every key counts. Stock
at the virtual locations ``shipping``, ``customer``, ``supplier`` and ``lost`` is not there to
pick; stock at a receiving dock is (a cross-dock pick).

The rule (the issue leaves it open; lots carry no expiry here, so FEFO cannot apply):

- a line that names a lot takes that lot only, and lines naming lots go first (they have fewer
  places to take from);
- otherwise the **largest available line first** (the fewest pick locations per order line),
  then location code, lot and key, so the same stock gives the same allocation;
- demands compete **first-come** in the order given (the caller ranks them: an order's lines in
  line order; backorders by due date, priority, order time).

Set-based: each demand is an interval on its item's running demand, each stock line an interval
on its item's running supply (window sums); an allocation is where the two overlap. One
statement per pass, whatever the number of lines.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from floorsync.server.checks import TOLERANCE

UNPICKABLE = ("shipping", "customer", "supplier", "lost")  # virtual locations, not shelves
_UNPICKABLE_SQL = ", ".join(f"'{code}'" for code in UNPICKABLE)


@dataclass(frozen=True, slots=True)
class Demand:
    """What one order line still needs reserved: ``lot`` '' for any lot."""

    order_id: str
    line: int
    site: str
    sku: str
    lot: str
    need: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """One reservation: ``qty`` of the stock line (``item`` as stock keys it) for a line."""

    id: int
    order_id: str
    line: int
    item: str
    location: str
    lot: str
    qty: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a demand got, and, if short, the supply of its item as it stood after the pass."""

    demand: Demand
    allocations: tuple[Allocation, ...]
    on_hand: float = 0.0  # pickable on-hand of its item (and lot) at its site; set when short
    free: float = 0.0  # of that, what no order holds

    @property
    def allocated(self) -> float:
        return sum(a.qty for a in self.allocations)

    @property
    def short(self) -> float:
        missing = self.demand.need - self.allocated
        return missing if missing > TOLERANCE else 0.0


_DEMAND_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS alloc_demand (k INTEGER PRIMARY KEY, order_id TEXT NOT NULL,"
    " line INTEGER NOT NULL, site TEXT NOT NULL, sku TEXT NOT NULL, lot TEXT NOT NULL,"
    " need DOUBLE PRECISION NOT NULL)"
)

# The demand's items and every key their stock is kept under (the SKU and its GTINs).
_KEYS = """
g AS MATERIALIZED (
    SELECT site, sku, lot AS req, SUM(need) AS total FROM temp.alloc_demand
    GROUP BY site, sku, lot),
keys AS MATERIALIZED (
    SELECT g.site, g.sku, g.req, g.total, g.sku AS key FROM g
    UNION ALL
    SELECT g.site, g.sku, g.req, g.total, ig.gtin FROM g
    JOIN item_gtins ig ON ig.sku = g.sku),
s AS MATERIALIZED (
    SELECT k.site, k.sku, k.req, k.total, st.item, st.location, st.lot, st.quantity,
        st.quantity - COALESCE((SELECT SUM(a.qty) FROM order_allocations a
            WHERE a.item = st.item AND a.site = st.site AND a.location = st.location
            AND a.lot = st.lot AND a.qty > 0), 0) AS avail
    FROM keys k JOIN stock st ON st.item = k.key AND st.site = k.site
    WHERE (k.req = '' OR st.lot = k.req) AND st.quantity > 0
    AND st.location NOT IN (""" + _UNPICKABLE_SQL + "))"

# Where running demand and running supply of an item overlap. A group whose largest free line
# covers its whole demand needs only that line (the rule's own first pick), so the window runs
# over that line alone: the sort is paid only where demand spreads over several lines.
_ALLOCATE = "WITH " + _KEYS + """,
top AS MATERIALIZED (
    SELECT site, sku, req, MAX(avail) AS best FROM s WHERE avail > :tol GROUP BY site, sku, req),
p AS (
    SELECT s.* FROM s JOIN top ON top.site = s.site AND top.sku = s.sku AND top.req = s.req
    WHERE s.avail > :tol AND (top.best < s.total OR s.avail >= top.best)),
r AS MATERIALIZED (
    SELECT * FROM (
        SELECT site, sku, req, total, item, location, lot,
            SUM(avail) OVER w - avail AS s0, SUM(avail) OVER w AS s1
        FROM p
        WINDOW w AS (PARTITION BY site, sku, req ORDER BY avail DESC, location, lot, item
                     ROWS UNBOUNDED PRECEDING))
    WHERE s0 < total),
d AS MATERIALIZED (
    SELECT k, site, sku, lot, SUM(need) OVER w - need AS d0, SUM(need) OVER w AS d1
    FROM temp.alloc_demand
    WINDOW w AS (PARTITION BY site, sku, lot ORDER BY k ROWS UNBOUNDED PRECEDING))
SELECT d.k, r.item, r.location, r.lot,
    CASE WHEN d.d1 < r.s1 THEN d.d1 ELSE r.s1 END
    - CASE WHEN d.d0 > r.s0 THEN d.d0 ELSE r.s0 END AS take
FROM r JOIN d ON d.site = r.site AND d.sku = r.sku AND d.lot = r.req
WHERE r.s0 < d.d1 AND d.d0 < r.s1
ORDER BY d.k, r.s0
"""

# Pickable on-hand and what is free of it, per demanded item: why a short demand is short.
_SUPPLY = "WITH " + _KEYS + """
SELECT site, sku, req, SUM(quantity), SUM(CASE WHEN avail > 0 THEN avail ELSE 0 END)
FROM s GROUP BY site, sku, req
"""

_INSERT_ALLOCATION = (
    "INSERT INTO order_allocations (order_id, line, site, item, location, lot, allocated, qty,"
    " staged, allocated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, FALSE, ?)"
)


def allocate(cur: sqlite3.Cursor, demands: Sequence[Demand], now: str) -> list[Outcome]:
    """Reserve stock for ``demands`` (first-come in the order given), in ``cur``'s transaction;
    each line's ``allocated`` grows by what it got. Lines naming a lot go first."""
    outcomes: dict[int, Outcome] = {}
    ranked = list(enumerate(demands))
    for group in ([(i, d) for i, d in ranked if d.lot], [(i, d) for i, d in ranked if not d.lot]):
        if group:
            outcomes.update(_pass(cur, group, now))
    return [outcomes[i] for i in range(len(demands))]


def _pass(cur: sqlite3.Cursor, group: list[tuple[int, Demand]], now: str
          ) -> dict[int, Outcome]:
    _load(group, cur)
    takes = [row for row in cur.execute(_ALLOCATE, {"tol": TOLERANCE}) if row[4] > TOLERANCE]
    by_index = dict(group)
    (before,) = cur.execute("SELECT COALESCE(MAX(id), 0) FROM order_allocations").fetchone()
    cur.executemany(_INSERT_ALLOCATION, [
        (by_index[k].order_id, by_index[k].line, by_index[k].site, item, location, lot, take,
         take, now) for k, item, location, lot, take in takes])
    made: dict[int, list[Allocation]] = {}
    ident = int(before)
    for k, item, location, lot, take in takes:  # ids were given in insertion order
        ident += 1
        d = by_index[k]
        made.setdefault(k, []).append(
            Allocation(ident, d.order_id, d.line, item, location, lot, float(take)))
    _add_to_lines(cur, [(sum(a.qty for a in made[k]), by_index[k].order_id, by_index[k].line)
                        for k in made])
    outcomes = {i: Outcome(d, tuple(made.get(i, ()))) for i, d in group}
    short = [i for i, o in outcomes.items() if o.short]
    if short:  # the demand table now holds the short ones only: their items' supply
        _load([(i, outcomes[i].demand) for i in short], cur)
        supply = {(site, sku, req): (float(on_hand), float(free))
                  for site, sku, req, on_hand, free in cur.execute(_SUPPLY)}
        for i in short:
            d = outcomes[i].demand
            on_hand, free = supply.get((d.site, d.sku, d.lot), (0.0, 0.0))
            outcomes[i] = Outcome(d, outcomes[i].allocations, on_hand, free)
    return outcomes


def _load(group: list[tuple[int, Demand]], cur: sqlite3.Cursor) -> None:
    """The pass's demand into the connection's own scratch table (temp: no other sees it)."""
    cur.execute(_DEMAND_TABLE)
    cur.execute("DELETE FROM temp.alloc_demand")
    cur.executemany(
        "INSERT INTO temp.alloc_demand (k, order_id, line, site, sku, lot, need)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(i, d.order_id, d.line, d.site, d.sku, d.lot, d.need) for i, d in group])


def _add_to_lines(cur: sqlite3.Cursor, changes: Iterable[tuple[float, str, int]]) -> None:
    cur.executemany(
        "UPDATE order_lines SET allocated = allocated + ? WHERE order_id = ? AND line = ?",
        list(changes))


def release(cur: sqlite3.Cursor, allocation_id: int, qty: float) -> None:
    """Take ``qty`` off one reservation (picked, shipped, cancelled or gone from the shelf)."""
    cur.execute("UPDATE order_allocations SET qty = CASE WHEN qty - ? > ? THEN qty - ? ELSE 0"
                " END WHERE id = ?", (qty, TOLERANCE, qty, allocation_id))


def stage(cur: sqlite3.Cursor, order_id: str, line: int, site: str, item: str,
          location: str, lot: str, qty: float, now: str) -> None:
    """Picked goods a pick put at ``location``: kept from other orders until shipped."""
    cur.execute(
        "INSERT INTO order_allocations (order_id, line, site, item, location, lot, allocated,"
        " qty, staged, allocated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, TRUE, ?)",
        (order_id, line, site, item, location, lot, qty, qty, now))
