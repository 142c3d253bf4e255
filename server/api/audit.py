"""``GET /audit``: who did what (admin), and ``AuditDep``, how routes record it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from floorsync.server import audit, checks
from floorsync.server.api.deps import CallerDep, StoreDep, parse_cursor
from floorsync.server.auth import ADMIN
from floorsync.server.ledger import Store
from floorsync.server.ledgerviews import parse_at
from floorsync.server.schemas import Problem

router = APIRouter(tags=["audit"])

_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
Limit = Annotated[int, Query(ge=1, le=1000)]


class Auditor:
    """Records an action under the request's token name (``None``: auth is off)."""

    def __init__(self, store: Store, actor: str | None) -> None:
        self.store = store
        self.actor = actor

    def __call__(self, action: str, subject: str, /, **detail: Any) -> None:
        audit.record(self.store, self.actor, action, subject, detail)

    async def later(self, action: str, subject: str, /, **detail: Any) -> None:
        """The same from async code: the write runs off the event loop."""
        await run_in_threadpool(lambda: self(action, subject, **detail))


def get_auditor(store: StoreDep, caller: CallerDep) -> Auditor:
    return Auditor(store, caller)


AuditDep = Annotated[Auditor, Depends(get_auditor)]


class AuditOut(BaseModel):
    id: int
    at: str = Field(description="when it was recorded (UTC)")
    actor: str = Field(description="the name of the token that asked (never the token);"
                       f" {audit.NO_TOKEN!r} when the API runs without tokens")
    action: str = Field(description=", ".join(audit.ACTIONS))
    subject: str = Field(description="what it changed: exception/7, count/3, item/SKU,"
                         " location/SITE/CODE, receipt/ID, order/ID, items, locations, site/S")
    detail: dict[str, Any] = Field(description="the request's who/why (by, reason, decision)"
                                   " and the outcome (adjustment event, created/updated)")


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("/audit", response_model=AuditPage, dependencies=ADMIN, responses={400: _PROBLEM})
async def list_audit(
    store: StoreDep,
    since: Annotated[str | None, Query(description="recorded at or after (ISO 8601)")] = None,
    actor: Annotated[str | None, Query(max_length=200, description="a token's name")] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> AuditPage:
    """What was done through the API, oldest first; every filter given must match."""
    after = parse_cursor(cursor)
    start = None if since is None else checks.utc_text(parse_at(since, "since"))
    rows = await run_in_threadpool(lambda: audit.query(
        store, since=start, actor=actor, action=action, after=after, limit=limit + 1))
    page = rows[:limit]
    return AuditPage(items=[AuditOut(**asdict(r)) for r in page],
                     next_cursor=str(page[-1].id) if len(rows) > limit else None)
