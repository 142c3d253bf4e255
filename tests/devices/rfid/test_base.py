"""Shared helpers: EPC and time normalisation, JSON splitting, the reconnect supervisor."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from devices.base import DeviceGone
from devices.rfid.base import ParseError, iter_json, normalize_epc, parse_timestamp, supervise


def test_normalize_epc() -> None:
    assert normalize_epc(" 3074257bf7194e4000001a85\n") == "3074257BF7194E4000001A85"
    assert normalize_epc(b"e280") == "E280"
    for bad in ("", "XYZ", "E28", "E2 80", None, 12):
        with pytest.raises(ValueError):
            normalize_epc(bad)


def test_parse_timestamp_forms() -> None:
    want = datetime(2021, 7, 9, 23, 35, 59, 278427, tzinfo=UTC)
    assert parse_timestamp("2021-07-09T23:35:59.278427551Z") == want  # nanoseconds truncated
    assert parse_timestamp("2021-07-09T23:35:59.278427+0000") == want
    assert parse_timestamp("2021-07-09T23:35:59.278427") == want  # naive: UTC
    epoch = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse_timestamp(1_700_000_000) == epoch
    assert parse_timestamp(1_700_000_000_000) == epoch
    assert parse_timestamp(1_700_000_000_000_000) == epoch
    for bad in ("yesterday", "", -1, True, None, float("nan")):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_iter_json_lines_concatenated_and_bad_parts() -> None:
    data = b'{"a": 1}{"b": 2}\n[1, 2]\nnot json\n{"c": 3}\n{"d": '
    items = list(iter_json(data))
    values = [i[0] for i in items if not isinstance(i, ParseError)]
    errors = [i for i in items if isinstance(i, ParseError)]
    assert values == [{"a": 1}, {"b": 2}, [1, 2], {"c": 3}]
    assert [e.raw for e in errors] == [b"not json", b'{"d": ']
    assert "invalid JSON" in errors[0].reason and "truncated JSON" in errors[1].reason
    assert isinstance(next(iter(iter_json(b"\xff\xfe"))), ParseError)


def _run(
    session: Callable[[Callable[[], None]], None],
    stop: threading.Event,
    min_backoff: float = 0.02,
    max_backoff: float = 0.08,
) -> list[bool]:
    states: list[bool] = []
    thread = threading.Thread(
        target=supervise,
        args=(session, stop, states.append),
        kwargs={"min_backoff": min_backoff, "max_backoff": max_backoff},
    )
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return states


def test_supervise_reports_changes_once_and_backs_off() -> None:
    stop = threading.Event()
    attempts: list[float] = []

    def session(mark_online: Callable[[], None]) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 4:
            raise DeviceGone("not there")
        mark_online()
        mark_online()  # reported once
        if len(attempts) == 5:
            raise DeviceGone("lost at once")  # a flap: no immediate retry
        stop.set()

    states = _run(session, stop)
    assert states == [False, True, False, True]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.009 for g in gaps)  # never a tight loop
    assert max(gaps) <= 0.5  # capped


def test_supervise_retries_at_once_after_a_connection_that_held() -> None:
    stop = threading.Event()
    attempts: list[float] = []
    lost_at: list[float] = []

    def session(mark_online: Callable[[], None]) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            mark_online()
            time.sleep(0.25)  # held longer than max_backoff
            lost_at.append(time.monotonic())
            raise DeviceGone("unplugged")
        stop.set()

    assert _run(session, stop, min_backoff=0.2, max_backoff=0.2) == [True, False]
    assert attempts[1] - lost_at[0] < 0.09  # a backoff would have waited 0.1..0.2 s


def test_supervise_stops_during_backoff() -> None:
    stop = threading.Event()

    def session(mark_online: Callable[[], None]) -> None:
        raise DeviceGone("never there")

    threading.Timer(0.2, stop.set).start()
    assert _run(session, stop) == [False]
