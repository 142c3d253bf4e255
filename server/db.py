"""Opening SQLite the way the ledger needs it, and bringing its schema up to date.

WAL lets readers run beside the one writer; ``synchronous=FULL`` because an ack promises that the
commit is on disk, not just in the OS cache. ``Database`` holds a file's connections: the store is
made of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from floorsync.server import checks
from floorsync.server.errors import StoreError
from floorsync.server.migrations import FOREIGN_KEYS_OFF, MIGRATIONS

BUSY_TIMEOUT_S = 30.0
WAL_CHECKPOINT_PAGES = 10_000


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: every transaction is an explicit BEGIN ... COMMIT."""
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoint every ~40 MB of WAL instead of ~4 MB: a 500-event batch dirties a page per
        # stock line it touches, so the default checkpointed after nearly every commit (writing
        # those pages twice and syncing the database file each time). ~10 % more movements/s
        # at 1M stock lines (floorsync bench ledger); the WAL is cut back to 64 MB after.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; returns their names."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    unknown = sorted(done - {name for name, _ in MIGRATIONS})
    if unknown:  # a newer floorsync migrated this database: its schema is not ours to write
        raise StoreError(
            f"the database's schema is newer than this floorsync (migrations it does not know:"
            f" {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}); run the floorsync"
            " release that migrated it, or a later one")
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        keys_off = sql.startswith(FOREIGN_KEYS_OFF)
        if keys_off:  # this pragma takes effect only outside a transaction
            conn.execute("PRAGMA foreign_keys=OFF")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                if keys_off and (broken := conn.execute("PRAGMA foreign_key_check").fetchall()):
                    raise StoreError(f"migration {name} breaks foreign keys: {broken[:5]}")
                conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, datetime.now(UTC).isoformat()),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if keys_off:
                conn.execute("PRAGMA foreign_keys=ON")
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    """Split on ';' (our migrations hold no semicolons inside strings or triggers)."""
    return [s.strip() for s in sql.split(";") if s.strip()]


class Database:
    """One database file: one writer connection, guarded by a lock (a second writer starves), and
    the checks' caches it keeps; readers get a connection per thread (WAL lets them read beside
    the writer). Every write is one explicit transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._caches: checks.Caches | None = None  # the writer's; dropped when a write fails
        self._caches_touched = False

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Self:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            try:
                migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"cannot migrate {self.path}: {exc}") from exc
            except BaseException:  # a schema newer than ours, a broken migration
                conn.close()
                raise
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

    def __enter__(self) -> Self:
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
            self._caches_touched = False
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._caches_touched or isinstance(exc, sqlite3.Error):
                    self._caches = None  # may hold what was rolled back
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
            conn = connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    # --- the writer's caches ---------------------------------------------------------------

    def caches(self, cur: sqlite3.Cursor) -> checks.Caches:
        """The writer's caches (loaded in ``cur``'s transaction if dropped); writer lock held.

        A transaction that asked for them and then failed drops them (they may hold what was
        rolled back); one that failed without asking (a refused request) keeps them.
        """
        self._caches_touched = True
        if self._caches is None:
            self._caches = checks.load(cur)
        return self._caches

    def reload_checks(self) -> None:
        """Master data or an open exception changed: the next transaction reloads what the
        checks know. Call it inside the writer's transaction (it is dropped again on rollback)."""
        self._caches = None
