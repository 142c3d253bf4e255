"""A door's hold list and refused movements survive an agent restart (real outbox, SQLite)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.edge.doorstate import DoorKeeper
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
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
    with Outbox(path, cap_bytes=100) as outbox:  # not even one event fits
        keeper = DoorKeeper(outbox, Door(CONFIG), clock=lambda: 0.0)
        assert keeper.keep(moved[:2]) == (0, False)
        assert keeper.keep(moved[2:]) == (0, False)  # saved with the others, not tried
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
        assert saved == {"v": 2, "backlog": []}
        holds = outbox.door_holds("door-a")
        assert [(tag, m) for tag, (m, _) in holds.items()] == [(case(1), "receive")]
        assert not d.held_dirty and d.take_held_changes() == ({}, set())  # given once


def test_a_version_1_hold_list_moves_to_its_table(tmp_path: Path) -> None:
    """An outbox written before the hold list had its table: restored, then saved there."""
    with Outbox(tmp_path / "outbox.db") as outbox:
        old = {"v": 1, "held": {case(7): ["receive", 1000.0]}, "backlog": []}
        outbox.add([], context=("door:door-a", json.dumps(old)))
        d = Door(CONFIG)
        keeper = DoorKeeper(outbox, d)
        assert keeper.keep([], last=True) == (0, True)
        assert outbox.door_holds("door-a") == {case(7): ("receive", 1000.0)}
        assert json.loads(outbox.context("door:door-a") or "null") == {"v": 2, "backlog": []}


def test_the_hold_list_is_saved_as_changes_and_forgets_what_expired(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        d = Door(CONFIG)
        keeper = DoorKeeper(outbox, d)
        floor = Floor()
        floor.sweep("door-a", case(1), 1, 1.0, 2.0)
        floor.sweep("door-a", case(2), 1, 3.0, 4.0)
        keeper.keep(run([d], floor, until=10).events)
        assert set(outbox.door_holds("door-a")) == {case(1), case(2)}
        keeper.keep(run([d], Floor(), until=CONFIG.hold_s + 30).events, last=True)
        assert outbox.door_holds("door-a") == {}  # held past hold_s: forgotten on disk too


def test_a_backlog_bigger_than_the_whole_cap_gets_in_as_room_is_made(tmp_path: Path) -> None:
    clock = [0.0]
    moved = events(8)
    with Outbox(tmp_path / "outbox.db", cap_bytes=100) as outbox:
        keeper = DoorKeeper(outbox, Door(CONFIG), clock=lambda: clock[0])
        assert keeper.keep(moved) == (0, False)
        one = len(moved[0].id) + 700  # room for about two events at a time
        outbox.cap_bytes = 2 * one
        taken: list[str] = []
        while keeper.backlog:
            clock[0] += 60.0  # past any pause
            kept, _ = keeper.keep([])
            assert kept > 0, "no progress"
            for pending in outbox.take(100):  # synced and acked: room again
                taken.append(pending.id)
                outbox.settle([wire.Result(pending.id, "applied")])
            outbox.purge()
        assert taken == [e.id for e in moved]  # in order, each once


def test_while_paused_new_movements_are_saved_not_tried(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    caplog.set_level(logging.ERROR)
    with Outbox(tmp_path / "outbox.db", cap_bytes=100) as outbox:
        keeper = DoorKeeper(outbox, Door(CONFIG), clock=lambda: clock[0])
        made = events(3)
        keeper.keep(made[:1])
        for n in range(20):  # ticks of an outage: logged once, the state rewritten only on news
            clock[0] += 0.1
            keeper.keep(made[1:2] if n == 5 else [])
        assert sum("kept on disk to retry" in r.getMessage() for r in caplog.records) == 1
        saved = json.loads(outbox.context("door:door-a") or "null")
        assert [e["id"] for e in saved["backlog"]] == [e.id for e in made[:2]]


def test_restored_movements_already_in_the_outbox_are_not_kept_twice(tmp_path: Path) -> None:
    moved = events(2)
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.add(moved[:1])
        state = {"v": 1, "held": {}, "backlog": [
            wire.event_to_dict(replace(e, seq=1)) for e in moved]}
        outbox.add([], context=("door:door-a", json.dumps(state)))
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert [e.id for e in keeper.backlog] == [moved[1].id]
        assert keeper.keep([]) == (1, True)
        assert outbox.stats().pending == 2


def test_a_partly_unreadable_state_keeps_what_it_can_and_the_text(tmp_path: Path) -> None:
    good = events(1)[0]
    state = {"v": 1, "held": {case(1): ["receive", 1e9]},
             "backlog": [wire.event_to_dict(replace(good, seq=1)), {"id": "nope"}]}
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.add([], context=("door:door-a", json.dumps(state)))
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert [e.id for e in keeper.backlog] == [good.id]
        (kept,) = outbox.exceptions()
        assert "unreadable" in kept[2] and '"nope"' in (kept[3] or "")


@pytest.mark.parametrize("held", ["1" + "0" * 400, "[" * 100_000 + "]" * 100_000])
def test_absurd_saved_numbers_or_nesting_are_not_fatal(tmp_path: Path, held: str) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.add([], context=("door:door-a", '{"v": 1, "held": {"x": ["receive", '
                                 + held + "]}}"))
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert keeper.backlog == []


def test_movements_the_outbox_holds_are_not_added_again(tmp_path: Path) -> None:
    """A pass rebuilt from the journal after a restart has the id it had: kept once."""
    with Outbox(tmp_path / "outbox.db") as outbox:
        floor = Floor()
        floor.sweep("door-a", case(1), 1, 1.0, 2.0)
        first = run([Door(CONFIG)], floor, until=10).events
        again = run([Door(CONFIG)], floor, until=10).events  # the same reads, a new door
        assert [e.id for e in again] == [e.id for e in first]
        keeper = DoorKeeper(outbox, Door(CONFIG))
        assert keeper.keep(first) == (1, True)
        assert keeper.keep(again) == (0, True)
        assert len(pending_ids(outbox)) == 1
