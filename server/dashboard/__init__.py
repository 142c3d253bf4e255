"""The live dashboard, served by the central service itself at ``/``.

Plain HTML, CSS and JavaScript modules in ``static/`` (package data: no build step, no CDN).
The page reads the JSON API with the session cookie (``session``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from floorsync.server.dashboard import session
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


def install(app: FastAPI, settings: Settings) -> None:
    """The page at ``/``, its assets and log-in, on ``app``."""
    app.include_router(router)
    app.include_router(session.router)
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="dashboard-assets")
