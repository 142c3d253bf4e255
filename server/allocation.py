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
statement per pass, whatever the number of lines. The scratch tables are the connection's own
(TEMP); the SQL is what PostgreSQL also runs but for the ``temp.`` prefix SQLite wants there.
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
    allocated: float  # their sum
    on_hand: float = 0.0  # pickable on-hand of its item (and lot) at its site; set when short
    free: float = 0.0  # of that, what no order holds

    @property
    def short(self) -> float:
        missing = self.demand.need - self.allocated
        return missing if missing > TOLERANCE else 0.0


# A pass's scratch tables (temp: this connection's own): each item (and lot) demanded as a group
# with its total demand; every key its stock is kept under (the SKU and its GTINs) with its
# group; each demand with its interval [d0, d1) on its group's running demand (first-come).
_SCRATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS alloc_group (gid INTEGER PRIMARY KEY, site TEXT NOT NULL,"
    " sku TEXT NOT NULL, req TEXT NOT NULL, total DOUBLE PRECISION NOT NULL)",
    "CREATE TEMP TABLE IF NOT EXISTS alloc_keys (key TEXT NOT NULL, site TEXT NOT NULL,"
    " req TEXT NOT NULL, gid INTEGER NOT NULL, total DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (key, site, req))",
    "CREATE TEMP TABLE IF NOT EXISTS alloc_demand (k INTEGER PRIMARY KEY, gid INTEGER NOT NULL,"
    " need DOUBLE PRECISION NOT NULL, d0 DOUBLE PRECISION NOT NULL, d1 DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS temp.alloc_demand_group ON alloc_demand (gid, d0)",
)
_KEYS = (  # WHERE TRUE: SQLite then reads ON CONFLICT as the upsert's, not the join's
    "INSERT INTO temp.alloc_keys (key, site, req, gid, total)"
    " SELECT sku, site, req, gid, total FROM temp.alloc_group UNION ALL"
    " SELECT ig.gtin, g.site, g.req, g.gid, g.total FROM temp.alloc_group g"
    " JOIN item_gtins ig ON ig.sku = g.sku WHERE TRUE ON CONFLICT DO NOTHING"
)

# The candidate stock lines with their free quantity, by group: found by primary-key probes for
# the keys (an IN list driving the stock table, the keys probed by theirs: no join for SQLite to
# build a Bloom filter for by scanning the whole stock table, as it does with statistics). A
# group asking for a lot takes lines of that lot only ({req}: the line's lot in a pass of
# groups asking for lots, else ''; one probe of the keys per line, where an OR would take two).
_SUPPLY_LINES = """
s AS MATERIALIZED (
    SELECT k.gid, k.total, st.item, st.location, st.lot, st.quantity,
        st.quantity - COALESCE((SELECT SUM(a.qty) FROM order_allocations a
            WHERE a.item = st.item AND a.site = st.site AND a.location = st.location
            AND a.lot = st.lot AND a.qty > 0), 0) AS avail
    FROM stock st CROSS JOIN temp.alloc_keys k
    WHERE (st.item, st.site) IN (SELECT key, site FROM temp.alloc_keys)
    AND k.key = st.item AND k.site = st.site AND k.req = {req}
    AND st.quantity > 0 AND st.location NOT IN (""" + _UNPICKABLE_SQL + "))"

