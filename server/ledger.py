"""The store: events applied at most once, an append-only movement ledger, and stock on hand.

This is the apply path: batches (and the service's own postings) into the ledger, exactly once.
The store's connections are ``db.Database`` (one writer per database file, guarded by a lock; a
reader per thread) and its reads ``queries.LedgerQueries``. Every write is one explicit
transaction, and ``apply_batch`` returns only after COMMIT, so its results may be acked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from floorsync.edge import wire
from floorsync.server import checks
from floorsync.server.errors import StoreError
from floorsync.server.queries import LedgerQueries

MAX_PAYLOAD_CHARS = 64 * 1024
SOURCES = ("mqtt", "http")
# The device of movements the service itself posts (adjustments, counts): a name the wire
# contract refuses, so no edge can share its sequence numbers.
API_DEVICE = "@central"
# How far ahead of the central service a device's clock may run for a floor count to still see
# its moves as later than the count (see _on_hand_as_of).
CLOCK_AHEAD = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A batch as it arrived: from where, on which topic, and its bytes (kept with rejections)."""

    batch: wire.Batch
    source: str
    topic: str | None = None
    raw: bytes | str | None = None



# (event_id, site, device, type, item, lot, location, qty, event_time, received_at)
_Movement = tuple[str, str, str, str, str, str, str, float, str, str]
_StockKey = tuple[str, str, str]  # item, location, lot (in the site of the batch at hand)
_Line = tuple[str, str, str, float]  # item, lot, location, signed qty

