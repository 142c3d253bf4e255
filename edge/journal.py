"""The door journal: every tag read is on disk before its reader is told we have it.

A network reader is acknowledged (MQTT PUBACK, HTTP 2xx) only once the reads of its message are
committed here; the door logic (``edge.portal``) gets them after the commit. At start the door
is rebuilt by feeding it what the journal holds, in read-time order: the logic runs on read
timestamps only, so it comes back to the state it had, and passes that were already decided are
not given twice (the door's hold list is saved with its movements in the outbox, and a pass's
event id is made from the pass itself, see ``edge.doorevents.pass_event_id``).

One SQLite file per door (WAL, ``synchronous=FULL`` for reads), written by whichever thread holds
the journal's lock: the reader's thread commits its reads, the door's thread trims. Commits are
grouped by the caller (a reader commits once per batch of messages, or after a few milliseconds);
a torn last write is a WAL transaction that never committed, and SQLite drops it on open.

Per-read rows, trimmed per tag: once the door has processed reads up to its watermark and its
movements are in the outbox, it hands ``trim`` its horizon (no open cycle, unprocessed read or
undecided pass is older) and its live passes (tag -> first read); every row older than the horizon
goes unless it belongs to a live pass. A tag parked in the field keeps its own reads (its pass is
still going); other traffic is trimmed around it.

Bounded: ``cap_bytes`` (rows times a measured per-row size); a warning at 80 %; past the cap a
commit raises ``JournalFull`` and nothing of that batch is kept, so the reader is not acknowledged
and the broker (or the HTTP client) delivers it again later.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from floorsync.devices.base import TagRead
from floorsync.edge.errors import EdgeError

log = logging.getLogger(__name__)

ROW_BYTES = 72  # file bytes per row after a checkpoint (tests/edge/test_journal.py measures it)
WARN_AT = 0.8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

migrations = Migrations("floorsync.edge.journal")


@migrations()
def m001_reads(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE reads (
            id INTEGER PRIMARY KEY,   -- given here, in commit order, never reused while running
            at_us INTEGER NOT NULL,   -- reader time, microseconds since the epoch (UTC)
            epc TEXT,                 -- NULL for a GPI change
            antenna INTEGER,
            rssi REAL,
            seen INTEGER,
            gpi INTEGER,              -- a GPI change: input and state
            state INTEGER
        )
        """
    )


class JournalError(EdgeError):
    """The journal could not keep reads (nothing of that batch was kept)."""


class JournalFull(JournalError):
    """The journal reached its byte cap: reads are refused (and not acknowledged), never evicted."""


@dataclass(frozen=True, slots=True)
class GpiChange:
    """A general-purpose input change as journaled (a photo eye opening a door's cycle)."""

    input: int
    state: bool
    at: datetime


Entry = TagRead | GpiChange


@dataclass(frozen=True, slots=True)
class JournalStats:
    rows: int
    bytes: int
    cap_bytes: int
    oldest: datetime | None


