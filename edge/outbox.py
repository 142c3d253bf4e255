"""The edge outbox: every captured event is on disk before capture returns, and stays until applied.

SQLite in WAL mode through sqlite-utils. States::

    pending --published--> sent --central ack--> acked | rejected
       ^                     |
       +----ack timeout / restart

Captures commit with ``synchronous=FULL`` (the fsync is the promise behind a good-read beep).
State changes commit with ``synchronous=NORMAL``: losing one in a power cut only means a re-send,
which the central service answers "duplicate". Concurrent captures share one fsync (group
commit). One connection, one writer: the sync thread and capture threads take turns on it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from floorsync.edge import wire
from floorsync.edge.errors import OutboxError, OutboxFull

log = logging.getLogger(__name__)

# Bytes per row beyond the payload (id, seq, index entries, columns, page slack): ~204 measured as
# file size over payload bytes after a checkpoint, so the cap bounds the file, not an estimate.
ROW_OVERHEAD = 224
WARN_AT = 0.8
LOGGED_IDS = 100  # event ids one log line names at most (its "events" field counts them all)

migrations = Migrations("floorsync.edge.outbox")


@migrations()
def m001_outbox(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE outbox (
            rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: send order survives purges
            id TEXT NOT NULL UNIQUE,                  -- the event id made here (UUIDv7)
            seq INTEGER NOT NULL UNIQUE,              -- this device's event number
            type TEXT NOT NULL,
            payload TEXT NOT NULL,                    -- the event exactly as it goes on the wire
            bytes INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            created_at REAL NOT NULL,
            sent_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            done_at REAL,
            reason TEXT
        )
        """
    )
    db.execute("CREATE INDEX outbox_state ON outbox (state, rowid)")
    db.execute("CREATE INDEX outbox_done ON outbox (done_at) WHERE done_at IS NOT NULL")
    db.execute("CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO outbox_meta VALUES ('last_seq', 0)")


