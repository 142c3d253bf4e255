"""Who did what through the API: one row per change a person or system asked for, with the name
of the token that asked (never the token), queryable by time, actor and action.

Recorded: exception resolutions, count sessions (open, close, decide, cancel), master data
(item and location creates, edits, imports, a site's virtual locations), receipt closes and order
cancels. The row is written by the route right after the change committed, in its own
transaction: a change refused (4xx) leaves no row; a crash between the change's commit and the
row's loses the row, not the change (the changed record keeps its own ``by``/``*_at`` fields).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from floorsync.server import checks
from floorsync.server.ledger import Store

ACTIONS = (
    "exception.resolve",
    "count.open", "count.close", "count.decide", "count.cancel",
    "item.create", "item.update", "item.import",
    "location.create", "location.update", "location.import", "location.virtual",
    "receipt.close", "order.cancel",
)
NO_TOKEN = "(auth off)"  # the actor when the API is served without tokens


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: str
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


def record(store: Store, actor: str | None, action: str, subject: str,
           detail: Mapping[str, Any] | None = None) -> None:
    """One row, in its own transaction."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    text = json.dumps(dict(detail or {}), separators=(",", ":"), default=str)
    with store._transaction() as cur:
        cur.execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (checks.utc_text(datetime.now(UTC)), actor or NO_TOKEN, action, subject, text))


def query(store: Store, *, since: str | None = None, actor: str | None = None,
          action: str | None = None, after: int | None = None, limit: int = 100
          ) -> list[AuditRow]:
    """Rows in the order recorded, after id ``after``; ``since`` is a UTC text stamp."""
    where, params = ["id > ?"], list[Any]([after or 0])
    for column, value in (("actor", actor), ("action", action)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:  # ``at`` is the service's own UTC stamp: text order is time order
        where.append("at >= ?")
        params.append(since)
    rows = store._query(
        "SELECT id, at, actor, action, subject, detail FROM audit"
        f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", [*params, limit])
    return [AuditRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
