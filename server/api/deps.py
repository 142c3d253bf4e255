"""Typed dependencies: the app's store, settings and ingest live on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from floorsync.server.errors import BadRequest
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_ingest(request: Request) -> MqttIngest | None:
    ingest: MqttIngest | None = getattr(request.app.state, "ingest", None)
    return ingest


def get_caller(request: Request) -> str | None:
    """Which token made the request: its configured name (a plain token from the older
    configuration goes by its fingerprint, ``sha256:`` + 12 hex), safe to store and show.
    None when auth is off. Set by the route's scope check, which runs before this."""
    name: str | None = getattr(request.state, "token_name", None)
    return name


StoreDep = Annotated[Store, Depends(get_store)]
CallerDep = Annotated[str | None, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IngestDep = Annotated[MqttIngest | None, Depends(get_ingest)]


def parse_cursor(cursor: str | None) -> int | None:
    """Cursors are opaque to clients; inside they are the last ledger id seen."""
    if cursor is None or cursor == "":
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise BadRequest("bad cursor", f"cursor {cursor[:40]!r} was not issued by this service")
    return int(cursor)
