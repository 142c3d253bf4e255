"""Stock on hand, derived from the ledger and kept per (item, location, lot), paged by key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from floorsync.server.api.deps import StoreDep
from floorsync.server.api.items import decode_cursor, encode_cursor
from floorsync.server.auth import READ
from floorsync.server.schemas import Problem, StockLine, StockPage, inline_schema

router = APIRouter(tags=["stock"])

Limit = Annotated[int, Query(ge=1, le=1000)]
BAD_CURSOR: dict[int | str, dict[str, Any]] = {400: {
    "description": "a cursor this service did not issue",
    "content": {"application/problem+json": {"schema": inline_schema(Problem)}},
}}


@router.get("/stock", response_model=StockPage, dependencies=READ, responses=BAD_CURSOR)
def stock(
    store: StoreDep, item: str | None = None, location: str | None = None,
    site: str | None = None, cursor: str | None = None, limit: Limit = 1000,
) -> StockPage:
    """Non-zero lines in (item, site, location, lot) order (negative ones too: physical truth wins,
    and each raised a negative-stock exception). ``item`` may be a SKU or a GTIN of master
    data: the lines of every key of that item come back."""
    after = decode_cursor(cursor, 4)
    rows = store.stock(item=item, location=location, site=site, after=after, limit=limit + 1)
    page = rows[:limit]
    last = page[-1] if page else None
    return StockPage(
        items=[StockLine(site=r.site, item=r.item, location=r.location, lot=r.lot,
                         quantity=r.quantity, sku=r.sku) for r in page],
        next_cursor=encode_cursor(last.item, last.site, last.location, last.lot or "")
        if last is not None and len(rows) > limit else None,
    )
