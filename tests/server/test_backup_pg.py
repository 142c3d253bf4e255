"""Backup and restore of a PostgreSQL store (server/pgbackup.py), on the real server with the
real pg_dump and pg_restore, through the library and through ``floorsync server backup`` /
``restore`` (cli.main).

What a restore gives back is compared table by table with what was backed up; the restored store
then takes a new batch (its identity sequences came back) and calls a replayed old batch a
duplicate. A backup taken while another store writes holds each batch whole. Each bad restore is
refused with its reason and leaves the target as it was. SQLite-to-PostgreSQL is not offered.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from floorsync.cli import main
from floorsync.edge import wire
from floorsync.localbroker import free_port
from floorsync.server.backup import backup, restore
from floorsync.server.errors import BackupError
from floorsync.server.ledger import Store
from floorsync.server.migrations import MIGRATIONS
from tests import pgkit
from tests.server.helpers import batch, event

PER_BATCH = 4
TABLES = ("events", "movements", "stock", "exceptions", "rejections", "devices",
          "schema_migrations")


def _batch(n: int) -> wire.Batch:
    """Batch ``n``: receives of lot B<n>, and a pick of a lot never received (an exception)."""
    events = [event("receive", lot=f"B{n}", qty=n % 5 + 1, dst="DOCK-1")
              for _ in range(PER_BATCH - 1)]
    events.append(event("pick", lot=f"NONE{n}", qty=1, src="DOCK-1", dst=None))
    return batch("wh1", "hh-01", *events)


def _fill(url: str, batches: int) -> list[wire.Batch]:
    sent = [_batch(n) for n in range(batches)]
    with Store(url) as store:
        for b in sent:
            store.apply_batch(b, source="http")
    return sent


def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the ledger's tables, in a stable order."""
    with psycopg.connect(url) as conn:
        out = {}
        for table in TABLES:
            width = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description or ())
            order = ", ".join(str(i) for i in range(1, width + 1))
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return out


def _objects(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()[0])  # type: ignore[index]


def _with_password(url: str, password: str) -> str:
    """The same URL with a password (the test server trusts; the password is ignored)."""
    return url.replace("://postgres@", f"://postgres:{password}@", 1)


# --- the library --------------------------------------------------------------------------


def test_backup_and_restore_give_back_the_same_store_which_goes_on(
    pg_url: str, tmp_path: Path
) -> None:
    sent = _fill(pg_url, 12)
    dump = tmp_path / "nightly.dump"
    report = backup(pg_url, dump)
    assert report.events == 12 * PER_BATCH and report.bytes == dump.stat().st_size
    assert report.migrations == tuple(name for name, _ in MIGRATIONS)
    sidecar = json.loads((tmp_path / "nightly.dump.json").read_text())
    assert sidecar["engine"] == "postgresql" and sidecar["events"] == report.events
    assert sidecar["migrations"] == list(report.migrations)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nightly.dump", "nightly.dump.json"]
    before = _tables(pg_url)
    assert before["exceptions"], "the picks of unreceived lots raised exceptions"

    with pgkit.database() as fresh:
        put = restore(dump, fresh)
        assert put.events == report.events and put.migrations == report.migrations
        assert put.kept is None and "***" not in str(put.path)
        assert _tables(fresh) == before
        with Store(fresh) as store:
            replayed = store.apply_batch(sent[3], source="http")
            assert {r.status for r in replayed} == {"duplicate"}
            new = store.apply_batch(_batch(100), source="http")  # new ids: sequences restored
            assert {r.status for r in new} != {"duplicate"}
        after = _tables(fresh)
        assert len(after["events"]) == len(before["events"]) + PER_BATCH
        assert len(after["exceptions"]) == len(before["exceptions"]) + 1
        assert after["events"][:len(before["events"])] == before["events"]


