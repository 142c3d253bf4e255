"""The HTTP application, built by a factory: no import-time globals, one store per app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from floorsync.edge import wire
from floorsync.server import apidocs, dashboard, docfollow, nulguard, picking
from floorsync.server.api import (
    audit,
    backlog,
    counts,
    devices,
    epcis,
    events,
    exceptions,
    health,
    items,
    kpi,
    ledger,
    locations,
    movements,
    orders,
    receipts,
    stock,
)
from floorsync.server.api import metrics as metrics_api
from floorsync.server.auth import document_denials
from floorsync.server.errors import BadRequest, ConfigError, Refused, ServerError, StoreError
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.limits import BodyLimit, BodyTooLarge, RateLimiter
from floorsync.server.receipts import book_of
from floorsync.server.schemas import amend_operations, problem_content
from floorsync.server.settings import Settings

API_PREFIX = "/api/v1"
PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    """RFC 9457 problem details, the one error shape of this API."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def document_request_errors(app: FastAPI) -> None:
    """Every 422 in the OpenAPI document as what `invalid` (below) sends: problem+json, not
    FastAPI's own ``HTTPValidationError`` as application/json; and a 400 on every operation
    with a body, which FastAPI answers when the body is no JSON at all ("There was an error
    parsing the body"). Both found by tests/fuzz/test_api_stateful.py: responses the document
    did not describe."""
    content = problem_content()

    def amend(operation: dict[str, Any]) -> None:
        responses = operation.setdefault("responses", {})
        if "422" in responses:
            responses["422"]["content"] = content
        if "requestBody" in operation:
            responses.setdefault("400", {"description": "the body cannot be read",
                                         "content": content})

    amend_operations(app, amend)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The service: opens ``store`` (unless given) and starts MQTT ingest (if a broker is set).

    Refuses (``ConfigError``) to serve without bearer tokens unless ``settings.auth`` is off.
    """
    if settings.auth and not settings.tokens:
        raise ConfigError(
            "no API tokens: set FLOORSYNC_TOKENS_FILE (lines that 'floorsync token new NAME"
            " --scopes read' prints) or FLOORSYNC_TOKENS, or FLOORSYNC_AUTH=off to serve the"
            " API to anyone"
        )
    if not settings.auth:
        log.warning("FLOORSYNC_AUTH=off: the HTTP API is open to anyone who can reach it")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        app.state.store = Store(settings.database).open() if store is None else store
        desk = picking.install(app.state.store)  # the floor's picks and ships against orders
        app.state.ingest = None
        app.state.publisher = None  # the documents' expected lists to the floor (MQTT only)
        book = book_of(app.state.store)  # receipts: its batch hook checks receive events
        try:
            if settings.broker is not None:
                app.state.ingest = MqttIngest(app.state.store, settings).start()
                # the store's committed documents, whoever wrote them, while this process holds
                # the documents' lead (server/docfollow.py); the listeners only wake it early
                app.state.publisher = docfollow.publisher(settings, app.state.store).start()
                book.add_listener(app.state.publisher.document_changed)
                desk.add_listener(app.state.publisher.document_changed)
            yield
        finally:
            dashboard.close(app)  # its live streams and their poller
            if app.state.publisher is not None:
                book.remove_listener(app.state.publisher.document_changed)
                desk.remove_listener(app.state.publisher.document_changed)
                app.state.publisher.stop()
            if app.state.ingest is not None:
                app.state.ingest.stop()
            if own_store:
                app.state.store.close()

    app = FastAPI(
        title="floorsync central service",
        version="0.1.0",
        description="Ledger, stock and ingest of barcode and RFID movement events.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc from packaged assets (server/apidocs.py), no CDN
        redoc_url=None,
    )
    apidocs.install(app)
    app.state.settings = settings
    app.state.token_rate = RateLimiter(settings.rate_token_per_s, settings.rate_token_burst)
    app.state.device_rate = RateLimiter(settings.rate_device_per_s, settings.rate_device_burst)
    for module in (health, stock, movements, events, devices, items, locations, ledger,
                   exceptions, counts, epcis, kpi, orders, receipts, backlog, audit):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(orders.backorder_router, prefix=API_PREFIX)
    app.include_router(metrics_api.router)  # GET /metrics (read token), a registry per app
    dashboard.install(app, settings)  # the live page at / (server/dashboard/)
    document_denials(app)
    document_request_errors(app)
    nulguard.document(app)  # the NUL guard's 422 (below) on every operation
    documents = {f"{API_PREFIX}/{path}": settings.max_document_bytes
                 for path in ("orders", "receipts", "epcis/capture", "items/import",
                              "locations/import")}
    # NUL refused for every route (422) before anything is stored; inside BodyLimit, so a
    # body is read only up to its limit; events' bodies are the wire decoder's to refuse
    app.add_middleware(nulguard.NulGuard, skip=[f"{API_PREFIX}/events"],
                       text=[f"{API_PREFIX}/items/import", f"{API_PREFIX}/locations/import"])
    app.add_middleware(BodyLimit, default=settings.max_body_bytes,
                       limits={f"{API_PREFIX}/events": wire.MAX_PAYLOAD_BYTES, **documents})
    if settings.cors_origins:  # closed by default: no CORS headers at all
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], allow_credentials=False)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return problem(400, exc.title, exc.detail)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail)

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        return problem(503, "database unavailable", str(exc))

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError) -> JSONResponse:
        return problem(500, "server error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return problem(422, "invalid request", detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        title = getattr(exc, "title", None) or str(exc.detail)
        extra = {"limit": exc.limit} if isinstance(exc, BodyTooLarge) else {}
        return problem(exc.status_code, title, str(exc.detail), exc.headers, **extra)

    return app
