"""The append-only ledger and the rejected input, both paged by an opaque cursor."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from floorsync.server.api.deps import StoreDep, parse_cursor
from floorsync.server.auth import READ
from floorsync.server.schemas import (
    Movement,
    MovementPage,
    Problem,
    Rejection,
    RejectionPage,
    inline_schema,
)

router = APIRouter(tags=["ledger"])

Limit = Annotated[int, Query(ge=1, le=1000)]
BAD_CURSOR: dict[int | str, dict[str, Any]] = {400: {
    "description": "a cursor this service did not issue",
    "content": {"application/problem+json": {"schema": inline_schema(Problem)}},
}}


@router.get(
    "/movements", response_model=MovementPage, responses=BAD_CURSOR, dependencies=READ
)
def movements(store: StoreDep, cursor: str | None = None, limit: Limit = 100) -> MovementPage:
    rows = store.movements(after=parse_cursor(cursor), limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return MovementPage(
        items=[Movement(**asdict(r)) for r in page],
        next_cursor=str(page[-1].id) if more else None,
    )


@router.get(
    "/rejections", response_model=RejectionPage, responses=BAD_CURSOR, dependencies=READ
)
def rejections(store: StoreDep, cursor: str | None = None, limit: Limit = 100) -> RejectionPage:
    rows = store.rejections(after=parse_cursor(cursor), limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return RejectionPage(
        items=[Rejection(**asdict(r)) for r in page],
        next_cursor=str(page[-1].id) if more else None,
    )
