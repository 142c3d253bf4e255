"""Posting a pass of events into the books: the ledger rows each event makes, checked.

A pass is one batch (or one posting the service makes) on its way into the ledger: each event's
lines are staged, then written together: stock (a line driven below zero raises a negative-stock
exception), ledger rows, held rows and where serials are. An event is never refused for what it
says about the warehouse; where master data, a count or a serial's known place disagree, an
exception is raised, and a count from the floor adjusts on-hand as of its time. Everything here
runs in the caller's transaction; the store (``server.ledger``) decides which events are new.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from floorsync.edge import wire
from floorsync.server import checks, pg
from floorsync.server.errors import StoreError

# The device of movements the service itself posts (adjustments, counts): a name the wire
# contract refuses, so no edge can share its sequence numbers.
API_DEVICE = "@central"
# How far ahead of the central service a device's clock may run for a floor count to still see
# its moves as later than the count (see _on_hand_as_of).
CLOCK_AHEAD = timedelta(hours=24)

# (event_id, site, device, type, item, lot, location, qty, event_time, received_at)
_Movement = tuple[str, str, str, str, str, str, str, float, str, str]
_StockKey = tuple[str, str, str]  # item, location, lot (in the site of the batch at hand)
Line = tuple[str, str, str, float]  # item, lot, location, signed qty

_INSERT_MOVEMENT = (
    "INSERT INTO movements (event_id, site, device, type, item, lot, location, qty, event_time,"
    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MOVEMENT_COLUMNS = ("event_id", "site", "device", "type", "item", "lot", "location", "qty",
                     "event_time", "received_at")
_INSERT_HELD = (
    "INSERT INTO held_movements (exception_id, event_id, site, device, type, item, lot, location,"
    " qty, event_time, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EXCEPTION = (
    "INSERT INTO exceptions (kind, raised_at, site, device, event_id, last_event_id, count_id,"
    " held_by_count_id, item, lot, location, serial, quantity, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_COUNT_LINE = (
    "INSERT INTO count_lines (count_id, item, lot, counted, expected, on_hand_at_close,"
    " adjustment) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_ADD_STOCK = (" ON CONFLICT (item, site, location, lot) DO UPDATE"
              " SET quantity = stock.quantity + excluded.quantity")
_UPSERT_STOCK = ("INSERT INTO stock (site, item, location, lot, quantity) VALUES (?, ?, ?, ?, ?)"
                 + _ADD_STOCK)
# PostgreSQL: a pass's stock changes are COPY'd into a temporary table and taken out of it
# by the one upsert, which answers with on-hand after (no look before, as SQLite does). Taken
# out: several passes share a transaction (apply_batches); emptied at commit too, so the
# table never grows (autovacuum leaves temporary tables alone).
_STOCK_DELTA = ("CREATE TEMP TABLE IF NOT EXISTS stock_delta (item TEXT, location TEXT, lot TEXT,"
                " quantity DOUBLE PRECISION) ON COMMIT DELETE ROWS")
_UPSERT_STOCK_DELTA = (
    "WITH delta AS (DELETE FROM stock_delta RETURNING item, location, lot, quantity)"
    " INSERT INTO stock (site, item, location, lot, quantity) SELECT ?, item, location, lot,"
    " quantity FROM delta" + _ADD_STOCK + " RETURNING item, location, lot, quantity")


def insert_rows(cur: sqlite3.Cursor, sql: str, table: str, columns: tuple[str, ...],
                rows: list[Any]) -> None:
    """``rows`` (of ``columns``) into ``table``: SQLite runs ``sql`` a row, in process;
    PostgreSQL gets them by COPY. A pipelined executemany there costs the server a Bind and
    Execute a row, and psycopg ~11 ms of Python a 1000 rows; COPY ~1 ms (psycopg formats rows
    in C), one round trip. COPY knows no ON CONFLICT: callers pass only rows that cannot
    conflict (a batch's new events were looked up under the writers' lock in this
    transaction; were one there after all, the batch fails whole and is sent again)."""
    if isinstance(cur, pg.Cursor):
        if rows:
            cur.copy_rows(table, columns, rows)
    elif table in _LEAN_TABLES and rows:
        _insert_lean(cur, sql, table, columns, rows)
    else:
        cur.executemany(sql, rows)


# SQLite binds every NULL of every row (~0.3 us each; a drained event has 14 of its 32 columns
# NULL): into these tables, whose columns have no defaults (so a column left out is NULL just
# as if bound), a column that is NULL in every row of the call is left out of the INSERT.
_LEAN_TABLES = frozenset({"events"})
_lean_sql: dict[tuple[str, tuple[int, ...]], str] = {}


def _insert_lean(cur: sqlite3.Cursor, sql: str, table: str, columns: tuple[str, ...],
                 rows: list[Any]) -> None:
    """``sql``'s rows with the columns NULL in all of them left out (SQLite only)."""
    height = len(rows)
    keep = tuple(i for i, values in enumerate(zip(*rows, strict=True))
                 if values.count(None) != height)
    if len(keep) == len(columns) or len(keep) < 2:
        cur.executemany(sql, rows)
        return
    lean = _lean_sql.get((sql, keep))
    if lean is None:
        if len(_lean_sql) >= 256:  # so many shapes: start again
            _lean_sql.clear()
        tail = sql[sql.index(")", sql.index(" VALUES (")) + 1:]  # e.g. ON CONFLICT ...
        lean = _lean_sql[(sql, keep)] = (
            f"INSERT INTO {table} ({', '.join(columns[i] for i in keep)})"
            f" VALUES ({', '.join('?' * len(keep))}){tail}")
    cur.executemany(lean, map(itemgetter(*keep), rows))


