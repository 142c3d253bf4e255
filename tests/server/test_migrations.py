"""Migrations that rebuild a table keep its rows, ids and the rows that point at them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from floorsync.server import db
from floorsync.server.errors import StoreError
from floorsync.server.ledger import Store
from floorsync.server.migrations import MIGRATIONS

BEFORE_KINDS = next(n for n, (name, _) in enumerate(MIGRATIONS)
                    if name == "0008_document_exception_kinds")


def test_the_exceptions_rebuild_keeps_rows_ids_and_held_movements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        patch.setattr(db, "MIGRATIONS", MIGRATIONS[:BEFORE_KINDS])
        with Store(path) as old, old._transaction() as cur:
            cur.execute(
                "INSERT INTO events (id, site, device, seq, type, event_time, received_at,"
                " source, item, qty, to_location) VALUES ('e-1', 'wh1', 'hh-1', 1, 'receive',"
                " '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'http', 'SKU-1', 1, 'A')")
            cur.execute(
                "INSERT INTO exceptions (id, kind, status, raised_at, site, event_id, item,"
                " location, quantity, detail, held_by_count_id) VALUES (41, 'late_after_count',"
                " 'open', '2026-01-01T00:00:02Z', 'wh1', 'e-1', 'SKU-1', 'A', 1, 'held', 7)")
            cur.execute(
                "INSERT INTO held_movements (exception_id, event_id, site, device, type, item,"
                " location, qty, event_time, received_at) VALUES (41, 'e-1', 'wh1', 'hh-1',"
                " 'receive', 'SKU-1', 'A', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z')")
    with Store(path) as store:
        names = [r[0] for r in store._query("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
        assert store._query("SELECT id, kind, held_by_count_id FROM exceptions") == [
            (41, "late_after_count", 7)]
        assert store._query("SELECT exception_id FROM held_movements") == [(41,)]
        with store._transaction() as cur:  # the new kinds are accepted, others still refused
            cur.execute("INSERT INTO exceptions (kind, raised_at, detail)"
                        " VALUES ('receipt_short', 'now', 'short 2')")
            with pytest.raises(sqlite3.IntegrityError):
                cur.execute("INSERT INTO exceptions (kind, raised_at, detail)"
                            " VALUES ('whatever', 'now', 'x')")
        assert store._query("PRAGMA foreign_keys") == [(1,)]
        with pytest.raises(StoreError, match="FOREIGN KEY"), store._transaction() as cur:
            cur.execute("INSERT INTO held_movements (exception_id, event_id, site, device, type,"
                        " item, location, qty, event_time, received_at) VALUES (999, 'e-1',"
                        " 'wh1', 'hh-1', 'receive', 'SKU-1', 'A', 1, 't', 't')")


def test_a_database_of_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    """A replica of an older release must not write to a schema a newer one migrated."""
    path = tmp_path / "newer.db"
    with Store(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES"
                     " ('9999_from_the_future', '2027-01-01T00:00:00+00:00')")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"newer than this floorsync.*9999_from_the_future"):
        Store(path).open()
    conn = sqlite3.connect(path)
    names = [n for (n,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    conn.close()
    assert names[-1] == "9999_from_the_future" and len(names) == len(MIGRATIONS) + 1
    assert path.read_bytes() == before
