"""The floor against the orders: picks and ships matched to order lines as the ledger applies them,
reservations kept true to the shelf, and backorders filled when stock turns up.

A hook of the apply path (``Store.add_batch_hook``), inside each batch's transaction after its
stock changed. Physical truth wins: the events are already in the ledger; where an order
disagrees, an exception is raised (and tied to the order in ``order_exceptions``), never a
refusal.

- A ``pick`` with ``doc`` = an order: its quantity goes to the order's lines of that item (the
  line naming the picked lot first, then in line order), up to what each still needs; more
  than the order asks for is ``order_over`` (recorded as picked all the same). An item not on
  the order, or a lot other than the line's, is ``order_unexpected``; an order that does not
  exist at the batch's site, or is closed or cancelled, is ``order_unknown``. A pick uses up
  the line's reservations (the one at the shelf picked from first); beyond them it fills the
  line's backorder (the floor found stock the books did not). A pick that puts the goods
  somewhere (``to``) keeps them there for the line (``staged``) until shipped.
- A ``ship`` with the order's doc ships its lines the same way (an unpicked quantity counts as
  picked: the goods left); a line shipped in full is closed, an order whose lines are all closed
  is closed. A ship takes the line's staged goods first; beyond them, a quantity the line's picks
  already took off the books (picked without a ``to``, not shipped since: ``picked_off_books``)
  is taken off a second time, at the ship's location: ``order_ship_off_books``, naming the line,
  the quantity, the ship and those picks (the ledger keeps the movement as the floor said; an
  operator adjusts it back or dismisses it). The edge's ``[workflow] pick_to`` stages picks.
- Stock that went down where orders hold it (a pick without the order, a move, a count) leaves
  the youngest reservations there without cover: they are given up and allocated again
  elsewhere, or backordered.
- Stock that went up (receive, put-away, return, move, adjustment, count) fills the open
  backorders of its items first-come (``server.backorders``), each fill naming the movement.

Cheap when no order is involved: a batch without order documents at a site without open orders
costs one indexed look-up.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from floorsync.edge import wire
from floorsync.server import allocation, backorders, orderdesk, orders
from floorsync.server.allocation import Allocation, Demand
from floorsync.server.checks import TOLERANCE
from floorsync.server.ledger import AppliedBatch, Store
from floorsync.server.posting import movement_deltas

_INSERT_EXCEPTION = (
    "INSERT INTO exceptions (kind, raised_at, site, device, event_id, last_event_id, item, lot,"
    " location, quantity, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_RISE = ("receive", "return", "putaway", "move", "adjust", "count")
_HELD = ("SELECT item, location, lot, qty FROM order_allocations WHERE item = ? AND site = ?"
         " AND location = ? AND lot = ? AND qty > 0")
_ON_HAND = ("SELECT item, location, lot, quantity FROM stock WHERE item = ? AND site = ?"
            " AND location = ? AND lot = ?")


def install(store: Store) -> orderdesk.OrderDesk:
    """Match the floor's events to orders in every batch ``store`` applies (once per store);
    returns the store's order desk, which tells listeners of changed orders after commit."""
    if not any(isinstance(h, OrderHook) for h in store._batch_hooks):
        store.add_batch_hook(OrderHook(store))
    held = cast(Store, weakref.proxy(store))  # the desk lives as long as the store, not longer
    return orderdesk.open_desk(store, lambda order_id: orders.floor_copy(held, order_id),
                               lambda: orders.expected(held))


@dataclass(slots=True)
class _Line:
    line: int
    sku: str
    lot: str
    qty: float
    picked: float
    shipped: float
    status: str
    off_books: float  # what its picks took off the books (no ``to``) and no ship shipped yet


