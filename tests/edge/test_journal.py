"""The door journal on real SQLite files: what is committed comes back, in read-time order;
a torn last write costs only itself; the cap refuses instead of evicting; trims keep live passes."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from floorsync.devices.base import TagRead
from floorsync.edge.journal import ROW_BYTES, DoorJournal, GpiChange, JournalFull, read_stats

T0 = datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=UTC)


def read(n: int, epc: str = "3074257BF7194E4000001A85", antenna: int = 1,
         at: datetime | None = None) -> TagRead:
    return TagRead("door-1", epc, antenna, -52.5 - n % 7, at or T0 + timedelta(milliseconds=n))


def test_committed_reads_come_back_in_read_time_order(tmp_path: Path) -> None:
    path = tmp_path / "door-1.db"
    with DoorJournal(path, "door-1") as journal:
        late = read(0, at=T0 - timedelta(seconds=1))
        journal.put(read(2))
        journal.put(late)  # an older read arriving later
        journal.put_gpi(1, True, T0 + timedelta(microseconds=1))
        entries, last = journal.commit()
        assert entries == [read(2), late, GpiChange(1, True, T0 + timedelta(microseconds=1))]
        assert last == 3
    with DoorJournal(path, "door-1") as journal:  # a restart
        kept = [entry for _, entry in journal.entries()]
    assert kept == [late, GpiChange(1, True, T0 + timedelta(microseconds=1)), read(2)]
    assert kept[2].at == read(2).at and kept[2].rssi == read(2).rssi  # microseconds exact


def test_ids_continue_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "door-1.db"
    with DoorJournal(path, "door-1") as journal:
        journal.put(read(1))
        assert journal.commit()[1] == 1
    with DoorJournal(path, "door-1") as journal:
        journal.put(read(2))
        assert journal.commit()[1] == 2


def test_only_committed_reads_survive(tmp_path: Path) -> None:
    path = tmp_path / "door-1.db"
    journal = DoorJournal(path, "door-1")
    journal.put(read(1))
    journal.commit()
    journal.put(read(2))  # buffered, never committed: the reader was not acknowledged
    journal.close()
    with DoorJournal(path, "door-1") as again:
        assert [entry for _, entry in again.entries()] == [read(1)]


def test_a_torn_last_write_costs_only_itself(tmp_path: Path) -> None:
    """Copy the files of a live journal (as a crash leaves them), cut the WAL inside its last
    frame: the journal opens, and every transaction before the torn one is there."""
    path = tmp_path / "door-1.db"
    journal = DoorJournal(path, "door-1")
    for batch in range(3):
        for n in range(batch * 100, batch * 100 + 100):
            journal.put(read(n, epc=f"3074257BF7194E40{n:08X}"))
        journal.commit()
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(path, crashed / "door-1.db")
    shutil.copy(wal, crashed / "door-1.db-wal")
    journal.close()
    torn = crashed / "door-1.db-wal"
    size = torn.stat().st_size
    with torn.open("r+b") as f:
        f.truncate(size - 100)  # the last frame of the last commit is cut short
    with DoorJournal(crashed / "door-1.db", "door-1") as reopened:
        epcs = [entry.epc for _, entry in reopened.entries()]  # type: ignore[union-attr]
        assert epcs == [f"3074257BF7194E40{n:08X}" for n in range(200)]
        reopened.put(read(999))
        assert reopened.commit()[1] == 201  # and it goes on writing


def test_the_cap_refuses_and_never_evicts(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    with DoorJournal(tmp_path / "door-1.db", "door-1", cap_bytes=100 * ROW_BYTES) as journal:
        caplog.set_level(logging.WARNING)
        for n in range(85):
            journal.put(read(n))
        journal.commit()
        assert "85% full" in caplog.text
        for n in range(85, 101):
            journal.put(read(n))
        with pytest.raises(JournalFull, match="16 read"):
            journal.commit()
        assert journal.buffered == 0 and journal.refused == 16
        assert len(journal.entries()) == 85  # nothing evicted, nothing of the batch kept
        assert journal.trim(85, float("inf"), {}) == 85  # room again
        journal.put(read(200))
        assert len(journal.commit()[0]) == 1


def test_trim_keeps_live_passes_and_what_the_door_has_not_seen(tmp_path: Path) -> None:
    with DoorJournal(tmp_path / "door-1.db", "door-1") as journal:
        parked, passing = "3074257BF7194E4000000001", "3074257BF7194E4000000002"
        for n in range(10):  # both tags read over 10 ms
            journal.put(read(n, epc=parked))
            journal.put(read(n, epc=passing))
        journal.put_gpi(1, False, T0)
        _, upto = journal.commit()
        journal.put(read(0, epc=passing, at=T0 - timedelta(seconds=5)))  # not handed over yet
        journal.commit()
        horizon = (T0 + timedelta(milliseconds=8)).timestamp()
        live = {parked: (T0 + timedelta(milliseconds=3)).timestamp()}
        assert journal.trim(upto, horizon, live) == 8 + 3 + 1  # passing < 8 ms, parked < 3 ms, gpi
        left = sorted((e.epc, e.at) for _, e in journal.entries()  # type: ignore[union-attr]
                      if isinstance(e, TagRead))
        assert left == sorted(
            [(parked, T0 + timedelta(milliseconds=n)) for n in range(3, 10)]
            + [(passing, T0 + timedelta(milliseconds=n)) for n in range(8, 10)]
            + [(passing, T0 - timedelta(seconds=5))])
        assert journal.stats().rows == 10


def test_row_bytes_bounds_the_file(tmp_path: Path) -> None:
    """ROW_BYTES is the cap's measure: a checkpointed journal takes no more per row."""
    path = tmp_path / "door-1.db"
    with DoorJournal(path, "door-1") as journal:
        for n in range(20_000):
            journal.put(read(n, epc=f"3074257BF7194E40{n:08X}", antenna=1 + n % 4))
            if n % 500 == 499:
                journal.commit()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        per_row = path.stat().st_size / 20_000
        assert ROW_BYTES * 0.5 < per_row <= ROW_BYTES
        stats = read_stats(tmp_path, ["door-1", "door-2"])
        assert stats["door-2"] is None
        assert stats["door-1"] is not None and stats["door-1"].rows == 20_000