def movement_deltas(event: wire.Event) -> list[tuple[str, float]]:
    """(location, signed qty) for every event type except count, which needs on-hand."""
    src, dst, qty, kind = event.from_, event.to, event.qty, event.type
    out: list[tuple[str, float]] = []
    if kind in ("receive", "return"):
        out.append((_need(dst), qty))
    elif kind in ("putaway", "move", "pick", "pack"):
        out.append((_need(src), -qty))
        if dst is not None:
            out.append((dst, qty))
    elif kind == "ship":
        out.append((_need(src), -qty))
    elif kind == "adjust":
        out.append((_need(src or dst), qty))
    return out  # observe: a sighting, no stock change


def on_hand_at(cur: sqlite3.Cursor, site: str, location: str) -> dict[tuple[str, str], float]:
    """Non-zero on-hand per (item, lot) at one location, in ``cur``'s transaction."""
    return {
        (item, lot): float(qty)
        for item, lot, qty in cur.execute(
            "SELECT item, lot, quantity FROM stock WHERE site = ? AND location = ?"
            " AND quantity <> 0", (site, location),
        )
    }


def insert_count(
    cur: sqlite3.Cursor, site: str, location: str, origin: str, status: str, counted_at: str, *,
    event_id: str | None = None, by: str | None = None, closed_at: str | None = None,
    adjustment_event_id: str | None = None,
) -> int:
    cur.execute(
        "INSERT INTO counts (site, location, origin, status, counted_at, event_id, started_by,"
        " closed_at, closed_by, adjustment_event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " RETURNING id",
        (site, location, origin, status, counted_at, event_id, by, closed_at,
         by if closed_at else None, adjustment_event_id),
    )
    return int(cur.fetchone()[0])


def record_count_time(
    cur: sqlite3.Cursor, caches: checks.Caches, site: str, location: str, when: datetime,
    count_id: int,
) -> None:
    """The location's latest count is now ``when`` (if it is later than the one known): events
    dated before it are held from then on."""
    latest = caches.counted.get((site, location))
    if latest is not None and latest >= when:
        return
    cur.execute(
        "INSERT INTO location_counts (site, location, counted_at, count_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (site, location) DO UPDATE SET counted_at = excluded.counted_at,"
        " count_id = excluded.count_id", (site, location, checks.utc_text(when), count_id),
    )
    caches.counted[(site, location)] = when
    caches.count_ids[(site, location)] = count_id


