"""supervise's reason lines: each reason once per outage, even when two alternate on every retry
(they were logged on every change of reason), and again after the reader was back online."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from floorsync.devices.base import DeviceGone
from floorsync.devices.rfid.base import MAX_REASONS_SAID, supervise


def reasons_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "floorsync.devices.rfid.base" and r.levelno == logging.WARNING]


def run(session: Callable[[Callable[[], None]], None], stop: threading.Event) -> None:
    thread = threading.Thread(target=supervise, args=(session, stop),
                              kwargs={"min_backoff": 0.001, "max_backoff": 0.002})
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_alternating_reasons_are_said_once_each_per_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="floorsync.devices.rfid.base")
    stop, attempts = threading.Event(), [0]

    def session(mark_online: Callable[[], None]) -> None:
        attempts[0] += 1
        n = attempts[0]
        if n == 21:
            mark_online()  # back: a new outage may say its reasons again
            raise DeviceGone("connection refused")
        if n > 24:
            stop.set()
            return
        raise DeviceGone("connection refused" if n % 2 else "no route to host")

    run(session, stop)
    assert reasons_logged(caplog) == [
        "connection refused; retrying", "no route to host; retrying",
        "connection refused; retrying", "no route to host; retrying"]


def test_a_reason_with_a_changing_detail_is_said_a_bounded_number_of_times(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="floorsync.devices.rfid.base")
    stop, attempts = threading.Event(), [0]

    def session(mark_online: Callable[[], None]) -> None:
        attempts[0] += 1
        if attempts[0] > 50:
            stop.set()
            return
        raise DeviceGone(f"timed out after {attempts[0]} ms")

    run(session, stop)
    assert len(reasons_logged(caplog)) == MAX_REASONS_SAID