def test_a_backup_while_another_store_writes_is_one_snapshot(
    pg_url: str, tmp_path: Path
) -> None:
    _fill(pg_url, 5)
    stop = threading.Event()
    applied = 0
    failures: list[BaseException] = []

    def write() -> None:
        nonlocal applied
        try:
            with Store(pg_url) as store:
                n = 1000
                while not stop.is_set():
                    store.apply_batch(_batch(n), source="http")
                    n += 1
                    applied += 1
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        while applied < 10 and writer.is_alive():
            stop.wait(0.05)
        report = backup(pg_url, tmp_path / "busy.dump")
        seen = applied
        while applied < seen + 10 and writer.is_alive():  # writing went on after it
            stop.wait(0.05)
    finally:
        stop.set()
        writer.join(120)
    assert failures == []
    with pgkit.database() as fresh:
        put = restore(tmp_path / "busy.dump", fresh)
        assert put.events == report.events
        with psycopg.connect(fresh) as conn:  # batch n: lots B<n> and NONE<n>
            by_batch = conn.execute(
                "SELECT regexp_replace(lot, '^(B|NONE)', ''), count(*) FROM events"
                " GROUP BY 1").fetchall()
    assert {count for _, count in by_batch} == {PER_BATCH}, "a batch was cut by the backup"
    with psycopg.connect(pg_url) as conn:
        total = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    assert 15 * PER_BATCH <= report.events < total


def test_restore_refuses_a_database_in_use_or_not_empty(pg_url: str, tmp_path: Path) -> None:
    _fill(pg_url, 3)
    dump = tmp_path / "a.dump"
    backup(pg_url, dump)
    with pgkit.database() as fresh:
        with (Store(fresh),  # a running replica: connected, and it migrated the schema
              pytest.raises(BackupError, match=r"is in use .*stop them")):
            restore(dump, fresh)
        with pytest.raises(BackupError, match=r"is not empty \(a floorsync database, 0 events\);"
                                              " give --force"):
            restore(dump, fresh)
        put = restore(dump, fresh, force=True)
        assert put.events == 3 * PER_BATCH
        assert put.kept == tmp_path / f"{pgkit.name_of(fresh)}.before-restore.dump"
        assert put.kept.is_file() and _tables(fresh) == _tables(pg_url)
        with pytest.raises(BackupError, match="exists; give --force"):
            backup(fresh, dump)


# --- bad dumps: refused, the target as it was -------------------------------------------


def _garbage(good: Path, url: str, out: Path) -> Path:
    out.write_bytes(os.urandom(64 * 1024))
    return out


