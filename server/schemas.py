"""Pydantic models of the HTTP boundary only; inside, the service passes frozen dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from floorsync.edge import wire  # limits shared with the decoder

if TYPE_CHECKING:
    from fastapi import FastAPI

MovementType = Literal[
    "receive", "putaway", "move", "pick", "pack", "ship", "return", "adjust", "count", "observe"
]


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: Literal["ok", "error"]
    mqtt: Literal["connected", "disconnected", "disabled"]


class Summary(BaseModel):
    events: int = Field(description="events applied (each id once)")
    movements: int = Field(description="ledger rows")
    rejections: int
    devices: int
    stock_lines: int = Field(description="(item, location, lot) lines with non-zero on-hand")
    open_exceptions: int = Field(description="exceptions not yet resolved (/exceptions)")


class StockLine(BaseModel):
    site: str
    item: str = Field(description="the key it is kept under: SKU, else GTIN, else SSCC, else EPC")
    location: str
    lot: str | None
    quantity: float
    sku: str | None = Field(default=None, description="the master-data item of that key")


class StockPage(BaseModel):
    items: list[StockLine]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class Movement(BaseModel):
    id: int
    event_id: str
    site: str
    device: str
    type: str
    item: str
    lot: str | None
    location: str
    qty: float = Field(description="signed change of on-hand at location")
    event_time: str
    received_at: str


class MovementPage(BaseModel):
    items: list[Movement]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class Rejection(BaseModel):
    id: int
    received_at: str
    source: str
    topic: str | None
    site: str | None
    device: str | None
    event_id: str | None
    reason: str
    payload: str = Field(description="what was received, truncated to 64 KiB")


class RejectionPage(BaseModel):
    items: list[Rejection]
    next_cursor: str | None


class Device(BaseModel):
    site: str
    device: str
    last_seen: str | None
    online: bool
    last_seq: int | None
    backlog: int | None = Field(
        description="events the edge had not yet had confirmed, as last reported (kept while"
        " it is offline: a last will carries no fresh figure)")
    events: int
    status_at: str | None = Field(description="the latest presence message's time")
    oldest_unsynced_s: float | None = Field(
        None, description="age in seconds of the oldest of those events, at backlog_at")
    backlog_at: str | None = Field(
        None, description="when the edge measured backlog and oldest_unsynced_s (its clock)")
    topic_mismatches: int = Field(
        0, description="batches this device published on its own topic naming another site or"
        " device in the payload: each rejected (see /rejections), counted here")
    topic_mismatch_at: str | None = Field(
        None, description="when the central service received the last of them")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ResultOut(BaseModel):
    id: str
    status: Literal["applied", "duplicate", "rejected", "held"] = Field(
        description="held: recorded, its change held by a count (late_after_count), answered"
        " only when the batch lists it in ack_statuses; otherwise applied with the reason")
    reason: str | None


class AckOut(BaseModel):
    """The same ack the edge gets on ``floorsync/v1/{site}/{device}/acks``."""

    v: Literal[1]
    device: str
    results: list[ResultOut]


# --- the request body of POST /events, for the OpenAPI document only ---------------------
# wire.decode_batch is the one validator (shared with MQTT); these models only describe it.


class ItemIn(BaseModel):
    gtin: str | None = None
    sku: str | None = None
    lot: str | None = None
    serial: str | None = None
    epc: str | None = None
    sscc: str | None = None


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: Literal["barcode", "rfid", "manual"]


class CountLineIn(BaseModel):
    item: ItemIn
    qty: float = Field(ge=0)


class CountIn(BaseModel):
    location: str
    seen: list[CountLineIn]


class EventIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(description="UUIDv7 made at the edge; the idempotency key")
    seq: int = Field(ge=1)
    time: str = Field(description="ISO 8601 with UTC offset")
    type: MovementType
    item: ItemIn | None = None
    qty: float = Field(0, description="positive; signed only for adjust")
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    operator: str | None = None
    read: ReadIn | None = None
    count: CountIn | None = None


class BatchIn(BaseModel):
    v: Literal[1] = 1
    site: str
    device: str
    sent_at: str
    ack_statuses: list[str] = Field(
        default_factory=list, description="ack statuses beyond applied, duplicate and rejected"
        " that the sender understands: [\"held\"]")
    events: list[EventIn] = Field(max_length=wire.MAX_EVENTS_PER_BATCH)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with ``$defs`` inlined, to embed in ``openapi_extra``."""
    schema = model.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# --- master data: items and locations ------------------------------------------------------

