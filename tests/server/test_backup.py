"""Backup and restore of the SQLite store, on real SQLite and a real ``floorsync server``.

A backup taken while a running server applies batches over HTTP is one consistent state (every
batch in it whole, its stock the sum of its movements); restored over the stopped server's
database, the restarted server serves exactly that. Each bad restore (garbage, a truncated file,
a newer schema, a running server) is refused with its reason and changes nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from floorsync.edge import wire
from floorsync.localbroker import free_port
from floorsync.server.backup import backup, restore
from floorsync.server.errors import BackupError, ConfigError
from floorsync.server.ledger import Store
from floorsync.server.migrations import MIGRATIONS
from tests.server.helpers import batch, event, payload

TOKEN = "backup-test-token-0123456789"
PER_BATCH = 5


def _batch_events(n: int) -> list[wire.Event]:
    """Batch ``n``: PER_BATCH receives of lot B<n>, so the lot tells a batch's events apart."""
    return [event("receive", lot=f"B{n}", qty=n % 7 + 1, dst="DOCK-1") for _ in range(PER_BATCH)]


def _filled(path: Path, batches: int) -> Path:
    with Store(path) as store:
        for n in range(batches):
            store.apply_batch(batch("wh1", "hh-01", *_batch_events(n)), source="http")
    return path


def _state(path: Path) -> dict[str, Any]:
    """What a database holds, by lot: events, movements and stock; and its migrations."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            "events": dict(conn.execute("SELECT lot, count(*) FROM events GROUP BY lot")),
            "movements": dict(conn.execute(
                "SELECT lot, count(*) FROM movements GROUP BY lot")),
            "moved": dict(conn.execute("SELECT lot, sum(qty) FROM movements GROUP BY lot")),
            "stock": dict(conn.execute("SELECT lot, sum(quantity) FROM stock GROUP BY lot")),
            "migrations": [r[0] for r in conn.execute(
                "SELECT name FROM schema_migrations ORDER BY name")],
        }
    finally:
        conn.close()


def _files(directory: Path) -> dict[str, str]:
    """Every file of ``directory`` and its digest: 'nothing changed' is this being equal."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def _whole(state: dict[str, Any]) -> None:
    """Every batch in ``state`` whole: PER_BATCH events and movements, stock = movements."""
    events, movements = state["events"], state["movements"]
    assert isinstance(events, dict) and events
    assert set(events.values()) == {PER_BATCH}
    assert movements == events
    assert state["stock"] == state["moved"]


# --- the library, on real SQLite ----------------------------------------------------------


def test_backup_copies_a_store_in_use_and_reports_it(tmp_path: Path) -> None:
    db = _filled(tmp_path / "central.db", 20)
    with Store(db):  # open, as a running server holds it: backup reads beside it
        report = backup(db, tmp_path / "nightly.db")
    assert report.path == tmp_path / "nightly.db" and report.events == 20 * PER_BATCH
    assert report.bytes == (tmp_path / "nightly.db").stat().st_size
    assert report.migrations == tuple(name for name, _ in MIGRATIONS)
    assert _state(tmp_path / "nightly.db") == _state(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # one self-contained file, no tmp
        "central.db", "central.db-shm", "central.db-wal", "nightly.db"]
    summary = report.summary("backup: wrote")
    assert "100 events" in summary and f"last {MIGRATIONS[-1][0]}" in summary


def test_backup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    db = _filled(tmp_path / "central.db", 2)
    target = tmp_path / "nightly.db"
    target.write_bytes(b"yesterday's")
    with pytest.raises(BackupError, match="exists; give --force"):
        backup(db, target)
    assert target.read_bytes() == b"yesterday's"
    assert backup(db, target, force=True).events == 2 * PER_BATCH
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "missing.db", tmp_path / "other.db")
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "other.db").exists()
    with pytest.raises(ConfigError, match="postgresql:// is not a store"):
        backup(Path("postgresql://floor:secret@db/floorsync"), tmp_path / "x.db")


def test_restore_puts_the_backup_in_place_and_keeps_the_old(tmp_path: Path) -> None:
    db = _filled(tmp_path / "central.db", 3)
    backup(db, tmp_path / "nightly.db")
    then = _state(db)
    with Store(db) as store:  # later work, which the restore takes back
        store.apply_batch(batch("wh1", "hh-01", *_batch_events(99)), source="http")
    later = _state(db)
    report = restore(tmp_path / "nightly.db", db)
    assert report.kept == tmp_path / "central.db.before-restore"
    assert _state(db) == then and _state(report.kept) == later
    assert not any(p.name.endswith(("-wal", "-shm", ".restore")) for p in tmp_path.iterdir())
    with Store(db) as store:  # the server opens it as its own
        assert store.apply_batch(batch("wh1", "hh-01", *_batch_events(100)), source="http")
    with pytest.raises(BackupError, match="before-restore exists"):
        restore(tmp_path / "nightly.db", db)
    restore(tmp_path / "nightly.db", db, force=True)
    assert _state(tmp_path / "central.db.before-restore")["events"] != then["events"]
    restore(tmp_path / "nightly.db", tmp_path / "fresh.db", keep=False)
    assert _state(tmp_path / "fresh.db") == then


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _newer(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    with sqlite3.connect(dst) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 'x')")
    conn.close()
    return dst


