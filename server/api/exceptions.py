"""``/exceptions``: what the ledger accepted but flagged, and what ingest rejected, in one list;
resolving one posts an adjustment or dismisses it, recording who, with which token, and when."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from floorsync.edge import wire
from floorsync.server import checks
from floorsync.server import exceptionlog as xl
from floorsync.server.api.audit import AuditDep
from floorsync.server.api.deps import CallerDep, StoreDep, parse_cursor
from floorsync.server.auth import READ, WRITE
from floorsync.server.ledgerviews import parse_at
from floorsync.server.schemas import Problem

router = APIRouter(tags=["exceptions"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Ident = Annotated[int, Path(ge=1, le=2**63 - 1)]
Kind = Literal[
    "negative_stock", "unknown_item", "unknown_location", "serial_conflict", "late_after_count",
    "rejected", "receipt_over", "receipt_short", "receipt_unexpected", "receipt_unknown",
    "order_over", "order_unexpected", "order_unknown", "order_ship_off_books",
]
Status = Literal["open", "adjusted", "dismissed", "cleared"]
_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {400: _PROBLEM, 404: _PROBLEM, 409: _PROBLEM}
Text = Annotated[str, Field(min_length=1, max_length=200)]


class ExceptionOut(BaseModel):
    id: int
    kind: Kind
    status: Status
    raised_at: str
    site: str | None
    device: str | None
    event_id: str | None = Field(description="the event that raised it (rejected: salvaged id)")
    last_event_id: str | None = Field(description="the latest event that ran into it again")
    occurrences: int = Field(description="events that ran into it while it was open")
    rejection_id: int | None = Field(description="rejected: the row in /rejections")
    count_id: int | None
    item: str | None
    lot: str | None
    location: str | None
    serial: str | None
    quantity: float | None = Field(
        description="negative_stock: on-hand (latest); late_after_count: the quantity held")
    detail: str
    resolved_at: str | None
    resolved_by: str | None
    resolved_token: str | None = Field(description="the name of the token that resolved it"
                                       " (a plain token's: sha256: and 12 hex of its hash)")
    reason: str | None
    adjustment_event_id: str | None = Field(description="the adjustment posted to resolve it")
    held_by_count_id: int | None = Field(
        None, description="late_after_count: the count that held it (a held event's count_id"
        " is that count too; a late floor count's count_id is the late count itself)")


class HeldLineOut(BaseModel):
    event_id: str
    type: str
    item: str
    lot: str | None
    location: str
    qty: float
    event_time: str


class ExceptionDetail(ExceptionOut):
    held: list[HeldLineOut] = Field(description="late_after_count: ledger rows not applied")


class ExceptionPage(BaseModel):
    items: list[ExceptionOut]
    next_cursor: str | None


class AdjustmentLineIn(BaseModel):
    item: Text
    location: Text
    lot: Annotated[str, Field(max_length=200)] | None = None
    qty: float = Field(description="signed change of on-hand", ge=-wire.MAX_QTY, le=wire.MAX_QTY,
                       allow_inf_nan=False)


class ResolveIn(BaseModel):
    action: Literal["adjust", "dismiss"]
    by: Text = Field(description="the person resolving it")
    reason: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None, description="why; required to dismiss")
    lines: Annotated[list[AdjustmentLineIn], Field(max_length=xl.MAX_LINES)] | None = Field(
        default=None,
        description="adjust: what to post; default for negative_stock brings the line to zero,"
        " for late_after_count posts the held rows; other kinds need lines")
    site: Text | None = Field(default=None, description="where to post when the exception has"
                              " no site (a rejected batch)")


def _out(row: xl.ExceptionRow) -> ExceptionOut:
    return ExceptionOut(**asdict(row))


def _detail(row: xl.ExceptionRow, held: list[xl.HeldLine]) -> ExceptionDetail:
    return ExceptionDetail(**asdict(row), held=[HeldLineOut(**asdict(h)) for h in held])


@router.get("/exceptions", response_model=ExceptionPage, dependencies=READ, responses=_ERRORS)
async def list_exceptions(
    store: StoreDep,
    kind: Kind | None = None,
    status: Status | None = None,
    site: str | None = None,
    device: str | None = None,
    item: str | None = None,
    location: str | None = None,
    serial: str | None = None,
    event_id: str | None = None,
    since: Annotated[str | None, Query(description="raised at or after (ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="raised before (ISO 8601)")] = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> ExceptionPage:
    """Exceptions in the order raised; every filter given must match."""
    filters = xl.Filters(
        kind=kind, status=status, site=site, device=device, item=item, location=location,
        serial=serial, event_id=event_id,
        since=None if since is None else checks.utc_text(parse_at(since, "since")),
        until=None if until is None else checks.utc_text(parse_at(until, "until")),
    )
    after = parse_cursor(cursor)
    rows = await run_in_threadpool(xl.list_exceptions, store, filters, after, limit + 1)
    page = rows[:limit]
    return ExceptionPage(items=[_out(r) for r in page],
                         next_cursor=str(page[-1].id) if len(rows) > limit else None)


@router.get("/exceptions/summary", response_model=dict[str, dict[str, int]], dependencies=READ)
async def summary(store: StoreDep) -> dict[str, dict[str, int]]:
    """Per kind, how many are open, adjusted, dismissed and cleared."""
    return await run_in_threadpool(xl.counts_by, store)


@router.get("/exceptions/{ident}", response_model=ExceptionDetail, dependencies=READ,
            responses=_ERRORS)
async def get_exception(store: StoreDep, ident: Ident) -> ExceptionDetail:
    row, held = await run_in_threadpool(xl.get_exception, store, ident)
    return _detail(row, held)


@router.post("/exceptions/{ident}/resolve", response_model=ExceptionDetail, dependencies=WRITE,
             responses=_ERRORS)
async def resolve(store: StoreDep, ident: Ident, body: ResolveIn, caller: CallerDep,
                  audit: AuditDep) -> ExceptionDetail:
    """Post an adjustment (``lines``, or the exception's own remedy) or dismiss with a reason.

    Only an open exception can be resolved (409 otherwise); who (``by``), the token's name
    and the time are recorded, on the exception and in the audit log.
    """
    lines = None if body.lines is None else [
        xl.AdjustmentLine(ln.item, ln.location, ln.qty, ln.lot) for ln in body.lines]
    row, held = await run_in_threadpool(
        lambda: xl.resolve(store, ident, action=body.action, by=body.by, reason=body.reason,
                           lines=lines, site=body.site, token=caller))
    await audit.later("exception.resolve", f"exception/{ident}", kind=row.kind,
                      action=body.action, by=body.by, reason=body.reason,
                      adjustment_event_id=row.adjustment_event_id)
    return _detail(row, held)
