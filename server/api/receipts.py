"""``/receipts``: expected receipts (ASN, purchase orders), as a native JSON document or a
supplier's EPCIS 2.0 document; the verification view (expected, received, difference per line);
closing one records its discrepancies."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from operator import attrgetter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from floorsync.edge import expected as floor
from floorsync.edge import wire
from floorsync.server import receipts as rb
from floorsync.server.api.audit import AuditDep
from floorsync.server.api.deps import CallerDep, StoreDep, parse_cursor
from floorsync.server.auth import READ, WRITE
from floorsync.server.receiptdocs import DocError, ReceiptRejected
from floorsync.server.receiptepcis import Given, is_epcis
from floorsync.server.receiptviews import (
    Discrepancy,
    LineView,
    PalletView,
    RaisedException,
    Receipt,
    UnexpectedView,
)
from floorsync.server.schemas import Problem, inline_schema

router = APIRouter(tags=["receipts"])

PROBLEM_JSON = "application/problem+json"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Limit = Annotated[int, Query(ge=1, le=1000)]
Ident = Annotated[str, Path(pattern=NAME, description="the receipt's id (1-64 of A-Z a-z 0-9 . _"
                                                      " -)")]
Text = Annotated[str, Field(min_length=1, max_length=200)]
_PROBLEM: dict[str, Any] = {"model": Problem, "content": {PROBLEM_JSON: {}}}
_GIVEN = ("EPCIS documents only: says what the document does not (or overrides it); a native"
          " receipt says it in its body")


# --- the request body, for the OpenAPI document only ----------------------------------------
# server.receiptdocs.read_receipt is the one validator: it lists every bad place of a document
# at once (a model would stop at the first bad line's type); these models describe the body.


class ReceiptLineIn(BaseModel):
    line: int | None = Field(None, ge=1, le=10**9, description="the line's number: on all lines"
                             " or none (then numbered in document order)")
    gtin: str | None = Field(None, description="GTIN-8/12/13/14 of an item in master data")
    sku: str | None = Field(None, description="an item's SKU (give gtin, sku or both)")
    lot: str | None = Field(None, min_length=1, max_length=64,
                            description="the lot expected; none: any lot")
    qty: float = Field(gt=0, le=wire.MAX_QTY)


class ReceiptPalletIn(BaseModel):
    sscc: str = Field(min_length=18, max_length=18, description="SSCC, check digit verified")
    epcs: list[str] = Field(default_factory=list, description="child EPCs: pure identity URIs"
                            " (urn:epc:id:sgtin:...) or SGTIN Digital Links")
    lines: list[ReceiptLineIn] = Field(default_factory=list, description="GTIN quantities on it")


class ReceiptIn(BaseModel):
    id: str = Field(pattern=NAME, description="the receipt's id (ASN or PO number): 1-64 of"
                    " A-Z a-z 0-9 . _ -; the key of idempotency")
    site: str = Field(pattern=NAME)
    supplier: Text
    expected_date: str = Field(description="YYYY-MM-DD")
    location: str | None = Field(None, description="the door or staging location it is expected"
                                 " at (code, barcode or GLN label); none: any")
    lines: list[ReceiptLineIn] = Field(default_factory=list, max_length=floor.MAX_LINES)
    pallets: list[ReceiptPalletIn] = Field(default_factory=list)


class EPCISDocumentIn(BaseModel, extra="allow"):
    """A GS1 EPCIS 2.0 JSON(-LD) document (validated against the GS1 schema) whose
    AggregationEvents (action ADD or OBSERVE) give the pallets (parentID: SSCC) and their
    children (childEPCs, childQuantityList). The receipt's id comes from its desadv (else po)
    bizTransaction, the site from a location destination's GLN, the supplier from the
    owning_party source, the expected date from the first aggregation's; query parameters
    say what it does not."""

    type: Literal["EPCISDocument", "EPCISQueryDocument"]


_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            inline_schema(ReceiptIn), inline_schema(EPCISDocumentIn)]}}},
    }
}


# --- responses ----------------------------------------------------------------------------


class DocErrorOut(BaseModel):
    path: str = Field(description="JSON path of the bad place: $.lines[3].qty")
    reason: str


class ReceiptProblem(Problem):
    """A document that cannot be accepted: nothing was kept; every bad place is listed."""

    errors: list[DocErrorOut]
    total: int = Field(description="how many errors there were (up to 1000 are listed)")


class LineOut(BaseModel):
    line: int
    item: str = Field(description="as the ledger keys it: the SKU named, else the GTIN")
    sku: str = Field(description="the master-data item")
    gtin: str | None
    lot: str | None
    sscc: str | None = Field(description="the pallet it is on")
    expected: float
    received: float
    difference: float = Field(description="received - expected")
    status: Literal["waiting", "complete", "short", "over"]


class PalletOut(BaseModel):
    sscc: str
    received: Literal["sscc", "epc"] | None = Field(
        description="sscc: received whole by its label; epc: some of its EPCs; null: not seen")
    epcs_expected: int
    epcs_received: int
    missing_epcs: list[str]
    repeats: float = Field(description="the pallet or its EPCs received again")


class UnexpectedOut(BaseModel):
    item: str
    lot: str | None
    qty: float
    events: int


class DiscrepancyOut(BaseModel):
    kind: Literal["over", "short", "unexpected"]
    line: int | None
    sscc: str | None
    item: str
    lot: str | None
    expected: float
    received: float
    difference: float
    detail: str
    exception_id: int | None


class RaisedOut(BaseModel):
    id: int
    kind: str
    status: str
    subject: str = Field(description="line:N, pallet:SSCC, item:KEY|LOT or site:SITE")


class ReceiptOut(BaseModel):
    id: str
    site: str
    supplier: str
    expected_date: str
    location: str | None
    source: Literal["json", "epcis"]
    status: Literal["open", "closed"]
    version: int = Field(description="grows with each change (the floor keeps the highest)")
    created_at: str
    created_by: str | None = Field(description="fingerprint of the token that sent it")
    closed_at: str | None
    closed_by: str | None
    label: str = Field(description="the text that selects it on a handheld: ASN:{id}")
    lines: list[LineOut]
    pallets: list[PalletOut]
    unexpected: list[UnexpectedOut]
    discrepancies: list[DiscrepancyOut] = Field(description="recorded at close")
    exceptions: list[RaisedOut]


class ReceiptSummaryOut(BaseModel):
    id: str
    site: str
    supplier: str
    expected_date: str
    location: str | None
    source: Literal["json", "epcis"]
    status: Literal["open", "closed"]
    version: int
    created_at: str
    closed_at: str | None
    lines: int
    pallets: int
    expected_qty: float = Field(description="the lines' quantities and the EPCs listed")


class ReceiptPage(BaseModel):
    items: list[ReceiptSummaryOut]
    next_cursor: str | None


class CloseIn(BaseModel):
    by: Text = Field(description="the person closing it")


def _fields(kind: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """A dataclass as a dict of its fields, shallow and fast (``asdict`` deep-copies: a
    10,000-line receipt spent most of its answer there)."""
    names = tuple(f.name for f in fields(kind))
    get = attrgetter(*names)
    return lambda value: dict(zip(names, get(value), strict=True))


_LINE, _PALLET, _UNEXPECTED, _DISCREPANCY, _RAISED = (
    _fields(LineView), _fields(PalletView), _fields(UnexpectedView), _fields(Discrepancy),
    _fields(RaisedException))
_HEADER = tuple(f.name for f in fields(Receipt) if f.name not in (
    "lines", "pallets", "unexpected", "discrepancies", "exceptions"))


def _json(receipt: Receipt, status: int = 200) -> Response:
    """The receipt as ``ReceiptOut`` says (schemathesis checks it against the document)."""
    body = {name: getattr(receipt, name) for name in _HEADER}
    body["lines"] = [_LINE(ln) for ln in receipt.lines]
    body["pallets"] = [{**_PALLET(p), "missing_epcs": list(p.missing_epcs)}
                       for p in receipt.pallets]
    body["unexpected"] = [_UNEXPECTED(u) for u in receipt.unexpected]
    body["discrepancies"] = [_DISCREPANCY(d) for d in receipt.discrepancies]
    body["exceptions"] = [_RAISED(x) for x in receipt.exceptions]
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text.encode(), status_code=status, media_type="application/json")


def _rejected(errors: list[DocError] | tuple[DocError, ...], total: int, detail: str
              ) -> JSONResponse:
    body = {"type": "about:blank", "title": "invalid receipt", "status": 422, "detail": detail,
            "errors": [asdict(e) for e in errors], "total": total}
    return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)


@router.post(
    "/receipts", response_model=ReceiptOut, status_code=201, dependencies=WRITE,
    openapi_extra=_BODY,
    responses={200: {"model": ReceiptOut, "description": "the same document again: unchanged"},
               409: _PROBLEM, 413: _PROBLEM,
               422: {"model": ReceiptProblem, "content": {PROBLEM_JSON: {}}}},
)
async def post_receipt(
    request: Request, store: StoreDep, caller: CallerDep,
    receipt_id: Annotated[str | None, Query(alias="id", max_length=200, description=_GIVEN)
                          ] = None,
    site: Annotated[str | None, Query(max_length=200, description=_GIVEN)] = None,
    supplier: Annotated[str | None, Query(max_length=200, description=_GIVEN)] = None,
    expected_date: Annotated[str | None, Query(max_length=200, description=_GIVEN)] = None,
    location: Annotated[str | None, Query(max_length=200, description=_GIVEN)] = None,
) -> Response:
    """Accept an expected receipt, whole or not at all; idempotent by id (the same document
    again: 200, unchanged; another under the same id: 409). A native document or an EPCIS 2.0
    ``EPCISDocument`` (validated against the GS1 schema; its ADD/OBSERVE AggregationEvents
    give the pallets). 422 lists every bad place by JSON path."""
    body = await request.body()
    if len(body) > floor.MAX_PAYLOAD_BYTES:
        return JSONResponse({"type": "about:blank", "title": "too large", "status": 413,
                             "detail": f"a receipt is at most {floor.MAX_PAYLOAD_BYTES} bytes"},
                            status_code=413, media_type=PROBLEM_JSON)
    book = rb.book_of(store)
    given = Given(receipt_id, site, supplier, expected_date, location)

    def accept() -> Response:  # off the event loop: a large receipt is megabytes both ways
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _rejected([DocError("$", f"not JSON: {exc}")], 1, "the body is not JSON")
        except RecursionError:  # nesting deeper than the interpreter's stack
            return _rejected([DocError("$", "nested too deeply")], 1, "the body is not JSON")
        if not is_epcis(data) and given != Given():
            named = [f"?{k}" for k, v in asdict(given).items() if v is not None]
            return _rejected([DocError(n, "only for an EPCIS document: a native receipt says"
                                          " it in its body") for n in named], len(named),
                             "query parameters are for EPCIS documents")
        try:
            receipt, created = (book.accept_epcis(data, given, by=caller) if is_epcis(data)
                                else book.accept(data, by=caller))
        except ReceiptRejected as exc:
            return _rejected(exc.errors, exc.total, exc.detail)
        return _json(receipt, 201 if created else 200)

    return await run_in_threadpool(accept)


@router.get("/receipts", response_model=ReceiptPage, dependencies=READ,
            responses={400: _PROBLEM})
async def list_receipts(
    store: StoreDep, status: Literal["open", "closed"] | None = None,
    site: str | None = None, cursor: str | None = None, limit: Limit = 100,
) -> ReceiptPage:
    """Receipts in the order they were accepted."""
    after = parse_cursor(cursor)
    book = rb.book_of(store)
    rows = await run_in_threadpool(
        lambda: book.receipts(status=status, site=site, after=after, limit=limit + 1))
    page = rows[:limit]
    return ReceiptPage(
        items=[ReceiptSummaryOut.model_validate(
            {k: v for k, v in asdict(r).items() if k != "cursor"}) for r in page],
        next_cursor=str(page[-1].cursor) if len(rows) > limit else None)


@router.get("/receipts/{ident}", response_model=ReceiptOut, dependencies=READ,
            responses={404: _PROBLEM})
async def get_receipt(store: StoreDep, ident: Ident) -> Response:
    """Per line expected, received (the ledger's receive events made against it, and those of
    an EPC or SSCC it lists) and the difference; pallets; what came that it does not name."""
    book = rb.book_of(store)
    return await run_in_threadpool(lambda: _json(book.receipt(ident)))


@router.post("/receipts/{ident}/close", response_model=ReceiptOut, dependencies=WRITE,
             responses={404: _PROBLEM, 409: _PROBLEM})
async def close_receipt(store: StoreDep, ident: Ident, body: CloseIn, audit: AuditDep
                        ) -> Response:
    """Close it: every difference is recorded, what did not come raises ``receipt_short``, and
    the floor's copy is withdrawn. Later receive events against it raise ``receipt_unknown``."""
    book = rb.book_of(store)

    def close() -> Response:
        receipt = book.close(ident, by=body.by)
        audit("receipt.close", f"receipt/{ident}", by=body.by, site=receipt.site)
        return _json(receipt)

    return await run_in_threadpool(close)
