"""``GET /metrics``: the central service's Prometheus metrics (``server.metrics``).

At the root, where Prometheus looks, outside ``/api/v1`` and the OpenAPI document (it is text,
not JSON). It asks for a ``read`` token like every GET (Prometheus sends it with
``authorization: {credentials_file: …}``; see deploy/prometheus/); with ``FLOORSYNC_AUTH=off``
it is open. The registry is made when the app starts (this router's lifespan, run inside the
app's, so the store and MQTT ingest exist), one per app, and dropped when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from floorsync.server.auth import READ
from floorsync.server.errors import Refused
from floorsync.server.metrics import CentralMetrics


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    store, ingest = app.state.store, getattr(app.state, "ingest", None)
    metrics = CentralMetrics(lambda: store, lambda: ingest,
                             online_after_s=app.state.settings.online_after_s)
    store.add_observer(metrics)
    if ingest is not None:
        ingest.ack_listeners.append(metrics.acked)
    app.state.metrics = metrics
    try:
        yield
    finally:
        app.state.metrics = None
        if ingest is not None:
            ingest.ack_listeners.remove(metrics.acked)
        store.remove_observer(metrics)


router = APIRouter(tags=["metrics"], lifespan=lifespan)


@router.get("/metrics", dependencies=READ, include_in_schema=False)
def metrics(request: Request) -> Response:
    """The Prometheus text format (0.0.4), or OpenMetrics when the Accept header asks for it."""
    current: CentralMetrics | None = getattr(request.app.state, "metrics", None)
    if current is None:
        raise Refused(503, "not started", "metrics are kept once the service has started")
    body, content_type = current.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