_INSERT_EVENT = (
    "INSERT INTO events (id, site, device, seq, type, event_time, received_at, source,"
    " item, gtin, sku, lot, serial, epc, sscc, qty, from_location, to_location, operator,"
    " read_kind, read_raw, symbology, tag, antenna, rssi, reads, first_seen, last_seen, detail)"
    f" VALUES ({', '.join('?' * 29)})"
    " ON CONFLICT (id) DO NOTHING"
)
_NO_ITEM = wire.Item()
_NO_READ = wire.SourceRead(kind="")
_INSERT_MOVEMENT = (
    "INSERT INTO movements (event_id, site, device, type, item, lot, location, qty, event_time,"
    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
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
_UPSERT_STOCK = (
    "INSERT INTO stock (site, item, location, lot, quantity) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (item, site, location, lot) DO UPDATE"
    " SET quantity = stock.quantity + excluded.quantity"
)
_INSERT_REJECTION = (
    "INSERT INTO rejections (received_at, source, topic, site, device, event_id, reason, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_DEVICE_SEEN = (
    "INSERT INTO devices (site, device, last_seen, last_seq, events) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (site, device) DO UPDATE SET last_seen = excluded.last_seen,"
    " last_seq = CASE WHEN devices.last_seq IS NULL OR excluded.last_seq > devices.last_seq"
    " THEN excluded.last_seq ELSE devices.last_seq END,"
    " events = devices.events + excluded.events"
)
_UPSERT_PRESENCE = (
    "INSERT INTO devices (site, device, online, status_at, last_seq) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (site, device) DO UPDATE SET online = excluded.online,"
    " status_at = excluded.status_at,"
    " last_seq = CASE WHEN devices.last_seq IS NULL OR excluded.last_seq > devices.last_seq"
    " THEN excluded.last_seq ELSE devices.last_seq END"
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Arrivals:
    """Received-at stamps, microseconds and strictly increasing: each batch its own, so arrival
    order (late events, gaps) can be told even for batches received in the same millisecond."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            now = datetime.now(UTC)
            if now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
        return now.isoformat(timespec="microseconds")


def _truncate(payload: bytes | str) -> str:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text[:MAX_PAYLOAD_CHARS]


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




def _count_detail(event: wire.Event) -> str | None:
    """A count keeps the full set seen (the movements hold only the differences)."""
    if event.count is None:
        return None
    return json.dumps(wire.event_to_dict(event)["count"], separators=(",", ":"))


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
    cur: sqlite3.Cursor, run: _Pass, location: str, when: datetime
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
class _Pass:
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

    def stage(self, event: wire.Event, lines: list[_Line]) -> None:
        pending, drivers = self.pending, self.drivers
        for item, lot, location, qty in lines:
            self.movements.append((event.id, self.site, self.device, event.type, item, lot,
                                   location, qty, event.time, self.now))
            key = (item, location, lot)
            pending[key] = pending.get(key, 0.0) + qty
            if qty < 0:
                drivers[key] = event.id


def _result(batch: wire.Batch, event_id: str, holds: list[str] | None, applied_some: bool
            ) -> wire.Result:
    """``applied``, or ``held`` when a count held the event's change (or part of it: its other
    locations applied). A sender that does not list ``held`` in its batch's ``ack_statuses``
    (an older edge: it would drop the whole ack) hears ``applied`` with the same reason."""
    if not holds:
        return wire.Result(event_id, "applied")
    reason = "late_after_count: " + "; ".join(holds) + (
        "; the rest applied" if applied_some else "")
    return wire.Result(event_id, "held" if batch.understands("held") else "applied", reason)


def _need(location: str | None) -> str:
    if location is None:  # wire.event_from_dict guarantees it; this keeps mypy honest
        raise StoreError("movement lacks a location the wire contract requires")
    return location


class Store(LedgerQueries):
    """The ledger database; open with ``with Store(path) as store:``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._arrivals = _Arrivals()

    # --- writes ---------------------------------------------------------------------------

    def apply_batch(
        self,
        batch: wire.Batch,
        *,
        source: str,
        topic: str | None = None,
        raw: bytes | str | None = None,
    ) -> tuple[wire.Result, ...]:
        """Apply every new event of ``batch`` in one transaction; duplicates change nothing.

        Invalid events are recorded as rejections (``raw``, when given, is kept with them).
        """
        return self.apply_batches([Incoming(batch, source, topic, raw)])[0]

    def apply_batches(self, incoming: Sequence[Incoming]) -> list[tuple[wire.Result, ...]]:
        """Several batches in one transaction (one fsync), each judged as if alone, in order."""
        for one in incoming:
            if one.source not in SOURCES:
                raise ValueError(f"source must be one of {SOURCES}")
        with self._transaction() as cur:
            caches = self.caches(cur)
            return [self._apply(cur, one, self._arrivals.next(), caches) for one in incoming]


    def _apply(
        self, cur: sqlite3.Cursor, one: Incoming, now: str, caches: checks.Caches
    ) -> tuple[wire.Result, ...]:
        batch, source, topic, raw = one.batch, one.source, one.topic, one.raw
        results: list[wire.Result] = []
        known = self._known_ids(cur, [e.id for e in batch.events])
        run = _Pass(batch.site, batch.device, now, caches)
        new_events: list[tuple[object, ...]] = []
        for event in batch.events:
            if event.id in known:  # applied before, or earlier in this very batch
                results.append(wire.Result(event.id, "duplicate"))
                continue
            known.add(event.id)
            it, rd = event.item or _NO_ITEM, event.read or _NO_READ
            new_events.append(
                (event.id, batch.site, batch.device, event.seq, event.type, event.time, now,
                 source, it.key(), it.gtin, it.sku, it.lot, it.serial, it.epc, it.sscc,
                 event.qty, event.from_, event.to, event.operator, rd.kind or None, rd.raw,
                 rd.symbology, rd.tag, rd.antenna, rd.rssi, rd.reads, rd.first, rd.last,
                 _count_detail(event))
            )
            if event.type == "count":
                lines = self._count(cur, run, event)
            else:
                lines = self._movement_lines(cur, run, event)
            run.stage(event, lines)
            results.append(_result(batch, event.id, run.holds.get(event.id), bool(lines)))
        applied = len(new_events)
        cur.executemany(_INSERT_EVENT, new_events)
        self._finish(cur, run)
        if batch.invalid:
            text = _truncate(raw) if raw is not None else ""
            self._reject(cur, [(now, source, topic, batch.site, batch.device, bad.id, bad.reason,
                                text) for bad in batch.invalid])
            results.extend(
                wire.Result(bad.id, "rejected", bad.reason) for bad in batch.invalid if bad.id
            )
        last_seq = max((e.seq for e in batch.events), default=None)
        cur.execute(_UPSERT_DEVICE_SEEN, (batch.site, batch.device, now, last_seq, applied))
        return tuple(results)

    def _finish(self, cur: sqlite3.Cursor, run: _Pass) -> None:
        """Write what a pass staged: stock (with its checks), ledger rows, held rows, serials."""
        self._flush_stock(cur, run)
        cur.executemany(_INSERT_MOVEMENT, run.movements)
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

    def _movement_lines(self, cur: sqlite3.Cursor, run: _Pass, event: wire.Event) -> list[_Line]:
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
        lines: list[_Line] = []
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

    def _count(self, cur: sqlite3.Cursor, run: _Pass, event: wire.Event) -> list[_Line]:
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
        lines: list[_Line] = []
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
        self, cur: sqlite3.Cursor, run: _Pass, event: wire.Event, lines: list[_Line],
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
        self, cur: sqlite3.Cursor, run: _Pass, event: wire.Event, item: wire.Item, key: str,
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
        self, cur: sqlite3.Cursor, run: _Pass, kind: str, open_: dict[Any, int], key: Any,
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
        cur: sqlite3.Cursor, run: _Pass, kind: str, event_id: str | None, detail: str, *,
        item: str | None = None, lot: str | None = None, location: str | None = None,
        serial: str | None = None, quantity: float | None = None, count_id: int | None = None,
        held_by_count_id: int | None = None,
    ) -> int:
        cur.execute(_INSERT_EXCEPTION, (kind, run.now, run.site, run.device, event_id, event_id,
                                        count_id, held_by_count_id, item, lot or None, location,
                                        serial, quantity, detail))
        return int(cur.fetchone()[0])

    def _flush_stock(self, cur: sqlite3.Cursor, run: _Pass) -> None:
        """Upsert the staged stock changes; a line driven below zero raises (or adds to) its
        negative-stock exception, and one that recovers clears it."""
        pending = run.pending
        if not pending:
            return
        negative, site = run.caches.open_negative, run.site
        judged = [(key, delta) for key, delta in pending.items()
                  if delta < 0 or (delta > 0 and (site, *key) in negative)]
        before = _on_hand_of(cur, site, [key for key, _ in judged])  # one look per 200 lines
        # a zero too: every line ever touched has a row (counts look back from it)
        cur.executemany(_UPSERT_STOCK, [(site, *key, delta) for key, delta in pending.items()])
        for key, delta in judged:
            self._judge_line(cur, run, key, delta, before.get(key, 0.0) + delta)
        pending.clear()

    def _judge_line(
        self, cur: sqlite3.Cursor, run: _Pass, key: _StockKey, delta: float, on_hand: float
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

    def post(
        self, cur: sqlite3.Cursor, site: str, lines: Sequence[_Line], *, type: str,
        operator: str, detail: dict[str, Any], device: str = API_DEVICE,
    ) -> str:
        """Put a movement the service makes (an adjustment a person decided, a count session's
        result) into the ledger, in the caller's transaction; returns its event id.

        It is an event of ``site``/``device`` (next seq) with one ledger row per line; stock is
        checked for negative lines, master data and counts are not (a person decided it).
        """
        if not lines:
            raise ValueError("nothing to post")
        now = self._arrivals.next()
        run = _Pass(site, device, now, self.caches(cur))
        event_id = wire.new_event_id()
        (seq,) = cur.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE site = ? AND device = ?",
            (site, device),
        ).fetchone()
        items = {line[0] for line in lines}
        lots = {line[1] for line in lines}
        one_item = next(iter(items)) if len(items) == 1 else None
        one_lot = next(iter(lots)) if len(lots) == 1 else None
        cur.execute(_INSERT_EVENT, (
            event_id, site, device, seq, type, now, now, "http", one_item, None, None,
            one_lot or None, None, None, None, sum(q for *_, q in lines), None, None, operator,
            None, None, None, None, None, None, None, None, None,
            json.dumps(detail, separators=(",", ":")),
        ))
        event = wire.Event(event_id, seq, now, type, None, 0.0, operator=operator)
        run.stage(event, list(lines))
        self._finish(cur, run)
        cur.execute(_UPSERT_DEVICE_SEEN, (site, device, now, seq, 1))
        return event_id

    def _reject(self, cur: sqlite3.Cursor, rows: list[tuple[object, ...]]) -> None:
        """Rejection rows, each listed as a ``rejected`` exception beside the others."""
        (before,) = cur.execute("SELECT COALESCE(MAX(id), 0) FROM rejections").fetchone()
        cur.executemany(_INSERT_REJECTION, rows)
        cur.execute(
            "INSERT INTO exceptions (kind, raised_at, site, device, event_id, last_event_id,"
            " rejection_id, detail) SELECT 'rejected', received_at, site, device, event_id,"
            " event_id, id, reason FROM rejections WHERE id > ? ORDER BY id", (before,),
        )

    @staticmethod
    def _known_ids(cur: sqlite3.Cursor, ids: list[str]) -> set[str]:
        """Which of these event ids the ledger already holds: one query per 500, not per event."""
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            known.update(r[0] for r in cur.execute(
                f"SELECT id FROM events WHERE id IN ({marks})", chunk))
        return known

    def record_rejection(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        topic: str | None = None,
        site: str | None = None,
        device: str | None = None,
        event_ids: Sequence[str] = (),
    ) -> None:
        """Keep input we could not use, with why: one row per salvaged id, or one without."""
        now, text = self._arrivals.next(), _truncate(payload)
        ids: Sequence[str | None] = list(event_ids) or [None]
        with self._transaction() as cur:
            self._reject(cur, [(now, source, topic, site, device, i, reason, text) for i in ids])

    def update_presence(self, site: str, device: str, status: wire.Status) -> None:
        """The edge's retained presence: online/offline, its last sequence number, and its
        backlog figures when they are newer than those kept. A last will was made when the edge
        connected (older figures, or none from an older edge): the last figures reported stay,
        with the time they were measured, so an outage still shows the backlog."""
        measured = status.measured_at or status.at
        with self._transaction() as cur:
            cur.execute(_UPSERT_PRESENCE, (site, device, status.state == "online", status.at,
                                           status.last_seq))
            if status.backlog is None:
                return
            (kept,) = cur.execute("SELECT backlog_at FROM devices WHERE site = ? AND device = ?",
                                  (site, device)).fetchone()
            try:
                newer = kept is None or checks.utc(measured) >= checks.utc(kept)
            except ValueError:
                newer = True  # a stored time that does not parse is no reason to keep it
            if newer:
                cur.execute(
                    "UPDATE devices SET backlog = ?, oldest_unsynced_s = ?, backlog_at = ?"
                    " WHERE site = ? AND device = ?",
                    (status.backlog, status.oldest_unsynced_s, measured, site, device),
                )
