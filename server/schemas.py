"""Pydantic models of the HTTP boundary only; inside, the service passes frozen dataclasses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge import wire  # limits shared with the decoder

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


class StockLine(BaseModel):
    item: str
    location: str
    lot: str | None
    quantity: float


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
    backlog: int | None
    events: int
    status_at: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ResultOut(BaseModel):
    id: str
    status: Literal["applied", "duplicate", "rejected"]
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