def _truncated(good: Path, url: str, out: Path) -> Path:
    data = good.read_bytes()
    out.write_bytes(data[: len(data) * 9 // 10])
    return out


def _sqlite(good: Path, url: str, out: Path) -> Path:
    with Store(out.with_suffix(".db")):
        pass
    out.write_bytes(out.with_suffix(".db").read_bytes())
    return out


def _newer(good: Path, url: str, out: Path) -> Path:
    with pgkit.database(template=pgkit.name_of(url)) as other:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 'x')")
        backup(other, out)
    return out


def _not_ours(good: Path, url: str, out: Path) -> Path:
    with pgkit.database() as other:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        subprocess.run(["pg_dump", "--format=custom", f"--file={out}", f"--dbname={other}"],
                       check=True, timeout=120)
    return out


@pytest.mark.parametrize(("make", "reason"), [
    (_garbage, "is not a pg_dump custom-format archive"),
    (_truncated, "is damaged or not a pg_dump archive: could not read from input file"),
    (_sqlite, "is a SQLite backup: restoring it into PostgreSQL is not supported"),
    (_newer, "schema newer than this floorsync .*9999_from_the_future"),
    (_not_ours, "is not a floorsync database"),
])
def test_a_bad_dump_is_refused_and_the_target_is_untouched(
    pg_url: str, tmp_path: Path, make: Callable[[Path, str, Path], Path], reason: str
) -> None:
    _fill(pg_url, 4)
    good = tmp_path / "good.dump"
    backup(pg_url, good)
    bad = make(good, pg_url, tmp_path / "bad.dump")
    with pgkit.database() as empty:
        with pytest.raises(BackupError, match=reason):
            restore(bad, empty)
        assert _objects(empty) == 0
    before = _tables(pg_url)
    with pytest.raises(BackupError, match=reason):
        restore(bad, pg_url, force=True)
    assert _tables(pg_url) == before
    assert not list(tmp_path.glob("*.before-restore.dump"))


def test_a_restore_failing_half_way_changes_nothing(pg_url: str, tmp_path: Path) -> None:
    """pg_restore in one transaction: a view of the operator's on ``events`` stops the drop of
    that table mid-restore; everything before it is rolled back."""
    _fill(pg_url, 4)
    backup(pg_url, tmp_path / "a.dump")
    with Store(pg_url) as store:
        store.apply_batch(_batch(50), source="http")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW report AS SELECT count(*) AS n FROM events")
    before = _tables(pg_url)
    with pytest.raises(BackupError, match=r"nothing changed: one transaction.*cannot drop"):
        restore(tmp_path / "a.dump", pg_url, force=True, keep=False)
    assert _tables(pg_url) == before


# --- tools and servers that are not there -------------------------------------------------


def test_missing_tools_an_unreachable_server_and_an_old_pg_dump_are_one_line_each(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"postgresql://floor:hunter2@127.0.0.1:{free_port()}/floorsync"
    with pytest.raises(BackupError, match="cannot open database") as refused:
        backup(down, tmp_path / "x.dump")
    assert "hunter2" not in str(refused.value) and "\n" not in str(refused.value)
    old = tmp_path / "old-bin"
    old.mkdir()
    fake = old / "pg_dump"  # a stand-in that only answers --version, as pg_dump 13 would
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.9'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(old))
    with pytest.raises(BackupError, match=r"pg_dump 13.9 is older than the server \(PostgreSQL"):
        backup(pg_url, tmp_path / "x.dump")
    fake.unlink()
    with pytest.raises(BackupError, match="pg_dump is not installed"):
        backup(pg_url, tmp_path / "x.dump")
    assert list(tmp_path.glob("*.dump*")) == []


# --- the commands -------------------------------------------------------------------------


def test_the_commands_back_up_and_restore_and_never_print_the_password(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(pg_url, 6)
    secret = "s3cret-pw"
    source = _with_password(pg_url, secret)
    dump = tmp_path / "cli.dump"
    assert main(["server", "backup", "--db", source, "--to", str(dump)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"backup: wrote {dump} (")
    assert f"{6 * PER_BATCH} events" in out.out and f"{len(MIGRATIONS)} migrations" in out.out
    assert secret not in (tmp_path / "cli.dump.json").read_text()

    with pgkit.database() as fresh:
        target = _with_password(fresh, secret)
        assert main(["server", "restore", "--from", str(dump), "--db", target]) == 0
        out = capsys.readouterr()
        assert out.out.startswith("restore: put postgresql://postgres@")
        assert _tables(fresh) == _tables(pg_url)
        assert main(["server", "restore", "--from", str(dump), "--db", target]) == 2
        out = capsys.readouterr()
        assert out.err.startswith("floorsync server: ") and "give --force" in out.err
        assert len(out.err.strip().splitlines()) == 1
        assert main(["server", "restore", "--from", str(dump), "--db", target, "--force",
                     "--discard-old"]) == 0
        assert "kept" not in capsys.readouterr().out
    assert main(["server", "backup", "--db", source, "--to", str(dump)]) == 2
    for text in capsys.readouterr():
        assert secret not in text


def test_a_sqlite_backup_is_still_a_sqlite_backup(tmp_path: Path) -> None:
    """The SQLite path through the same commands, with a str --db as the CLI now gives it."""
    with Store(tmp_path / "c.db") as store:
        store.apply_batch(_batch(1), source="http")
    assert main(["server", "backup", "--db", str(tmp_path / "c.db"),
                 "--to", str(tmp_path / "b.db")]) == 0
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == PER_BATCH
    conn.close()
