"""POST a batch over HTTP: the MQTT body, the same validation, the ack as the response."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from floorsync.edge import wire
from floorsync.server.api.deps import StoreDep
from floorsync.server.auth import WRITE
from floorsync.server.errors import BadRequest
from floorsync.server.schemas import AckOut, BatchIn, Problem, inline_schema

router = APIRouter(tags=["events"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(BatchIn)}},
    }
}


@router.post(
    "/events",
    response_model=AckOut,
    openapi_extra=_BODY,
    dependencies=WRITE,
    responses={400: {"model": Problem, "content": {"application/problem+json": {}}}},
)
async def post_events(request: Request, store: StoreDep) -> Response:
    """Apply a batch; each id at most once (a re-sent id comes back ``duplicate``).

    The body is read raw and judged by ``wire.decode_batch``, exactly as over MQTT.
    """
    body = await request.body()
    try:
        batch = wire.decode_batch(body)
    except wire.WireError as exc:
        reason = str(exc)
        await run_in_threadpool(
            lambda: store.record_rejection(
                source="http", reason=reason, payload=body, event_ids=wire.salvage_ids(body)
            )
        )
        raise BadRequest("invalid batch", reason) from None
    results = await run_in_threadpool(
        lambda: store.apply_batch(batch, source="http", raw=body)
    )
    ack = wire.encode_ack(wire.Ack(batch.device, results))
    return Response(ack, media_type="application/json")