class OrderHook:
    """The batch hook; holds the store for its location labels (a label scanned is kept under
    its location's code)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __call__(self, cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
        run = _Run(cur, self._store, applied)
        for event in applied.events:
            doc = event.doc
            if doc is not None and doc.kind == "order" and event.type in ("pick", "ship"):
                run.match(event, doc.id)
        if cur.execute("SELECT 1 FROM orders WHERE site = ? AND status = 'open' LIMIT 1",
                       (applied.site,)).fetchone() is None:
            run.finish()
            return
        run.repair()
        run.fill()
        run.finish()


class _Run:
    """One batch's work against the orders."""

    def __init__(self, cur: sqlite3.Cursor, store: Store, applied: AppliedBatch) -> None:
        self.cur, self.applied, self.store = cur, applied, store
        self.site, self.now = applied.site, applied.received_at
        self.caches = store.caches(cur)
        self.touched: set[str] = set()
        self.freed: set[str] = set()  # SKUs whose reservations a closed line gave back
        self._skus: dict[str, str | None] = {}

    def code(self, label: str | None) -> str | None:
        return None if label is None else self.caches.location(self.site, label)[0]

    def sku(self, key: str) -> str | None:
        """The master-data SKU of a stock key (a SKU or a GTIN), or None."""
        if key not in self._skus:
            self.skus_of([key])
        return self._skus[key]

    def skus_of(self, keys: Iterable[str]) -> dict[str, str | None]:
        todo = sorted({k for k in keys if k not in self._skus})
        for i in range(0, len(todo), 500):
            chunk = todo[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found = dict(self.cur.execute(
                f"SELECT sku, sku FROM items WHERE sku IN ({marks}) UNION ALL"
                f" SELECT gtin, sku FROM item_gtins WHERE gtin IN ({marks})", [*chunk, *chunk]))
            self._skus.update({k: found.get(k) for k in chunk})
        return self._skus

    # --- picks and ships --------------------------------------------------------------------

    def match(self, event: wire.Event, order_id: str) -> None:
        cur, item = self.cur, event.item
        assert item is not None  # picks and ships carry an item (wire contract)
        key, lot = item.key() or "", item.lot or ""
        what = f"{event.type} of {key!r}{f' lot {lot!r}' if lot else ''} x{event.qty:g}"
        row = cur.execute("SELECT site, status FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None or row[0] != self.site or row[1] != "open":
            why = ("no such order" if row is None else f"it is an order of site {row[0]!r}"
                   if row[0] != self.site else f"the order is {row[1]}")
            self.raise_(event, "order_unknown", order_id, None,
                        f"{what} against order {order_id}: {why}")
            return
        sku = self.sku(key)
        lines = [] if sku is None else [_Line(*r) for r in cur.execute(
            "SELECT line, sku, lot, qty, picked, shipped, status, picked_off_books"
            " FROM order_lines"
            " WHERE order_id = ?"
            " AND sku = ? AND status <> 'cancelled' ORDER BY line", (order_id, sku))]
        fitting = sorted((ln for ln in lines if ln.lot in ("", lot)),
                         key=lambda ln: (ln.status != "open", ln.lot == "", ln.line))
        if not fitting:
            why = (f"order {order_id} does not have {key!r}" if not lines else
                   f"order {order_id} asks for lot(s) "
                   + ", ".join(sorted({repr(ln.lot) for ln in lines})))
            self.raise_(event, "order_unexpected", order_id, None, f"{what}: {why}")
            return
        done = "picked" if event.type == "pick" else "shipped"
        left, last = event.qty, fitting[0]
        for ln in fitting:
            take = min(left, max(0.0, ln.qty - getattr(ln, done)))
            if take > TOLERANCE:
                self.apply(event, order_id, ln, take)
                left, last = left - take, ln
            if left <= TOLERANCE:
                break
        if left > TOLERANCE:
            self.apply(event, order_id, last, left)
            self.raise_(event, "order_over", order_id, last.line,
                        f"{what}: {left:g} more than order {order_id} line {last.line} asks for"
                        f" ({last.qty:g})", quantity=left)
        self.touched.add(order_id)
        if event.type == "ship":
            orders.close_if_done(cur, order_id, self.now)

    def apply(self, event: wire.Event, order_id: str, ln: _Line, qty: float) -> None:
        if event.type == "pick":
            self.pick(event, order_id, ln, qty, stage=True)
        else:
            self.ship(event, order_id, ln, qty)

    def pick(self, event: wire.Event, order_id: str, ln: _Line, qty: float, *,
             stage: bool) -> None:
        """``qty`` of the line picked: its reservations used up (the one at the shelf picked
        from first), then its backorder; put somewhere (``to``): kept there for it."""
        cur, item = self.cur, event.item
        assert item is not None
        key, lot, source = item.key() or "", item.lot or "", self.code(event.from_)
        held = sorted(cur.execute(
            "SELECT id, item, location, lot, qty FROM order_allocations WHERE order_id = ?"
            " AND line = ? AND qty > 0 AND NOT staged", (order_id, ln.line)),
            key=lambda r: (r[1:4] != (key, source, lot), r[2] != source, r[0]))
        left, used = qty, 0.0
        for ident, *_, reserved in held:
            take = min(left, float(reserved))
            allocation.release(cur, ident, take)
            left, used = left - take, used + take
            if left <= TOLERANCE:
                break
        if left > TOLERANCE:
            backorders.fill_by_pick(cur, order_id, ln.line, left, self.now, event.id, key,
                                    source, lot)
        off = qty if stage and event.to is None else 0.0  # a ship's own: not off before it
        cur.execute(
            "UPDATE order_lines SET allocated = CASE WHEN allocated - ? > ? THEN allocated - ?"
            " ELSE 0 END, picked = picked + ?, picked_at = COALESCE(picked_at, ?),"
            " picked_off_books = picked_off_books + ? WHERE order_id = ? AND line = ?",
            (used, TOLERANCE, used, qty, self.now, off, order_id, ln.line))
        ln.picked += qty
        ln.off_books += off
        if stage and event.to is not None:
            allocation.stage(cur, order_id, ln.line, self.site, key, self.code(event.to) or "",
                             lot, qty, self.now)

    def ship(self, event: wire.Event, order_id: str, ln: _Line, qty: float) -> None:
        """``qty`` of the line shipped: goods staged for it leave; what was never picked
        counts as picked now; shipped in full, the line closes (its reservations go back)."""
        cur = self.cur
        unpicked = ln.shipped + qty - ln.picked
        if unpicked > TOLERANCE:
            self.pick(event, order_id, ln, unpicked, stage=False)
        left = qty
        # the goods staged for the line where the ship takes them from: staged elsewhere,
        # they are still there (a lane the shipper did not ship from)
        for ident, staged in cur.execute(
            "SELECT id, qty FROM order_allocations WHERE order_id = ? AND line = ? AND qty > 0"
            " AND staged AND location = ? ORDER BY id",
            (order_id, ln.line, event.from_)).fetchall():
            take = min(left, float(staged))
            allocation.release(cur, ident, take)
            left -= take
            if left <= TOLERANCE:
                break
        again = min(max(left, 0.0), ln.off_books)  # beyond the staged: already off the books
        if again > TOLERANCE:
            ln.off_books -= again
            self.off_books_again(event, order_id, ln, qty, again)
        else:
            again = 0.0
        ln.shipped += qty
        if ln.shipped >= ln.qty - TOLERANCE and ln.status == "open":
            ln.status = "closed"
            gave_back = cur.execute(
                "UPDATE order_allocations SET qty = 0 WHERE order_id = ? AND line = ?"
                " AND qty > 0", (order_id, ln.line)).rowcount
            if gave_back:
                self.freed.add(ln.sku)
        cur.execute(
            "UPDATE order_lines SET shipped = shipped + ?, status = ?, closed_at = CASE WHEN ? ="
            " 'closed' THEN COALESCE(closed_at, ?) END, allocated = CASE WHEN ? = 'closed' THEN 0"
            " ELSE allocated END, picked_off_books = CASE WHEN picked_off_books - ? > ?"
            " THEN picked_off_books - ? ELSE 0 END WHERE order_id = ? AND line = ?",
            (qty, ln.status, ln.status, self.now, ln.status, again, TOLERANCE, again, order_id,
             ln.line))

    def off_books_again(self, event: wire.Event, order_id: str, ln: _Line, qty: float,
                        again: float) -> None:
        """``again`` of a ship of ``qty`` on ``ln`` was taken off the books by its picks
        already: raised (``order_ship_off_books``) with the picks that did, newest first."""
        item = event.item
        assert item is not None
        picks = [r[0] for r in self.cur.execute(
            "SELECT id FROM events WHERE doc_kind = 'order' AND doc_id = ? AND type = 'pick'"
            " AND to_location IS NULL AND site = ? AND (sku = ? OR item = ? OR item IN"
            " (SELECT gtin FROM item_gtins WHERE sku = ?)) AND id <> ? ORDER BY event_time DESC,"
            " id LIMIT 6", (order_id, self.site, ln.sku, ln.sku, ln.sku, event.id))]
        named = ", ".join(picks[:5]) + (" and more" if len(picks) > 5 else "")
        where = event.from_ or "?"
        self.raise_(event, "order_ship_off_books", order_id, ln.line,
                    f"ship {event.id} of {item.key()!r} x{qty:g} from {where} against order"
                    f" {order_id} line {ln.line}: {again:g} of it already taken off the books by"
                    f" the line's pick(s) without a staging location ({named or 'none found'}),"
                    f" taken off again at {where}: on-hand there is {again:g} too low unless it"
                    " held them (adjust it back, or dismiss); the edge's [workflow] pick_to"
                    " stages picks", quantity=again)

    def raise_(self, event: wire.Event, kind: str, order_id: str, line: int | None,
               detail: str, quantity: float | None = None) -> None:
        item = event.item or wire.Item()
        if event.doc is not None and event.doc.check:
            detail += f" (the edge said: {event.doc.check})"
        (ident,) = self.cur.execute(_INSERT_EXCEPTION, (
            kind, self.now, self.site, self.applied.device, event.id, event.id, item.key(),
            item.lot, event.from_, quantity, detail)).fetchone()
        self.cur.execute("INSERT INTO order_exceptions (exception_id, order_id, line)"
                         " VALUES (?, ?, ?)", (ident, order_id, line))

    # --- the shelf ----------------------------------------------------------------------------

    def repair(self) -> None:
        """Reservations where stock went down below what orders hold there: the youngest give
        way (first-come keeps its stock) and are allocated again, elsewhere or as backorders."""
        cur, site = self.cur, self.site
        lines: set[tuple[str, str, str]] = set()  # (key, location, lot) that went down
        counted: set[str] = set()
        for event in self.applied.events:
            if event.type == "count" and event.count is not None:
                counted.add(self.code(event.count.location) or "")
            elif event.item is not None:
                key, lot = event.item.key() or "", event.item.lot or ""
                lines.update((key, self.code(location) or "", lot)
                             for location, qty in movement_deltas(event) if qty < 0)
        if not lines and not counted:
            return
        held: dict[tuple[str, str, str], float] = {}
        wanted = sorted(lines)
        for i in range(0, len(wanted), 200):  # one probe of the reservations' index per line,
            chunk = wanted[i:i + 200]         # in one statement: no plan for SQLite to choose
            probes = [v for line in chunk for v in (line[0], site, line[1], line[2])]
            for key, location, lot, qty in cur.execute(" UNION ALL ".join([_HELD] * len(chunk)),
                                                       probes):
                held[(key, location, lot)] = held.get((key, location, lot), 0.0) + float(qty)
        for location in sorted(counted):  # a count may have emptied any line there
            for key, loc, lot, qty in cur.execute(
                    "SELECT item, location, lot, qty FROM order_allocations WHERE site = ?"
                    " AND location = ? AND qty > 0", (site, location)):
                held[(key, loc, lot)] = held.get((key, loc, lot), 0.0) + float(qty)
        on_hand: dict[tuple[str, str, str], float] = {}
        found = sorted(held)
        for i in range(0, len(found), 200):
            chunk = found[i:i + 200]
            probes = [v for line in chunk for v in (line[0], site, line[1], line[2])]
            on_hand.update({(k, loc, lot): float(q) for k, loc, lot, q in cur.execute(
                " UNION ALL ".join([_ON_HAND] * len(chunk)), probes)})
        short = {line: qty - max(on_hand.get(line, 0.0), 0.0) for line, qty in held.items()}
        again: list[tuple[tuple[object, ...], Demand]] = []
        for (key, location, lot), missing in sorted(short.items()):
            if missing <= TOLERANCE:
                continue
            for ident, order_id, line, sku, line_lot, qty, staged, *rank in cur.execute(
                "SELECT a.id, a.order_id, a.line, l.sku, l.lot, a.qty, a.staged, o.due,"
                " o.priority, o.received_at, o.seq FROM order_allocations a"
                " JOIN order_lines l ON l.order_id = a.order_id AND l.line = a.line"
                " JOIN orders o ON o.id = a.order_id WHERE a.item = ? AND a.site = ?"
                " AND a.location = ? AND a.lot = ? AND a.qty > 0"
                " ORDER BY a.staged, o.due DESC, o.priority DESC, o.received_at DESC,"
                " o.seq DESC, a.id DESC", (key, site, location, lot)).fetchall():
                take = min(missing, float(qty))
                allocation.release(cur, ident, take)
                self.touched.add(order_id)
                if not staged:
                    cur.execute("UPDATE order_lines SET allocated = CASE WHEN allocated - ? > ?"
                                " THEN allocated - ? ELSE 0 END WHERE order_id = ? AND line = ?",
                                (take, TOLERANCE, take, order_id, line))
                    again.append((tuple(rank), Demand(order_id, line, site, sku, line_lot,
                                                      take)))
                missing -= take
                if missing <= TOLERANCE:
                    break
        if again:
            again.sort(key=lambda r: r[0])
            outcomes = allocation.allocate(cur, [d for _, d in again], self.now)
            backorders.record_short(cur, outcomes, self.now)

    def fill(self) -> None:
        """Stock that went up fills the open backorders of its items, first-come."""
        if not backorders.any_open(self.cur, self.site):
            return
        brought: dict[tuple[str, str, str], str] = {}  # stock line -> the event that added
        by_key: dict[str, str] = {}
        for event in self.applied.events:
            if event.type not in _RISE:
                continue
            if event.type == "count" and event.count is not None:
                for seen in event.count.seen:
                    by_key[seen.item.key() or ""] = event.id
                continue
            if event.item is None:
                continue
            key, lot = event.item.key() or "", event.item.lot or ""
            for location, qty in movement_deltas(event):
                if qty > 0:
                    brought[(key, self.code(location) or "", lot)] = event.id
                    by_key[key] = event.id
        skus = self.skus_of(by_key)
        wanted = {s for k in by_key if (s := skus.get(k))} | self.freed
        if not wanted:
            return

        def cause(a: Allocation) -> str | None:
            return brought.get((a.item, a.location, a.lot)) or by_key.get(a.item)

        self.touched |= backorders.fill(self.cur, self.site, wanted, self.now, cause)

    def finish(self) -> None:
        orders.touch(self.cur, self.touched, self.now)
        orderdesk.changed(self.store, self.touched)  # told once the batch has committed
