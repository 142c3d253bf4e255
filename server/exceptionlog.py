"""The exception log: what the ledger accepted but the warehouse disagrees with, and what ingest
rejected, listed together; and their resolution by a person.

The ledger raises them as it applies (``server.ledger``, ``server.checks``); here they are read,
filtered and resolved. Resolving one either posts an adjustment into the ledger (an ``adjust``
event of the site's ``api`` device, in the same transaction as the resolution) or dismisses it
with a reason; both record who, with which token, and when. A resolved exception stays in the log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from floorsync.server import checks
from floorsync.server.errors import BadRequest, Refused
from floorsync.server.ledger import Store

STATUSES = ("open", "adjusted", "dismissed", "cleared")
ACTIONS = ("adjust", "dismiss")
MAX_LINES = 1000

_COLUMNS = (
    "id, kind, status, raised_at, site, device, event_id, last_event_id, occurrences,"
    " rejection_id, count_id, item, lot, location, serial, quantity, detail, resolved_at,"
    " resolved_by, resolved_token, reason, adjustment_event_id, held_by_count_id"
)


@dataclass(frozen=True, slots=True)
class ExceptionRow:
    id: int
    kind: str
    status: str
    raised_at: str
    site: str | None
    device: str | None
    event_id: str | None  # the event that raised it (for a rejection: the salvaged id, if any)
    last_event_id: str | None  # the latest event that ran into it again
    occurrences: int
    rejection_id: int | None
    count_id: int | None
    item: str | None
    lot: str | None
    location: str | None
    serial: str | None
    quantity: float | None  # negative stock: on-hand now; late: the held quantity
    detail: str
    resolved_at: str | None
    resolved_by: str | None
    resolved_token: str | None
    reason: str | None
    adjustment_event_id: str | None
    held_by_count_id: int | None = None  # late_after_count: the count that held it


@dataclass(frozen=True, slots=True)
class HeldLine:
    """A ledger row a count held back: recorded, not applied to on-hand."""

    event_id: str
    type: str
    item: str
    lot: str | None
    location: str
    qty: float
    event_time: str


@dataclass(frozen=True, slots=True)
class AdjustmentLine:
    item: str
    location: str
    qty: float
    lot: str | None = None


@dataclass(frozen=True, slots=True)
class Filters:
    kind: str | None = None
    status: str | None = None
    site: str | None = None
    device: str | None = None
    item: str | None = None
    location: str | None = None
    serial: str | None = None
    event_id: str | None = None
    since: str | None = None  # raised at or after (UTC ISO 8601)
    until: str | None = None  # raised before


def _row(values: Sequence[Any]) -> ExceptionRow:
    row = list(values)
    row[15] = None if row[15] is None else float(row[15])
    return ExceptionRow(*row)


def list_exceptions(
    store: Store, filters: Filters, after: int | None = None, limit: int = 100
) -> list[ExceptionRow]:
    """Exceptions in the order they were raised, after id ``after``, matching every filter."""
    if filters.kind is not None and filters.kind not in checks.KINDS:
        raise BadRequest("unknown kind", f"kind must be one of {', '.join(checks.KINDS)}")
    if filters.status is not None and filters.status not in STATUSES:
        raise BadRequest("unknown status", f"status must be one of {', '.join(STATUSES)}")
    where, params = ["id > ?"], list[Any]([after or 0])
    for column in ("kind", "status", "site", "device", "item", "location", "serial"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.event_id is not None:
        where.append("(event_id = ? OR last_event_id = ?)")
        params += [filters.event_id, filters.event_id]
    for bound, op in ((filters.since, ">="), (filters.until, "<")):
        if bound is not None:  # raised_at is the ledger's own UTC stamp: text order is time order
            where.append(f"raised_at {op} ?")
            params.append(bound)
    rows = store._query(
        f"SELECT {_COLUMNS} FROM exceptions WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        [*params, limit],
    )
    return [_row(r) for r in rows]


def get_exception(store: Store, ident: int) -> tuple[ExceptionRow, list[HeldLine]]:
    rows = store._query(f"SELECT {_COLUMNS} FROM exceptions WHERE id = ?", (ident,))
    if not rows:
        raise Refused(404, "unknown exception", f"no exception {ident}")
    return _row(rows[0]), _held(store._query, ident)


def _held(query: Any, ident: int) -> list[HeldLine]:
    return [
        HeldLine(ev, t, item, lot or None, loc, float(q), at)
        for ev, t, item, lot, loc, q, at in query(
            "SELECT event_id, type, item, lot, location, qty, event_time FROM held_movements"
            " WHERE exception_id = ? ORDER BY id", (ident,),
        )
    ]


def counts_by(store: Store) -> dict[str, dict[str, int]]:
    """Per kind, how many exceptions are in each status."""
    out: dict[str, dict[str, int]] = {k: dict.fromkeys(STATUSES, 0) for k in checks.KINDS}
    for kind, status, n in store._query(
        "SELECT kind, status, COUNT(*) FROM exceptions GROUP BY kind, status"
    ):
        out[kind][status] = int(n)
    return out


def resolve(
    store: Store,
    ident: int,
    *,
    action: str,
    by: str,
    reason: str | None = None,
    lines: Sequence[AdjustmentLine] | None = None,
    site: str | None = None,
    token: str | None = None,
) -> tuple[ExceptionRow, list[HeldLine]]:
    """Adjust (post ``lines``, or the exception's own remedy) or dismiss, recording who and when.

    The remedy when no lines are given: a negative line is brought back to zero; movements a
    count held are posted as they were. Other kinds, and a late count (its rows would set
    on-hand back to what the older count saw), need the lines said. ``site`` is where the
    adjustment is posted when the exception has none (a rejected batch).
    """
    if action not in ACTIONS:
        raise BadRequest("unknown action", f"action must be one of {', '.join(ACTIONS)}")
    if not by.strip():
        raise BadRequest("who resolves", "give 'by': the person resolving it")
    if action == "dismiss" and not (reason and reason.strip()):
        raise BadRequest("reason needed", "a dismissal needs a reason")
    if lines is not None and len(lines) > MAX_LINES:
        raise BadRequest("too many lines", f"at most {MAX_LINES} adjustment lines")
    with store._transaction() as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM exceptions WHERE id = ?", (ident,)).fetchone()
        if row is None:
            raise Refused(404, "unknown exception", f"no exception {ident}")
        found = _row(row)
        if found.status != "open":
            raise Refused(409, "already resolved",
                          f"exception {ident} is {found.status} ({found.resolved_at})")
        adjustment: str | None = None
        if action == "adjust":
            posting = _posting(cur, found, lines)
            if found.site is not None and site is not None and site != found.site:
                raise BadRequest("wrong site", f"exception {ident} is of site {found.site!r}")
            where = found.site or site
            if where is None:
                raise BadRequest("site needed", f"exception {ident} names no site; give 'site'")
            adjustment = store.post(
                cur, where, posting, type="adjust", operator=by,
                detail={"exception": ident, "kind": found.kind, "reason": reason},
            )
        cur.execute(
            "UPDATE exceptions SET status = ?, resolved_at = ?, resolved_by = ?,"
            " resolved_token = ?, reason = ?, adjustment_event_id = ? WHERE id = ?",
            ("adjusted" if action == "adjust" else "dismissed",
             checks.utc_text(datetime.now(UTC)), by, token, reason, adjustment, ident),
        )
        store.caches(cur).forget(ident)  # its line or label raises a new record from now on
        return _row(cur.execute(f"SELECT {_COLUMNS} FROM exceptions WHERE id = ?",
                                (ident,)).fetchone()), _held(cur.execute, ident)


def _posting(
    cur: sqlite3.Cursor, found: ExceptionRow, lines: Sequence[AdjustmentLine] | None
) -> list[tuple[str, str, str, float]]:
    if lines is not None:
        posting = [(ln.item, ln.lot or "", ln.location, ln.qty) for ln in lines if ln.qty]
        if not posting:
            raise BadRequest("nothing to post", "every adjustment line has qty 0")
        return posting
    if found.kind == "negative_stock":
        assert found.item is not None and found.location is not None
        row = cur.execute(
            "SELECT quantity FROM stock WHERE item = ? AND site = ? AND location = ? AND lot = ?",
            (found.item, found.site, found.location, found.lot or ""),
        ).fetchone()
        on_hand = float(row[0]) if row else 0.0
        if on_hand >= 0:
            raise Refused(409, "not negative now",
                          f"on-hand is {on_hand:g}; dismiss it, or give lines")
        return [(found.item, found.lot or "", found.location, -on_hand)]
    if found.kind == "late_after_count" and (
            found.count_id is None or found.count_id == found.held_by_count_id):
        # a held event (its exception names the count that held it); a late floor count
        # names itself and has no default remedy
        held = _held(cur.execute, found.id)
        if held:
            return [(h.item, h.lot or "", h.location, h.qty) for h in held]
        raise Refused(409, "nothing held", "the count held nothing; dismiss it, or give lines")
    raise BadRequest("lines needed",
                     f"a {found.kind} exception has no default adjustment; give 'lines'")
