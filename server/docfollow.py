"""The documents as committed, whoever committed them, published by one process at a time.

``server.docpublish.DocumentPublisher`` sends the floor's copies of open documents; this module
gives it what to send and the right to send it:

- **Follower**: the committed state of the open documents (receipts, orders). It reads the
  store's commit counter (SQLite ``PRAGMA data_version`` on the publisher thread's own
  connection: it moves with every commit of any other connection, this process's writer
  included; PostgreSQL ``store_epoch``, bumped by every write transaction of every replica: the
  counter the dashboard's poller reads). When it moved, one indexed read of the open documents'
  ``(id, site, version)`` says which are new or changed (a receipt's version moves when it
  closes; an order's with every change of its lines or reservations: ``orders.touch``) and which
  are no longer open; only those are read whole. So what a central replica applied from NATS,
  or another HTTP service committed, reaches the floor within one poll, and nothing depends on
  an in-process listener having heard it. Measured with 10,000 open orders: a commit that
  changed no document costs one such read, ~14 ms on SQLite and ~25 ms on PostgreSQL, at most
  once a poll; an unmoved counter ~0.04 ms.
- **Leads**: at most one publisher per database. PostgreSQL: a session advisory lock
  (``pg_try_advisory_lock``) on a connection of the lead's own, released by PostgreSQL when the
  holder's session ends: a process that exits or is killed releases it at once; a host that
  vanishes, once the server's TCP keepalives (``tcp_keepalives_*`` and ``tcp_user_timeout`` set
  on that session: about 10 s) give up. A standby tries every ``docpublish.LEAD_RETRY_S``.
  SQLite: an ``flock`` on a file beside the database (one host; released when the process
  dies). One lock per database, whatever broker address each publisher names (replicas may
  name different nodes of one NATS cluster): every publisher of a database must publish to the
  same broker (cluster).
- **publisher()**: the HTTP service's (``server/app.py``) and **for_replica()**: a central
  replica's (``server/replica.py``), which needs FLOORSYNC_BROKER set explicitly (the central
  service's MQTT settings: broker, protocol, login, TLS) and otherwise says once that it does not
  publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from floorsync.edge import expected as floor
from floorsync.server import orders, pg
from floorsync.server.docpublish import POLL_S, DocumentPublisher, Lead
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from floorsync.server.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]  # site, kind, id
# kind -> its table: both have id, site, status ('open' while on the floor) and version
TABLES = {"receipt": "receipts", "order": "orders"}
LOCK_KEY = (0x466C6F6F, 0x72446F63)  # pg_try_advisory_lock(int4, int4): "Floo", "rDoc"
# the lead's session: the server drops it (and the lock) ~10 s after the holder's host dies
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
               " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000",
}


def commit_counter(store: Store) -> int:
    """A number that moves whenever any writer commits (``server.dashboard.feed.version``'s
    counter). On SQLite it is per connection: read it from one thread."""
    if store.engine == "postgresql":
        return int(store._query("SELECT n FROM store_epoch")[0][0])
    return int(store._query("PRAGMA data_version")[0][0])


class Follower:
    """The open documents of ``store`` as committed; used on the publisher's thread only."""

    kinds = frozenset(TABLES)

    def __init__(self, store: Store) -> None:
        self._store = store
        self._book = book_of(store)
        self._counter: int | None = None  # as of the last read; None: nothing known
        self._open: dict[tuple[str, str], tuple[str, int]] = {}  # (kind, id) -> (site, version)
        self.scans = 0  # reads of the open documents' versions (the counter had moved)

    def everything(self) -> list[floor.Expected]:
        counter = commit_counter(self._store)  # before: a commit after it is seen next time
        docs = self._book.open_expected() + orders.expected(self._store)
        self._open = {(d.kind, d.id): (d.site, d.version) for d in docs}
        self._counter = counter
        return docs

    def changes(self) -> list[tuple[_Key, floor.Expected | None]]:
        if self._counter is None:
            return []
        counter = commit_counter(self._store)
        if counter == self._counter:
            return []
        self.scans += 1
        now: dict[tuple[str, str], tuple[str, int]] = {}
        for kind, table in TABLES.items():
            for ident, site, version in self._store._query(
                    f"SELECT id, site, version FROM {table} WHERE status = 'open'"):
                now[(kind, str(ident))] = (str(site), int(version))
        out: list[tuple[_Key, floor.Expected | None]] = []
        for (kind, ident), (_site, version) in list(now.items()):  # entries change below
            known = self._open.get((kind, ident))
            if known is not None and known[1] == version:
                continue
            doc = self._render(kind, ident)  # read after the scan: this version or a later one
            if doc is None:  # closed since the scan: withdrawn below if it was open before
                del now[(kind, ident)]
                continue
            now[(kind, ident)] = (doc.site, doc.version)
            out.append(((doc.site, kind, ident), doc))
        for (kind, ident), (site, _version) in self._open.items():
            if (kind, ident) not in now:
                out.append(((site, kind, ident), None))
        self._open, self._counter = now, counter
        return out

    def render(self, key: _Key) -> floor.Expected | None:
        return self._render(key[1], key[2])

    def _render(self, kind: str, ident: str) -> floor.Expected | None:
        if kind == "receipt":
            return self._book.expected(ident)
        return orders.expected_of(self._store, ident)

    def forget(self) -> None:
        self._counter, self._open = None, {}


