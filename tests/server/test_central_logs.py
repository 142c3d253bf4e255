"""What the central service says in its log about the floor, on both engines: a new exception
record once (not each occurrence added to it), and a device's presence once per change."""

from __future__ import annotations

import logging

import pytest

from floorsync.edge import wire
from floorsync.server.ledger import Store
from tests.factories import event
from tests.server.helpers import batch

LOGGER = "floorsync.server.ledger"


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and needle in r.getMessage()]


def test_a_new_exception_is_logged_once_with_its_event(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    first = event(type="pick", from_="A-09-09")
    store.apply_batch(batch("wh1", "hh-01", first), source="http")
    (line,) = _lines(caplog, "exception(s) raised")
    assert line.levelno == logging.INFO
    assert "wh1/hh-01: 1 exception(s) raised: negative_stock" in line.getMessage()
    assert first.id in line.getMessage()
    assert line.event_ids == [first.id] and line.kinds == ["negative_stock"]  # type: ignore[attr-defined]
    # the same line driven lower: an occurrence of the open record, nothing new to decide
    store.apply_batch(batch("wh1", "hh-01", event(type="pick", from_="A-09-09")), source="http")
    assert len(_lines(caplog, "exception(s) raised")) == 1
    # a batch that raises nothing says nothing
    store.apply_batch(batch("wh1", "hh-01", event(type="receive", to="DOCK-1")), source="http")
    assert len(_lines(caplog, "exception(s) raised")) == 1


def test_presence_is_logged_once_per_change(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(3):  # republished every 10 s while online
        store.update_presence("wh1", "door-1", wire.Status("online", wire.utc_now(), backlog=4))
    (online,) = _lines(caplog, "wh1/door-1 is online")
    assert online.levelno == logging.INFO and "4 event(s) unconfirmed" in online.getMessage()
    for _ in range(2):  # the last will, then a retained copy of it again
        store.update_presence("wh1", "door-1", wire.Status("offline", wire.utc_now()))
    (offline,) = _lines(caplog, "wh1/door-1 is offline")
    assert offline.levelno == logging.WARNING
    store.update_presence("wh1", "door-1", wire.Status("online", wire.utc_now(), backlog=0))
    assert len(_lines(caplog, "wh1/door-1 is online")) == 2
