"""``GET /epcis/events``: the ledger and the captured events as an EPCIS 2.0 document, streamed
(``server/epcis.py``); ``POST /epcis/capture``: EPCIS events kept whole (``server/epcisstore.py``).

Query parameters are those of the EPCIS 2.0 query interface and its REST binding, so an EPCIS
client can page through it: ``GE_eventTime``/``LT_eventTime``, ``GE_recordTime``/
``LT_recordTime``, ``eventType``, ``EQ_bizStep``, ``EQ_bizLocation``, ``EQ_readPoint``,
``MATCH_anyEPC`` (epcList, parentID, childEPCs, inputEPCList, outputEPCList), ``perPage`` and
``nextPageToken``; a list is a repeated parameter or values split by ``|``. Ours:
``identifiers`` (``urn``, the default: GS1 keys of movements as EPC URIs where the company
prefix is configured, else Digital Links; ``dl``: Digital Links). The next page is in the
``Link`` header (``rel="next"``); the document itself stays a plain EPCISDocument. A parameter
we do not know is refused (400), as EPCIS refuses it (QueryParameterException), rather than
silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from floorsync.server import epcis, epcisread, epcisstore
from floorsync.server.api.deps import CallerDep, SettingsDep, StoreDep
from floorsync.server.auth import READ, WRITE
from floorsync.server.epcisurn import EPCWriter
from floorsync.server.errors import BadRequest
from floorsync.server.ledgerviews import parse_at
from floorsync.server.schemas import Problem, inline_schema

router = APIRouter(tags=["epcis"])

MEDIA_TYPE = "application/ld+json"
PROBLEM_JSON = "application/problem+json"
MAX_PER_PAGE = 1_000_000
PARAMETERS = frozenset({
    "GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime", "eventType", "EQ_bizStep",
    "EQ_bizLocation", "EQ_readPoint", "MATCH_anyEPC", "perPage", "nextPageToken", "identifiers",
})
VERSIONS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
ALL_EVENT_TYPES = frozenset({"ObjectEvent", "AggregationEvent", "TransactionEvent",
                             "TransformationEvent", "AssociationEvent"})
_PROBLEM: dict[str, Any] = {"description": "a bad query parameter", "content": {
    "application/problem+json": {"schema": inline_schema(Problem)}}}
_IDENTIFIERS = ("how GS1 keys of movements are written: urn, EPC URIs (urn:epc:id:sgln:...)"
                " for the company prefixes configured (FLOORSYNC_GS1_COMPANY_PREFIXES), Digital"
                " Links for others; dl, GS1 Digital Links (https://id.gs1.org/414/...). Captured"
                " events keep the identifiers they came with")


def _values(given: list[str] | None) -> list[str] | None:
    if given is None:
        return None
    return [v.strip() for text in given for v in text.split("|") if v.strip()]


def _time(text: str | None, name: str) -> datetime | None:
    return None if text is None else parse_at(text, name)


def _uris(given: list[str] | None, name: str) -> frozenset[str] | None:
    values = _values(given)
    if values is None:
        return None
    found = set()
    for value in values:
        uri = epcis.canonical_filter_uri(value)
        if uri is None:
            raise BadRequest(f"invalid {name}", f"{value[:80]!r} is not a URI")
        found.add(uri)
    return frozenset(found)


def filters_of(
    ge_event_time: str | None, lt_event_time: str | None, ge_record_time: str | None,
    lt_record_time: str | None, event_type: list[str] | None, biz_step: list[str] | None,
    biz_location: list[str] | None, any_epc: list[str] | None,
    read_point: list[str] | None = None,
) -> epcis.Filters:
    """The filters, each value checked: a bad one is a BadRequest naming the parameter."""
    types = _values(event_type)
    if types is not None and (bad := sorted(set(types) - ALL_EVENT_TYPES)):
        raise BadRequest("invalid eventType",
                         f"{bad[0][:80]!r} is not one of {sorted(ALL_EVENT_TYPES)}")
    steps = _values(biz_step)
    words = epcisread.vocabulary("bizStep")
    if steps is not None:
        steps = [epcisread.cbv_word("bizStep", s) or s for s in steps]
        if bad := [s for s in steps if s not in words]:
            raise BadRequest("invalid EQ_bizStep", f"{bad[0][:80]!r} is not a CBV 2.0 bizStep")
    return epcis.Filters(
        ge_event_time=_time(ge_event_time, "GE_eventTime"),
        lt_event_time=_time(lt_event_time, "LT_eventTime"),
        ge_record_time=_time(ge_record_time, "GE_recordTime"),
        lt_record_time=_time(lt_record_time, "LT_recordTime"),
        event_types=None if types is None else frozenset(types),
        biz_steps=None if steps is None else frozenset(steps),
        biz_locations=_uris(biz_location, "EQ_bizLocation"),
        read_points=_uris(read_point, "EQ_readPoint"),
        epcs=_uris(any_epc, "MATCH_anyEPC"),
    )


@router.get(
    "/epcis/events",
    dependencies=READ,
    response_class=StreamingResponse,
    responses={
        200: {"description": "an EPCIS 2.0 EPCISDocument; the next page in the Link header",
              "content": {MEDIA_TYPE: {"schema": {"type": "object"}}}},
        400: _PROBLEM,
    },
)
def epcis_events(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    ge_event_time: Annotated[str | None, Query(alias="GE_eventTime")] = None,
    lt_event_time: Annotated[str | None, Query(alias="LT_eventTime")] = None,
    ge_record_time: Annotated[str | None, Query(alias="GE_recordTime")] = None,
    lt_record_time: Annotated[str | None, Query(alias="LT_recordTime")] = None,
    event_type: Annotated[list[str] | None, Query(alias="eventType")] = None,
    biz_step: Annotated[list[str] | None, Query(alias="EQ_bizStep")] = None,
    biz_location: Annotated[list[str] | None, Query(alias="EQ_bizLocation")] = None,
    read_point: Annotated[list[str] | None, Query(alias="EQ_readPoint")] = None,
    any_epc: Annotated[list[str] | None, Query(alias="MATCH_anyEPC")] = None,
    per_page: Annotated[int, Query(alias="perPage", ge=1, le=MAX_PER_PAGE)] = 1000,
    next_page_token: Annotated[str | None, Query(alias="nextPageToken", max_length=40)] = None,
    identifiers: Annotated[Literal["urn", "dl"], Query(description=_IDENTIFIERS)] = "urn",
) -> StreamingResponse:
    """Movements (in ledger order), then captured events (in capture order), as one
    EPCISDocument per page."""
    unknown = sorted(set(request.query_params.keys()) - PARAMETERS)
    if unknown:
        raise BadRequest("unknown query parameter",
                         f"{unknown[0][:80]!r} is not one of {sorted(PARAMETERS)}")
    filters = filters_of(ge_event_time, lt_event_time, ge_record_time, lt_record_time,
                         event_type, biz_step, biz_location, any_epc, read_point)
    try:
        after = epcis.parse_token(next_page_token)
    except ValueError as exc:
        raise BadRequest("bad cursor", f"nextPageToken: {exc}") from None
    page = epcis.plan_page(store, filters, after, per_page)
    headers = dict(VERSIONS)
    if page.next_token is not None:
        url = request.url.include_query_params(nextPageToken=page.next_token)
        headers["Link"] = f'<{url}>; rel="next"'
    prefixes = settings.gs1_company_prefixes
    writer = EPCWriter(prefixes) if identifiers == "urn" and prefixes else None
    return StreamingResponse(epcis.stream(store, filters, page, datetime.now(UTC),
                                          writer=writer),
                             media_type=MEDIA_TYPE, headers=headers)


# --- capture ------------------------------------------------------------------------------


class EPCISCaptureIn(BaseModel, extra="allow"):
    """A GS1 EPCIS 2.0 JSON-LD document, validated against the GS1 schema (with format
    checks); an EPCISQueryDocument's events are taken as well."""

    type: Literal["EPCISDocument", "EPCISQueryDocument"]


