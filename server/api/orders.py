"""``/orders`` and ``/backorders``: customers' orders accepted, allocated and followed on the floor;
the demand we cannot meet for lack of stock, and how it got met."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from floorsync.edge import wire
from floorsync.server import backorders as bo
from floorsync.server import orders as od
from floorsync.server.api.audit import AuditDep
from floorsync.server.api.deps import StoreDep, parse_cursor
from floorsync.server.auth import READ, WRITE
from floorsync.server.errors import BadRequest, Refused
from floorsync.server.schemas import Problem, inline_schema

router = APIRouter(tags=["orders"])

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 32 * 1024 * 1024
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Limit = Annotated[int, Query(ge=1, le=1000)]
OrderId = Annotated[str, Path(pattern=NAME, description="the order's id")]
Status = Literal["open", "closed", "cancelled"]
_PROBLEM: dict[str, Any] = {"model": Problem, "content": {PROBLEM_JSON: {}}}


# --- the document, for the OpenAPI description (orders.accept is the one validator) ----------


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line: int | None = Field(None, ge=1, le=od.MAX_LINE_NO,
                             description="unique in the order; default: its position (1, 2, …)")
    item: str = Field(min_length=1, max_length=256, description="a SKU or GTIN of master data")
    qty: float = Field(gt=0, le=wire.MAX_QTY, allow_inf_nan=False)
    lot: str | None = Field(None, min_length=1, max_length=256,
                            description="only this lot will do; left out: any lot")


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=NAME, description="unique across sites; the floor's doc.id")
    site: str = Field(pattern=NAME, description="the site that ships it")
    ship_to: str = Field(min_length=1, max_length=1000)
    priority: int = Field(od.DEFAULT_PRIORITY, ge=1, le=9, description="1 first, 9 last")
    due: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="YYYY-MM-DD")
    lines: list[OrderLineIn] = Field(min_length=1, max_length=od.MAX_LINES)
    totes: list[Annotated[str, Field(pattern=NAME)]] = Field(
        default_factory=list, max_length=od.MAX_TOTES,
        description="the totes it is picked into, each unique; a tote on another open order is"
                    " a 409. The floor's copy carries them: a tote's label (TOTE:{tote}) selects"
                    " the order on a handheld")


class ProblemLine(BaseModel):
    line: int | None = Field(description="the order line (its number), null for the header")
    path: str = Field(description="where in the document, e.g. lines[3].qty")
    reason: str


class OrderProblem(Problem):
    """A refused order: nothing was accepted; every problem is listed (up to 1000)."""

    errors: list[ProblemLine]


_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": inline_schema(OrderIn),
    "example": {"id": "SO-1001", "site": "wh1", "ship_to": "ACME Ltd, 1 Dock Road, Leeds",
                "priority": 3, "due": "2026-12-01",
                "lines": [{"line": 1, "item": "TSHIRT-M", "qty": 12},
                          {"line": 2, "item": "09501101530003", "qty": 5, "lot": "L42"}],
                "totes": ["T-00417"]},
}}}}


# --- what comes back -------------------------------------------------------------------------


class ReservedOut(BaseModel):
    item: str = Field(description="the stock line's key (SKU or GTIN, as stock keeps it)")
    location: str
    lot: str | None
    qty: float
    staged: bool = Field(description="picked goods kept at the pick's destination until shipped")


class LineOut(BaseModel):
    line: int
    item: str = Field(description="as ordered (a SKU, or a GTIN-14)")
    sku: str
    lot: str | None
    ordered: float
    allocated: float = Field(description="held on the shelf for it, not picked yet")
    picked: float
    shipped: float
    backordered: float = Field(description="waiting for stock (see /backorders)")
    status: Status
    picked_at: str | None
    closed_at: str | None
    reserved: list[ReservedOut]


class OrderOut(BaseModel):
    id: str
    site: str
    ship_to: str
    priority: int
    due: str
    status: Status
    version: int = Field(description="grows with every change; the floor's copy carries it")
    received_at: str
    updated_at: str
    closed_at: str | None
    cancelled_by: str | None
    reason: str | None
    lines: list[LineOut]
    exceptions: list[int] = Field(description="exceptions the floor's events raised against it")
    totes: list[str] = Field(description="the totes it is picked into")


class OrderSummaryOut(BaseModel):
    id: str
    site: str
    ship_to: str
    priority: int
    due: str
    status: Status
    version: int
    received_at: str
    updated_at: str
    closed_at: str | None
    lines: int
    ordered: float
    allocated: float
    picked: float
    shipped: float
    backordered: float


class OrderPage(BaseModel):
    items: list[OrderSummaryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class PickLineOut(BaseModel):
    line: int
    sku: str
    item: str = Field(description="the key the shelf holds it under")
    lot: str | None
    location: str
    qty: float


class PickListOut(BaseModel):
    order_id: str
    site: str
    status: Status
    version: int
    label: str = Field(description="the label a handheld scans to pick against this order")
    lines: list[PickLineOut] = Field(description="in location order")
    totes: list[str] = Field(description="its totes: scanning one's label selects the order too")


class CancelIn(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="who cancels it")
    reason: str | None = Field(None, max_length=1000)


class FillOut(BaseModel):
    id: int
    filled_at: str
    qty: float
    how: Literal["allocated", "picked"] = Field(
        description="allocated: stock found for it; picked: the floor picked it anyway")
    event_id: str | None = Field(description="the movement that brought the stock, or the pick")
    item: str | None
    location: str | None
    lot: str | None


class BackorderOut(BaseModel):
    id: int
    order_id: str
    line: int
    site: str
    sku: str
    lot: str | None
    qty: float = Field(description="backordered over its life")
    open_qty: float = Field(description="still waiting for stock")
    since: str
    why: str
    status: Literal["open", "filled", "cancelled"]
    closed_at: str | None
    due: str
    priority: int
    fills: list[FillOut]


class BackorderPage(BaseModel):
    items: list[BackorderOut]
    next_cursor: str | None


def _order_out(view: od.OrderView) -> OrderOut:
    return OrderOut.model_validate(asdict(view))


def _rejected(exc: od.OrderRejected) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": exc.title, "status": exc.status, "detail": exc.detail,
         "errors": [asdict(p) for p in exc.errors]},
        status_code=exc.status, media_type=PROBLEM_JSON)


async def _json_body(request: Request) -> Any:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, "document too large", f"at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid JSON", f"the order is not JSON: {exc}") from None
    except RecursionError:  # json.loads of nesting deeper than the interpreter's stack
        raise BadRequest("invalid JSON", "the order is nested too deeply") from None


# --- orders ----------------------------------------------------------------------------------


@router.post(
    "/orders", status_code=201, response_model=OrderOut, dependencies=WRITE,
    openapi_extra=_BODY,
    responses={
        200: {"model": OrderOut, "description": "the same document again: nothing changed"},
        400: _PROBLEM, 409: _PROBLEM, 413: _PROBLEM,
        422: {"model": OrderProblem, "content": {PROBLEM_JSON: {}},
              "description": "a bad document: every problem listed, nothing accepted"},
    },
)
async def post_order(request: Request, response: Response, store: StoreDep) -> Any:
    """Accept an order in one transaction: its lines are allocated at once, what cannot be
    allocated is backordered. 201 when new; the same document again is a 200 that changes
    nothing; another document under the same id is a 409, and so is a tote another open order
    names."""
    data = await _json_body(request)
    try:
        view, created = await run_in_threadpool(od.accept, store, data)
    except od.OrderRejected as exc:
        return _rejected(exc)
    response.status_code = 201 if created else 200
    return _order_out(view)


@router.get("/orders", response_model=OrderPage, dependencies=READ, responses={400: _PROBLEM})
def list_orders(store: StoreDep, status: Status | None = None, site: str | None = None,
                cursor: str | None = None, limit: Limit = 100) -> OrderPage:
    """Orders in the order they arrived, with their lines' totals."""
    rows = od.list_orders(store, status=status, site=site, after=parse_cursor(cursor),
                          limit=limit + 1)
    page = rows[:limit]
    return OrderPage(
        items=[OrderSummaryOut.model_validate({k: v for k, v in asdict(r).items() if k != "seq"})
               for r in page],
        next_cursor=str(page[-1].seq) if len(rows) > limit else None)


