"""POST a batch over HTTP: the MQTT body, the same validation, the ack as the response."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from floorsync.edge import wire
from floorsync.server.api.deps import StoreDep
from floorsync.server.auth import WRITE
from floorsync.server.errors import BadRequest
from floorsync.server.limits import RateLimited, RateLimiter
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
    responses={
        400: {"model": Problem, "content": {"application/problem+json": {}}},
        429: {"model": Problem, "content": {"application/problem+json": {}},
              "description": "too many batches for this token or this device: nothing of the"
              " batch was applied; send it again after Retry-After seconds"},
    },
)
async def post_events(request: Request, store: StoreDep) -> Response:
    """Apply a batch; each id at most once (a re-sent id comes back ``duplicate``).

    The body is read raw and judged by ``wire.decode_batch``, exactly as over MQTT. Each batch
    takes one from its device's rate bucket (``site/device``), besides the token's: when it is
    empty the answer is 429 with ``Retry-After`` and nothing of the batch is applied.
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
    limiter: RateLimiter | None = getattr(request.app.state, "device_rate", None)
    if limiter is not None and (wait := limiter.take(f"{batch.site}/{batch.device}")) > 0:
        raise RateLimited(f"device {batch.device!r} of site {batch.site!r}", wait,
                          "; nothing of this batch was applied")
    results = await run_in_threadpool(
        lambda: store.apply_batch(batch, source="http", raw=body)
    )
    ack = wire.encode_ack(wire.Ack(batch.device, results))
    return Response(ack, media_type="application/json")
