"""Run the central service under uvicorn (the ``floorsync server`` command calls ``serve``)."""

from __future__ import annotations

import uvicorn

from floorsync.server.app import create_app
from floorsync.server.settings import Settings


def serve(settings: Settings) -> None:
    """Blocks until interrupted; the app's lifespan opens the store and starts ingest."""
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port)