class CaptureOut(BaseModel):
    capture_id: int | None = Field(description="the capture's number; null: nothing was new")
    events: int = Field(description="events in the document")
    captured: int = Field(description="kept anew")
    unchanged: int = Field(description="kept already, as they are (the same eventID and"
                           " content): nothing changed")
    recorded_at: str | None = Field(description="their recordTime (null: nothing was new)")


class CaptureErrorOut(BaseModel):
    path: str = Field(description="JSON path of the bad place: $.epcisBody.eventList[3].eventTime")
    reason: str


class CaptureProblem(Problem):
    """A document not kept, nothing of it; every bad place is listed (up to 1000)."""

    errors: list[CaptureErrorOut]
    total: int


_CAPTURE_BODY = {"requestBody": {"required": True, "content": {
    MEDIA_TYPE: {"schema": inline_schema(EPCISCaptureIn)},
    "application/json": {"schema": inline_schema(EPCISCaptureIn)}}}}
_CAPTURE_PROBLEM: dict[str, Any] = {"model": CaptureProblem, "content": {PROBLEM_JSON: {}}}


def _rejected(exc: epcisstore.CaptureRejected) -> JSONResponse:
    body = {"type": "about:blank", "title": exc.title, "status": exc.status,
            "detail": exc.detail, "errors": [asdict(e) for e in exc.errors], "total": exc.total}
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON)


@router.post(
    "/epcis/capture", response_model=CaptureOut, status_code=201, dependencies=WRITE,
    openapi_extra=_CAPTURE_BODY,
    responses={200: {"model": CaptureOut, "description": "every event kept already: unchanged"},
               409: _CAPTURE_PROBLEM, 413: {"model": Problem, "content": {PROBLEM_JSON: {}}},
               422: _CAPTURE_PROBLEM},
)
async def capture_events(request: Request, store: StoreDep, caller: CallerDep) -> Response:
    """Keep an EPCIS 2.0 document's events whole, in one transaction: idempotent by eventID
    (the same event again: unchanged; other content under a kept eventID: 409, unless it is
    that event's error declaration); 422 names every schema error by its JSON path. They come
    back from ``GET /epcis/events`` beside the movements, with our recordTime."""
    body = await request.body()

    def work() -> Response:  # off the event loop: a document is megabytes
        try:
            document, events = epcisstore.prepare(body)
            done = epcisstore.capture(store, document, events, by=caller)
        except epcisstore.CaptureRejected as exc:
            return _rejected(exc)
        return JSONResponse(asdict(done), status_code=201 if done.captured else 200,
                            headers=VERSIONS)

    return await run_in_threadpool(work)
