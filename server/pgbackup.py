"""Backup and restore of a ``postgresql://`` store with pg_dump and pg_restore.

``server/backup.py`` hands a URL here and gets the same ``Copied`` report back.

Backup: one REPEATABLE READ transaction exports its snapshot, reads the migrations and the event
count in it, and pg_dump (``--format=custom``) dumps that same snapshot (``--snapshot``): the
report and the dump describe one state, each batch in it whole, while the replicas keep writing.
The dump is listed back with ``pg_restore --list`` (readable, whole table of contents), fsynced
and renamed into place; ``FILE.json`` beside it says what it holds (migrations, events, server
and pg_dump versions, sha256).

Restore: the dump is checked first (a pg_dump archive, floorsync's, its migrations none newer
than ours, read from the dump itself); the target database must be reachable, have no other
client connected (a running replica) and be empty, unless ``force``: then pg_restore drops and
recreates the dump's objects (``--clean --if-exists``). pg_restore runs as one transaction
(``--single-transaction --exit-on-error``), so a dump that fails half way leaves the target as
it was; ``--no-owner --no-acl``: the objects belong to whoever restores. A floorsync database
replaced under ``force`` is first dumped beside the backup as ``DBNAME.before-restore.dump``
(unless ``keep`` is off). Identity columns' sequences come back with the data (pg_dump's
setval), so new batches get new ids and a replayed old batch is a duplicate.

Passwords travel in ``PGPASSWORD``, never on a command line or in a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from floorsync.server import pg
from floorsync.server.errors import BackupError, StoreError
from floorsync.server.migrations import MIGRATIONS

PGDMP_MAGIC = b"PGDMP"
SQLITE_MAGIC = b"SQLite format 3\x00"
TOOL_TIMEOUT_S = 6 * 3600.0  # a dump or restore of a large ledger takes long; a hang does not
CONNECT_TIMEOUT_S = "10"


class Target:
    """A URL split into what goes on a command line (no password) and the environment."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        query = parse_qsl(parts.query, keep_blank_values=True)
        passwords = [v for k, v in query if k == "password"]
        query = [(k, v) for k, v in query if k != "password"]
        self.password = unquote(password) if password else (passwords[-1] if passwords else None)
        netloc = f"{user}{at}{hostport}" if at else hostport
        self.url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
        self.full = url
        self.dbname = unquote(parts.path.lstrip("/")) or unquote(user) or "postgres"

    @property
    def name(self) -> str:
        return pg.redact(self.url)

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT_S}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self) -> Any:
        try:
            return pg.connect(self.full)
        except StoreError as exc:
            raise BackupError(str(exc).replace(pg.redact(self.full), self.name)) from exc


# --- backup -------------------------------------------------------------------------------


