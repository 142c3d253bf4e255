"""Items (SKU, GTINs, tracking, unit) and their CSV import.

Also the master-data plumbing ``server/api/locations.py`` shares: the route class that turns
``MasterDataError`` into problem+json, opaque keyset cursors, and CSV request bodies.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from floorsync.server.api.audit import AuditDep
from floorsync.server.api.deps import StoreDep
from floorsync.server.auth import READ, WRITE
from floorsync.server.csvimport import ImportRejected
from floorsync.server.errors import BadRequest, MasterDataError
from floorsync.server.items import Item, ItemSpec
from floorsync.server.masterdata import MasterData
from floorsync.server.schemas import (
    ImportProblem,
    ImportResult,
    ItemCreate,
    ItemFields,
    ItemOut,
    ItemPage,
    Problem,
    Tracking,
    inline_schema,
)

PROBLEM_JSON = "application/problem+json"
MAX_CSV_BYTES = 32 * 1024 * 1024
CSV_TYPES = ("text/csv", "text/plain", "application/csv")

# --- shared with locations ------------------------------------------------------------------


class PayloadRefused(MasterDataError):
    """A request body we will not read (media type, size, encoding)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(title, detail)
        self.status = status


def problem_response(exc: MasterDataError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank", "title": exc.title, "status": exc.status, "detail": exc.detail
    }
    if isinstance(exc, ImportRejected):
        body["errors"] = [asdict(e) for e in exc.errors]
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON)


class MasterDataRoute(APIRoute):
    """Master-data refusals become problem+json with their own status (400, 404, 409...)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except MasterDataError as exc:
                return problem_response(exc)

        return route


_WHY = {
    400: "invalid value (check digit, format, cursor)",
    404: "not found",
    409: "conflicts with what is stored (key or label taken, cycle, parent of the wrong kind)",
    413: "body larger than 32 MiB",
    415: "body is not text/csv",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json responses."""
    return {
        code: {"description": _WHY[code],
               "content": {PROBLEM_JSON: {"schema": inline_schema(Problem)}}}
        for code in codes
    }


def import_responses() -> dict[int | str, dict[str, Any]]:
    out = problems(413, 415)
    out[400] = {
        "description": "bad rows, each with its line and reason; nothing was imported",
        "content": {PROBLEM_JSON: {"schema": inline_schema(ImportProblem)}},
    }
    return out


def csv_body(columns: str, example: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": columns, "content": {
        "text/csv": {"schema": {"type": "string"}, "example": example}}}}


def encode_cursor(*keys: str) -> str:
    raw = json.dumps(keys, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: never a key this service issued
        return False
    return True


def decode_cursor(cursor: str | None, size: int) -> tuple[str, ...] | None:
    """Cursors are opaque to clients; inside they are the keys of the last row seen."""
    if not cursor:
        return None
    try:
        keys = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        keys = None
    if not (isinstance(keys, list) and len(keys) == size
            and all(isinstance(k, str) and _encodable(k) for k in keys)):
        raise BadRequest("bad cursor", f"cursor {cursor[:40]!r} was not issued by this service")
    return tuple(keys)


async def read_csv_body(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    if media.strip().lower() not in CSV_TYPES:
        raise PayloadRefused(415, "unsupported media type",
                             f"send the file as text/csv (got {media.strip()[:60] or 'none'})")
    charset = "utf-8-sig"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CSV_BYTES:
            raise PayloadRefused(413, "file too large", f"at most {MAX_CSV_BYTES} bytes")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise PayloadRefused(400, "unreadable CSV", f"not {charset}: {exc}") from None


def get_masterdata(store: StoreDep) -> MasterData:
    return MasterData(store)


MasterDataDep = Annotated[MasterData, Depends(get_masterdata)]
Limit = Annotated[int, Query(ge=1, le=1000)]

# --- items ----------------------------------------------------------------------------------

router = APIRouter(tags=["items"], route_class=MasterDataRoute)

ITEM_CSV = (
    "Header row required. Columns: sku (required), gtins (several separated by | or ;),"
    " description, tracking (none, lot, serial), unit. Upsert by SKU: a column left out keeps"
    " an existing item's value; an empty cell sets the default. All rows or none."
)


def item_out(item: Item) -> ItemOut:
    return ItemOut(**asdict(item))


def item_spec(sku: str, body: ItemFields) -> ItemSpec:
    return ItemSpec(sku, tuple(body.gtins), body.description, body.tracking, body.unit)


@router.post(
    "/items", status_code=201, response_model=ItemOut, responses=problems(400, 409),
    dependencies=WRITE,
)
def create_item(body: ItemCreate, masterdata: MasterDataDep, audit: AuditDep) -> ItemOut:
    """A new item; 409 when the SKU exists or a GTIN belongs to another item."""
    item = masterdata.create_item(item_spec(body.sku, body))
    audit("item.create", f"item/{item.sku}", **asdict(item))
    return item_out(item)


@router.get("/items", response_model=ItemPage, responses=problems(400), dependencies=READ)
def list_items(
    masterdata: MasterDataDep,
    cursor: str | None = None,
    limit: Limit = 100,
    tracking: Tracking | None = None,
) -> ItemPage:
    """Items by SKU, a page at a time."""
    after = decode_cursor(cursor, 1)
    rows = masterdata.items(after=after[0] if after else None, limit=limit + 1, tracking=tracking)
    page = rows[:limit]
    return ItemPage(
        items=[item_out(i) for i in page],
        next_cursor=encode_cursor(page[-1].sku) if len(rows) > limit else None,
    )


@router.post(
    "/items/import",
    response_model=ImportResult,
    responses=import_responses(),
    openapi_extra=csv_body(ITEM_CSV, "sku,gtins,description,tracking,unit\n"
                                     "TSHIRT-M,09501101530003|4006381333931,T-shirt M,lot,EA\n"),
    dependencies=WRITE,
)
async def import_items(request: Request, masterdata: MasterDataDep, audit: AuditDep
                       ) -> ImportResult:
    """Upsert items from a CSV file in one transaction: every row or none."""
    text = await read_csv_body(request)
    summary = await run_in_threadpool(masterdata.import_items, text)
    await audit.later("item.import", "items", characters=len(text), **asdict(summary))
    return ImportResult(**asdict(summary))


@router.get(
    "/items/by-gtin/{gtin}", response_model=ItemOut, responses=problems(400, 404),
    dependencies=READ,
)
def item_by_gtin(gtin: str, masterdata: MasterDataDep) -> ItemOut:
    """The item with this GTIN (8, 12, 13 or 14 digits)."""
    return item_out(masterdata.item_by_gtin(gtin))


@router.get("/items/{sku}", response_model=ItemOut, responses=problems(404), dependencies=READ)
def get_item(sku: str, masterdata: MasterDataDep) -> ItemOut:
    return item_out(masterdata.item(sku))


@router.put(
    "/items/{sku}", response_model=ItemOut, responses=problems(400, 404, 409),
    dependencies=WRITE,
)
def update_item(sku: str, body: ItemFields, masterdata: MasterDataDep, audit: AuditDep
                ) -> ItemOut:
    """Replace an existing item's fields, GTINs included (create items with POST)."""
    item = masterdata.update_item(item_spec(sku, body))
    audit("item.update", f"item/{item.sku}", **asdict(item))
    return item_out(item)
