"""The store: events applied at most once, an append-only movement ledger, and stock on hand.

One writer connection per database file, guarded by a lock (a second writer starves); readers get
a connection per thread (WAL lets them read beside the writer). Every write is one explicit
transaction, and ``apply_batch`` returns only after COMMIT, so its results may be acked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from edge import wire
from server import db
from server.errors import StoreError

MAX_PAYLOAD_CHARS = 64 * 1024
SOURCES = ("mqtt", "http")


@dataclass(frozen=True, slots=True)
class Incoming:
    """A batch as it arrived: from where, on which topic, and its bytes (kept with rejections)."""

    batch: wire.Batch
    source: str
    topic: str | None = None
    raw: bytes | str | None = None


@dataclass(frozen=True, slots=True)
class StockRow:
    item: str
    location: str
    lot: str | None
    quantity: float


@dataclass(frozen=True, slots=True)
class MovementRow:
    id: int
    event_id: str
    site: str
    device: str
    type: str
    item: str
    lot: str | None
    location: str
    qty: float
    event_time: str
    received_at: str


@dataclass(frozen=True, slots=True)
class RejectionRow:
    id: int
    received_at: str
    source: str
    topic: str | None
    site: str | None
    device: str | None
    event_id: str | None
    reason: str
    payload: str


@dataclass(frozen=True, slots=True)
class DeviceRow:
    site: str
    device: str
    last_seen: str | None
    last_seq: int | None
    events: int
    online: bool | None
    status_at: str | None
    backlog: int | None


# (event_id, site, device, type, item, lot, location, qty, event_time, received_at)
_Movement = tuple[str, str, str, str, str, str, str, float, str, str]
_StockKey = tuple[str, str, str]  # item, location, lot

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
_UPSERT_STOCK = (
    "INSERT INTO stock (item, location, lot, quantity) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (item, location, lot) DO UPDATE SET quantity = stock.quantity + excluded.quantity"
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
    "INSERT INTO devices (site, device, online, status_at, backlog, last_seq)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (site, device) DO UPDATE SET online = excluded.online,"
    " status_at = excluded.status_at, backlog = excluded.backlog,"
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


def item_location_filter(item: str | None, location: str | None) -> tuple[str, list[str]]:
    """`` AND item = ? AND location = ?`` for the filters given, and their parameters."""
    where, params = "", list[str]()
    if item is not None:
        where, params = where + " AND item = ?", [*params, item]
    if location is not None:
        where, params = where + " AND location = ?", [*params, location]
    return where, params


def _count_detail(event: wire.Event) -> str | None:
    """A count keeps the full set seen (the movements hold only the differences)."""
    if event.count is None:
        return None
    return json.dumps(wire.event_to_dict(event)["count"], separators=(",", ":"))


def _need(location: str | None) -> str:
    if location is None:  # wire.event_from_dict guarantees it; this keeps mypy honest
        raise StoreError("movement lacks a location the wire contract requires")
    return location


class Store:
    """The ledger database; open with ``with Store(path) as store:``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._arrivals = _Arrivals()

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Store:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = db.connect(self.path)
            try:
                db.migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"cannot migrate {self.path}: {exc}") from exc
            self._writer = conn
        return self

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT on the one writer; database failures become StoreError."""
        with self._lock:
            if self._writer is None:
                raise StoreError("store is not open")
            cur = self._writer.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database write failed: {exc}") from exc
                raise
            finally:
                cur.close()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._writer is None:
                raise StoreError("store is not open")
            conn = db.connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

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
            return [self._apply(cur, one, self._arrivals.next()) for one in incoming]

    def _apply(self, cur: sqlite3.Cursor, one: Incoming, now: str) -> tuple[wire.Result, ...]:
        batch, source, topic, raw = one.batch, one.source, one.topic, one.raw
        results: list[wire.Result] = []
        known = self._known_ids(cur, [e.id for e in batch.events])
        pending: dict[_StockKey, float] = {}
        movements: list[_Movement] = []
        new_events: list[tuple[object, ...]] = []
        for event in batch.events:
            if event.id in known:  # applied before, or earlier in this very batch
                results.append(wire.Result(event.id, "duplicate"))
                continue
            known.add(event.id)
            results.append(wire.Result(event.id, "applied"))
            it, rd = event.item or _NO_ITEM, event.read or _NO_READ
            new_events.append(
                (event.id, batch.site, batch.device, event.seq, event.type, event.time, now,
                 source, it.key(), it.gtin, it.sku, it.lot, it.serial, it.epc, it.sscc,
                 event.qty, event.from_, event.to, event.operator, rd.kind or None, rd.raw,
                 rd.symbology, rd.tag, rd.antenna, rd.rssi, rd.reads, rd.first, rd.last,
                 _count_detail(event))
            )
            if event.type == "count":
                self._flush_stock(cur, pending)
                lines = self._count_deltas(cur, event)
            else:
                assert event.item is not None
                item, lot = _need(event.item.key()), event.item.lot or ""
                lines = [(item, lot, loc, qty) for loc, qty in movement_deltas(event)]
            for item, lot, loc, qty in lines:
                movements.append(
                    (event.id, batch.site, batch.device, event.type, item, lot, loc, qty,
                     event.time, now)
                )
                key = (item, loc, lot)
                pending[key] = pending.get(key, 0.0) + qty
        applied = len(new_events)
        cur.executemany(_INSERT_EVENT, new_events)
        self._flush_stock(cur, pending)
        cur.executemany(_INSERT_MOVEMENT, movements)
        if batch.invalid:
            text = _truncate(raw) if raw is not None else ""
            cur.executemany(
                _INSERT_REJECTION,
                [(now, source, topic, batch.site, batch.device, bad.id, bad.reason, text)
                 for bad in batch.invalid],
            )
            results.extend(
                wire.Result(bad.id, "rejected", bad.reason) for bad in batch.invalid if bad.id
            )
        last_seq = max((e.seq for e in batch.events), default=None)
        cur.execute(_UPSERT_DEVICE_SEEN, (batch.site, batch.device, now, last_seq, applied))
        return tuple(results)

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

    @staticmethod
    def _flush_stock(cur: sqlite3.Cursor, pending: dict[_StockKey, float]) -> None:
        if pending:
            cur.executemany(
                _UPSERT_STOCK, [(i, loc, lot, q) for (i, loc, lot), q in pending.items() if q]
            )
            pending.clear()

    @staticmethod
    def _count_deltas(cur: sqlite3.Cursor, event: wire.Event) -> list[tuple[str, str, str, float]]:
        """Set on-hand at the counted location to what was seen: (item, lot, location, delta)."""
        assert event.count is not None
        location = event.count.location
        counted: dict[tuple[str, str], float] = {}
        for line in event.count.seen:
            key = (_need(line.item.key()), line.item.lot or "")
            counted[key] = counted.get(key, 0.0) + line.qty
        on_hand = {
            (item, lot): qty
            for item, lot, qty in cur.execute(
                "SELECT item, lot, quantity FROM stock WHERE location = ?", (location,)
            ).fetchall()
        }
        out = []
        for key in sorted(counted.keys() | on_hand.keys()):
            delta = counted.get(key, 0.0) - on_hand.get(key, 0.0)
            if delta:
                out.append((key[0], key[1], location, delta))
        return out

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
        now, text = utc_now(), _truncate(payload)
        ids: Sequence[str | None] = list(event_ids) or [None]
        with self._transaction() as cur:
            cur.executemany(
                _INSERT_REJECTION,
                [(now, source, topic, site, device, i, reason, text) for i in ids],
            )

    def update_presence(self, site: str, device: str, status: wire.Status) -> None:
        """The edge's retained presence: online/offline, its backlog and last sequence number."""
        with self._transaction() as cur:
            cur.execute(
                _UPSERT_PRESENCE,
                (site, device, status.state == "online", status.at, status.backlog,
                 status.last_seq),
            )

    # --- reads ----------------------------------------------------------------------------

    def ping(self) -> None:
        self._query("SELECT 1")

    def stock(self, item: str | None = None, location: str | None = None) -> list[StockRow]:
        where, params = item_location_filter(item, location)
        rows = self._query(
            "SELECT item, location, lot, quantity FROM stock WHERE quantity <> 0" + where
            + " ORDER BY item, location, lot", params,
        )
        return [StockRow(i, loc, lot or None, float(q)) for i, loc, lot, q in rows]

    def movements(self, after: int | None = None, limit: int = 100) -> list[MovementRow]:
        rows = self._query(
            "SELECT id, event_id, site, device, type, item, lot, location, qty, event_time,"
            " received_at FROM movements WHERE id > ? ORDER BY id LIMIT ?",
            (after or 0, limit),
        )
        return [
            MovementRow(i, ev, s, d, t, item, lot or None, loc, float(q), at, rx)
            for i, ev, s, d, t, item, lot, loc, q, at, rx in rows
        ]

    def rejections(self, after: int | None = None, limit: int = 100) -> list[RejectionRow]:
        rows = self._query(
            "SELECT id, received_at, source, topic, site, device, event_id, reason, payload"
            " FROM rejections WHERE id > ? ORDER BY id LIMIT ?",
            (after or 0, limit),
        )
        return [RejectionRow(*r) for r in rows]

    def devices(self) -> list[DeviceRow]:
        rows = self._query(
            "SELECT site, device, last_seen, last_seq, events, online, status_at, backlog"
            " FROM devices ORDER BY site, device"
        )
        return [
            DeviceRow(s, d, seen, seq, n, None if on is None else bool(on), at, backlog)
            for s, d, seen, seq, n, on, at, backlog in rows
        ]

    def summary(self) -> dict[str, int]:
        (row,) = self._query(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM movements),"
            " (SELECT COUNT(*) FROM rejections), (SELECT COUNT(*) FROM devices),"
            " (SELECT COUNT(*) FROM stock WHERE quantity <> 0)"
        )
        keys = ("events", "movements", "rejections", "devices", "stock_lines")
        return dict(zip(keys, (int(v) for v in row), strict=True))
