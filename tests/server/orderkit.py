"""What the order tests share: items in master data, floor events (with an order's doc) applied
through the real ``Store.apply_batch``, and reads of order, backorder and exception rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from floorsync.edge import wire
from floorsync.server import picking
from floorsync.server.gs1 import gs1_check_digit
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData

SITE, DEV = "wh1", "hh-01"
_seq = iter(range(1, 10**9))


def gtin(n: int) -> str:
    body = f"0950110{n:06d}"
    return body + str(gs1_check_digit(body))


# SKU-A .. SKU-E, each with one GTIN
SKUS = {f"SKU-{c}": gtin(i + 1) for i, c in enumerate("ABCDE")}
G = {sku[-1]: g for sku, g in SKUS.items()}  # G["A"] is SKU-A's GTIN


def with_items(store: Store) -> Store:
    """Master data for SKU-A..E and the order hook, as ``create_app`` installs it."""
    MasterData(store).import_items("sku,gtins\n" + "".join(
        f"{sku},{g}\n" for sku, g in SKUS.items()))
    picking.install(store)
    return store


def ev(type: str, item: str = "A", qty: float = 1, *, lot: str | None = None,
       src: str | None = None, dst: str | None = None, order: str | None = None,
       check: str | None = None, by_sku: bool = False) -> wire.Event:
    """A floor event of SKU-``item`` (scanned by its GTIN unless ``by_sku``)."""
    sku = f"SKU-{item}"
    thing = wire.Item(sku=sku, lot=lot) if by_sku else wire.Item(gtin=SKUS.get(sku, item),
                                                                  lot=lot)
    doc = None if order is None else wire.DocRef("order", order, check)
    return wire.Event(wire.new_event_id(), next(_seq), wire.local_now(), type, thing, qty,
                      src, dst, "op-1", doc=doc)


def receive(item: str, qty: float, at: str, lot: str | None = None) -> wire.Event:
    return ev("receive", item, qty, lot=lot, dst=at)


def pick(order: str | None, item: str, qty: float, at: str, lot: str | None = None,
         to: str | None = None) -> wire.Event:
    return ev("pick", item, qty, lot=lot, src=at, dst=to, order=order)


def ship(order: str | None, item: str, qty: float, at: str = "DOCK-9",
         lot: str | None = None) -> wire.Event:
    return ev("ship", item, qty, lot=lot, src=at, order=order)


def apply(store: Store, *events: wire.Event, site: str = SITE) -> list[str]:
    results = store.apply_batch(wire.Batch(site, DEV, wire.utc_now(), events), source="mqtt")
    return [r.status for r in results]


def again(event: wire.Event) -> wire.Event:
    """The same event re-sent (same id): a duplicate."""
    return replace(event)


def order_doc(ident: str, *lines: tuple[str, float] | tuple[str, float, str], due: str =
              "2026-12-01", priority: int = 5, site: str = SITE) -> dict[str, Any]:
    """An order of SKU lines: ("A", 5) or ("A", 5, "LOT")."""
    return {"id": ident, "site": site, "ship_to": "ACME Ltd, Leeds", "priority": priority,
            "due": due, "lines": [
                {"line": n, "item": f"SKU-{ln[0]}", "qty": ln[1],
                 **({"lot": ln[2]} if len(ln) > 2 else {})}
                for n, ln in enumerate(lines, start=1)]}


def line_state(store: Store, order_id: str) -> dict[int, tuple[float, ...]]:
    """line -> (ordered, allocated, picked, shipped, backordered)."""
    return {line: tuple(float(v) for v in rest) for line, *rest in store._query(
        "SELECT line, qty, allocated, picked, shipped, backordered FROM order_lines"
        " WHERE order_id = ? ORDER BY line", (order_id,))}


def held(store: Store, order_id: str) -> dict[tuple[int, str], float]:
    """(line, location) -> quantity held on the shelf (not staged)."""
    out: dict[tuple[int, str], float] = {}
    for line, location, qty in store._query(
        "SELECT line, location, qty FROM order_allocations WHERE order_id = ? AND qty > 0"
        " AND NOT staged", (order_id,)):
        out[(line, location)] = out.get((line, location), 0.0) + float(qty)
    return out


def open_backorders(store: Store) -> dict[tuple[str, int], float]:
    return {(o, ln): float(q) for o, ln, q in store._query(
        "SELECT order_id, line, open_qty FROM backorders WHERE status = 'open'")}


def exceptions(store: Store, kind_prefix: str = "order_") -> list[tuple[Any, ...]]:
    """(kind, order_id, line, event_id, quantity) of the order exceptions, in order raised."""
    return [tuple(r) for r in store._query(
        "SELECT e.kind, o.order_id, o.line, e.event_id, e.quantity FROM exceptions e"
        " JOIN order_exceptions o ON o.exception_id = e.id WHERE e.kind LIKE ? ORDER BY e.id",
        (kind_prefix + "%",))]


def over_allocated(store: Store) -> list[tuple[Any, ...]]:
    """Stock lines where orders hold more than is on hand: must always be empty."""
    return [tuple(r) for r in store._query(
        "SELECT a.item, a.location, a.lot, SUM(a.qty), COALESCE(MAX(s.quantity), 0)"
        " FROM order_allocations a LEFT JOIN stock s ON s.item = a.item AND s.site = a.site"
        " AND s.location = a.location AND s.lot = a.lot WHERE a.qty > 0"
        " GROUP BY a.item, a.site, a.location, a.lot"
        " HAVING SUM(a.qty) > COALESCE(MAX(s.quantity), 0) + 1e-9")]
