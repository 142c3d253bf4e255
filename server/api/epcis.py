"""``GET /epcis/events``: the ledger as an EPCIS 2.0 document, streamed (``server/epcis.py``).

Query parameters are those of the EPCIS 2.0 query interface and its REST binding, so an EPCIS
client can page through it: ``GE_eventTime``/``LT_eventTime``, ``GE_recordTime``/
``LT_recordTime``, ``eventType``, ``EQ_bizStep``, ``EQ_bizLocation``, ``MATCH_anyEPC`` (epcList,
parentID and childEPCs), ``perPage`` and ``nextPageToken``; a list is a repeated parameter or
values split by ``|``. The next page is in the ``Link`` header (``rel="next"``); the document
itself stays a plain EPCISDocument. A parameter we do not know is refused (400), as EPCIS
refuses it (QueryParameterException), rather than silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from floorsync.server import epcis, epcisread
from floorsync.server.api.deps import StoreDep, parse_cursor
from floorsync.server.auth import READ
from floorsync.server.errors import BadRequest
from floorsync.server.ledgerviews import parse_at
from floorsync.server.schemas import Problem, inline_schema

router = APIRouter(tags=["epcis"])

MEDIA_TYPE = "application/ld+json"
MAX_PER_PAGE = 1_000_000
PARAMETERS = frozenset({
    "GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime", "eventType", "EQ_bizStep",
    "EQ_bizLocation", "MATCH_anyEPC", "perPage", "nextPageToken",
})
ALL_EVENT_TYPES = frozenset({"ObjectEvent", "AggregationEvent", "TransactionEvent",
                             "TransformationEvent", "AssociationEvent"})
_PROBLEM: dict[str, Any] = {"description": "a bad query parameter", "content": {
    "application/problem+json": {"schema": inline_schema(Problem)}}}


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
    ge_event_time: Annotated[str | None, Query(alias="GE_eventTime")] = None,
    lt_event_time: Annotated[str | None, Query(alias="LT_eventTime")] = None,
    ge_record_time: Annotated[str | None, Query(alias="GE_recordTime")] = None,
    lt_record_time: Annotated[str | None, Query(alias="LT_recordTime")] = None,
    event_type: Annotated[list[str] | None, Query(alias="eventType")] = None,
    biz_step: Annotated[list[str] | None, Query(alias="EQ_bizStep")] = None,
    biz_location: Annotated[list[str] | None, Query(alias="EQ_bizLocation")] = None,
    any_epc: Annotated[list[str] | None, Query(alias="MATCH_anyEPC")] = None,
    per_page: Annotated[int, Query(alias="perPage", ge=1, le=MAX_PER_PAGE)] = 1000,
    next_page_token: Annotated[str | None, Query(alias="nextPageToken", max_length=40)] = None,
) -> StreamingResponse:
    unknown = sorted(set(request.query_params.keys()) - PARAMETERS)
    if unknown:
        raise BadRequest("unknown query parameter",
                         f"{unknown[0][:80]!r} is not one of {sorted(PARAMETERS)}")
    filters = filters_of(ge_event_time, lt_event_time, ge_record_time, lt_record_time,
                         event_type, biz_step, biz_location, any_epc)
    page = epcis.plan_page(store, filters, parse_cursor(next_page_token), per_page)
    headers = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
    if page.next_token is not None:
        url = request.url.include_query_params(nextPageToken=page.next_token)
        headers["Link"] = f'<{url}>; rel="next"'
    return StreamingResponse(epcis.stream(store, filters, page, datetime.now(UTC)),
                             media_type=MEDIA_TYPE, headers=headers)
