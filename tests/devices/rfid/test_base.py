"""Shared helpers: EPC and time normalisation, JSON splitting, the reconnect supervisor."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from floorsync.devices.base import DeviceGone
from floorsync.devices.rfid.base import (
    MAX_BAD_PARTS,
    ParseError,
    epc_problem,
    iter_json,
    normalize_epc,
    parse_antenna,
    parse_float,
    parse_seen,
    parse_timestamp,
    supervise,
)


def test_normalize_epc() -> None:
    assert normalize_epc(" 3074257bf7194e4000001a85\n") == "3074257BF7194E4000001A85"
    assert normalize_epc(b"e280") == "E280"
    assert normalize_epc("E280" * 31) == "E280" * 31  # 496 bits: the largest EPC bank
    for bad in ("", "  ", "XYZ", "E28", "E2 80", "E28011", "E280" * 32, None, 12, b"\xff"):
        with pytest.raises(ValueError):
            normalize_epc(bad)


@pytest.mark.parametrize(
    ("epc", "reason"),
    [
        ("", "EPC is empty"),
        ("E2", "EPC of 2 hex digits (8 bits) is not a whole number of 16-bit words"),
        ("E28011", "EPC of 6 hex digits (24 bits) is not a whole number of 16-bit words"),
        ("E28", "EPC of 3 hex digits (12 bits) is not a whole number of 16-bit words"),
        ("0" * 128, "EPC of 128 hex digits (512 bits) is longer than the largest EPC bank "
                    "(496 bits)"),
        ("E28G", "EPC is not hex: 'E28G'"),
        (None, "EPC is not a string: NoneType"),
        ("e280", None),
        ("0" * 124, None),
    ],
)
def test_epc_problem(epc: object, reason: str | None) -> None:
    assert epc_problem(epc) == reason


def test_parse_int_bounds_and_junk() -> None:
    assert parse_antenna("65535") == 65535 and parse_antenna(0) == 0 and parse_antenna(4.0) == 4
    for bad, why in [
        (-1, "below 0"), (65536, "above 65535"), (10**400, "above 65535"), (1e300, "above"),
        (1.5, "not an integer"), ("1e3", "not an integer"), ("\u0661", "not an integer"),
        ("9" * 5000, "not an integer"), (True, "not an integer"), (None, "not an integer"),
        (float("inf"), "not an integer"), (float("nan"), "not an integer"),
    ]:
        with pytest.raises(ValueError, match=why) as info:
            parse_antenna(bad)
        assert len(str(info.value)) < 100  # a huge value is not copied into the reason
    with pytest.raises(ValueError, match="above 1000000"):
        parse_seen(10**7)
    with pytest.raises(ValueError, match="not a number"):
        parse_float(10**400, "rssi")


def test_parse_timestamp_forms() -> None:
    want = datetime(2021, 7, 9, 23, 35, 59, 278427, tzinfo=UTC)
    assert parse_timestamp("2021-07-09T23:35:59.278427551Z") == want  # nanoseconds truncated
    assert parse_timestamp("2021-07-09T23:35:59.278427+0000") == want
    assert parse_timestamp("2021-07-09T23:35:59.278427") == want  # naive: UTC
    epoch = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse_timestamp(1_700_000_000) == epoch
    assert parse_timestamp(1_700_000_000_000) == epoch
    assert parse_timestamp(1_700_000_000_000_000) == epoch
    for bad in ("yesterday", "", -1, True, None, float("nan"), 10**400, 1e300,
                "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
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


def test_iter_json_values_python_cannot_hold() -> None:
    """Nesting past the recursion limit and integers over 4300 digits raise other than
    JSONDecodeError inside json: they are bad parts too, and the next line still counts."""
    data = b"[" * 100_000 + b'\n{"a": ' + b"1" * 5000 + b'}\n{"ok": 1}\n'
    first, second, third = iter_json(data)
    assert isinstance(first, ParseError) and isinstance(second, ParseError)
    assert first.reason == "invalid JSON: nested too deep" and first.raw == b"[" * 512
    assert second.reason.startswith("invalid JSON: Exceeds the limit (4300 digits)")
    assert third == ({"ok": 1}, b'{"ok": 1}')
    assert len(second.raw) <= 512


def test_iter_json_gives_up_on_a_payload_of_garbage() -> None:
    """Each bad part costs json a scan of the payload: past MAX_BAD_PARTS the rest is one error."""
    data = b'{"ok": 1}\n' + b"junk\n" * 200_000 + b'{"ok": 2}\n'
    began = time.monotonic()
    items = list(iter_json(data))
    assert time.monotonic() - began < 1.0
    errors = [i for i in items if isinstance(i, ParseError)]
    assert items[0] == ({"ok": 1}, b'{"ok": 1}')
    assert len(errors) == MAX_BAD_PARTS + 1
    assert errors[-1].reason == (
        f"gave up after {MAX_BAD_PARTS} bad parts: {len(data) - 10 - MAX_BAD_PARTS * 5} "
        "bytes skipped"
    )
    assert errors[-1].raw == b"junk\n" * 102 + b"ju"
    assert list(iter_json(b"junk\n" * MAX_BAD_PARTS)) == [
        ParseError("invalid JSON: Expecting value at char 0", b"junk")
    ] * MAX_BAD_PARTS  # exactly at the limit with nothing left: nothing given up


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