# --- leads ------------------------------------------------------------------------------------


class PgLead:
    """A session advisory lock on a connection of its own (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._key = LOCK_KEY
        self._conn: Any = None
        self._held = False

    def __str__(self) -> str:
        return f"PostgreSQL advisory lock {self._key[0]},{self._key[1]} on {pg.redact(self._url)}"

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                         application_name="floorsync-docs-lead", **KEEPALIVE)
        return self._conn

    def acquire(self) -> bool:
        try:
            conn = self._connect()
            (got,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._key).fetchone()
        except Exception as exc:
            log.debug("documents' lead: %s", exc)
            self._drop()
            return False
        self._held = bool(got)
        return self._held

    def holds(self) -> bool:
        """The lock lives as long as its session: a session that answers still holds it."""
        if not self._held:
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
        except Exception as exc:
            log.debug("documents' lead: %s", exc)
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._held and self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._key)
        self._drop()

    def backend_pid(self) -> int | None:
        """The lock's session (tests terminate it to play a holder that died)."""
        return None if self._conn is None or self._conn.closed else int(self._conn.info.backend_pid)

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class FileLead:
    """An exclusive ``flock`` on ``path``, which the kernel releases with the process."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def __str__(self) -> str:
        return f"file lock {self._path}"

    def acquire(self) -> bool:
        handle = open(self._path, "ab")  # noqa: SIM115 (kept open while held)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def holds(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def lead_for(database: Path | str) -> Lead:
    """The lead of the document publishers of ``database``."""
    if pg.is_url(database):
        return PgLead(str(database))
    path = Path(database)
    return FileLead(path.with_name(f"{path.name}.docs.lock"))


def publisher(settings: Settings, store: Store, *, poll_s: float | None = None
              ) -> DocumentPublisher:
    """The store's documents to ``settings.broker``, while this process holds the lead."""
    assert settings.broker is not None
    return DocumentPublisher(settings, follow=Follower(store),
                             lead=lead_for(store.database),
                             poll_s=POLL_S if poll_s is None else poll_s)


class ReplicaDocuments:
    """A replica's publisher and its own store (``stop()`` closes both); nothing without one."""

    def __init__(self, publisher: DocumentPublisher | None = None, store: Store | None = None
                 ) -> None:
        self.publisher, self._store = publisher, store

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()


def for_replica(database: str, env: Mapping[str, str] = os.environ) -> ReplicaDocuments:
    """A central replica's document publisher, on a store of its own, with the central service's
    MQTT settings; only when FLOORSYNC_BROKER is set (a replica's edges use NATS's MQTT
    listener, which no default names)."""
    if not (env.get(ENV_PREFIX + "BROKER") or "").strip():
        log.warning("replica: %sBROKER is not set, so this replica does not publish the"
                    " documents' expected lists to the floor (another replica or the HTTP"
                    " service must)", ENV_PREFIX)
        return ReplicaDocuments()
    settings = Settings.from_env(database=database)
    if settings.broker is None:
        log.warning("replica: %sBROKER=none: this replica does not publish the documents'"
                    " expected lists to the floor", ENV_PREFIX)
        return ReplicaDocuments()
    store = Store(database).open()  # its own: the replica's is reopened after failures
    return ReplicaDocuments(publisher(settings, store).start(), store)
