"""The edge's line for events the central service rejected: once per event, when its ack
settles it, naming the event ids and reasons (a repeated ack rejects nothing again)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.edge.outbox import Outbox
from tests.factories import events


def rejected_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "floorsync.edge.outbox" and "rejected" in r.getMessage()]


def test_a_rejection_is_logged_once_with_its_event_ids(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="floorsync.edge.outbox")
    with Outbox(tmp_path / "outbox.db") as outbox:
        a, b, c = outbox.add(events(3))
        outbox.take(3)
        first = (wire.Result(a.id, "rejected", "unknown item"), wire.Result(b.id, "applied"))
        assert outbox.settle(first).rejected == 1
        # the same ack again (a QoS 1 re-delivery), now with a new rejection beside it
        again = (*first, wire.Result(c.id, "rejected", "qty must be positive"))
        assert outbox.settle(again).rejected == 1
        assert outbox.settle(again).rejected == 0
    one, two = rejected_lines(caplog)
    assert one.getMessage() == f"central service rejected 1 event(s): {a.id}: unknown item"
    fields = vars(one)  # what extra= put on the record
    assert (fields["event_ids"], fields["reasons"], fields["events"]) == (
        [a.id], ["unknown item"], 1)
    assert vars(two)["event_ids"] == [c.id]
    assert one.levelno == logging.WARNING
