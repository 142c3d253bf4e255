"""The live dashboard, served by the central service itself at ``/``.

Plain HTML, CSS and JavaScript modules in ``static/`` (package data: no build step, no CDN).
The page reads the JSON API with the session cookie (``session``) and follows one
Server-Sent Events stream (``live``) for what changes; several tabs of one browser share a
single stream (static/live.js), so fifty tabs hold one connection, not fifty.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from floorsync.server.auth import READ
from floorsync.server.dashboard import session
from floorsync.server.dashboard.live import LiveHub, StreamsFull
from floorsync.server.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/dashboard/assets"
# The page loads only its own files and talks only to its own origin.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/dashboard/stream", dependencies=READ, response_model=None)
async def stream(request: Request) -> StreamingResponse | JSONResponse:
    """The live panels as Server-Sent Events (``live``): every panel's latest state first,
    then each change. 503 when the process holds ``live.MAX_STREAMS`` or is stopping."""
    hub: LiveHub = request.app.state.live
    try:
        sub = hub.subscribe()
    except StreamsFull as exc:
        return JSONResponse({"type": "about:blank", "title": "unavailable", "status": 503,
                             "detail": str(exc)}, status_code=503,
                            media_type="application/problem+json", headers={"Retry-After": "5"})
    return StreamingResponse(hub.frames(sub), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def install(app: FastAPI, settings: Settings) -> LiveHub:
    """The page at ``/``, its assets, log-in and the live stream, on ``app``; its hub polls
    the store the app's lifespan opens (``app.state.store``)."""
    hub = LiveHub(lambda: app.state.store, settings.online_after_s)
    app.state.live = hub
    app.include_router(router)
    app.include_router(session.router)
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="dashboard-assets")
    return hub


def close(app: object) -> None:
    """End the live streams of ``app`` (if it has a dashboard): before a graceful shutdown,
    which otherwise waits for them forever. Safe from a signal handler."""
    state = getattr(app, "state", None)
    hub = getattr(state, "live", None)
    if isinstance(hub, LiveHub):
        hub.close()