Tracking = Literal["none", "lot", "serial"]
LocationKind = Literal["site", "zone", "aisle", "bin", "virtual"]
_KEY_DOC = "1-64 characters of A-Z a-z 0-9 . _ -"


class ItemFields(BaseModel):
    """An item's fields; PUT replaces them all (an omitted field takes its default)."""

    model_config = ConfigDict(extra="forbid")
    gtins: list[str] = Field(
        default_factory=list, max_length=32,
        description="GTIN-8/12/13/14, check digit verified, stored as GTIN-14; each GTIN"
        " belongs to one item",
    )
    description: str = Field("", max_length=256)
    tracking: Tracking = Field("none", description="whether stock is kept per lot or serial")
    unit: str = Field("EA", min_length=1, max_length=16, description="unit of measure")


class ItemCreate(ItemFields):
    sku: str = Field(min_length=1, max_length=64, description=f"the item's key: {_KEY_DOC}")


class ItemOut(BaseModel):
    sku: str
    gtins: list[str] = Field(description="GTIN-14, in the order given")
    description: str
    tracking: Tracking
    unit: str
    created_at: str
    updated_at: str


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class LocationFields(BaseModel):
    """A location's fields; PUT replaces them all (an omitted field takes its default)."""

    model_config = ConfigDict(extra="forbid")
    kind: LocationKind = Field(
        description="site (the root; code = site name), zone, aisle, bin, or virtual"
        " (receiving, shipping, customer, supplier, lost)"
    )
    parent: str | None = Field(
        None, max_length=64,
        description="code of the location it sits in (same site); null: the site's root."
        " A location sits in one of the same or a higher level, never in itself",
    )
    name: str = Field("", max_length=128)
    barcodes: list[str] = Field(
        default_factory=list, max_length=32,
        description="label texts scanned for it (e.g. LOC:A-01-02), unique per site",
    )
    gln: str | None = Field(None, description="GLN (13 digits, check digit verified)")
    gln_extension: str = Field("", max_length=20, description="GS1 AI 254; needs a GLN")
    sgln: str | None = Field(
        None, description="instead of gln/gln_extension: urn:epc:id:sgln:..., (414)...(254)..."
        " or a GS1 Digital Link; input only",
    )


class LocationCreate(LocationFields):
    site: str = Field(min_length=1, max_length=64, description=_KEY_DOC)
    code: str = Field(min_length=1, max_length=64, description=f"unique per site: {_KEY_DOC}")


class LocationOut(BaseModel):
    site: str
    code: str
    kind: LocationKind
    parent: str | None
    name: str
    barcodes: list[str]
    gln: str | None
    gln_extension: str
    created_at: str
    updated_at: str


class LocationPage(BaseModel):
    items: list[LocationOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class ImportResult(BaseModel):
    created: int = Field(description="rows whose key was new")
    updated: int = Field(description="rows whose key existed (upserted)")


class RowProblem(BaseModel):
    line: int = Field(description="physical line of the CSV file where the row starts (header: 1)")
    reason: str


class ImportProblem(Problem):
    """A rejected import: nothing was written; every bad row is listed (up to 1000)."""

    errors: list[RowProblem]


def problem_content() -> dict[str, Any]:
    """The ``content`` of a problem+json response (``Problem``) in the OpenAPI document."""
    return {"application/problem+json": {"schema": inline_schema(Problem)}}


def amend_operations(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Wrap ``app.openapi`` so that every operation of the document it generates passes through
    ``amend``, which edits it in place: for the responses FastAPI does not know the app sends.
    Wrappers stack, each amending what the one before returned."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    amend(operation)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
