"""The read side of the ledger: stock as of a time, cache check/rebuild, sequence gaps, serials
and tags. Read-only (scope ``read``) except ``POST /ledger/rebuild`` (scope ``admin``).

Long lists are paged by an opaque ``cursor`` (inside: an offset into the list, which is computed
in a stable order) with ``limit``; ``next_cursor`` is null on the last page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from floorsync.server import ledgerviews as lv
from floorsync.server.api.deps import StoreDep, parse_cursor
from floorsync.server.auth import ADMIN, READ
from floorsync.server.schemas import Problem

router = APIRouter(tags=["ledger"])

Limit = Annotated[int, Query(ge=1, le=1000)]
T = TypeVar("T")
_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
_400: dict[int | str, dict[str, Any]] = {400: _PROBLEM}
_404: dict[int | str, dict[str, Any]] = {400: _PROBLEM, 404: _PROBLEM}


def _page(rows: Sequence[T], cursor: str | None, limit: int) -> tuple[list[T], str | None]:
    start = parse_cursor(cursor) or 0
    page = list(rows[start:start + limit])
    return page, (str(start + limit) if start + limit < len(rows) else None)


class StockAsOfPage(BaseModel):
    at: str = Field(description="the time asked for, in UTC")
    items: list[lv.StockAsOf]


class DifferencesOut(BaseModel):
    ok: bool
    differences: list[lv.StockDifference]


class GapsOut(BaseModel):
    site: str
    device: str
    events: int
    first_seq: int | None
    last_seq: int | None
    missing: list[tuple[int, int]] = Field(description="inclusive [from, to] ranges of seq")
    missing_count: int
    duplicate_seqs: list[int]
    late: list[lv.LateArrival] = Field(description="a page of late arrivals, in seq order")
    late_count: int
    next_cursor: str | None = Field(description="pages ``late`` (and ``missing``) together")


class TrackedOut(BaseModel):
    whereabouts: list[lv.Whereabouts]
    history: list[lv.TrackedEvent] = Field(description="a page of events, in event time (UTC)")
    next_cursor: str | None


class ConflictPage(BaseModel):
    items: list[lv.SerialConflict]
    next_cursor: str | None


@router.get("/stock/as-of", response_model=StockAsOfPage, dependencies=READ, responses=_400)
async def stock_as_of(
    store: StoreDep,
    at: Annotated[str, Query(description="ISO 8601 time with a UTC offset, e.g. ...T10:00Z")],
    item: str | None = None,
    location: str | None = None,
    site: str | None = None,
) -> StockAsOfPage:
    """On-hand per (site, item, location, lot) from movements whose event time is at or before
    ``at``; ``item`` may be a SKU or any GTIN of master data, as for ``/stock``.

    Event times are compared as instants (their offsets applied), not as text.
    """
    moment = lv.parse_at(at)
    rows = await run_in_threadpool(lv.stock_as_of, store, moment, item, location, site)
    return StockAsOfPage(at=moment.isoformat(timespec="milliseconds"), items=rows)


@router.get("/ledger/check", response_model=DifferencesOut, dependencies=READ)
async def check(store: StoreDep) -> DifferencesOut:
    """Lines where cached stock differs from the sum of the movement ledger."""
    rows = await run_in_threadpool(lv.check_stock, store)
    return DifferencesOut(ok=not rows, differences=rows)


@router.post("/ledger/rebuild", response_model=lv.RebuildResult, dependencies=ADMIN)
async def rebuild(store: StoreDep) -> lv.RebuildResult:
    """Recompute cached stock from the ledger in one transaction; returns what it corrected."""
    return await run_in_threadpool(lv.rebuild_stock, store)


@router.get("/ledger/conflicts", response_model=ConflictPage, dependencies=READ, responses=_400)
async def conflicts(store: StoreDep, cursor: str | None = None, limit: Limit = 100) -> ConflictPage:
    """Serials received at one place while last known at another, with no move out between."""
    rows = await run_in_threadpool(lv.serial_conflicts, store)
    page, nxt = _page(rows, cursor, limit)
    return ConflictPage(items=page, next_cursor=nxt)


@router.get(
    "/devices/{site}/{device}/gaps", response_model=GapsOut, dependencies=READ, responses=_404
)
async def gaps(
    store: StoreDep, site: str, device: str, cursor: str | None = None, limit: Limit = 100
) -> GapsOut:
    """Missing seq ranges between the first and last seq received, and late arrivals."""
    found = await run_in_threadpool(lv.device_gaps, store, site, device)
    if found is None:
        raise HTTPException(404, f"no events from device {site}/{device}")
    late, nxt_late = _page(found.late, cursor, limit)
    missing, nxt_missing = _page(found.missing, cursor, limit)
    return GapsOut(
        site=found.site, device=found.device, events=found.events, first_seq=found.first_seq,
        last_seq=found.last_seq, missing=missing, missing_count=found.missing_count,
        duplicate_seqs=found.duplicate_seqs, late=late, late_count=found.late_count,
        next_cursor=nxt_late or nxt_missing,
    )


def _tracked_out(found: lv.Tracked | None, what: str, cursor: str | None, limit: int
                 ) -> TrackedOut:
    if found is None:
        raise HTTPException(404, f"no events with {what}")
    history, nxt = _page(found.history, cursor, limit)
    return TrackedOut(whereabouts=found.whereabouts, history=history, next_cursor=nxt)


@router.get("/serials/{serial}", response_model=TrackedOut, dependencies=READ, responses=_404)
async def serial(
    store: StoreDep, serial: str, gtin: str | None = None, cursor: str | None = None,
    limit: Limit = 100,
) -> TrackedOut:
    """Where a serial is now (one entry per GTIN carrying it, unless ``gtin`` narrows it) and its
    history. ``location`` null: shipped, or picked/packed with no destination."""
    found = await run_in_threadpool(lv.find_serial, store, serial, gtin)
    return _tracked_out(found, f"serial {serial!r}", cursor, limit)


@router.get("/tags/{epc:path}", response_model=TrackedOut, dependencies=READ, responses=_404)
async def tag(store: StoreDep, epc: str, cursor: str | None = None, limit: Limit = 100
              ) -> TrackedOut:
    """Where an EPC is now, and its history. ``epc`` is the EPC pure-identity URI as the edge
    stores it (``urn:epc:id:sgtin:0614141.812345.6789``), not the hex of the tag's EPC bank."""
    found = await run_in_threadpool(lv.find_epc, store, epc)
    return _tracked_out(found, f"EPC {epc!r}", cursor, limit)
