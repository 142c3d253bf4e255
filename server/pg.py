"""PostgreSQL under the store: the same SQL, the same transactions, shared by several replicas.

The ledger's SQL is written once, in the dialect both engines run (``server/migrations.py``).
What differs is handled here, at the boundary:

- placeholders: ``?`` and ``:name`` become psycopg's ``%s`` and ``%(name)s`` (outside quoted
  text; every literal ``%`` is doubled), and SQLite's ``temp.`` schema ``pg_temp.``, once per
  statement text (cached);
- the schema: ``INTEGER PRIMARY KEY`` becomes an identity column, ``WITHOUT ROWID`` goes, the
  ledger's ``events`` gains the commit-ordered ``rowid`` SQLite gives every table, and the one
  migration SQLite does by rebuilding a table (a new CHECK) is an ALTER here
  (:func:`dialect`); ``julianday`` and the KPI's instant function exist as SQL functions;
- writers: every write transaction first takes one transaction-scoped advisory lock, so the
  replicas sharing a database apply one batch at a time, in commit order, exactly as one
  replica would (the ledger's ids stay commit-ordered; stock, serials and exceptions are
  judged against everything committed before). A replica's in-memory checks
  (``server.checks``) are kept only while no other replica wrote: each write bumps
  ``store_epoch``, and a replica that finds it moved reloads them;
- readers: a psycopg pool, each statement in autocommit (its own snapshot, like SQLite's
  readers beside the WAL writer).

psycopg is imported only when a ``postgresql://`` store is opened: an edge host, or a site on
SQLite, does not need it (extra ``postgresql``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from floorsync.server.errors import StoreError
from floorsync.server.migrations import OFF_BOOKS

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql://", "postgres://")
WRITER_LOCK = 0x466C6F6F72  # pg_advisory_xact_lock key: "Floor"

_TEMP_INDEX = re.compile(r"\bCREATE INDEX IF NOT EXISTS temp\.")
_TEMP = re.compile(r"\btemp\.")
_PARTS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|\?|(?<!:):([A-Za-z_]\w*)|%")


def is_url(database: object) -> bool:
    return str(database).startswith(SCHEMES)


@lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """SQLite's parameter styles as psycopg's, outside quoted text and comments."""

    def one(found: re.Match[str]) -> str:
        text = found.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if found.group(1) is not None:
            return f"%({found.group(1)})s"
        return text.replace("%", "%%")  # quoted text or a comment: psycopg reads % there too

    sql = _PARTS.sub(one, sql)
    sql = _TEMP_INDEX.sub("CREATE INDEX IF NOT EXISTS ", sql)  # an index goes with its table
    sql = _TEMP.sub("pg_temp.", sql)
    return "BEGIN" if sql.strip().upper() == "BEGIN IMMEDIATE" else sql


# --- the schema ---------------------------------------------------------------------------

_IDENTITY = re.compile(r"\bINTEGER PRIMARY KEY\b")
_EVENTS = "CREATE TABLE events (\n"

# 0008 and 0018 rebuild ``exceptions`` to widen a CHECK (SQLite cannot alter one); here it is
# altered (0018's order_lines column and its fill are the same on both).
# 0014 is PostgreSQL's alone (a comment on SQLite): stock pages filled to 90 %, so an upsert is
# a HOT update (the new row version in the old one's page: no index entry, less WAL; at 1M
# stock lines ~2 x fewer WAL bytes a batch). It shapes pages written from then on: an existing
# store's table takes it whole after ``VACUUM FULL stock`` (a table lock, seconds at 1M lines).
_ALTERED = {
    "0014_stock_fillfactor": "ALTER TABLE stock SET (fillfactor = 90)",
    # 0015 is PostgreSQL's alone too: the movements -> events foreign key is dropped there
    # (~9 us of PostgreSQL CPU a movement, ~2x the COPY of a batch's movements); what keeps the
    # ledger whole instead is said at the migration (server/migrations.py).
    "0015_movements_event_key_pg":
        "ALTER TABLE movements DROP CONSTRAINT IF EXISTS movements_event_id_fkey",
    "0008_document_exception_kinds": """
        ALTER TABLE exceptions DROP CONSTRAINT exceptions_kind_check;
        ALTER TABLE exceptions ADD CONSTRAINT exceptions_kind_check CHECK (kind IN (
            'negative_stock', 'unknown_item', 'unknown_location', 'serial_conflict',
            'late_after_count', 'rejected', 'receipt_over', 'receipt_short',
            'receipt_unexpected', 'receipt_unknown', 'order_over', 'order_unexpected',
            'order_unknown'))
    """,
    "0018_order_ship_off_books": """
        ALTER TABLE exceptions DROP CONSTRAINT exceptions_kind_check;
        ALTER TABLE exceptions ADD CONSTRAINT exceptions_kind_check CHECK (kind IN (
            'negative_stock', 'unknown_item', 'unknown_location', 'serial_conflict',
            'late_after_count', 'rejected', 'receipt_over', 'receipt_short',
            'receipt_unexpected', 'receipt_unknown', 'order_over', 'order_unexpected',
            'order_unknown', 'order_ship_off_books'));
    """ + OFF_BOOKS,
}

# SQLite's julianday as the KPIs use it (an ISO 8601 time with its offset; NULL when
# unreadable), and the KPI's fallback for the forms SQLite does not read (PostgreSQL reads
# them): plpgsql bodies hold semicolons, so each is one statement.
FUNCTIONS: tuple[str, ...] = (
    """
    CREATE OR REPLACE FUNCTION julianday(t TEXT) RETURNS DOUBLE PRECISION
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
    BEGIN
        RETURN EXTRACT(EPOCH FROM t::timestamptz) / 86400.0 + 2440587.5;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION floorsync_ms(t TEXT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CAST(ROUND((julianday(t) - 2440587.5) * 86400000.0) AS BIGINT)
    $$
    """,
)

# SQLite's scalar min() and max() of two or three values (aggregates with one argument are
# PostgreSQL's own): LEAST and GREATEST, for whole numbers and for floats.
FUNCTIONS += tuple(
    f"""
    CREATE OR REPLACE FUNCTION {name}({", ".join(f"{v} {kind}" for v in args)}) RETURNS {kind}
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {pick}({", ".join(args)}) $$
    """
    for name, pick in (("min", "LEAST"), ("max", "GREATEST"))
    for kind in ("BIGINT", "DOUBLE PRECISION")
    for args in (("a", "b"), ("a", "b", "c"))
)

# SQLite's SUM of a comparison (0 or 1): how many rows held it; NULL over no rows, as there.
FUNCTIONS += (
    """
    CREATE OR REPLACE FUNCTION floorsync_sum_bool(s BIGINT, b BOOLEAN) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN b IS NULL THEN s ELSE COALESCE(s, 0) + CASE WHEN b THEN 1 ELSE 0 END
        END $$
    """,
    """
    CREATE OR REPLACE AGGREGATE sum(BOOLEAN) (SFUNC = floorsync_sum_bool, STYPE = BIGINT)
    """,
)

STORE_EPOCH = """
    CREATE TABLE IF NOT EXISTS store_epoch (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        n BIGINT NOT NULL);
    INSERT INTO store_epoch (one, n) VALUES (TRUE, 0) ON CONFLICT (one) DO NOTHING;
    ALTER TABLE store_epoch ADD COLUMN IF NOT EXISTS received_at TEXT
"""


def dialect(name: str, sql: str) -> str:
    """A migration's SQL as PostgreSQL runs it."""
    sql = _ALTERED.get(name, sql)
    sql = _IDENTITY.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    sql = sql.replace(") WITHOUT ROWID", ")")
    if _EVENTS in sql:  # SQLite's implicit rowid: the ledger's commit order (server/epcis.py)
        sql = sql.replace(_EVENTS, _EVENTS + "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,\n")
    return sql


# --- connections ----------------------------------------------------------------------------


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the extra is installed in every test run
        raise StoreError(
            "a postgresql:// store needs psycopg: pip install 'floorsync[postgresql]'") from exc
    return psycopg


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (every transaction an explicit BEGIN ... COMMIT), UTC."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        raise StoreError(f"cannot open database {redact(url)}: {first_line(exc)}") from exc
    return conn


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class Cursor:
    """A psycopg cursor taking the ledger's SQL as the sqlite3 cursor does."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        self._cur.execute(translate(sql), params)  # even empty: the query's %% are escapes
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        self._cur.executemany(translate(sql), rows)
        return self

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
                  ) -> None:
        """``rows`` into ``table`` by COPY (``write_row`` formats them in C): no ON CONFLICT,
        so only for rows that cannot conflict. See ``server.posting.insert_rows``."""
        with self._cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._cur.fetchmany(size)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    @property
    def description(self) -> Any:
        return self._cur.description

    def close(self) -> None:
        self._cur.close()


class Connection:
    """A psycopg connection answering ``execute`` as sqlite3's does (for the readers)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        return Cursor(self.raw.cursor()).execute(sql, params)

    def cursor(self) -> Cursor:
        return Cursor(self.raw.cursor())

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self.raw.close()


def migrate(conn: Any, migrations: Sequence[tuple[str, str]]) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction, under the writers'
    lock (two replicas starting at once migrate once)."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                     " (name TEXT PRIMARY KEY, applied_at TEXT)")
        for statement in _split(STORE_EPOCH):
            conn.execute(statement)
        for function in FUNCTIONS:
            conn.execute(function)
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        unknown = sorted(done - {name for name, _ in migrations})
        if unknown:
            raise StoreError(
                f"the database's schema is newer than this floorsync (migrations it does not"
                f" know: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}); run the"
                " floorsync release that migrated it, or a later one")
        for name, sql in migrations:
            if name in done:
                continue
            with conn.transaction():
                for statement in _split(dialect(name, sql)):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (name, applied_at)"
                             " VALUES (%s, now()::text)", (name,))
            applied.append(name)
    return applied


def _split(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
