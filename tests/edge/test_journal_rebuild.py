"""A door rebuilt from its journal after a crash, with the real journal and outbox: passes
already decided are not given twice, passes still open come out as they would have, and a
buried case still finds the pallet it travelled with."""

from __future__ import annotations

from pathlib import Path

from floorsync.devices.base import TagRead
from floorsync.edge.doorstate import DoorKeeper
from floorsync.edge.journal import DoorJournal
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from tests.edge.test_dock_direction import IN, OUT, at, door_config, reads, tag


def pallet_with_a_buried_case() -> tuple[list[TagRead], list[str], str]:
    pallet = [tag(10 + i) for i in range(6)]
    stream: list[TagRead] = []
    for i, x in enumerate(pallet):
        stream += reads("door-a", x, OUT, 1.0 + 0.05 * i, 2.5 + 0.05 * i)
        stream += reads("door-a", x, IN, 4.0 + 0.05 * i, 5.5 + 0.05 * i)
    buried = tag(99)  # read twice, outside only: it takes its pallet's direction
    stream += [TagRead("door-a", buried, OUT, -66.0, at(1.6)),
               TagRead("door-a", buried, OUT, -65.0, at(2.1))]
    return sorted(stream, key=lambda r: r.at), pallet, buried


def receives(outbox: Outbox) -> list[str]:
    import json

    rows = outbox.db.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    return sorted(json.loads(p)["read"]["tag"] for (p,) in rows
                  if json.loads(p)["type"] == "receive")


def test_a_door_rebuilt_after_a_crash_gives_every_crossing_once(tmp_path: Path) -> None:
    stream, pallet, buried = pallet_with_a_buried_case()
    with Outbox(tmp_path / "outbox.db") as outbox:
        journal = DoorJournal(tmp_path / "journal" / "door-a.db", "door-a")
        door = Door(door_config("door-a"))
        keeper = DoorKeeper(outbox, door)
        for read in stream:
            journal.put(read)
        _, upto = journal.commit()
        for read in stream:
            door.add(read)
        # The pallet's passes are decided and kept; the buried case still waits for a side.
        keeper.keep(door.advance(at(9.5)))
        horizon, live = door.journal_marks()
        journal.trim(upto, horizon, live)
        assert receives(outbox) == sorted(pallet)
        journal.close()  # the crash: the door's memory is gone

        rebuilt = Door(door_config("door-a"))
        keeper = DoorKeeper(outbox, rebuilt)  # its hold list, from the outbox
        with DoorJournal(tmp_path / "journal" / "door-a.db", "door-a") as again:
            for _, entry in again.entries():
                rebuilt.add(entry)  # type: ignore[arg-type]
        keeper.keep(rebuilt.advance(at(30)))
        assert receives(outbox) == sorted([*pallet, buried])  # each once, the buried one too
