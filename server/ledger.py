"""The store: events applied at most once, an append-only movement ledger, and stock on hand.

This is the apply path: batches (and the service's own postings) into the ledger, exactly once.
The store's connections are ``db.Database`` (one writer per database file, guarded by a lock; a
reader per thread) and its reads ``queries.LedgerQueries``. Every write is one explicit
transaction, and ``apply_batch`` returns only after COMMIT, so its results may be acked.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from floorsync.edge import wire
from floorsync.server import checks, pg
from floorsync.server.posting import API_DEVICE, Line, Pass, Posting, insert_rows
from floorsync.server.queries import LedgerQueries

log = logging.getLogger(__name__)

MAX_PAYLOAD_CHARS = 64 * 1024
LOGGED_IDS = 100  # event ids one log line names at most (its "events" field counts them all)
SOURCES = ("mqtt", "http")


@dataclass(frozen=True, slots=True)
class Incoming:
    """A batch as it arrived: from where, on which topic, and its bytes (kept with rejections)."""

    batch: wire.Batch
    source: str
    topic: str | None = None
    raw: bytes | str | None = None


_INSERT_EVENT = (
    "INSERT INTO events (id, site, device, seq, type, event_time, received_at, source,"
    " item, gtin, sku, lot, serial, epc, sscc, qty, from_location, to_location, operator,"
    " read_kind, read_raw, symbology, tag, antenna, rssi, reads, first_seen, last_seen, detail,"
    " doc_kind, doc_id, doc_check)"
    f" VALUES ({', '.join('?' * 32)})"
    " ON CONFLICT (id) DO NOTHING"
)
_EVENT_COLUMNS = tuple(_INSERT_EVENT[_INSERT_EVENT.index("(") + 1:_INSERT_EVENT.index(")")]
                       .split(", "))
_NO_ITEM = wire.Item()
_NO_READ = wire.SourceRead(kind="")
_NO_DOC = wire.DocRef(kind="", id="")
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
_COUNT_MISMATCH = (
    "INSERT INTO devices (site, device, topic_mismatches, topic_mismatch_at) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (site, device) DO UPDATE SET"
    " topic_mismatches = devices.topic_mismatches + 1,"
    " topic_mismatch_at = excluded.topic_mismatch_at"
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



def _truncate(payload: bytes | str) -> str:
    """A rejected payload as text both engines store: undecodable bytes and NUL (which
    PostgreSQL's text cannot hold) as U+FFFD."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text[:MAX_PAYLOAD_CHARS].replace("\x00", "\ufffd")


def _count_detail(event: wire.Event) -> str | None:
    """A count keeps the full set seen (the movements hold only the differences)."""
    if event.count is None:
        return None
    return json.dumps(wire.event_to_dict(event)["count"], separators=(",", ":"))


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


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What one batch added to the ledger, as the documents (receipts, orders) see it."""

    site: str
    device: str
    received_at: str
    events: tuple[wire.Event, ...]  # the new ones, in batch order (duplicates left out)


# Called inside the batch's transaction, after its stock changed. A document's bookkeeping must
# never keep a movement out of the ledger: each hook runs in a savepoint, and one that raises is
# rolled back to it and logged, while the movements commit.
BatchHook = Callable[[sqlite3.Cursor, AppliedBatch], None]


class ApplyObserver(Protocol):
    """Told after each commit what was applied or rejected (server.metrics counts it). Called
    on the writing thread, outside the transaction; an observer that raises is logged, never
    allowed to turn a committed batch into a failed one."""

    def applied(self, incoming: Sequence[Incoming], results: Sequence[tuple[wire.Result, ...]],
                seconds: float) -> None: ...

    def rejected(self, source: str, site: str | None, device: str | None, events: int
                 ) -> None: ...


class Store(Posting, LedgerQueries):
    """The ledger database; open with ``with Store(path) as store:``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._batch_hooks: list[BatchHook] = []
        self._observers: list[ApplyObserver] = []

    def add_observer(self, observer: ApplyObserver) -> None:
        """Have ``observer`` told about every committed apply and rejection (metrics)."""
        self._observers = [*self._observers, observer]  # copied: writers iterate unlocked

    def remove_observer(self, observer: ApplyObserver) -> None:
        self._observers = [o for o in self._observers if o is not observer]

    def _observe(self, tell: Callable[[ApplyObserver], None]) -> None:
        for observer in self._observers:
            try:
                tell(observer)
            except Exception:
                log.exception("observer %r failed; the write stands", observer)

    def add_batch_hook(self, hook: BatchHook) -> None:
        """Have ``hook`` see every applied batch that added events (receipts, orders)."""
        self._batch_hooks.append(hook)

    def _run_batch_hooks(self, cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
        for hook in self._batch_hooks:
            cur.execute("SAVEPOINT batch_hook")
            try:
                hook(cur, applied)
            except Exception:
                log.exception("batch hook %r failed; the movements stand", hook)
                cur.execute("ROLLBACK TO batch_hook")
            cur.execute("RELEASE batch_hook")

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
        started = time.perf_counter()
        raised: list[Pass] = []
        with self._transaction() as cur:
            caches = self.caches(cur)
            results = [self._apply(cur, one, self._arrivals.next(), caches, raised)
                       for one in incoming]
        for one in incoming:
            if one.batch.invalid:  # after the commit: one line per batch that had some
                _log_rejected(one)
        for run in raised:
            _log_raised(run)
        if self._observers:
            seconds = time.perf_counter() - started
            self._observe(lambda o: o.applied(incoming, results, seconds))
        return results

    def _apply(
        self, cur: sqlite3.Cursor, one: Incoming, now: str, caches: checks.Caches,
        raised: list[Pass],
    ) -> tuple[wire.Result, ...]:
        batch, source, topic, raw = one.batch, one.source, one.topic, one.raw
        results: list[wire.Result] = []
        known = self._known_ids(cur, [e.id for e in batch.events])
        run = Pass(batch.site, batch.device, now, caches)
        new_events: list[tuple[object, ...]] = []
        fresh: list[wire.Event] = []
        for event in batch.events:
            if event.id in known:  # applied before, or earlier in this very batch
                results.append(wire.Result(event.id, "duplicate"))
                continue
            known.add(event.id)
            fresh.append(event)
            it, rd = event.item or _NO_ITEM, event.read or _NO_READ
            doc = event.doc or _NO_DOC
            new_events.append(
                (event.id, batch.site, batch.device, event.seq, event.type, event.time, now,
                 source, it.key(), it.gtin, it.sku, it.lot, it.serial, it.epc, it.sscc,
                 event.qty, event.from_, event.to, event.operator, rd.kind or None, rd.raw,
                 rd.symbology, rd.tag, rd.antenna, rd.rssi, rd.reads, rd.first, rd.last,
                 _count_detail(event), doc.kind or None, doc.id or None, doc.check)
            )
            if event.type == "count":
                lines = self._count(cur, run, event)
            else:
                lines = self._movement_lines(cur, run, event)
            run.stage(event, lines)
            results.append(_result(batch, event.id, run.holds.get(event.id), bool(lines)))
        applied = len(new_events)
        insert_rows(cur, _INSERT_EVENT, "events", _EVENT_COLUMNS, new_events)
        self._finish(cur, run)
        if self._batch_hooks and fresh:
            self._run_batch_hooks(cur, AppliedBatch(batch.site, batch.device, now, tuple(fresh)))
        if batch.invalid:
            text = _truncate(raw) if raw is not None else ""
            self._reject(cur, [(now, source, topic, batch.site, batch.device, bad.id, bad.reason,
                                text) for bad in batch.invalid])
            results.extend(
                wire.Result(bad.id, "rejected", bad.reason) for bad in batch.invalid if bad.id
            )
        last_seq = max((e.seq for e in batch.events), default=None)
        cur.execute(_UPSERT_DEVICE_SEEN, (batch.site, batch.device, now, last_seq, applied))
        if run.raised:
            raised.append(run)
        return tuple(results)

    def post(
        self, cur: sqlite3.Cursor, site: str, lines: Sequence[Line], *, type: str,
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
        run = Pass(site, device, now, self.caches(cur))
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
            json.dumps(detail, separators=(",", ":")), None, None, None,
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
        """Which of these event ids the ledger already holds: one query per 500, not per event.
        PostgreSQL takes them as one array (``= ANY``): a 500-placeholder IN list took twice
        as long there (~8 vs ~4 ms a batch at 20,000 events), mostly parsing and planning."""
        if isinstance(cur, pg.Cursor):
            if not ids:
                return set()
            return {r[0] for r in cur.execute("SELECT id FROM events WHERE id = ANY(?)", (ids,))}
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
        if self._observers:
            self._observe(lambda o: o.rejected(source, site, device, len(event_ids)))

    def record_topic_mismatch(
        self, *, topic: str, site: str, device: str, reason: str, payload: bytes,
        event_ids: Sequence[str] = (),
    ) -> int:
        """A batch whose payload names another site or device than its topic: rejected like
        any bad input, and counted on the topic's device (the broker's ACL vouches for that
        one, not for the payload). Returns that device's count so far."""
        now, text = self._arrivals.next(), _truncate(payload)
        ids: Sequence[str | None] = list(event_ids) or [None]
        with self._transaction() as cur:
            self._reject(cur, [(now, "mqtt", topic, site, device, i, reason, text) for i in ids])
            cur.execute(_COUNT_MISMATCH, (site, device, now))
            (count,) = cur.execute(
                "SELECT topic_mismatches FROM devices WHERE site = ? AND device = ?",
                (site, device)).fetchone()
        if self._observers:
            self._observe(lambda o: o.rejected("mqtt", site, device, len(event_ids)))
        return int(count)

    def update_presence(self, site: str, device: str, status: wire.Status) -> None:
        """The edge's retained presence: online/offline, its last sequence number, and its
        backlog figures when they are newer than those kept. A last will was made when the edge
        connected (older figures, or none from an older edge): the last figures reported stay,
        with the time they were measured, so an outage still shows the backlog."""
        measured = status.measured_at or status.at
        online = status.state == "online"
        with self._transaction() as cur:
            was = cur.execute("SELECT online FROM devices WHERE site = ? AND device = ?",
                              (site, device)).fetchone()
            cur.execute(_UPSERT_PRESENCE, (site, device, online, status.at, status.last_seq))
            if status.backlog is not None:
                self._keep_backlog(cur, site, device, status, measured)
        if was is None or was[0] is None or bool(was[0]) != online:  # committed: say it once
            held = "" if status.backlog is None else f", {status.backlog} event(s) unconfirmed"
            log.log(logging.INFO if online else logging.WARNING, "%s/%s is %s (said at %s%s)",
                    site, device, status.state, status.at, held,
                    extra={"site": site, "device": device, "state": status.state,
                           "backlog": status.backlog})

    @staticmethod
    def _keep_backlog(cur: sqlite3.Cursor, site: str, device: str, status: wire.Status,
                      measured: str) -> None:
        """Backlog figures newer than those kept replace them."""
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


def _log_raised(run: Pass) -> None:
    """Exception records a batch opened (not the occurrences added to open ones): a person has
    something new to decide."""
    log.info(
        "%s/%s: %d exception(s) raised: %s", run.site, run.device, len(run.raised),
        "; ".join(f"{kind} ({event or 'no event'}): {detail}"
                  for kind, event, detail in run.raised[:3])
        + (f"; and {len(run.raised) - 3} more" if len(run.raised) > 3 else ""),
        extra={"site": run.site, "device": run.device, "exceptions": len(run.raised),
               "kinds": sorted({kind for kind, _, _ in run.raised}),
               "event_ids": [e for _, e, _ in run.raised[:LOGGED_IDS] if e]})


def _log_rejected(one: Incoming) -> None:
    """The events of a batch rejected one by one (the rest of the batch applied)."""
    bad = one.batch.invalid
    log.warning(
        "%s/%s: %d event(s) rejected (%s): %s", one.batch.site, one.batch.device, len(bad),
        one.source, "; ".join(f"{b.id or '(no id)'}: {b.reason}" for b in bad[:3])
        + (f"; and {len(bad) - 3} more" if len(bad) > 3 else ""),
        extra={"site": one.batch.site, "device": one.batch.device, "source": one.source,
               "events": len(bad), "event_ids": [b.id for b in bad[:LOGGED_IDS] if b.id],
               "reasons": sorted({b.reason for b in bad})[:LOGGED_IDS]})
