"""Liveness and the numbers behind the demo's summary line."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from floorsync.server.api.deps import IngestDep, StoreDep
from floorsync.server.auth import READ
from floorsync.server.errors import StoreError
from floorsync.server.schemas import Health, Summary

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(store: StoreDep, ingest: IngestDep) -> JSONResponse:
    database: Literal["ok", "error"] = "ok"
    try:
        store.ping()
    except StoreError:
        database = "error"
    mqtt: Literal["connected", "disconnected", "disabled"] = "disabled"
    if ingest is not None:
        mqtt = "connected" if ingest.connected else "disconnected"
    body = Health(status="ok" if database == "ok" else "error", database=database, mqtt=mqtt)
    return JSONResponse(body.model_dump(), status_code=200 if database == "ok" else 503)


@router.get("/summary", response_model=Summary, dependencies=READ)
def summary(store: StoreDep) -> Summary:
    return Summary(**store.summary())