def _on_hand_as_of(
    cur: sqlite3.Cursor, run: Pass, location: str, when: datetime
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """(On-hand per (item, lot) at ``location`` at instant ``when``, on-hand now), both with
    this pass's staged changes. As of ``when`` is now less the ledger rows there dated after
    it, so a count that arrives after later moves were applied keeps them. Stored times carry
    their own offsets: the text filter only narrows (no offset is beyond 14 h), the comparison
    is between instants."""
    out = {(item, lot): float(qty) for item, lot, qty in cur.execute(
        "SELECT item, lot, quantity FROM stock WHERE site = ? AND location = ?",
        (run.site, location))}
    for (item, at, lot), qty in run.pending.items():
        if at == location:
            out[(item, lot)] = out.get((item, lot), 0.0) + qty
    now = dict(out)
    # Rows dated after ``when`` arrived after it, unless their device's clock ran ahead: each
    # line's rows are read newest first (the (item, location, lot) index keeps them in ledger
    # order) and the scan stops at those received more than CLOCK_AHEAD before ``when``.
    oldest = checks.utc_text(when - CLOCK_AHEAD)
    later: list[tuple[str, str, float, str]] = []
    for item, lot in out:  # every line ever at the location has a stock row (maybe at zero)
        for row in cur.execute(
            "SELECT item, lot, qty, event_time, received_at FROM movements WHERE item = ?"
            " AND location = ? AND lot = ? AND site = ? AND device <> ? ORDER BY id DESC",
            (item, location, lot, run.site, API_DEVICE),  # a person's corrections fix the
        ):                                                 # books: they stand for any count
            if row[4] < oldest:
                break
            later.append(row[:4])
    staged = [(m[4], m[5], m[7], m[8]) for m in run.movements if m[6] == location]
    for item, lot, qty, at_text in [*later, *staged]:
        if checks.utc(at_text) > when:
            out[(item, lot)] = out.get((item, lot), 0.0) - qty
    return ({key: qty for key, qty in out.items() if abs(qty) > checks.TOLERANCE},
            {key: qty for key, qty in now.items() if abs(qty) > checks.TOLERANCE})


_LINE_LOOKUP = ("SELECT item, location, lot, quantity FROM stock"
                " WHERE item = ? AND site = ? AND location = ? AND lot = ?")


def _on_hand_of(cur: sqlite3.Cursor, site: str, keys: list[_StockKey]
                ) -> dict[_StockKey, float]:
    """On-hand of these (item, location, lot) lines of ``site``; absent lines are left out."""
    found: dict[_StockKey, float] = {}
    for i in range(0, len(keys), 200):
        chunk = keys[i:i + 200]
        # one primary-key probe per line, in one statement: no plan to choose (a join on a
        # VALUES list was fast until statistics made SQLite scan the table for a bloom filter)
        rows = cur.execute(
            " UNION ALL ".join([_LINE_LOOKUP] * len(chunk)),
            [part for item, location, lot in chunk for part in (item, site, location, lot)],
        )
        found.update({(item, loc, lot): float(q) for item, loc, lot, q in rows})
    return found


def _at(location: str | None) -> str:
    return "out of every location (shipped or taken away)" if location is None else (
        f"at {location!r}")


@dataclass(slots=True)
class Pass:
    """One batch (or one posting) on its way into the ledger: what it has staged so far."""

    site: str
    device: str
    now: str
    caches: checks.Caches
    pending: dict[_StockKey, float] = field(default_factory=dict)
    drivers: dict[_StockKey, str] = field(default_factory=dict)  # last event taking from a line
    movements: list[_Movement] = field(default_factory=list)
    held: list[tuple[object, ...]] = field(default_factory=list)
    bumps: dict[int, tuple[int, str]] = field(default_factory=dict)  # exception -> (n, last)
    # (identity, serial) -> (location, event id, event time, site), or None: not known
    serials: dict[tuple[str, str], tuple[str | None, str, str, str] | None] = field(
        default_factory=dict)
    serials_changed: set[tuple[str, str]] = field(default_factory=set)
    # event id -> what a count held of it (the ack says ``held`` with these reasons)
    holds: dict[str, list[str]] = field(default_factory=dict)
    raised: list[tuple[str, str | None, str]] = field(default_factory=list)  # kind, event, why

    def stage(self, event: wire.Event, lines: list[Line]) -> None:
        pending, drivers = self.pending, self.drivers
        for item, lot, location, qty in lines:
            self.movements.append((event.id, self.site, self.device, event.type, item, lot,
                                   location, qty, event.time, self.now))
            key = (item, location, lot)
            pending[key] = pending.get(key, 0.0) + qty
            if qty < 0:
                drivers[key] = event.id


def _need(location: str | None) -> str:
    if location is None:  # wire.event_from_dict guarantees it; this keeps mypy honest
        raise StoreError("movement lacks a location the wire contract requires")
    return location


class Posting:
    """The store's part that stages events into a pass and writes it."""

    def _finish(self, cur: sqlite3.Cursor, run: Pass) -> None:
        """Write what a pass staged: stock (with its checks), ledger rows, held rows, serials."""
        self._flush_stock(cur, run)
        insert_rows(cur, _INSERT_MOVEMENT, "movements", _MOVEMENT_COLUMNS, run.movements)
        if run.held:
            cur.executemany(_INSERT_HELD, run.held)
        if run.bumps:
            cur.executemany(
                "UPDATE exceptions SET occurrences = occurrences + ?, last_event_id = ?"
                " WHERE id = ?", [(n, last, ident) for ident, (n, last) in run.bumps.items()],
            )
        if run.serials_changed:
            cur.executemany(
                "INSERT INTO serial_locations (identity, serial, location, event_id, event_time,"
                " site) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (identity, serial) DO UPDATE SET"
                " location = excluded.location, event_id = excluded.event_id,"
                " event_time = excluded.event_time, site = excluded.site",
                [(*key, *run.serials[key]) for key in run.serials_changed],  # type: ignore[misc]
            )

    def _movement_lines(self, cur: sqlite3.Cursor, run: Pass, event: wire.Event) -> list[Line]:
        """The event's (item, lot, location, qty) lines, checked; lines a count holds are not
        among them (they are held, with a late-after-count exception)."""
        item = event.item
        assert item is not None  # the wire contract gives every non-count event an item
        deltas = movement_deltas(event)
        if not deltas:
            return []  # observe: a sighting, no stock change
        key, lot, caches = _need(item.key()), item.lot or "", run.caches
        if not caches.item_known(item):
            self._unknown(cur, run, "unknown_item", caches.open_items, key, event.id,
                          f"item {key!r} is not in master data", item=key)
        lines: list[Line] = []
        source = destination = None
        when: datetime | None = None
        for text, qty in deltas:
            location, known = caches.location(run.site, text)
            if not known:
                self._unknown(cur, run, "unknown_location", caches.open_locations,
                              (run.site, location), event.id,
                              f"location {location!r} is not in master data for site"
                              f" {run.site!r}", location=location)
            if qty < 0:
                source = location
            else:
                destination = location
            counted = caches.counted.get((run.site, location))
            if counted is not None:
                when = when or checks.utc(event.time)
                if when < counted:
                    holder = caches.count_ids.get((run.site, location))
                    self._hold(cur, run, event, [(key, lot, location, qty)],
                               f"{event.type} dated {event.time} is before the count of"
                               f" {location!r} at {checks.utc_text(counted)} (count {holder}):"
                               " recorded, not applied over the count",
                               held_by=holder, count_id=holder)
                    continue
            lines.append((key, lot, location, qty))
        if item.serial is not None or item.epc is not None:
            # held or not, the thing went where the event says (a count held only its quantity)
            self._track(cur, run, event, item, key, source, destination)
        return lines

    def _count(self, cur: sqlite3.Cursor, run: Pass, event: wire.Event) -> list[Line]:
        """A count from the floor: what was seen at its time, against on-hand at that time
        (expected); the difference is applied to on-hand now, so moves dated after the count
        that were applied before it arrived are kept. Kept as a posted count with counted,
        expected, on-hand when applied and the adjustment per line. A count dated before the
        location's latest count is recorded but held."""
        assert event.count is not None
        caches = run.caches
        location, known = caches.location(run.site, event.count.location)
        if not known:
            self._unknown(cur, run, "unknown_location", caches.open_locations,
                          (run.site, location), event.id,
                          f"location {location!r} is not in master data for site {run.site!r}",
                          location=location)
        counted: dict[tuple[str, str], float] = {}
        for line in event.count.seen:
            key = (_need(line.item.key()), line.item.lot or "")
            counted[key] = counted.get(key, 0.0) + line.qty
            if not caches.item_known(line.item):
                self._unknown(cur, run, "unknown_item", caches.open_items, key[0], event.id,
                              f"item {key[0]!r} is not in master data", item=key[0])
        when = checks.utc(event.time)
        expected, current = _on_hand_as_of(cur, run, location, when)
        latest = caches.counted.get((run.site, location))
        late = latest is not None and when < latest
        count_id = insert_count(
            cur, run.site, location, "edge", "late" if late else "posted", checks.utc_text(when),
            event_id=event.id, by=event.operator, closed_at=run.now,
            adjustment_event_id=None if late else event.id,
        )
        lines: list[Line] = []
        rows = []
        for item, lot in sorted(counted.keys() | expected.keys() | current.keys()):
            seen, before = counted.get((item, lot), 0.0), expected.get((item, lot), 0.0)
            difference = seen - before if abs(seen - before) > checks.TOLERANCE else 0.0
            adjustment = None if late else difference
            rows.append((count_id, item, lot, seen, before, current.get((item, lot), 0.0),
                         adjustment))
            if difference:
                lines.append((item, lot, location, difference))
        cur.executemany(_INSERT_COUNT_LINE, rows)
        if late:
            assert latest is not None
            holder = caches.count_ids.get((run.site, location))
            self._hold(cur, run, event, lines,
                       f"count of {location!r} dated {event.time} is before its latest count at"
                       f" {checks.utc_text(latest)} (count {holder}): recorded, not applied",
                       held_by=holder, count_id=count_id, location=location)
            return []
        record_count_time(cur, caches, run.site, location, when, count_id)
        return lines

    def _hold(
        self, cur: sqlite3.Cursor, run: Pass, event: wire.Event, lines: list[Line],
        detail: str, *, held_by: int | None, count_id: int | None = None,
        location: str | None = None,
    ) -> None:
        """Record what a count holds of ``event`` (``held_by``: that count's id; ``count_id``:
        the count the exception is about: the holding one, or a late floor count itself)."""
        first = lines[0] if len(lines) == 1 else None
        where = first[2] if first else location
        ident = self._raise(
            cur, run, "late_after_count", event.id, detail, count_id=count_id,
            held_by_count_id=held_by,
            item=first[0] if first else None, lot=(first[1] or None) if first else None,
            location=where, quantity=first[3] if first else None,
        )
        run.held.extend(
            (ident, event.id, run.site, run.device, event.type, item, lot, loc, qty, event.time,
             run.now)
            for item, lot, loc, qty in lines
        )
        what = (f"this count of {where!r} is kept as count {count_id}"
                if event.type == "count" else f"its change at {where!r}")
        run.holds.setdefault(event.id, []).append(
            f"{what} is held by count {held_by} (exception {ident}), not applied")

    def _track(
        self, cur: sqlite3.Cursor, run: Pass, event: wire.Event, item: wire.Item, key: str,
        source: str | None, destination: str | None,
    ) -> None:
        """Where a serial (or an EPC) is: taken from, or arriving at, a place other than where
        the ledger has it is a serial-conflict exception. Late events (older than what the
        ledger knows) neither conflict nor move it."""
        ident = (item.gtin or key, item.serial) if item.serial is not None else ("epc", item.epc)
        assert ident[1] is not None
        skey = (ident[0], ident[1])
        if skey not in run.serials:
            row = cur.execute(
                "SELECT location, event_id, event_time, site FROM serial_locations"
                " WHERE identity = ? AND serial = ?", skey,
            ).fetchone()
            run.serials[skey] = None if row is None else (row[0], row[1], row[2], row[3])
        known = run.serials[skey]
        when = checks.utc_text(checks.utc(event.time))
        if known is not None:
            if when < known[2]:
                return
            where = (known[3], known[0])  # (site, location); location None: out of them all
            there = _at(where[1]) + ("" if where[0] == run.site else f" of site {where[0]!r}")
            if source is not None and (run.site, source) != where:
                conflict = f"taken from {source!r} but the ledger has it {there}"
            elif (source is None and destination is not None and where[1] is not None
                  and (run.site, destination) != where):
                conflict = f"arrived at {destination!r} while the ledger has it {there}"
            else:
                conflict = ""
            if conflict:
                label = f"serial {skey[1]!r}" if item.serial is not None else f"EPC {skey[1]!r}"
                self._raise(cur, run, "serial_conflict", event.id,
                            f"{label} of {skey[0]!r}: {conflict} (since event {known[1]})",
                            item=key, lot=item.lot, location=source or destination,
                            serial=skey[1])
        run.serials[skey] = (destination, event.id, when, run.site)
        run.serials_changed.add(skey)

    def _unknown(
        self, cur: sqlite3.Cursor, run: Pass, kind: str, open_: dict[Any, int], key: Any,
        event_id: str, detail: str, **fields: Any,
    ) -> None:
        """One open exception per unknown item or location; later events add occurrences."""
        ident = open_.get(key)
        if ident is None:
            open_[key] = self._raise(cur, run, kind, event_id, detail, **fields)
            return
        bump = run.bumps.get(ident)
        run.bumps[ident] = (1 if bump is None else bump[0] + 1, event_id)

    @staticmethod
    def _raise(
        cur: sqlite3.Cursor, run: Pass, kind: str, event_id: str | None, detail: str, *,
        item: str | None = None, lot: str | None = None, location: str | None = None,
        serial: str | None = None, quantity: float | None = None, count_id: int | None = None,
        held_by_count_id: int | None = None,
    ) -> int:
        cur.execute(_INSERT_EXCEPTION, (kind, run.now, run.site, run.device, event_id, event_id,
                                        count_id, held_by_count_id, item, lot or None, location,
                                        serial, quantity, detail))
        run.raised.append((kind, event_id, detail))
        return int(cur.fetchone()[0])

    def _flush_stock(self, cur: sqlite3.Cursor, run: Pass) -> None:
        """Upsert the staged stock changes; a line driven below zero raises (or adds to) its
        negative-stock exception, and one that recovers clears it."""
        pending = run.pending
        if not pending:
            return
        negative, site = run.caches.open_negative, run.site
        judged = [(key, delta) for key, delta in pending.items()
                  if delta < 0 or (delta > 0 and (site, *key) in negative)]
        if isinstance(cur, pg.Cursor):  # COPY, one upsert answering with on-hand after
            cur.execute(_STOCK_DELTA)
            cur.copy_rows("stock_delta", ("item", "location", "lot", "quantity"),
                          [(*key, delta) for key, delta in pending.items()])
            after = {(item, location, lot): float(quantity)
                     for item, location, lot, quantity in cur.execute(_UPSERT_STOCK_DELTA, (site,))}
            for key, delta in judged:
                self._judge_line(cur, run, key, delta, after[key])
            pending.clear()
            return
        before = _on_hand_of(cur, site, [key for key, _ in judged])  # one look per 200 lines
        # a zero too: every line ever touched has a row (counts look back from it)
        cur.executemany(_UPSERT_STOCK, [(site, *key, delta) for key, delta in pending.items()])
        for key, delta in judged:
            self._judge_line(cur, run, key, delta, before.get(key, 0.0) + delta)
        pending.clear()

    def _judge_line(
        self, cur: sqlite3.Cursor, run: Pass, key: _StockKey, delta: float, on_hand: float
    ) -> None:
        item, location, lot = key
        negative, line = run.caches.open_negative, (run.site, *key)
        ident = negative.get(line)
        if on_hand < -checks.TOLERANCE:
            if ident is None:
                negative[line] = self._raise(
                    cur, run, "negative_stock", run.drivers.get(key),
                    f"on-hand of {item!r}{' lot ' + repr(lot) if lot else ''} at {location!r}"
                    f" went to {on_hand:g}", item=item, lot=lot, location=location,
                    quantity=on_hand,
                )
            else:
                cur.execute(
                    "UPDATE exceptions SET quantity = ?, occurrences = occurrences + ?,"
                    " last_event_id = COALESCE(?, last_event_id) WHERE id = ?",
                    (on_hand, 1 if delta < 0 else 0, run.drivers.get(key), ident),
                )
        elif ident is not None:
            cur.execute(
                "UPDATE exceptions SET status = 'cleared', quantity = ?, resolved_at = ?,"
                " resolved_by = 'floorsync', reason = ? WHERE id = ?",
                (on_hand, run.now, f"on-hand back to {on_hand:g}", ident),
            )
            del negative[line]
