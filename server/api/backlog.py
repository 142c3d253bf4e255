"""``/backlog``: the work not done yet, with its age (never the backorders: see ``/backorders``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from floorsync.server import backlog as bl
from floorsync.server.api.deps import StoreDep
from floorsync.server.auth import READ

router = APIRouter(tags=["backlog"])
Site = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class OpenReceiptOut(BaseModel):
    id: str
    site: str
    supplier: str
    location: str | None
    expected_date: str
    expected: float
    received: float
    since: str = Field(description="its expected date, or when it was announced if later")
    age_s: float


class NotPutAwayOut(BaseModel):
    site: str
    location: str = Field(description="a receipt's door or the site's virtual 'receiving'")
    item: str
    lot: str | None
    qty: float
    since: str = Field(description="the oldest receive into this line since it was last moved")
    age_s: float


class OrderLineOut(BaseModel):
    order_id: str
    line: int
    site: str
    sku: str
    lot: str | None
    state: str = Field(description="allocated (not picked) or picked (not shipped)")
    qty: float
    since: str
    age_s: float


class OpenExceptionsOut(BaseModel):
    kind: str
    open: int
    oldest: str
    age_s: float


class DeviceBacklogOut(BaseModel):
    site: str
    device: str
    backlog: int = Field(description="events the edge holds unconfirmed, as it last reported")
    oldest_unsynced_s: float | None
    measured_at: str | None
    online: bool | None


class BacklogOut(BaseModel):
    generated_at: str
    receipts: list[OpenReceiptOut]
    not_put_away: list[NotPutAwayOut]
    order_lines: list[OrderLineOut]
    exceptions: list[OpenExceptionsOut]
    devices: list[DeviceBacklogOut]


@router.get("/backlog", response_model=BacklogOut, dependencies=READ)
async def get_backlog(store: StoreDep, site: Site = None) -> dict[str, Any]:
    """Pending work and how long each piece has waited: open receipts, stock received and not
    put away, order lines allocated and not picked or picked and not shipped, open exceptions,
    and events not yet synced per device. Customer lines we cannot fill for lack of stock are
    backorders, not backlog: ``/backorders``."""
    return asdict(await run_in_threadpool(bl.backlog, store, site))
