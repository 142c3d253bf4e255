"""Stock on hand, derived from the ledger and kept per (item, location, lot)."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import StoreDep
from server.auth import READ
from server.schemas import StockLine

router = APIRouter(tags=["stock"])


@router.get("/stock", response_model=list[StockLine], dependencies=READ)
def stock(store: StoreDep, item: str | None = None, location: str | None = None) -> list[StockLine]:
    """Non-zero lines (negative ones too: physical truth wins, a person resolves them)."""
    return [
        StockLine(item=r.item, location=r.location, lot=r.lot, quantity=r.quantity)
        for r in store.stock(item=item, location=location)
    ]