def _garbage(src: Path, dst: Path) -> Path:
    dst.write_bytes(os.urandom(64 * 1024))
    return dst


def _not_ours(src: Path, dst: Path) -> Path:
    with sqlite3.connect(dst) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    return dst


@pytest.mark.parametrize(("make", "reason"), [
    (_garbage, "is not a SQLite database"),
    (_truncated, "is damaged"),
    (_newer, "schema newer than this floorsync .*9999_from_the_future"),
    (_not_ours, "not a floorsync database"),
])
def test_a_bad_backup_is_refused_and_nothing_changes(
    tmp_path: Path, make: Callable[[Path, Path], Path], reason: str
) -> None:
    live, spare = tmp_path / "live", tmp_path / "spare"
    live.mkdir()
    spare.mkdir()
    db = _filled(live / "central.db", 50)
    backup(db, spare / "good.db")
    bad = make(spare / "good.db", spare / "bad.db")
    before = _files(live)
    with pytest.raises(BackupError, match=reason):
        restore(bad, db)
    assert _files(live) == before


def test_restore_is_refused_while_the_database_is_open(tmp_path: Path) -> None:
    db = _filled(tmp_path / "central.db", 3)
    backup(db, tmp_path / "nightly.db")
    with Store(db) as store:
        store.apply_batch(batch("wh1", "hh-01", *_batch_events(7)), source="http")
        before = _files(tmp_path)
        with pytest.raises(BackupError, match="is in use"):
            restore(tmp_path / "nightly.db", db)
        assert _files(tmp_path) == before


# --- the real command, beside a real server -------------------------------------------------


def _floorsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorsync", *args], capture_output=True,
                          text=True, timeout=300)


@contextmanager
def _server(db: Path, log: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "FLOORSYNC_TOKENS": f"{TOKEN}=admin", "FLOORSYNC_AUTH": "on"}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "server", "--db", str(db), "--broker", "none",
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while _request(port, "GET", "/health")[0] != 200:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not answer health in 120 s"
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _request(port: int, method: str, path: str, body: bytes | None = None
             ) -> tuple[int, object]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(method, f"/api/v1{path}", body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
    except OSError:
        return 0, None
    return response.status, json.loads(data) if data else None


def _stock(port: int) -> list[dict[str, Any]]:
    status, body = _request(port, "GET", "/stock?limit=1000")
    assert status == 200 and isinstance(body, dict) and body["next_cursor"] is None
    return list(body["items"])


def test_backup_while_a_real_server_applies_batches_then_restore(tmp_path: Path) -> None:
    db, copy, log = tmp_path / "central.db", tmp_path / "backup" / "copy.db", tmp_path / "log"
    copy.parent.mkdir()
    acked = 0
    stop = threading.Event()
    failures: list[object] = []

    with _server(db, log) as port:
        def post_batches() -> None:
            nonlocal acked
            n = 0
            while not stop.is_set():
                status, body = _request(port, "POST", "/events",
                                        payload("wh1", "hh-01", *_batch_events(n)))
                if status != 200:
                    failures.append((status, body))
                    return
                n += 1
                acked = n

        writer = threading.Thread(target=post_batches, daemon=True)
        writer.start()
        try:
            while acked < 20 and writer.is_alive():
                time.sleep(0.05)
            before = acked
            done = _floorsync("server", "backup", "--db", str(db), "--to", str(copy))
            after = acked
            while acked < after + 20 and writer.is_alive():  # writing went on after it
                time.sleep(0.05)
        finally:
            stop.set()
            writer.join(120)
        assert failures == []
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"backup: wrote {copy} (")
        copied = _state(copy)
        _whole(copied)  # every batch in the copy whole: movements match events, stock matches
        events = sum(copied["events"].values())
        assert before * PER_BATCH <= events <= after * PER_BATCH
        assert f"{events:,} events" in done.stdout
        assert f"{len(MIGRATIONS)} migrations" in done.stdout
        final = _state(db)
        assert sum(final["events"].values()) > events

        # over the running server: refused, nothing changed, the server still serves
        served = _stock(port)
        files = _files(tmp_path)
        refused = _floorsync("server", "restore", "--from", str(copy), "--db", str(db))
        assert refused.returncode == 2
        assert refused.stderr.strip().startswith("floorsync server: ")
        assert "is in use (a running floorsync server" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert _files(tmp_path) == files and _stock(port) == served

    put = _floorsync("server", "restore", "--from", str(copy), "--db", str(db))
    assert put.returncode == 0, put.stderr
    assert "central.db.before-restore" in put.stdout
    assert _state(tmp_path / "central.db.before-restore") == final
    with _server(db, log) as port:
        stock = _stock(port)
        status, summary = _request(port, "GET", "/summary")
    assert status == 200 and isinstance(summary, dict) and summary["events"] == events
    by_lot = {row["lot"]: row["quantity"] for row in stock}
    assert by_lot == copied["stock"]
