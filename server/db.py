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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from floorsync.server import checks, pg
from floorsync.server.errors import StoreError, Unstorable
from floorsync.server.migrations import FOREIGN_KEYS_OFF, MIGRATIONS

BUSY_TIMEOUT_S = 30.0
PG_READERS = 8  # connections in a postgresql:// store's reader pool
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


class Arrivals:
    """Received-at stamps, microseconds and strictly increasing: each batch its own, so arrival
    order (late events, gaps) can be told even for batches received in the same millisecond.
    Replicas sharing a PostgreSQL store keep them increasing across hosts (``not_before``, with
    what the last writer stamped, under the writers' lock)."""

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

    @property
    def last(self) -> str | None:
        with self._lock:
            return None if self._last.year == 1 else self._last.isoformat(timespec="microseconds")

    def not_before(self, stamp: str) -> None:
        """Stamp after ``stamp`` from now on (another replica's, from a clock ahead of ours)."""
        moment = datetime.fromisoformat(stamp)
        with self._lock:
            self._last = max(self._last, moment)


class Database:
    """One database: one writer connection, guarded by a lock (a second writer starves), and
    the checks' caches it keeps; readers get a connection per thread (WAL lets them read beside
    the writer). Every write is one explicit transaction.

    ``path`` is a SQLite file, or a ``postgresql://`` URL (``server.pg``): the same SQL and the
    same transactions there, with a pool for the readers and a lock shared by the replicas."""

    def __init__(self, path: Path | str) -> None:
        self.url = str(path) if pg.is_url(path) else None
        self.path = Path(path) if self.url is None else Path()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()
        self._writer: Any = None  # sqlite3.Connection, or pg.Connection
        self._pool: Any = None  # psycopg_pool.ConnectionPool of a postgresql:// store
        self._epoch = -1  # store_epoch as of our caches (PostgreSQL: other replicas write)
        self._caches: checks.Caches | None = None  # the writer's; dropped when a write fails
        self._caches_touched = False
        self._arrivals = Arrivals()

    @property
    def engine(self) -> str:
        return "postgresql" if self.url is not None else "sqlite"

    @property
    def database(self) -> Path | str:
        """What the store was opened on: its file, or its URL (to open it again)."""
        return self.path if self.url is None else self.url

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the engine raises, for a reader's ``except`` (a write's become StoreError)."""
        return _errors(self.engine)

    @property
    def name(self) -> str:
        """The database, for messages: a file, or the URL without its password."""
        return str(self.path) if self.url is None else pg.redact(self.url)

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Self:
        if self._writer is None:
            if self.url is not None:
                self._open_pg(self.url)
                return self
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

    def _open_pg(self, url: str) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        conn = pg.connect(url)
        try:
            pg.migrate(conn, MIGRATIONS)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot migrate {self.name}: {pg.first_line(exc)}") from exc
        except BaseException:
            conn.close()
            raise
        self._writer = pg.Connection(conn)
        self._pool = ConnectionPool(
            url, min_size=1, max_size=PG_READERS, open=False, name="floorsync-readers",
            kwargs={"autocommit": True, "options": "-c TimeZone=UTC"})
        try:
            self._pool.open(wait=True, timeout=10)
        except PoolTimeout as exc:
            self.close()
            raise StoreError(f"cannot open readers on {self.name}: {exc}") from exc

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
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
            errors = _errors(self.engine)
            try:
                cur.execute("BEGIN IMMEDIATE")
                if self.url is not None:
                    self._pg_writer_turn(cur)
                yield cur
                if self.url is not None:
                    (self._epoch,) = cur.execute(
                        "UPDATE store_epoch SET n = n + 1, received_at = COALESCE(?, received_at)"
                        " RETURNING n",
                        (self._arrivals.last,)).fetchone()
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._caches_touched or isinstance(exc, errors):
                    self._caches = None  # may hold what was rolled back
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                if isinstance(exc, errors):
                    raise failure(exc, "write") from exc
                raise
            finally:
                cur.close()

    def _pg_writer_turn(self, cur: Any) -> None:
        """Wait for the other replicas' write to commit; forget our checks if one did, and
        stamp what we receive after what they received (their clocks may be ahead of ours)."""
        cur.execute("SELECT pg_advisory_xact_lock(?)", (pg.WRITER_LOCK,))
        epoch, received_at = cur.execute("SELECT n, received_at FROM store_epoch").fetchone()
        if epoch != self._epoch:
            self._caches = None
            if received_at is not None:
                self._arrivals.not_before(received_at)

    def _reader(self) -> sqlite3.Connection:
        conn: Any = getattr(self._local, "conn", None)
        if conn is None:
            if self._writer is None:
                raise StoreError("store is not open")
            if self.url is not None:
                conn = pg.Connection(pg.connect(self.url))
            else:
                conn = connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._pool is not None:
            try:
                with self._pool.connection() as raw:
                    return pg.Connection(raw).execute(sql, params).fetchall()
            except _errors("postgresql") as exc:
                raise failure(exc, "read") from exc
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


def _errors(engine: str) -> tuple[type[BaseException], ...]:
    """The database errors of ``engine``, which become StoreError at the store's boundary."""
    if engine == "sqlite":
        return (sqlite3.Error,)
    import psycopg
    from psycopg_pool import PoolTimeout

    return (psycopg.Error, PoolTimeout)


UNTRANSLATABLE = "22P05"  # PostgreSQL's untranslatable_character: \u0000 in json text


def failure(exc: BaseException, doing: str) -> StoreError | Unstorable:
    """An engine's error as ours: a value the database refuses for what it is (a NUL in text)
    is the request's fault (``Unstorable``, 422); anything else failed the database
    (``StoreError``, 503). psycopg refuses a str holding NUL itself, before sending it, with
    ``psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")`` (no
    sqlstate; also from COPY and executemany); the server refuses ``\\u0000`` in json text
    with 22P05. The HTTP boundary refuses NUL first (server/nulguard.py): this is for a path
    it missed."""
    if not isinstance(exc, sqlite3.Error):
        if getattr(exc, "sqlstate", None) == UNTRANSLATABLE:
            return Unstorable(f"a value the database cannot store as text: {_message(exc)}")
        if "cannot contain NUL" in str(exc):
            return Unstorable("a text value holds a NUL character (U+0000), which the"
                              " database cannot store")
    return StoreError(f"database {doing} failed: {_message(exc)}")


def _message(exc: BaseException) -> str:
    return pg.first_line(exc) if not isinstance(exc, sqlite3.Error) else str(exc)