# Where running demand and running supply of a group overlap. A group whose largest free line
# covers its whole demand needs only that line (the rule's own first pick), so the window's sort
# is paid only where demand spreads over several lines. CROSS JOIN: each supply line finds its
# demand by the scratch table's index, whatever the planner guesses of its size.
_ALLOCATE_SQL = "WITH " + _SUPPLY_LINES + """,
top AS MATERIALIZED (
    SELECT gid, MAX(avail) AS best FROM s WHERE avail > :tol GROUP BY gid),
p AS (
    SELECT s.* FROM s CROSS JOIN top WHERE top.gid = s.gid AND s.avail > :tol
    AND (top.best < s.total OR s.avail >= top.best)),
r AS MATERIALIZED (
    SELECT * FROM (
        SELECT gid, total, item, location, lot,
            SUM(avail) OVER w - avail AS s0, SUM(avail) OVER w AS s1
        FROM p
        WINDOW w AS (PARTITION BY gid ORDER BY avail DESC, location, lot, item
                     ROWS UNBOUNDED PRECEDING)) AS running
    WHERE s0 < total)
SELECT d.k, r.item, r.location, r.lot,
    CASE WHEN d.d1 < r.s1 THEN d.d1 ELSE r.s1 END
    - CASE WHEN d.d0 > r.s0 THEN d.d0 ELSE r.s0 END AS take
FROM r CROSS JOIN temp.alloc_demand d
WHERE d.gid = r.gid AND d.d0 < r.s1 AND r.s0 < d.d1
ORDER BY d.k, r.s0
"""

# Pickable on-hand and what is free of it, per group: why a short demand is short.
_SUPPLY_SQL = "WITH " + _SUPPLY_LINES + """
SELECT gid, SUM(quantity), SUM(CASE WHEN avail > 0 THEN avail ELSE 0 END) FROM s GROUP BY gid
"""
# by pass: groups asking for lots (True) or for any lot (False)
_ALLOCATE = {lots: _ALLOCATE_SQL.replace("{req}", "st.lot" if lots else "''")
             for lots in (True, False)}
_SUPPLY = {lots: _SUPPLY_SQL.replace("{req}", "st.lot" if lots else "''") for lots in (True, False)}

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
    lots = bool(group[0][1].lot)  # a pass is all one or the other
    takes = [row for row in cur.execute(_ALLOCATE[lots], {"tol": TOLERANCE})
             if row[4] > TOLERANCE]
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
    outcomes = {i: Outcome(d, tuple(got := made.get(i, ())), sum(a.qty for a in got))
                for i, d in group}
    _add_to_lines(cur, [(outcomes[k].allocated, by_index[k].order_id, by_index[k].line)
                        for k in made])
    short = [i for i, o in outcomes.items() if o.short]
    if short:  # the scratch tables now hold the short ones only: their groups' supply
        gids = _load([(i, outcomes[i].demand) for i in short], cur)
        supply = {gid: (float(on_hand), float(free))
                  for gid, on_hand, free in cur.execute(_SUPPLY[lots])}
        for i in short:
            d = outcomes[i].demand
            on_hand, free = supply.get(gids[(d.site, d.sku, d.lot)], (0.0, 0.0))
            outcomes[i] = Outcome(d, outcomes[i].allocations, outcomes[i].allocated, on_hand,
                                  free)
    return outcomes


def _load(group: list[tuple[int, Demand]], cur: sqlite3.Cursor
          ) -> dict[tuple[str, str, str], int]:
    """The pass's demand into the scratch tables; returns each group's id."""
    for statement in _SCRATCH:
        cur.execute(statement)
    for table in ("alloc_group", "alloc_keys", "alloc_demand"):
        cur.execute(f"DELETE FROM temp.{table}")
    gids: dict[tuple[str, str, str], int] = {}
    totals: list[float] = []
    rows = []
    for i, d in group:  # in rank order: each demand's interval on its group's running demand
        gid = gids.setdefault((d.site, d.sku, d.lot), len(gids))
        if gid == len(totals):
            totals.append(0.0)
        rows.append((i, gid, d.need, totals[gid], totals[gid] + d.need))
        totals[gid] += d.need
    cur.executemany("INSERT INTO temp.alloc_group (gid, site, sku, req, total)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(gid, *key, totals[gid]) for key, gid in gids.items()])
    cur.executemany("INSERT INTO temp.alloc_demand (k, gid, need, d0, d1) VALUES (?, ?, ?, ?, ?)",
                    rows)
    cur.execute(_KEYS)
    return gids


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