@router.get("/orders/{order_id}", response_model=OrderOut, dependencies=READ,
            responses={404: _PROBLEM})
def get_order(store: StoreDep, order_id: OrderId) -> OrderOut:
    """One order: per line ordered, allocated (with where), picked, shipped, backordered."""
    return _order_out(od.get_order(store, order_id))


@router.get("/orders/{order_id}/picklist", response_model=PickListOut, dependencies=READ,
            responses={404: _PROBLEM})
def pick_list(store: StoreDep, order_id: OrderId) -> PickListOut:
    """What to pick now, in location order: the stock held for each open line."""
    picks = od.pick_list(store, order_id)
    return PickListOut.model_validate(asdict(picks) | {"label": od.LABEL_PREFIX + order_id})


@router.post("/orders/{order_id}/cancel", response_model=OrderOut, dependencies=WRITE,
             responses={404: _PROBLEM, 409: _PROBLEM})
def cancel_order(store: StoreDep, order_id: OrderId, body: CancelIn, audit: AuditDep
                 ) -> OrderOut:
    """Cancel an open order: its stock is free again (other orders' backorders first), its
    backorders are cancelled. 409 unless it is open."""
    view = od.cancel(store, order_id, body.by, body.reason)
    audit("order.cancel", f"order/{order_id}", by=body.by, reason=body.reason, site=view.site)
    return _order_out(view)


# --- backorders ------------------------------------------------------------------------------

backorder_router = APIRouter(tags=["backorders"])


@backorder_router.get("/backorders", response_model=BackorderPage, dependencies=READ,
                      responses={400: _PROBLEM})
def list_backorders(
    store: StoreDep,
    site: str | None = None,
    item: Annotated[str | None, Query(description="a SKU or any GTIN of it")] = None,
    order: Annotated[str | None, Query(description="an order's id")] = None,
    status: Annotated[Literal["open", "filled", "cancelled", "all"],
                      Query(description="open (default): still waiting for stock")] = "open",
    cursor: str | None = None,
    limit: Limit = 100,
) -> BackorderPage:
    """Customer order lines we cannot fill for lack of stock: how much, since when, why, and
    the fills so far (not the backlog: work allocated or picked and not yet done)."""
    rows = bo.list_backorders(store, site=site, item=item, order_id=order,
                              status=None if status == "all" else status,
                              after=parse_cursor(cursor), limit=limit + 1)
    page = rows[:limit]
    return BackorderPage(items=[BackorderOut.model_validate(asdict(r)) for r in page],
                         next_cursor=str(page[-1].id) if len(rows) > limit else None)
