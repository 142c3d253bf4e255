"""The outbox on a real SQLite file: durable capture, states, cap, retention, restart."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.edge.errors import OutboxError, OutboxFull
from floorsync.edge.outbox import ROW_OVERHEAD, Outbox
from tests.factories import events


def test_capture_is_committed_before_add_returns(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        kept = outbox.add(events(3))
        # a second connection (another process, in effect) sees the rows at once
        other = sqlite3.connect(tmp_path / "o.db")
        rows = other.execute("SELECT id, seq, state FROM outbox ORDER BY seq").fetchall()
        other.close()
    assert [r[0] for r in rows] == [e.id for e in kept]
    assert [r[1] for r in rows] == [1, 2, 3]
    assert {r[2] for r in rows} == {"pending"}


def test_outbox_uses_wal_and_full_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        assert outbox.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sequence_numbers_continue_across_restart(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.add(events(2))
    with Outbox(tmp_path / "o.db") as outbox:
        kept = outbox.add(events(2))
        assert [e.seq for e in kept] == [3, 4]
        assert outbox.stats().last_seq == 4


def test_stored_payload_is_the_wire_event(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        (kept,) = outbox.add(events(1))
        (pending,) = outbox.take(10)
    assert wire.event_from_dict(__import__("json").loads(pending.payload)) == kept


def test_states_pending_sent_acked_rejected(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        a, b, _ = outbox.add(events(3))
        taken = outbox.take(2)
        assert [p.id for p in taken] == [a.id, b.id]
        assert outbox.stats().sent == 2 and outbox.stats().pending == 1
        settled = outbox.settle(
            [wire.Result(a.id, "applied"), wire.Result(b.id, "rejected", "bad item")]
        )
        assert (settled.acked, settled.rejected) == (1, 1)
        stats = outbox.stats()
        assert (stats.pending, stats.sent, stats.acked, stats.rejected) == (1, 0, 1, 1)
        assert stats.backlog == 1
        assert outbox.rejected()[0][1] == "bad item"
        # a late duplicate verdict does not move a settled event
        outbox.settle([wire.Result(b.id, "applied")])
        assert outbox.stats().rejected == 1


def test_duplicate_verdict_counts_as_acked(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        (a,) = outbox.add(events(1))
        outbox.take(1)
        outbox.settle([wire.Result(a.id, "duplicate")])
        assert outbox.stats().acked == 1


def test_requeue_and_restart_send_again(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        a, b = outbox.add(events(2))
        outbox.take(2)
        assert outbox.requeue([a.id]) == 1
        assert [p.id for p in outbox.take(5)] == [a.id]
    with Outbox(tmp_path / "o.db") as outbox:  # both were 'sent' when the agent stopped
        assert outbox.requeue_all_sent() == 2
        assert [p.id for p in outbox.take(5)] == [a.id, b.id]


def test_send_order_survives_purge(tmp_path: Path) -> None:
    """AUTOINCREMENT: row ids are never reused after the table empties."""
    with Outbox(tmp_path / "o.db", retention_s=0) as outbox:
        first = outbox.add(events(2))
        outbox.take(2)
        outbox.settle([wire.Result(e.id, "applied") for e in first])
        time.sleep(0.01)
        assert outbox.purge() == 2
        later = outbox.add(events(1))
        (pending,) = outbox.take(1)
        assert pending.id == later[0].id
        assert pending.rowid > 2


def test_retention_keeps_acked_rows_until_due(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", retention_s=3600) as outbox:
        kept = outbox.add(events(2))
        outbox.take(2)
        outbox.settle([wire.Result(kept[0].id, "applied")])
        assert outbox.purge() == 0
        assert outbox.stats().acked == 1


def test_full_outbox_refuses_capture_and_keeps_unsynced(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", cap_bytes=4000) as outbox:
        kept = []
        with pytest.raises(OutboxFull, match="nothing was dropped"):
            for _ in range(100):
                kept += outbox.add(events(1))
        assert 0 < len(kept) < 100
        assert outbox.stats().pending == len(kept)  # none evicted
        assert outbox.pressure > 0.8
        # once events are acked, their room is reclaimed (even inside the retention)
        outbox.take(len(kept))
        outbox.settle([wire.Result(e.id, "applied") for e in kept])
        more = outbox.add(events(1))
        assert more[0].seq == len(kept) + 1


def test_pressure_warning_at_80_percent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "o.db", cap_bytes=20_000) as outbox:
        size = len(wire.encode_event(events(1)[0])) + ROW_OVERHEAD
        for _ in range(100):
            before = outbox.pressure
            outbox.add(events(1))
            warned = [r for r in caplog.records if r.levelname == "WARNING" and "full" in r.message]
            if outbox.pressure >= 0.8:
                break
            assert warned == [], f"warned at {before:.0%}"
        assert 0.8 <= outbox.pressure < 0.8 + 2 * size / 20_000
    assert len(warned) == 1


def test_concurrent_captures_share_commits_and_lose_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        ids: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(50):
                (e,) = outbox.add(events(1))
                with lock:
                    ids.append(e.id)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = outbox.db.conn.execute("SELECT id, seq FROM outbox").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert sorted(r[1] for r in rows) == list(range(1, 401))


def test_two_events_in_one_millisecond_stay_two(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        same_time = wire.local_now()
        kept = outbox.add(events(2, time=same_time))
        assert kept[0].time == kept[1].time and kept[0].id != kept[1].id
        assert outbox.stats().pending == 2


def test_a_failed_group_commit_fails_every_capture_in_it(tmp_path: Path) -> None:
    """Captures queued behind a commit that fails must not be reported as kept."""
    with Outbox(tmp_path / "o.db", cap_bytes=15_000, busy_timeout_s=0.2) as outbox:
        kept = outbox.add(events(20))
        outbox.take(100)
        outbox.settle([wire.Result(e.id, "applied") for e in kept])  # settled rows fill the cap
        other = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer: the early purge fails (like a full disk)
        outcomes: dict[int, str] = {}

        def capture(n: int) -> None:
            try:
                outbox.add(events(1))
                outcomes[n] = "kept"
            except OutboxError as exc:
                outcomes[n] = f"refused: {exc}"

        outbox._lock.acquire()  # hold the writer so the three captures queue up as one group
        threads = [threading.Thread(target=capture, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        outbox._lock.release()
        for t in threads:
            t.join(10)
        other.execute("ROLLBACK")
        other.close()
        pending = outbox.stats().pending
    assert sorted(outcomes) == [0, 1, 2]
    assert all(o.startswith("refused") for o in outcomes.values()), outcomes
    assert pending == 0


def test_a_bad_event_refuses_only_its_own_capture(tmp_path: Path) -> None:
    good = events(1)[0]
    bad = wire.Event(good.id + "x", 0, good.time, "receive", good.item, object(), None, "D")  # type: ignore[arg-type]
    with Outbox(tmp_path / "o.db") as outbox:
        with pytest.raises(OutboxError, match="cannot encode"):
            outbox.add([bad])
        assert [e.seq for e in outbox.add([good])] == [1]


def test_context_is_saved_with_the_events_it_goes_with(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.add([], context=("hh-1", '{"mode": "putaway", "pending": ["a"]}'))
        outbox.add(events(2), context=("hh-1", '{"mode": "putaway", "pending": []}'))
        outbox.add([], context=("hh-2", "{}"))
    with Outbox(tmp_path / "o.db") as outbox:  # after a restart
        assert outbox.context("hh-1") == '{"mode": "putaway", "pending": []}'
        assert outbox.context("hh-2") == "{}"
        assert outbox.context("hh-3") is None
        assert outbox.stats().pending == 2


def test_a_refused_capture_leaves_the_context_as_it_was(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", cap_bytes=3000) as outbox:
        outbox.add([], context=("hh-1", "before"))
        with pytest.raises(OutboxFull):
            outbox.add(events(20), context=("hh-1", "after"))
        assert outbox.context("hh-1") == "before"


def test_floor_exceptions_and_samples_are_kept_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import floorsync.edge.outbox as module

    monkeypatch.setattr(module, "KEEP_EXCEPTIONS", 5)
    monkeypatch.setattr(module, "KEEP_SAMPLES", 3)
    with Outbox(tmp_path / "o.db") as outbox:
        for n in range(8):
            outbox.record_exception("hh-1", f"item before location #{n}", raw="]C1...")
        outbox.record_samples("dock-1", [f"read {n}" for n in range(10)])
        reasons = [r[2] for r in outbox.exceptions()]
        samples = outbox.samples("dock-1")
    assert reasons == [f"item before location #{n}" for n in (7, 6, 5, 4, 3)]
    assert samples == ["read 9", "read 8", "read 7"]
