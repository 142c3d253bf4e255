"""SQLite's events INSERT leaves out the columns NULL in every row of a batch
(server/posting.py ``_insert_lean``): the rows stored are those a full INSERT stores."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.server import posting
from floorsync.server.ledger import Store

from .helpers import decoded, event

SITE, DEV = "wh1", "gun-1"


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        names = [r[1] for r in conn.execute("PRAGMA table_info(events)")
                 if r[1] != "received_at"]
        return conn.execute(f"SELECT {', '.join(names)} FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def test_events_stored_alike_lean_or_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    plain = event("putaway", src="RECV-1", dst="A-1")
    read = replace(event("receive"), operator="op-1",
                   read=wire.SourceRead("rfid", tag="E2801160", antenna=2, rssi=-51.5, reads=3))
    doc = replace(event("pick", src="A-1", dst=None),
                  doc=wire.DocRef("order", "SO-1", "expected"))
    adjust = event("adjust", qty=-2, dst="A-1")
    batches = [decoded(SITE, DEV, plain), decoded(SITE, DEV, read, doc, adjust),
               decoded(SITE, DEV, replace(plain, id=wire.new_event_id(), seq=99))]
    stored = {}
    for lean in (True, False):
        monkeypatch.setattr(posting, "_lean_sql", {})
        if not lean:
            monkeypatch.setattr(posting, "_LEAN_TABLES", frozenset())
        path = tmp_path / f"lean-{lean}.db"
        with Store(path) as store:
            for one in batches:
                assert {r.status for r in store.apply_batch(one, source="mqtt")} == {"applied"}
            again = store.apply_batch(batches[1], source="mqtt")  # ON CONFLICT kept
            assert {r.status for r in again} == {"duplicate"}
        stored[lean] = _rows(path)
        assert bool(posting._lean_sql) == lean  # the lean INSERT was made, or not
    assert len(stored[True]) == 5
    assert stored[True] == stored[False]
