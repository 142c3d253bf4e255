"""Count sessions through the API: a person counts a location, the service keeps counted,
expected and difference per line, and posts the adjustment into the ledger.

Opening a session takes the location's on-hand as *expected*. Lines are counted while it is
open (a location count is the full set: what is not counted was not there). Closing compares
on-hand now with expected: if nothing moved at the location meanwhile, the adjustment
(counted - on-hand) is posted at once. If something moved, the person resolving chooses:
``keep counted`` (on-hand becomes what was counted) or ``keep difference`` (the difference found,
counted - expected, is added to on-hand as it is now, keeping the moves). The adjustment is a
``count`` event of the site's ``api`` device; the count's start becomes the location's latest
count, so events dated before it that arrive later are held (late-after-count).

Counts from the floor (count events of edges) are kept in the same tables, already posted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from floorsync.server import checks
from floorsync.server.errors import BadRequest, Refused
from floorsync.server.ledger import Store, utc_now
from floorsync.server.posting import insert_count, on_hand_at, record_count_time

STATUSES = ("open", "needs_decision", "posted", "cancelled", "late")
KEEP = ("counted", "difference")
MAX_LINES = 10_000

_COLUMNS = (
    "id, site, location, origin, status, counted_at, event_id, started_by, closed_at, closed_by,"
    " decision, decided_at, decided_by, adjustment_event_id"
)


@dataclass(frozen=True, slots=True)
class CountLine:
    item: str
    lot: str | None
    counted: float | None  # None: not counted (yet); at close it counts as 0
    expected: float  # on-hand when the count started
    difference: float | None  # counted - expected
    on_hand_at_close: float | None
    moved: float | None  # on-hand at close - expected: moves during the count
    adjustment: float | None  # what was posted


@dataclass(frozen=True, slots=True)
class Count:
    id: int
    site: str
    location: str
    origin: str  # edge (a count event from the floor) or api (a session)
    status: str
    counted_at: str  # the floor count's time, or the session's start (UTC)
    event_id: str | None
    started_by: str | None
    closed_at: str | None
    closed_by: str | None
    decision: str | None
    decided_at: str | None
    decided_by: str | None
    adjustment_event_id: str | None
    lines: list[CountLine]


@dataclass(frozen=True, slots=True)
class Counted:
    item: str
    qty: float
    lot: str | None = None


def _now() -> str:
    return checks.utc_text(datetime.now(UTC))


def _line(item: str, lot: str, counted: float | None, expected: float,
          at_close: float | None, adjustment: float | None) -> CountLine:
    return CountLine(
        item, lot or None, counted, expected, None if counted is None else counted - expected,
        at_close, None if at_close is None else at_close - expected, adjustment,
    )


def _load(conn: sqlite3.Connection | sqlite3.Cursor, ident: int) -> Count | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM counts WHERE id = ?", (ident,)).fetchone()
    if row is None:
        return None
    lines = [_line(*r) for r in conn.execute(
        "SELECT item, lot, counted, expected, on_hand_at_close, adjustment FROM count_lines"
        " WHERE count_id = ? ORDER BY item, lot", (ident,),
    )]
    return Count(*row, lines)  # type: ignore[call-arg]  # 14 columns + lines


def _open(cur: sqlite3.Cursor, ident: int, *statuses: str) -> Count:
    found = _load(cur, ident)
    if found is None:
        raise Refused(404, "unknown count", f"no count {ident}")
    if found.status not in statuses:
        raise Refused(409, "wrong state", f"count {ident} is {found.status}, not"
                      f" {' or '.join(statuses)}")
    return found


def get_count(store: Store, ident: int) -> Count:
    found = _load(store._reader(), ident)
    if found is None:
        raise Refused(404, "unknown count", f"no count {ident}")
    return found


def list_counts(
    store: Store, *, site: str | None = None, location: str | None = None,
    status: str | None = None, origin: str | None = None, after: int | None = None,
    limit: int = 100,
) -> list[Count]:
    if status is not None and status not in STATUSES:
        raise BadRequest("unknown status", f"status must be one of {', '.join(STATUSES)}")
    where, params = ["id > ?"], list[Any]([after or 0])
    for column, value in (("site", site), ("location", location), ("status", status),
                          ("origin", origin)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = store._query(
        f"SELECT {_COLUMNS} FROM counts WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        [*params, limit])
    lines: dict[int, list[CountLine]] = {r[0]: [] for r in rows}
    if rows:
        for count_id, *line in store._query(
            "SELECT count_id, item, lot, counted, expected, on_hand_at_close, adjustment FROM"
            " count_lines WHERE count_id BETWEEN ? AND ? ORDER BY count_id, item, lot",
            (rows[0][0], rows[-1][0]),
        ):
            if count_id in lines:
                lines[count_id].append(_line(*line))
    return [Count(*r, lines[r[0]]) for r in rows]  # type: ignore[call-arg]


def open_count(store: Store, site: str, location: str, by: str) -> Count:
    """Start counting a location (its code or a label of it): expected is on-hand now."""
    if not by.strip():
        raise BadRequest("who counts", "give 'by': the person counting")
    with store._transaction() as cur:
        code, known = store.caches(cur).location(site, location)
        if not known:
            raise Refused(404, "unknown location",
                          f"{location!r} is not a location of site {site!r} in master data")
        busy = cur.execute("SELECT id FROM counts WHERE site = ? AND location = ? AND status IN"
                           " ('open', 'needs_decision')", (site, code)).fetchone()
        if busy is not None:
            raise Refused(409, "count in progress",
                          f"count {busy[0]} of {code!r} is not finished")
        ident = insert_count(cur, site, code, "api", "open", _now(), by=by)
        cur.executemany(
            "INSERT INTO count_lines (count_id, item, lot, counted, expected) VALUES"
            " (?, ?, ?, NULL, ?)",
            [(ident, item, lot, qty)
             for (item, lot), qty in on_hand_at(cur, site, code).items()],
        )
        found = _load(cur, ident)
    assert found is not None
    return found


def record_lines(store: Store, ident: int, lines: Sequence[Counted], *, add: bool = False
                 ) -> Count:
    """What was counted: sets each line's counted quantity (``add``: adds to it, for counting
    a location in several passes)."""
    if len(lines) > MAX_LINES:
        raise BadRequest("too many lines", f"at most {MAX_LINES} lines per request")
    with store._transaction() as cur:
        _open(cur, ident, "open")
        update = "count_lines.counted + excluded.counted" if add else "excluded.counted"
        cur.executemany(
            "INSERT INTO count_lines (count_id, item, lot, counted, expected)"
            " VALUES (?, ?, ?, ?, 0) ON CONFLICT (count_id, item, lot) DO UPDATE SET"
            f" counted = COALESCE({update}, excluded.counted)",
            [(ident, ln.item, ln.lot or "", ln.qty) for ln in lines],
        )
        found = _load(cur, ident)
    assert found is not None
    return found


def close(store: Store, ident: int, by: str) -> Count:
    """Finish counting: post at once if nothing moved meanwhile, else wait for a decision."""
    with store._transaction() as cur:
        found = _open(cur, ident, "open")
        current = on_hand_at(cur, found.site, found.location)
        counted = {(ln.item, ln.lot or ""): ln for ln in found.lines}
        moved = False
        for key in sorted(counted.keys() | current.keys()):
            line = counted.get(key)
            expected = line.expected if line is not None else 0.0
            now = current.get(key, 0.0)
            moved = moved or abs(now - expected) > checks.TOLERANCE
            cur.execute(
                "INSERT INTO count_lines (count_id, item, lot, counted, expected,"
                " on_hand_at_close) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (count_id, item, lot)"
                " DO UPDATE SET counted = COALESCE(count_lines.counted, 0),"
                " on_hand_at_close = excluded.on_hand_at_close",
                (ident, key[0], key[1], 0.0, expected, now),
            )
        cur.execute("UPDATE counts SET closed_at = ?, closed_by = ?, status = ? WHERE id = ?",
                    (utc_now(), by, "needs_decision" if moved else "open", ident))
        if not moved:
            _post(store, cur, ident, "counted", by, decided=False)
        result = _load(cur, ident)
    assert result is not None
    return result


def decide(store: Store, ident: int, keep: str, by: str) -> Count:
    """Moves happened during the count: keep what was counted, or keep the difference."""
    if keep not in KEEP:
        raise BadRequest("keep what", f"keep must be one of {', '.join(KEEP)}")
    with store._transaction() as cur:
        _open(cur, ident, "needs_decision")
        _post(store, cur, ident, keep, by, decided=True)
        result = _load(cur, ident)
    assert result is not None
    return result


def cancel(store: Store, ident: int, by: str) -> Count:
    with store._transaction() as cur:
        _open(cur, ident, "open", "needs_decision")
        cur.execute("UPDATE counts SET status = 'cancelled', decided_at = ?, decided_by = ?"
                    " WHERE id = ?", (utc_now(), by, ident))
        result = _load(cur, ident)
    assert result is not None
    return result


def _post(store: Store, cur: sqlite3.Cursor, ident: int, keep: str, by: str, *, decided: bool
          ) -> None:
    """Post the count's adjustment, and make it the location's latest count.

    Keep counted: on-hand at close becomes what was counted (moves during the count are
    overruled, moves after the close kept). Keep difference: counted - expected is added, so
    every move since the count started is kept."""
    found = _load(cur, ident)
    assert found is not None
    adjustments: list[tuple[str, str, str, float]] = []
    for line in found.lines:
        key = (line.item, line.lot or "")
        counted = line.counted or 0.0
        # both keep what moved after the close; they differ in what moved during the count
        base = line.on_hand_at_close if keep == "counted" else line.expected
        delta = counted - (base or 0.0)
        cur.execute("UPDATE count_lines SET adjustment = ? WHERE count_id = ? AND item = ?"
                    " AND lot = ?", (delta, ident, *key))
        if abs(delta) > checks.TOLERANCE:
            adjustments.append((line.item, line.lot or "", found.location, delta))
    event_id = None
    if adjustments:
        detail: dict[str, Any] = {"count": ident, "keep": keep}
        event_id = store.post(cur, found.site, adjustments, type="count", operator=by,
                              detail=detail)
    cur.execute(
        "UPDATE counts SET status = 'posted', adjustment_event_id = ?, decision = ?,"
        " decided_at = ?, decided_by = ? WHERE id = ?",
        (event_id, keep if decided else None, utc_now() if decided else None,
         by if decided else None, ident),
    )
    record_count_time(cur, store.caches(cur), found.site, found.location,
                      checks.utc(found.counted_at), ident)