@migrations()
def m002_floor_state(db: Database) -> None:
    # Workflow context (mode, location, pending items) per scanning device, saved in the same
    # transaction as the events it produces, so a restart resumes exactly where it stopped.
    db.execute("CREATE TABLE contexts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # Floor exceptions seen at the edge (a scan that makes no sense where it comes, unreadable
    # reports) and a bounded sample of raw reads for diagnosis.
    db.execute(
        "CREATE TABLE floor_exceptions (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
        " source TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT)"
    )
    db.execute(
        "CREATE TABLE raw_samples (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
        " source TEXT NOT NULL, sample TEXT NOT NULL)"
    )


@migrations()
def m003_door_holds(db: Database) -> None:
    # A door's hold list (edge.doorholds: a tag that got a movement is not given the same movement
    # again within hold_s), one row per tag, changed in the same transaction as the movements.
    db.execute(
        "CREATE TABLE door_holds (door TEXT NOT NULL, tag TEXT NOT NULL, movement TEXT NOT NULL,"
        " last_t REAL NOT NULL, PRIMARY KEY (door, tag)) WITHOUT ROWID"
    )


@migrations()
def m004_documents(db: Database) -> None:
    # The documents' expected lists (edge.documents): the highest version of each, as received.
    # A withdrawn one keeps its row as a tombstone (payload NULL), so a late copy of an older
    # version is not taken back; ``first_at`` is when the document (any version) first came.
    db.execute(
        "CREATE TABLE documents (kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
        " payload TEXT, received_at REAL NOT NULL, first_at REAL NOT NULL, withdrawn_at REAL,"
        " PRIMARY KEY (kind, id))"
    )
    # What this edge counted against a document, per event and line ('' : not on it), written
    # in the same transaction as the event: the running tallies are sums of these, and an event
    # id kept once (a door pass rebuilt from its journal) is counted once.
    db.execute(
        "CREATE TABLE doc_attributions (event_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " doc_id TEXT NOT NULL, line TEXT NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL,"
        " matched REAL NOT NULL, over REAL NOT NULL, unexpected REAL NOT NULL,"
        " PRIMARY KEY (event_id, line))"
    )
    db.execute("CREATE INDEX doc_attributions_doc ON doc_attributions (kind, doc_id)")


@migrations()
def m005_live_lane(db: Database) -> None:
    # What each event touches (edge.sync's live lane: a scan made after the edge reconnected
    # goes ahead of the backlog only when nothing still pending in the backlog touches the same
    # serial or EPC, the stock it takes, a location it or the backlog counts, or the same
    # document). Indexed with the rowid: "a pending row with this key between two rowids".
    for column, path in LANE_KEYS:
        db.execute(f"ALTER TABLE outbox ADD COLUMN {column} TEXT")
        db.execute(f"UPDATE outbox SET {column} = {path} WHERE state IN ('pending', 'sent')")
        db.execute(f"CREATE INDEX outbox_{column} ON outbox ({column}, rowid)"
                   f" WHERE {column} IS NOT NULL")


# The columns of m005 and, for rows kept before it, their values from the wire text (the same
# as ``touches`` gives for new ones).
LANE_KEYS = (
    ("thing", "COALESCE('epc:' || json_extract(payload, '$.item.epc'),"
              " 'serial:' || json_extract(payload, '$.item.serial'))"),
    ("from_loc", "json_extract(payload, '$.from')"),
    ("to_loc", "json_extract(payload, '$.to')"),
    ("count_loc", "json_extract(payload, '$.count.location')"),
    ("doc", "json_extract(payload, '$.doc.kind') || ':' || json_extract(payload, '$.doc.id')"),
)


def touches(event: wire.Event) -> tuple[str | None, str | None, str | None, str | None,
                                        str | None]:
    """The live-lane keys of an event, in ``LANE_KEYS`` order."""
    item, count, doc = event.item, event.count, event.doc
    thing = None
    if item is not None:
        if item.epc is not None:
            thing = "epc:" + item.epc
        elif item.serial is not None:
            thing = "serial:" + item.serial
    return (thing, event.from_, event.to, count.location if count is not None else None,
            f"{doc.kind}:{doc.id}" if doc is not None else None)


# What was counted against a document in events the central service had not applied yet at a
# moment (?3): not yet acked, or acked after it. Per line and source: matched, over, unexpected.
NOT_APPLIED_BY = (
    "SELECT a.line, a.source, SUM(a.matched), SUM(a.over), SUM(a.unexpected)"
    " FROM doc_attributions a JOIN outbox o ON o.id = a.event_id"
    " WHERE a.kind = ?1 AND a.doc_id = ?2 AND (o.state IN ('pending', 'sent')"
    " OR (o.state = 'acked' AND o.done_at > ?3)) GROUP BY a.line, a.source"
)


@dataclass(frozen=True, slots=True)
class Attribution:
    """An event counted against a document's line (``line`` '': not on the document), kept
    with the event: ``matched`` within what the line had left, ``over`` beyond it,
    ``unexpected`` not on the document; ``outcome`` is the event's ``doc.check``."""

    event_id: str
    kind: str
    doc_id: str
    line: str
    source: str
    outcome: str
    matched: float = 0.0
    over: float = 0.0
    unexpected: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredDocument:
    kind: str
    id: str
    version: int
    payload: str
    received_at: float  # when this version came
    first_at: float  # when the first version came


@dataclass(frozen=True, slots=True)
class HoldChanges:
    """Changes to a door's hold list, kept with the events they go with: (tag, movement, last
    read) to set, tags to forget."""

    door: str
    set: Sequence[tuple[str, str, float]] = ()
    forget: Sequence[str] = ()


KEEP_EXCEPTIONS = 10_000  # newest kept; older ones are dropped (they are diagnostics, not data)
KEEP_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class Pending:
    """An event ready to be sent: its id and its wire text."""

    rowid: int
    id: str
    payload: str


@dataclass(frozen=True, slots=True)
class Settled:
    acked: int
    rejected: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    sent: int
    acked: int
    rejected: int
    bytes: int
    cap_bytes: int
    last_seq: int
    # of acked: recorded centrally, their change held by a count (not applied); counted by
    # read_stats only (it reads every acked row), None from Outbox.stats
    held: int | None = None
    oldest_unsynced_at: float | None = None  # capture time (epoch) of the oldest unconfirmed
    oldest_unsynced_seq: int | None = None

    @property
    def backlog(self) -> int:
        """Events the central service has not yet confirmed."""
        return self.pending + self.sent

    def oldest_unsynced_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest unconfirmed event was captured; None when there is none."""
        if self.oldest_unsynced_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_unsynced_at)


def _counts(conn: sqlite3.Connection, with_held: bool = False
            ) -> tuple[dict[str, int], int | None, tuple[float, int] | None]:
    """(events per state, held among the acked, (created_at, seq) of the oldest unconfirmed).
    The states come from the ``outbox_state`` index alone; held needs every acked row (only
    when asked); the oldest is the lower of two index probes, not a scan."""
    counts: dict[str, int] = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
    held = None
    if with_held:
        (held,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'acked'"
                               " AND reason IS NOT NULL").fetchone()
    oldest: tuple[float, int] | None = None
    best = None
    for state in ("pending", "sent"):
        row = conn.execute("SELECT rowid, created_at, seq FROM outbox WHERE state = ?"
                           " ORDER BY rowid LIMIT 1", (state,)).fetchone()
        if row is not None and (best is None or row[0] < best):
            best, oldest = row[0], (float(row[1]), int(row[2]))
    return counts, held, oldest


def read_stats(path: Path | str, cap_bytes: int) -> OutboxStats:
    """An outbox's figures, read-only, beside a running agent or with none (``edge status``).

    Raises OutboxError when the file is missing or unreadable; writes nothing.
    """
    path = Path(path)
    if not path.exists():
        raise OutboxError(f"no outbox at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout=2000")
            counts, held, oldest = _counts(conn, with_held=True)
            (size,) = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
            (last_seq,) = conn.execute(
                "SELECT value FROM outbox_meta WHERE key = 'last_seq'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read outbox {path}: {exc}") from exc
    return _stats(counts, held, oldest, int(size), cap_bytes, int(last_seq))


def _stats(counts: dict[str, int], held: int | None, oldest: tuple[float, int] | None, size: int,
           cap_bytes: int, last_seq: int) -> OutboxStats:
    return OutboxStats(
        pending=counts.get("pending", 0), sent=counts.get("sent", 0),
        acked=counts.get("acked", 0), rejected=counts.get("rejected", 0), bytes=size,
        cap_bytes=cap_bytes, last_seq=last_seq, held=held,
        oldest_unsynced_at=None if oldest is None else oldest[0],
        oldest_unsynced_seq=None if oldest is None else oldest[1],
    )


class _Capture:
    __slots__ = ("attributions", "context", "done", "error", "events", "holds")

    def __init__(self, events: Sequence[wire.Event], context: tuple[str, str] | None,
                 holds: HoldChanges | None = None,
                 attributions: Sequence[Attribution] = ()) -> None:
        self.events: list[wire.Event] = list(events)
        self.context = context
        self.holds = holds
        self.attributions = attributions
        self.done = False
        self.error: BaseException | None = None


class Outbox:
    """Durable queue of this device's events. Use as a context manager."""

    def __init__(
        self,
        path: Path | str,
        *,
        cap_bytes: int = 256 * 1024 * 1024,
        retention_s: float = 24 * 3600,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.cap_bytes = cap_bytes
        self.retention_s = retention_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self.db = Database(conn)
            migrations.apply(self.db)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        self._lock = threading.Lock()  # the one writer
        self._queue: list[_Capture] = []
        self._queue_lock = threading.Lock()
        self._bytes = self._scalar("SELECT COALESCE(SUM(bytes), 0) FROM outbox")
        self._last_seq = self._scalar("SELECT value FROM outbox_meta WHERE key = 'last_seq'")
        self._warned = False
        self.listeners: list[Callable[[int], None]] = []  # told how many events were kept

    # --- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _scalar(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self.db.conn.execute(sql, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- capture --------------------------------------------------------------------------

    def add(
        self, events: Sequence[wire.Event], *, context: tuple[str, str] | None = None,
        holds: HoldChanges | None = None, attributions: Sequence[Attribution] = (),
    ) -> list[wire.Event]:
        """Keep events durably; returns them numbered. When this returns, they are on disk.

        Each event gets this device's next sequence number. Callers that arrive while another
        commit is in progress are committed together with the next fsync (group commit).
        ``context=(key, text)`` saves a workflow's state in the same transaction (events may
        then be empty); ``holds`` changes a door's hold list in it too, ``attributions`` the
        documents' tallies (``edge.documents``). Raises OutboxFull (nothing kept) when the
        byte cap would be passed.
        """
        capture = _Capture(events, context, holds, attributions)
        with self._queue_lock:
            self._queue.append(capture)
        with self._lock:
            if not capture.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                try:
                    self._commit_group(group)
                except Exception as exc:  # every capture of the group must learn of it
                    error = exc if isinstance(exc, OutboxError) else OutboxError(
                        f"outbox write failed: {exc}"
                    )
                    for other in group:
                        if not other.done:
                            other.error, other.done = error, True
        if capture.error is not None:
            raise capture.error
        for listener in self.listeners:
            listener(len(capture.events))
        return capture.events

    def _commit_group(self, group: list[_Capture]) -> None:
        now = time.time()
        seq = self._last_seq
        rows: list[tuple[object, ...]] = []
        added = 0
        accepted: list[_Capture] = []
        for capture in group:
            numbered: list[wire.Event] = []
            for e in capture.events:
                # positional construction: dataclasses.replace costs 8 us an event
                numbered.append(wire.Event(e.id, seq + len(numbered) + 1, e.time, e.type, e.item,
                                           e.qty, e.from_, e.to, e.operator, e.read, e.count,
                                           e.doc))
            try:
                texts = [wire.encode_event(e) for e in numbered]
                sizes = [len(t.encode()) + ROW_OVERHEAD for t in texts]
            except (TypeError, ValueError) as exc:  # one bad capture does not sink the group
                capture.error, capture.done = OutboxError(f"cannot encode event: {exc}"), True
                continue
            size = sum(sizes)
            if not self._make_room(added + size):
                capture.error = OutboxFull(
                    f"outbox {self.path} is full ({self._bytes + added} of {self.cap_bytes} bytes"
                    f" used by unsynced events); capture refused, nothing was dropped"
                )
                capture.done = True
                continue
            seq += len(numbered)
            capture.events = numbered
            accepted.append(capture)
            added += size
            rows.extend(
                (e.id, e.seq, e.type, t, b, now, *touches(e))
                for e, t, b in zip(numbered, texts, sizes, strict=True)
            )
        contexts = [c.context for c in accepted if c.context is not None]
        holds = [c.holds for c in accepted if c.holds is not None]
        counted = [a for c in accepted for a in c.attributions]
        try:
            if rows or contexts or holds or counted:
                self.db.conn.execute("PRAGMA synchronous=FULL")
                with self.db.atomic():
                    self.db.conn.executemany(
                        "INSERT INTO outbox (id, seq, type, payload, bytes, created_at, thing,"
                        " from_loc, to_loc, count_loc, doc)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    self.db.conn.execute(
                        "UPDATE outbox_meta SET value = ? WHERE key = 'last_seq'", (seq,)
                    )
                    self.db.conn.executemany(
                        "INSERT INTO contexts (key, value) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        contexts,
                    )
                    for h in holds:
                        self.db.conn.executemany(
                            "INSERT OR REPLACE INTO door_holds VALUES (?, ?, ?, ?)",
                            [(h.door, tag, movement, t) for tag, movement, t in h.set])
                        self.db.conn.executemany(
                            "DELETE FROM door_holds WHERE door = ? AND tag = ?",
                            [(h.door, tag) for tag in h.forget])
                    self.db.conn.executemany(  # an event id already counted is not counted again
                        "INSERT OR IGNORE INTO doc_attributions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(a.event_id, a.kind, a.doc_id, a.line, a.source, a.outcome, a.matched,
                          a.over, a.unexpected) for a in counted])
                self._last_seq = seq
                self._bytes += added
        except sqlite3.Error as exc:
            error = OutboxError(f"outbox write failed: {exc}")
            for capture in accepted:
                capture.error = error
        for capture in accepted:
            capture.done = True
        self._check_pressure()

    def _make_room(self, extra: int) -> bool:
        """Room for ``extra`` bytes, made by purging settled rows early if need be.

        Unsynced events are never dropped: without room, the capture is refused.
        """
        if self._bytes + extra <= self.cap_bytes:
            return True
        self._purge_locked(before=time.time() + 1)
        return self._bytes + extra <= self.cap_bytes

    def _check_pressure(self) -> None:
        used = self._bytes / self.cap_bytes if self.cap_bytes else 0.0
        if used >= WARN_AT and not self._warned:
            self._warned = True
            log.warning(
                "outbox %s is %.0f%% full (%d of %d bytes): is the central service reachable?",
                self.path, used * 100, self._bytes, self.cap_bytes,
            )
        elif used < WARN_AT * 0.9:
            self._warned = False

    @property
    def pressure(self) -> float:
        """Fraction of the byte cap in use; at 0.8 the agent warns."""
        return self._bytes / self.cap_bytes if self.cap_bytes else 0.0

    # --- sync -----------------------------------------------------------------------------

    def take(self, limit: int) -> list[Pending]:
        """The oldest pending events, marked sent (the caller is about to publish them)."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT rowid, id, payload FROM outbox WHERE state = 'pending'"
                " ORDER BY rowid LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:  # the oldest pending rows up to the last one taken: exactly these
                self._set_state(
                    "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1"
                    " WHERE state = 'pending' AND rowid <= ?",
                    [(time.time(), rows[-1][0])],
                )
        return [Pending(*r) for r in rows]

    def live_boundary(self) -> int | None:
        """The newest row while events are unconfirmed (a backlog to send), else None: rows
        after it are the live lane's (``take_live``)."""
        with self._lock:
            row = self.db.conn.execute(
                "SELECT 1 FROM outbox WHERE state IN ('pending', 'sent') LIMIT 1").fetchone()
            return None if row is None else self._scalar("SELECT MAX(rowid) FROM outbox")

    def take_live(self, limit: int, after: int) -> list[Pending]:
        """Pending events kept after row ``after``, oldest first, marked sent, stopping at the
        first that must wait for the backlog (rows up to ``after``): one that touches a serial
        or EPC, a document, a location's count, or stock that the backlog has not yet had
        confirmed (pending, or sent and not acked: an ack means committed centrally, so the
        order holds across replicas and lost messages). Sent first, those would be applied in
        an order the floor did not make them: a false serial conflict or negative line,
        backlog movements held as late after a count, a document line's "over" on the wrong
        event. Empty when the backlog is confirmed (``take`` then)."""
        with self._lock:
            conn = self.db.conn
            (head,) = conn.execute("SELECT MIN(rowid) FROM outbox WHERE state IN"
                                   " ('pending', 'sent') AND rowid <= ?", (after,)).fetchone()
            if head is None:
                return []
            rows = conn.execute(
                "SELECT rowid, id, payload, thing, from_loc, to_loc, count_loc, doc FROM outbox"
                " WHERE state = 'pending' AND rowid > ? ORDER BY rowid LIMIT ?", (after, limit),
            ).fetchall()
            taken: list[Pending] = []
            for rowid, event_id, payload, *keys in rows:
                if self._waits_for_backlog(keys, head, after):
                    break
                taken.append(Pending(rowid, event_id, payload))
            if taken:
                self._set_state(
                    "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1"
                    " WHERE state = 'pending' AND rowid > ? AND rowid <= ?",
                    [(time.time(), after, taken[-1].rowid)],
                )
        return taken

    def _waits_for_backlog(self, keys: list[str | None], head: int, after: int) -> bool:
        thing, source, destination, counted, doc = keys
        look: list[tuple[str, str]] = []
        if thing is not None:
            look.append(("thing", thing))
        if source is not None:  # stock the backlog brings there, or counts there
            look += [("to_loc", source), ("count_loc", source)]
        if destination is not None:
            look.append(("count_loc", destination))
        if counted is not None:
            look += [("from_loc", counted), ("to_loc", counted), ("count_loc", counted)]
        if doc is not None:
            look.append(("doc", doc))
        return any(
            self.db.conn.execute(
                f"SELECT 1 FROM outbox WHERE {column} = ? AND rowid BETWEEN ? AND ?"
                " AND state IN ('pending', 'sent') LIMIT 1", (value, head, after),
            ).fetchone() is not None
            for column, value in look
        )

    def has_pending(self) -> bool:
        with self._lock:
            return self.db.conn.execute(
                "SELECT 1 FROM outbox WHERE state = 'pending' LIMIT 1"
            ).fetchone() is not None

    def requeue(self, ids: Iterable[str]) -> int:
        """Sent but unconfirmed events go back to pending (ack timeout, lost connection)."""
        params = [(i,) for i in ids]
        with self._lock:
            return self._set_state(
                "UPDATE outbox SET state = 'pending' WHERE id = ? AND state = 'sent'", params
            )

    def requeue_all_sent(self) -> int:
        """At start: whatever was in flight when the agent stopped is sent again."""
        with self._lock:
            return self._set_state(
                "UPDATE outbox SET state = 'pending' WHERE state = 'sent'", None
            )

    def settle(self, results: Iterable[wire.Result]) -> Settled:
        """Apply the central service's verdicts. 'duplicate' means it already has the event;
        'held' that it recorded it and a count held its change (final, like applied: kept as
        acked with the reason). A status this edge does not know settles nothing: the event is
        sent again after the ack timeout and answered 'duplicate'."""
        now = time.time()
        acked = [(now, r.reason if r.status == "held" else None, r.id)
                 for r in results if r.status in wire.SETTLED_STATUSES]
        rejected = [(now, r.reason, r.id) for r in results if r.status == "rejected"]
        with self._lock:
            self.db.conn.execute("PRAGMA synchronous=NORMAL")
            with self.db.atomic():
                a = self.db.conn.executemany(
                    "UPDATE outbox SET state = 'acked', done_at = ?, reason = ?"
                    " WHERE id = ? AND state IN ('pending', 'sent')",
                    acked,
                ).rowcount
                # one by one (rejections are rare): the log names only the events this ack
                # settled, not those a repeated ack rejects again
                newly = [row for row in rejected if self.db.conn.execute(
                    "UPDATE outbox SET state = 'rejected', done_at = ?, reason = ?"
                    " WHERE id = ? AND state IN ('pending', 'sent')", row).rowcount > 0]
        if newly:
            log.warning(
                "central service rejected %d event(s): %s", len(newly),
                "; ".join(f"{i}: {why}" for _, why, i in newly[:3])
                + (f"; and {len(newly) - 3} more" if len(newly) > 3 else ""),
                extra={"event_ids": [i for _, _, i in newly[:LOGGED_IDS]],
                       "reasons": sorted({str(why) for _, why, _ in newly})[:LOGGED_IDS],
                       "events": len(newly)})
        return Settled(max(a, 0), len(newly))

    def purge(self) -> int:
        """Drop settled events older than the retention; returns how many."""
        with self._lock:
            return self._purge_locked(before=time.time() - self.retention_s)

    def _purge_locked(self, before: float) -> int:
        where = "state IN ('acked', 'rejected') AND done_at < ?"
        freed = self._scalar(f"SELECT COALESCE(SUM(bytes), 0) FROM outbox WHERE {where}", (before,))
        count = self._set_state(f"DELETE FROM outbox WHERE {where}", [(before,)])
        self._bytes -= freed
        return count

    def _set_state(self, sql: str, params: Sequence[Sequence[object]] | None) -> int:
        try:
            self.db.conn.execute("PRAGMA synchronous=NORMAL")
            with self.db.atomic():
                if params is None:
                    return max(self.db.conn.execute(sql).rowcount, 0)
                return max(self.db.conn.executemany(sql, params).rowcount, 0)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox update failed: {exc}") from exc

    # --- inspection -----------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        with self._lock:
            counts, held, oldest = _counts(self.db.conn)
        return _stats(counts, held, oldest, self._bytes, self.cap_bytes, self._last_seq)

    def settled(self) -> bool:
        """Nothing pending or sent: cheap (one index probe), for waiting loops."""
        with self._lock:
            return self.db.conn.execute(
                "SELECT 1 FROM outbox WHERE state IN ('pending', 'sent') LIMIT 1"
            ).fetchone() is None

    def holds(self, ids: Sequence[str]) -> set[str]:
        """Which of these event ids the outbox already has (in any state)."""
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                found.update(r[0] for r in self.db.conn.execute(
                    f"SELECT id FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def door_holds(self, door: str) -> dict[str, tuple[str, float]]:
        """A door's saved hold list: tag -> (movement, last read)."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT tag, movement, last_t FROM door_holds WHERE door = ?", (door,)
            ).fetchall()
        return {tag: (movement, float(t)) for tag, movement, t in rows}

    # --- documents (edge.documents) --------------------------------------------------------

    def keep_document(self, kind: str, doc_id: str, version: int, payload: str
                      ) -> tuple[str, float]:
        """Keep a document's version if it is newer than the one here (or than its tombstone):
        ('kept', first_at), or 'same' (this version is here) or 'older'. Committed with fsync:
        the broker's PUBACK follows."""
        now = time.time()
        with self._lock:
            try:
                self.db.conn.execute("PRAGMA synchronous=FULL")
                with self.db.atomic():
                    row = self.db.conn.execute(
                        "SELECT version, payload IS NOT NULL, first_at FROM documents"
                        " WHERE kind = ? AND id = ?", (kind, doc_id)).fetchone()
                    if row is not None and version <= row[0]:
                        return ("same" if version == row[0] and row[1] else "older"), row[2]
                    first = row[2] if row is not None and row[1] else now
                    self.db.conn.execute(
                        "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (kind, doc_id, version, payload, now, first))
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot keep document {kind} {doc_id}: {exc}") from exc
        return "kept", first

    def withdraw_document(self, kind: str, doc_id: str, forget_before: float) -> bool:
        """A document closed: its expected list and tallies go, its version stays as a tombstone
        (tombstones withdrawn before ``forget_before`` are dropped). False when none was open."""
        now = time.time()
        with self._lock:
            try:
                self.db.conn.execute("PRAGMA synchronous=FULL")
                with self.db.atomic():
                    gone = self.db.conn.execute(
                        "UPDATE documents SET payload = NULL, withdrawn_at = ?"
                        " WHERE kind = ? AND id = ? AND payload IS NOT NULL",
                        (now, kind, doc_id)).rowcount
                    self.db.conn.execute(
                        "DELETE FROM doc_attributions WHERE kind = ? AND doc_id = ?",
                        (kind, doc_id))
                    self.db.conn.execute(
                        "DELETE FROM documents WHERE payload IS NULL AND withdrawn_at < ?",
                        (forget_before,))
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot withdraw document {kind} {doc_id}: {exc}") from exc
        return gone > 0

    def documents(self) -> list[StoredDocument]:
        """The open documents, as received."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT kind, id, version, payload, received_at, first_at FROM documents"
                " WHERE payload IS NOT NULL ORDER BY first_at, kind, id").fetchall()
        return [StoredDocument(*row) for row in rows]

    def attributed(self) -> tuple[list[tuple[str, str, str, float]], dict[str, tuple[str, str]]]:
        """The tallies: (kind, document, line, matched quantity) per line, and the document
        each source counted against last."""
        with self._lock:
            lines = self.db.conn.execute(
                "SELECT kind, doc_id, line, SUM(matched) FROM doc_attributions"
                " WHERE line != '' GROUP BY kind, doc_id, line").fetchall()
            last = self.db.conn.execute(
                "SELECT source, kind, doc_id FROM doc_attributions WHERE rowid IN"
                " (SELECT MAX(rowid) FROM doc_attributions GROUP BY source)").fetchall()
        return ([(k, d, line, float(q)) for k, d, line, q in lines],
                {source: (k, d) for source, k, d in last})

    def not_applied_by(self, kind: str, doc_id: str, moment: float
                       ) -> list[tuple[str, str, float, float, float]]:
        """(line, source, matched, over, unexpected) counted against a document in events the
        central service had not applied at ``moment`` (``NOT_APPLIED_BY``)."""
        with self._lock:
            rows = self.db.conn.execute(NOT_APPLIED_BY, (kind, doc_id, moment)).fetchall()
        return [(line, source, float(m), float(o), float(u)) for line, source, m, o, u in rows]

    def attribution(self, event_id: str) -> list[Attribution]:
        """What one event was counted as, per line (empty: against no document)."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT event_id, kind, doc_id, line, source, outcome, matched, over, unexpected"
                " FROM doc_attributions WHERE event_id = ? ORDER BY rowid", (event_id,)).fetchall()
        return [Attribution(*row) for row in rows]

    def context(self, key: str) -> str | None:
        """A workflow's saved state (see ``add(context=...)``)."""
        with self._lock:
            row = self.db.conn.execute(
                "SELECT value FROM contexts WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def record_exception(self, source: str, reason: str, raw: str | None = None) -> None:
        """A floor exception seen here (kept for diagnosis, the newest KEEP_EXCEPTIONS)."""
        self._diagnostic(
            "INSERT INTO floor_exceptions (at, source, reason, raw) VALUES (?, ?, ?, ?)",
            [(time.time(), source, reason, raw)], "floor_exceptions", KEEP_EXCEPTIONS,
        )

    def record_samples(self, source: str, samples: Sequence[str]) -> None:
        """Raw reads kept for diagnosis (bounded: the newest KEEP_SAMPLES)."""
        now = time.time()
        self._diagnostic(
            "INSERT INTO raw_samples (at, source, sample) VALUES (?, ?, ?)",
            [(now, source, s) for s in samples], "raw_samples", KEEP_SAMPLES,
        )

    def _diagnostic(self, sql: str, rows: list[tuple[object, ...]], table: str, keep: int
                    ) -> None:
        with self._lock:
            try:
                self.db.conn.execute("PRAGMA synchronous=NORMAL")
                with self.db.atomic():
                    self.db.conn.executemany(sql, rows)
                    last = self._scalar(f"SELECT MAX(id) FROM {table}")
                    self.db.conn.execute(f"DELETE FROM {table} WHERE id <= ?", (last - keep,))
            except sqlite3.Error as exc:
                log.warning("could not record %s: %s", table, exc)

    def exceptions(self, limit: int = 100) -> list[tuple[float, str, str, str | None]]:
        """Floor exceptions, newest first: (at, source, reason, raw)."""
        with self._lock:
            return list(self.db.conn.execute(
                "SELECT at, source, reason, raw FROM floor_exceptions ORDER BY id DESC LIMIT ?",
                (limit,),
            ))

    def samples(self, source: str | None = None, limit: int = 100) -> list[str]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT sample FROM raw_samples WHERE ? IS NULL OR source = ?"
                " ORDER BY id DESC LIMIT ?", (source, source, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def rejected(self, limit: int = 100) -> list[tuple[str, str | None]]:
        """Events the central service refused, with its reasons (newest first)."""
        with self._lock:
            return list(
                self.db.conn.execute(
                    "SELECT payload, reason FROM outbox WHERE state = 'rejected'"
                    " ORDER BY rowid DESC LIMIT ?",
                    (limit,),
                )
            )