def to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class DoorJournal:
    """One door's journal. Thread-safe; use as a context manager."""

    def __init__(self, path: Path | str, door: str, *, cap_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.door = door
        self.cap_bytes = cap_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._buffer: list[tuple[Entry, tuple[object, ...]]] = []
        self._warned = False
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            migrations.apply(Database(self._conn))
            self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS live (epc TEXT PRIMARY KEY, first_us INTEGER)")
            row = self._conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM reads").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open door journal {self.path}: {exc}") from exc
        self._rows, self._last_id = int(row[0]), int(row[1])
        self.refused = 0  # reads refused (journal full or failing)

    # --- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> DoorJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- writing ----------------------------------------------------------------------------

    def put(self, read: TagRead) -> None:
        """Buffer a read; it is kept by the next ``commit``."""
        # exact: a float timestamp is within 0.24 us of the datetime's microsecond until 2106
        row = (round(read.at.timestamp() * 1e6), read.epc, read.antenna, read.rssi, read.seen,
               None, None)
        with self._lock:
            self._buffer.append((read, row))

    def put_gpi(self, input: int, state: bool, at: datetime) -> None:
        row = (to_us(at), None, None, None, None, input, int(state))
        with self._lock:
            self._buffer.append((GpiChange(input, state, at), row))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def commit(self) -> tuple[list[Entry], int]:
        """Keep what was put, durably: (the entries now on disk, the id of the last one).

        Raises JournalFull or JournalError with nothing of the batch kept (and the buffer
        emptied: the caller does not acknowledge it, so its source sends it again).
        """
        with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return [], self._last_id
            if (self._rows + len(batch)) * ROW_BYTES > self.cap_bytes:
                self.refused += len(batch)
                raise JournalFull(
                    f"door journal {self.path} is full ({self._rows} reads, cap "
                    f"{self.cap_bytes} bytes): {len(batch)} read(s) refused, none acknowledged")
            first = self._last_id + 1
            rows = [(first + i, *row) for i, (_, row) in enumerate(batch)]
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(
                    "INSERT INTO reads (id, at_us, epc, antenna, rssi, seen, gpi, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self.refused += len(batch)
                raise JournalError(f"door journal {self.path}: write failed: {exc}") from exc
            self._last_id += len(batch)
            self._rows += len(batch)
            self._check_pressure()
            return [entry for entry, _ in batch], self._last_id

    def trim(self, upto_id: int, horizon: float, live: Mapping[str, float]) -> int:
        """Forget what the door no longer needs; returns the rows deleted.

        ``upto_id``: the last row the door had been handed when it computed the rest (rows after
        it are kept whatever their time); ``horizon``: epoch seconds, no open cycle, unprocessed
        input or undecided pass is older; ``live``: tags with a pass still going or undecided,
        and that pass's first read (its reads are kept from there).
        """
        if horizon == -math.inf:
            return 0  # the door has processed nothing yet
        horizon_us = int(horizon * 1_000_000) if horizon != math.inf else 2**62
        with self._lock:
            try:
                self._conn.execute("PRAGMA synchronous=NORMAL")  # a lost trim only replays more
                self._conn.execute("BEGIN")
                self._conn.execute("DELETE FROM live")
                if live:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO live VALUES (?, ?)",
                        ((tag, int(first * 1_000_000)) for tag, first in live.items()))
                deleted = self._conn.execute(
                    "DELETE FROM reads WHERE id <= ? AND at_us < ? AND (epc IS NULL OR NOT EXISTS"
                    " (SELECT 1 FROM live WHERE live.epc = reads.epc"
                    " AND reads.at_us >= live.first_us))",
                    (upto_id, horizon_us)).rowcount
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                log.error("door journal %s: trim failed (kept everything): %s", self.path, exc)
                return 0
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")
            self._rows = max(0, self._rows - max(deleted, 0))
            self._check_pressure()
            return deleted

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._conn.execute("ROLLBACK")

    def _check_pressure(self) -> None:
        used = self._rows * ROW_BYTES / self.cap_bytes if self.cap_bytes else 0.0
        if used >= WARN_AT and not self._warned:
            self._warned = True
            log.warning("door journal %s is %.0f%% full (%d reads of a %d-byte cap): a pass that"
                        " never ends (a tag parked in the field) or a door that cannot decide",
                        self.path, used * 100, self._rows, self.cap_bytes)
        elif used < WARN_AT * 0.9:
            self._warned = False

    # --- reading ----------------------------------------------------------------------------

    def entries(self) -> list[tuple[int, Entry]]:
        """Everything kept, in read-time order (ties in commit order): what rebuilds the door."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, at_us, epc, antenna, rssi, seen, gpi, state FROM reads"
                " ORDER BY at_us, id").fetchall()
        out: list[tuple[int, Entry]] = []
        for rid, at_us, epc, antenna, rssi, seen, gpi, state in rows:
            at = from_us(at_us)
            if epc is None:
                out.append((rid, GpiChange(int(gpi), bool(state), at)))
            else:
                out.append((rid, TagRead(self.door, epc, int(antenna), rssi, at, int(seen))))
        return out

    @property
    def depth(self) -> int:
        """Reads kept, from memory (no query, no lock): for metrics scraped while reads flow."""
        return self._rows

    @property
    def depth_bytes(self) -> int:
        return self._rows * ROW_BYTES

    def stats(self) -> JournalStats:
        with self._lock:
            oldest = self._conn.execute("SELECT MIN(at_us) FROM reads").fetchone()[0]
            return JournalStats(self._rows, self._rows * ROW_BYTES, self.cap_bytes,
                                from_us(oldest) if oldest is not None else None)


def journal_path(directory: Path | str, door: str) -> Path:
    """Where a door's journal lives (door names are config names: letters, digits, ``._-``)."""
    return Path(directory) / f"{door}.db"


def read_stats(directory: Path | str, doors: Iterable[str]) -> dict[str, JournalStats | None]:
    """Each door's journal figures, read-only (for ``floorsync edge status``): None if absent."""
    out: dict[str, JournalStats | None] = {}
    for door in doors:
        path = journal_path(directory, door)
        if not path.exists():
            out[door] = None
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows, oldest = conn.execute("SELECT COUNT(*), MIN(at_us) FROM reads").fetchone()
        finally:
            conn.close()
        out[door] = JournalStats(int(rows), int(rows) * ROW_BYTES, 0,
                                 from_us(oldest) if oldest is not None else None)
    return out