def backup(url: str, target: Path, *, force: bool = False) -> tuple[Path, int, tuple[str, ...],
                                                                      int, float]:
    """pg_dump of the store at ``url`` to ``target`` (custom format, one snapshot)."""
    started = time.monotonic()
    db = Target(url)
    if target.exists() and not force:
        raise BackupError(f"{target} exists; give --force to overwrite it")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent} for the backup")
    pg_dump = _tool("pg_dump")
    dump_version = _version(pg_dump)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    sidecar = target.with_name(target.name + ".json")
    conn = db.connect()
    try:
        server = int(conn.execute("SHOW server_version_num").fetchone()[0])
        if dump_version[0] < server // 10000:
            raise BackupError(
                f"pg_dump {'.'.join(map(str, dump_version))} is older than the server"
                f" (PostgreSQL {server // 10000}) and cannot dump it: install the server's"
                f" client tools (postgresql-client-{server // 10000})")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        migrations, events = _contents(conn, db.name, newer_ok=True)
        _run([pg_dump, "--format=custom", "--no-password", f"--snapshot={snapshot}",
              f"--file={temporary}", f"--dbname={db.url}"], db, f"cannot back up {db.name}")
        conn.execute("COMMIT")
    except BaseException:
        _remove(temporary)
        raise
    finally:
        conn.close()
    try:
        _listing(temporary, "the dump just written")
        _fsync(temporary)
        info = {
            "engine": "postgresql", "database": db.name, "file": target.name,
            "bytes": temporary.stat().st_size, "sha256": _sha256(temporary),
            "migrations": list(migrations), "events": events,
            "server_version_num": server, "pg_dump": ".".join(map(str, dump_version)),
            "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        side_temporary = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        side_temporary.write_text(json.dumps(info, indent=2) + "\n")
        _fsync(side_temporary)
        os.replace(temporary, target)
        os.replace(side_temporary, sidecar)
        _fsync(target.parent)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        _remove(temporary, sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp"))
    return target, target.stat().st_size, migrations, events, time.monotonic() - started


# --- restore ------------------------------------------------------------------------------


def restore(source: Path, url: str, *, keep: bool = True, force: bool = False
            ) -> tuple[str, int, tuple[str, ...], int, float, Path | None]:
    """pg_restore of the dump ``source`` into the database at ``url``, in one transaction."""
    started = time.monotonic()
    db = Target(url)
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    with open(source, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        raise BackupError(f"{source} is a SQLite backup: restoring it into PostgreSQL is not"
                          " supported (restore it into a SQLite file)")
    if not head.startswith(PGDMP_MAGIC):
        raise BackupError(f"{source} is not a pg_dump custom-format archive (not a floorsync"
                          " PostgreSQL backup)")
    pg_restore = _tool("pg_restore")
    listing = _listing(source, str(source))
    if not re.search(r"^\d+; \d+ \d+ TABLE DATA \S+ schema_migrations ", listing, re.MULTILINE):
        raise BackupError(f"{source} is not a floorsync database (no schema_migrations)")
    _check_migrations(_dumped_migrations(pg_restore, source), str(source))

    conn = db.connect()
    try:
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]
        if others:
            raise BackupError(
                f"{db.name} is in use ({others} other connection{'s' if others > 1 else ''}:"
                " a running floorsync server or replica?): stop them, then restore")
        objects = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n"
            "  ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog',"
            "  'information_schema') AND n.nspname NOT LIKE 'pg\\_%')"
            " + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            "  AND n.nspname NOT LIKE 'pg\\_%')").fetchone()[0]
        ours = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        held = (f"a floorsync database, {_events(conn):,} events" if ours
                else f"{objects} objects")
    finally:
        conn.close()
    kept = None
    if objects:
        if not force:
            raise BackupError(f"{db.name} is not empty ({held}); give --force to replace it"
                              " (a floorsync database is first dumped as"
                              " DBNAME.before-restore.dump beside the backup)")
        if ours and keep:
            kept = source.with_name(f"{db.dbname}.before-restore.dump")
            backup(url, kept, force=True)
    command = [pg_restore, "--single-transaction", "--exit-on-error", "--no-owner", "--no-acl",
               "--no-password", f"--dbname={db.url}"]
    if objects:
        command += ["--clean", "--if-exists"]
    _run([*command, str(source)], db,
         f"cannot restore {source} into {db.name} (nothing changed: one transaction)")
    conn = db.connect()
    try:
        migrations = tuple(row[0] for row in conn.execute(
            "SELECT name FROM schema_migrations ORDER BY name"))
        events = _events(conn)
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    finally:
        conn.close()
    return db.name, size, migrations, events, time.monotonic() - started, kept


# --- the parts ----------------------------------------------------------------------------


def _contents(conn: Any, name: str, *, newer_ok: bool) -> tuple[tuple[str, ...], int]:
    if not conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]:
        raise BackupError(f"{name} is not a floorsync database (no schema_migrations)")
    names = tuple(row[0] for row in conn.execute(
        "SELECT name FROM schema_migrations ORDER BY name"))
    if not newer_ok:
        _check_migrations(names, name)
    return names, _events(conn)


def _events(conn: Any) -> int:
    if not conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]:
        return 0
    return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _check_migrations(names: Sequence[str], what: str) -> None:
    unknown = sorted(set(names) - {name for name, _ in MIGRATIONS})
    if unknown:
        raise BackupError(
            f"{what} has a schema newer than this floorsync (migrations it does not"
            f" know: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''})")


def _dumped_migrations(pg_restore: str, source: Path) -> tuple[str, ...]:
    """The rows of schema_migrations as the dump holds them (its COPY block, as SQL text)."""
    text = _output([pg_restore, "--data-only", "--table=schema_migrations", "--file=-",
                    str(source)], f"{source} is damaged or not a floorsync backup")
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        if not inside:
            inside = bool(re.match(r"COPY \S*schema_migrations \(name, applied_at\) FROM stdin;",
                                   line))
            continue
        if line == "\\.":
            return tuple(sorted(names))
        names.append(line.split("\t", 1)[0])
    raise BackupError(f"{source} is damaged: no schema_migrations rows in it")


def _listing(path: Path, what: str) -> str:
    return _output([_tool("pg_restore"), "--list", str(path)],
                   f"{what} is damaged or not a pg_dump archive")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed: a postgresql:// backup or restore needs"
                          " PostgreSQL's client tools, of the server's version or newer"
                          " (Debian: apt install postgresql-client)")
    return found


def _version(tool: str) -> tuple[int, ...]:
    text = _output([tool, "--version"], f"cannot run {tool}")
    found = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", text)
    if not found:
        raise BackupError(f"cannot read the version of {tool}: {text.strip()[:80]!r}")
    return tuple(int(part) for part in found.groups() if part is not None)


def _output(command: list[str], problem: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{problem}: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(f"{problem}: {_first_error(done.stderr)}")
    return done.stdout.decode("utf-8", "replace")


def _run(command: list[str], db: Target, problem: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, env=db.env(), timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{problem}: {exc}") from exc
    if done.returncode != 0:
        message = _first_error(done.stderr)
        if "server version mismatch" in message:
            message += " (install the server's client tools)"
        raise BackupError(f"{problem}: {message}")


def _first_error(stderr: bytes) -> str:
    """The first line saying what went wrong (pg_dump's 'error:' line, else the first)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()
             if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[0] if lines else "failed with no message"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
