"""A door's hold list and refused movements survive an agent restart (real outbox, SQLite)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge.doorstate import DoorKeeper
from edge.outbox import Outbox
from edge.portal import Door
from tests.edge.test_door_scenarios import Floor, case, door, run
from tests.factories import events

CONFIG = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", hold_s=60.0)


def pending_ids(outbox: Outbox) -> list[str]:
    return [p.id for p in outbox.take(1000)]


def test_a_parked_tag_is_not_received_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    floor = Floor()
    floor.sweep("door-a", case(1), 1, 1.0, 2.0)
    with Outbox(path) as outbox:
        before = Door(CONFIG)
        keeper = DoorKeeper(outbox, before)
        first = run([before], floor, until=10)
        assert [e.type for e in first.events] == ["receive"]
        assert keeper.keep(first.events) == (1, True)
    # the agent restarts; the pallet is still in the field and read again 20 s later
    again = Floor()
    again.sweep("door-a", case(1), 1, 22.0, 23.0)
    with Outbox(path) as outbox:
        after = Door(CONFIG)
        DoorKeeper(outbox, after)
        second = run([after], again, until=30)
    assert second.events == []  # held: not received twice
    assert sum(r.held for r in second.reports) == 1


def test_without_the_saved_state_the_same_tag_would_be_received_again(tmp_path: Path) -> None:
    """The control for the test above: the restart is what the saved hold list covers."""
    again = Floor()
    again.sweep("door-a", case(1), 1, 22.0, 23.0)
    assert [e.type for e in run([Door(CONFIG)], again, until=30).events] == ["receive"]


def test_refused_movements_wait_on_disk_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    moved = events(3)
    with Outbox(path, cap_bytes=600) as outbox:  # about 600 bytes: three events do not fit
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert keeper.keep(moved[:2]) == (0, False)
        assert keeper.keep(moved[2:]) == (0, False)
        assert outbox.stats().pending == 0
    with Outbox(path) as outbox:  # restarted, with room
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert [e.id for e in keeper.backlog] == [e.id for e in moved]
        assert keeper.keep([]) == (3, True)
        assert pending_ids(outbox) == [e.id for e in moved]  # same ids: applied once centrally
        assert keeper.backlog == []
    with Outbox(path) as outbox:  # and once kept, they are not restored a second time
        assert DoorKeeper(outbox, Door(CONFIG)).backlog == []


@pytest.mark.parametrize("saved", [
    "not json", "[]", '{"v": 99}', '{"v": 1, "held": []}',
    '{"v": 1, "held": {"x": ["receive", "NaN"]}}', '{"v": 1, "held": {"x": ["receive"]}}',
    '{"v": 1, "held": {}, "backlog": [{"id": "nope"}]}', '{"v": 1, "held": {"x": [1, 2]}}',
])
def test_unreadable_saved_state_is_said_and_the_door_works(
    tmp_path: Path, saved: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.add([], context=("door:door-a", saved))
        caplog.set_level(logging.ERROR)
        d = Door(CONFIG)
        keeper = DoorKeeper(outbox, d)
        assert "saved state unreadable" in caplog.text
        assert keeper.backlog == []
        floor = Floor()
        floor.sweep("door-a", case(1), 1, 1.0, 2.0)
        moved = run([d], floor, until=10).events
        assert keeper.keep(moved) == (1, True)
        assert [e.type for e in moved] == ["receive"]


def test_the_hold_list_is_saved_only_when_it_changed(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        d = Door(CONFIG)
        keeper = DoorKeeper(outbox, d)
        assert keeper.keep([]) == (0, True)
        assert outbox.context("door:door-a") is None  # nothing to say yet
        floor = Floor()
        floor.sweep("door-a", case(1), 1, 1.0, 2.0)
        keeper.keep(run([d], floor, until=10).events)
        saved = json.loads(outbox.context("door:door-a") or "null")
        assert saved["v"] == 1 and saved["backlog"] == []
        assert [(tag, m) for tag, (m, _) in saved["held"].items()] == [(case(1), "receive")]
        assert d.held_state() is None  # given once, not again until it changes
