"""``/counts``: count sessions of a location, and the counts that came from the floor."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from floorsync.edge import wire
from floorsync.server import counts as cs
from floorsync.server.api.audit import AuditDep
from floorsync.server.api.deps import StoreDep, parse_cursor
from floorsync.server.auth import READ, WRITE
from floorsync.server.schemas import Problem

router = APIRouter(tags=["counts"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Ident = Annotated[int, Path(ge=1, le=2**63 - 1)]
Status = Literal["open", "needs_decision", "posted", "cancelled", "late"]
Text = Annotated[str, Field(min_length=1, max_length=200)]
_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {400: _PROBLEM, 404: _PROBLEM, 409: _PROBLEM}


class CountLineOut(BaseModel):
    item: str
    lot: str | None
    counted: float | None = Field(description="null: not counted yet (0 once closed)")
    expected: float = Field(description="on-hand when the count started")
    difference: float | None = Field(description="counted - expected")
    on_hand_at_close: float | None
    moved: float | None = Field(description="on-hand at close - expected: moves during the count")
    adjustment: float | None = Field(description="the change of on-hand posted")


class CountOut(BaseModel):
    id: int
    site: str
    location: str
    origin: Literal["edge", "api"]
    status: Status
    counted_at: str = Field(description="the floor count's time, or the session's start (UTC)")
    event_id: str | None = Field(description="edge: the count event")
    started_by: str | None
    closed_at: str | None
    closed_by: str | None
    decision: Literal["counted", "difference"] | None
    decided_at: str | None
    decided_by: str | None
    adjustment_event_id: str | None
    lines: list[CountLineOut]


class CountPage(BaseModel):
    items: list[CountOut]
    next_cursor: str | None


class CountOpen(BaseModel):
    site: Text
    location: Text = Field(description="the location's code, or a barcode or SGLN of it")
    by: Text = Field(description="the person counting")


class CountedLine(BaseModel):
    item: Text = Field(description="as stock is kept: SKU, else GTIN, else SSCC, else EPC")
    lot: Annotated[str, Field(max_length=200)] | None = None
    qty: float = Field(ge=0, le=wire.MAX_QTY, allow_inf_nan=False)


class CountLinesIn(BaseModel):
    lines: Annotated[list[CountedLine], Field(min_length=1, max_length=cs.MAX_LINES)]
    add: bool = Field(default=False, description="add to what was counted instead of setting it")


class ByIn(BaseModel):
    by: Text


class DecideIn(BaseModel):
    keep: Literal["counted", "difference"] = Field(
        description="counted: on-hand becomes what was counted; difference: counted - expected"
        " is added to on-hand as it is now, keeping the moves made during the count")
    by: Text


def _out(count: cs.Count) -> CountOut:
    return CountOut(**asdict(count))


@router.get("/counts", response_model=CountPage, dependencies=READ, responses=_ERRORS)
async def list_counts(
    store: StoreDep, site: str | None = None, location: str | None = None,
    status: Status | None = None, origin: Literal["edge", "api"] | None = None,
    cursor: str | None = None, limit: Limit = 100,
) -> CountPage:
    after = parse_cursor(cursor)
    rows = await run_in_threadpool(
        lambda: cs.list_counts(store, site=site, location=location, status=status,
                               origin=origin, after=after, limit=limit + 1))
    page = rows[:limit]
    return CountPage(items=[_out(c) for c in page],
                     next_cursor=str(page[-1].id) if len(rows) > limit else None)


@router.post("/counts", response_model=CountOut, status_code=201, dependencies=WRITE,
             responses=_ERRORS)
async def open_count(store: StoreDep, body: CountOpen, audit: AuditDep) -> CountOut:
    """Start counting a location; its on-hand now is what is expected."""
    count = await run_in_threadpool(cs.open_count, store, body.site, body.location, body.by)
    await _audit(audit, "count.open", count, body.by)
    return _out(count)


@router.get("/counts/{ident}", response_model=CountOut, dependencies=READ, responses=_ERRORS)
async def get_count(store: StoreDep, ident: Ident) -> CountOut:
    return _out(await run_in_threadpool(cs.get_count, store, ident))


@router.post("/counts/{ident}/lines", response_model=CountOut, dependencies=WRITE,
             responses=_ERRORS)
async def record_lines(store: StoreDep, ident: Ident, body: CountLinesIn) -> CountOut:
    """Record counted quantities (set, or ``add`` for counting in passes)."""
    lines = [cs.Counted(ln.item, ln.qty, ln.lot) for ln in body.lines]
    return _out(await run_in_threadpool(
        lambda: cs.record_lines(store, ident, lines, add=body.add)))


@router.post("/counts/{ident}/close", response_model=CountOut, dependencies=WRITE,
             responses=_ERRORS)
async def close(store: StoreDep, ident: Ident, body: ByIn, audit: AuditDep) -> CountOut:
    """Finish counting: what was not counted was not there. Posts the adjustment at once when
    nothing moved at the location meanwhile, else the count waits for ``decide``."""
    count = await run_in_threadpool(cs.close, store, ident, body.by)
    await _audit(audit, "count.close", count, body.by)
    return _out(count)


@router.post("/counts/{ident}/decide", response_model=CountOut, dependencies=WRITE,
             responses=_ERRORS)
async def decide(store: StoreDep, ident: Ident, body: DecideIn, audit: AuditDep) -> CountOut:
    """Moves happened during the count: keep counted, or keep the difference."""
    count = await run_in_threadpool(cs.decide, store, ident, body.keep, body.by)
    await _audit(audit, "count.decide", count, body.by)
    return _out(count)


@router.post("/counts/{ident}/cancel", response_model=CountOut, dependencies=WRITE,
             responses=_ERRORS)
async def cancel(store: StoreDep, ident: Ident, body: ByIn, audit: AuditDep) -> CountOut:
    count = await run_in_threadpool(cs.cancel, store, ident, body.by)
    await _audit(audit, "count.cancel", count, body.by)
    return _out(count)


async def _audit(audit: AuditDep, action: str, count: cs.Count, by: str) -> None:
    await audit.later(action, f"count/{count.id}", by=by, site=count.site,
                      location=count.location, status=count.status, decision=count.decision,
                      adjustment_event_id=count.adjustment_event_id)
