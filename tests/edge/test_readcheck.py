"""edge.readcheck: the reads a door refuses, at and around every bound."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from floorsync.devices.base import TagRead
from floorsync.edge.config import PortalConfig
from floorsync.edge.errors import ConfigError
from floorsync.edge.readcheck import DEFAULT_BOUNDS, KINDS, ReadBounds, check_read

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD = TagRead("dock-1", "3074257BF7194E4000001A85", 1, -52.5, NOW, 1)


def kind(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":")[0]


def test_defaults() -> None:
    assert (DEFAULT_BOUNDS.max_ahead_s, DEFAULT_BOUNDS.max_behind_s) == (300.0, 7 * 24 * 3600.0)
    assert check_read(GOOD, NOW) is None


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(seconds=300), None),  # exactly at the bound: kept
        (timedelta(seconds=300, microseconds=1), "read time too far ahead"),
        (timedelta(days=365 * 30), "read time too far ahead"),
        (-timedelta(days=1), None),  # a day-old backlog flushed after an outage
        (-timedelta(days=7), None),
        (-timedelta(days=7, microseconds=1), "read time too far behind"),
        (-timedelta(days=365 * 56), "read time too far behind"),  # a reader clock at 1970
    ],
)
def test_time_bounds(offset: timedelta, expected: str | None) -> None:
    assert kind(check_read(replace(GOOD, at=NOW + offset), NOW)) == expected


def test_reason_says_what_was_seen() -> None:
    reason = check_read(replace(GOOD, at=NOW + timedelta(hours=1)), NOW)
    assert reason == (
        "read time too far ahead: 2026-01-02T04:04:05+00:00 is 3600 s ahead of host time "
        "(max_ahead_s 300)"
    )
    reason = check_read(replace(GOOD, at=NOW - timedelta(days=8)), NOW, ReadBounds(60, 86400))
    assert reason == (
        "read time too far behind: 2025-12-25T03:04:05+00:00 is 691200 s behind host time "
        "(max_behind_s 86400)"
    )


def test_other_time_zones_and_extremes() -> None:
    east = timezone(timedelta(hours=14))
    assert check_read(replace(GOOD, at=NOW.astimezone(east)), NOW) is None
    far = [datetime(1, 1, 1, tzinfo=east), datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
           datetime(1, 1, 1, tzinfo=UTC)]
    assert [kind(check_read(replace(GOOD, at=at), NOW)) for at in far] == [
        "read time too far behind", "read time too far ahead", "read time too far behind"
    ]
    naive = replace(GOOD, at=NOW.replace(tzinfo=None))
    assert kind(check_read(naive, NOW)) == "read time unusable"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"epc": "E280"}, None),
        ({"epc": "e280"}, None),  # case is not the checker's business
        ({"epc": "E280" * 31}, None),  # 496 bits
        ({"epc": "E280" * 31 + "0000"}, "bad EPC"),  # 512 bits
        ({"epc": "E28011"}, "bad EPC"),  # 24 bits: not whole words
        ({"epc": "E28"}, "bad EPC"),
        ({"epc": ""}, "bad EPC"),
        ({"epc": "NOTHEX!!"}, "bad EPC"),
        ({"antenna": 0}, None),
        ({"antenna": 65535}, None),
        ({"antenna": 65536}, "bad antenna"),
        ({"antenna": -1}, "bad antenna"),
        ({"antenna": 1.5}, "bad antenna"),
        ({"antenna": True}, "bad antenna"),
        ({"seen": 0}, "bad seen count"),
        ({"seen": 10**9}, "bad seen count"),
        ({"rssi": None}, None),
        ({"rssi": float("nan")}, "bad rssi"),
        ({"rssi": float("-inf")}, "bad rssi"),
    ],
)
def test_read_fields(change: dict[str, object], expected: str | None) -> None:
    assert kind(check_read(replace(GOOD, **change), NOW)) == expected  # type: ignore[arg-type]


def test_reasons_start_with_a_known_kind() -> None:
    bad = [replace(GOOD, at=NOW + timedelta(days=1)), replace(GOOD, at=NOW - timedelta(days=9)),
           replace(GOOD, at=NOW.replace(tzinfo=None)), replace(GOOD, epc="E2"),
           replace(GOOD, antenna=-5), replace(GOOD, seen=0), replace(GOOD, rssi=float("nan"))]
    assert sorted(kind(check_read(r, NOW)) or "" for r in bad) == sorted(KINDS)


def test_bounds_and_portal_settings_are_validated() -> None:
    for bad in (0, -1, float("inf"), float("nan"), True, "300"):
        with pytest.raises(ValueError):
            ReadBounds(max_ahead_s=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="max_behind_s"):
            PortalConfig("door-1", "DOCK-1", max_behind_s=bad).check()  # type: ignore[arg-type]
    config = PortalConfig("door-1", "DOCK-1")
    config.check()
    assert (config.max_ahead_s, config.max_behind_s) == (300.0, 604800.0)
    PortalConfig("door-1", "DOCK-1", max_ahead_s=5, max_behind_s=3600).check()
