"""Backup and restore of the central store (``floorsync server backup`` / ``restore``).

``backup`` and ``restore`` pick the engine from the database's form: a SQLite file here, a
``postgresql://`` URL in ``server/pgbackup.py`` (pg_dump and pg_restore); both return the same
``Copied`` report, so the CLI does not change. The rest of this docstring is SQLite's.

Backup takes SQLite's online backup API in one step from a read connection: one read snapshot
of a WAL database, so the service keeps writing and the copy holds each batch whole or not at all.
The copy is switched to a rollback journal (one self-contained file), checked with
``PRAGMA integrity_check``, fsynced and renamed into place: a crash leaves no half backup.

Restore refuses while anything holds the database: it takes SQLite's own exclusive lock (every
open WAL connection, even an idle one, holds a shared lock for as long as it is open, so the lock
is refused while a server runs, released when its process ends, even killed). It checks the
backup on a copy beside the database (integrity, a floorsync schema no newer than ours), then
swaps that copy in with one rename: the database path always names a whole database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from floorsync.server import pg
from floorsync.server.errors import BackupError
from floorsync.server.migrations import MIGRATIONS
from floorsync.server.settings import check_database

SQLITE_MAGIC = b"SQLite format 3\x00"
LOCK_TIMEOUT_S = 0.5  # the restore's lock: a server holds it for its whole life, not a moment
BEFORE_RESTORE = ".before-restore"


@dataclass(frozen=True)
class Copied:
    """What a backup wrote or a restore put in place."""

    path: Path | str  # a file, or a PostgreSQL database's URL without its password
    bytes: int
    migrations: tuple[str, ...]
    events: int
    seconds: float
    kept: Path | None = None  # restore: where the database it replaced now is

    def summary(self, verb: str) -> str:
        last = self.migrations[-1] if self.migrations else "none"
        text = (f"{verb} {self.path} ({self.bytes:,} bytes): {len(self.migrations)} migrations"
                f" (last {last}), {self.events:,} events, in {self.seconds:.2f} s")
        if self.kept is not None:
            text += f"; the database it replaced is kept as {self.kept}"
        return text


def backup(database: Path | str, target: Path, *, force: bool = False) -> Copied:
    """A consistent copy of ``database`` at ``target``, while the service runs and writes."""
    if pg.is_url(database):
        from floorsync.server import pgbackup

        return Copied(*pgbackup.backup(str(database), Path(target), force=force))
    database = Path(database)
    check_database(database)
    started = time.monotonic()
    if not database.is_file():
        raise BackupError(f"no database at {database}")
    if target.exists() and not force:
        raise BackupError(f"{target} exists; give --force to overwrite it")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent} for the backup")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _snapshot(database, temporary)
        migrations, events = _check(temporary, what="the copy", newer_ok=True)
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(target.parent)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        _remove(temporary, *_sidecars(temporary))
    return Copied(target, target.stat().st_size, migrations, events,
                  time.monotonic() - started)


def restore(source: Path, database: Path | str, *, keep: bool = True, force: bool = False
            ) -> Copied:
    """Put the backup ``source`` in place of ``database``, which no process may hold open.

    ``keep``: the replaced database stays as ``DATABASE.before-restore`` (``force`` overwrites
    an earlier one). Nothing changes when anything is refused. A ``postgresql://`` URL:
    ``server/pgbackup.py`` (an empty database, or ``force``)."""
    if pg.is_url(database):
        from floorsync.server import pgbackup

        return Copied(*pgbackup.restore(Path(source), str(database), keep=keep, force=force))
    database = Path(database)
    check_database(database)
    started = time.monotonic()
    kept = database.with_name(database.name + BEFORE_RESTORE)
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    if keep and kept.exists() and not force:
        raise BackupError(f"{kept} exists (an earlier restore's); move it away or give --force")
    if not database.parent.is_dir():
        raise BackupError(f"no directory {database.parent} for the database")
    with open(source, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise BackupError(f"{source} is not a SQLite database (not a floorsync backup)")
    temporary = database.with_name(f".{database.name}.{os.getpid()}.restore")
    try:
        shutil.copyfile(source, temporary)  # what is checked is what goes in place
        migrations, events = _check(temporary, what=str(source))
        _fsync(temporary)
        lock = _lock(database) if database.exists() else None
        kept_now = keep and lock is not None
        try:
            _remove(*_sidecars(database))  # a stale -wal would be replayed onto the new file
            if kept_now:
                _remove(kept)
                os.link(database, kept)  # a second name: the database path never goes missing
            os.replace(temporary, database)
            _fsync(database.parent)
        finally:
            if lock is not None:
                lock.close()
    except OSError as exc:
        raise BackupError(f"cannot restore {database}: {exc.strerror or exc}") from exc
    finally:
        _remove(temporary, *_sidecars(temporary))
    return Copied(database, database.stat().st_size, migrations, events,
                  time.monotonic() - started, kept if kept_now else None)


def _snapshot(database: Path, temporary: Path) -> None:
    """The backup API in one step: one read transaction, so one consistent state."""
    _remove(temporary, *_sidecars(temporary))
    try:
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=30.0)
        try:
            copy = sqlite3.connect(temporary, isolation_level=None)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {database}: {exc}") from exc


def _check(path: Path, *, what: str, newer_ok: bool = False) -> tuple[tuple[str, ...], int]:
    """Integrity and schema of a floorsync database file; its migrations and event count.

    A schema newer than ours is refused unless ``newer_ok`` (a backup copies what it finds; a
    restore puts in place only what this floorsync can serve). The file is left in
    rollback-journal mode, so it is whole without a -wal beside it."""
    known = {name for name, _ in MIGRATIONS}
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise BackupError(f"{what} is damaged: integrity_check says "
                                  f"{'; '.join(problems)}")
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                " AND name = 'schema_migrations'").fetchone():
                raise BackupError(f"{what} is not a floorsync database (no schema_migrations)")
            names = tuple(row[0] for row in conn.execute(
                "SELECT name FROM schema_migrations ORDER BY name"))
            unknown = sorted(set(names) - known)
            if unknown and not newer_ok:
                raise BackupError(
                    f"{what} has a schema newer than this floorsync (migrations it does not"
                    f" know: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''})")
            has_events = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                      " AND name = 'events'").fetchone()
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0] if has_events \
                else 0
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what} is damaged or not a database: {exc}") from exc
    if any(side.exists() for side in _sidecars(path)):
        raise BackupError(f"{what}: SQLite left a -wal beside the checked copy")
    return names, int(events)


def _lock(database: Path) -> sqlite3.Connection:
    """SQLite's exclusive lock on ``database``, held until the connection closes; refused while
    any connection has it open. Its WAL is checkpointed in and removed: the file is whole."""
    try:
        conn = sqlite3.connect(database, isolation_level=None, timeout=LOCK_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {database}: {exc}") from exc
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")  # the lock stays: exclusive locking mode keeps it
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise BackupError(f"{database} is in use (a running floorsync server, or another"
                              " program has it open): stop it, then restore") from exc
        raise BackupError(f"cannot lock {database}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BackupError(f"{database} is not a SQLite database ({exc}); move it away first"
                          ) from exc
    return conn


def _sidecars(path: Path) -> tuple[Path, Path, Path]:
    """SQLite's files beside a database: its WAL, the WAL's index and a rollback journal."""
    return (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name + "-journal"))


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries after a rename, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
