"""The documents' hook into the apply path: it sees each new event once, inside the batch's
transaction, and a hook that fails never keeps a movement out of the ledger."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.server.ledger import AppliedBatch, Store
from tests.factories import event
from tests.server.helpers import batch


def test_a_hook_sees_the_new_events_once_with_the_stock_already_changed(tmp_path: Path) -> None:
    seen: list[tuple[str, list[str], float]] = []

    def hook(cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
        (on_hand,) = cur.execute("SELECT COALESCE(SUM(quantity), 0) FROM stock").fetchone()
        seen.append((applied.device, [e.id for e in applied.events], on_hand))

    first, second = event(0, qty=2), replace(event(1, qty=3), doc=wire.DocRef("receipt", "A-1"))
    with Store(tmp_path / "ledger.db") as store:
        store.add_batch_hook(hook)
        store.apply_batch(batch("wh1", "hh-1", first, second, first), source="mqtt")
        store.apply_batch(batch("wh1", "hh-1", second), source="mqtt")  # a re-send: nothing new
    assert seen == [("hh-1", [first.id, second.id], 5)]


def test_a_failing_hook_is_rolled_back_and_the_movements_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(cur: sqlite3.Cursor, applied: AppliedBatch) -> None:
        cur.execute("INSERT INTO exceptions (kind, raised_at, detail)"
                    " VALUES ('receipt_over', 'now', 'half done')")
        raise RuntimeError("document bookkeeping bug")

    with Store(tmp_path / "ledger.db") as store:
        store.add_batch_hook(broken)
        results = store.apply_batch(batch("wh1", "hh-1", event(0)), source="mqtt")
        assert [r.status for r in results] == ["applied"]
        assert store.summary()["events"] == 1
        assert store._query("SELECT COUNT(*) FROM exceptions") == [(0,)]
    assert "document bookkeeping bug" in caplog.text
