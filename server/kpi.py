"""What every KPI shares: the range asked for, cut into days, ISO weeks or calendar months of a
time zone, and event times read as instants inside SQL.

A day starts at local midnight of the range's time zone (where a clock change skips midnight,
at the first instant of the day), so the day of a DST change is 23 or 25 hours long; a week
starts on Monday, a month on its 1st. The range is ``[from, to)``: a date means the start of
that day in the time zone, a time must carry its UTC offset. The first and last buckets are
clipped to the range. The KPIs themselves: ``recordaccuracy``, ``docktostock``, ``orderkpis``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from floorsync.edge import wire
from floorsync.server.db import failure
from floorsync.server.errors import Refused
from floorsync.server.ledger import Store

PERIODS = ("day", "week", "month")
MAX_BUCKETS = 1000
YEARS = (1971, 2999)  # a horizon of a year before, a day of offsets after: still datetimes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*\Z")
# No UTC offset in use is wider than this (wire.MAX_OFFSET): a stored event time's text, read
# as a wall-clock time, is within it of its instant.
_OFFSET_MARGIN = timedelta(hours=15)


def invalid(detail: str) -> Refused:
    """A parameter the KPIs cannot use: 422, as the API's own validation answers."""
    return Refused(422, "invalid parameter", detail)


def time_zone(name: str) -> tzinfo:
    """An IANA time zone (``Europe/Berlin``), or ``UTC``."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    if len(name) > 64 or not _ZONE_NAME.match(name):
        raise invalid(f"tz {name[:64]!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid(f"tz {name!r} is not a time zone this server knows") from None


def to_ms(moment: datetime) -> int:
    """Milliseconds since 1970 (UTC), rounded down."""
    return (moment - _EPOCH) // _MS


def bound(text: str, zone: tzinfo, what: str) -> datetime:
    """``from``/``to``: a date (the start of that day in ``zone``) or a time with its offset,
    in the years ``YEARS``."""
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid(f"{what} {text!r} is not a date") from None
        moment = None
    else:
        try:
            moment = wire.parse_time(text, what)
        except wire.WireError as exc:
            raise invalid(f"{exc} (give a date YYYY-MM-DD or a time with its UTC offset)"
                          ) from None
        day = moment.date()
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise invalid(f"{what} {text!r} is outside the years {YEARS[0]} to {YEARS[1]}")
    return start_of(day, zone) if moment is None else moment.astimezone(UTC)


def start_of(day: date, zone: tzinfo) -> datetime:
    """The first instant of ``day`` in ``zone``, in UTC. ``fold=0`` takes the offset before a
    change: a skipped midnight lands on the first instant after the gap, a repeated one on
    its first occurrence."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Bucket:
    label: str  # 2026-03-05 (day), 2026-W10 (ISO week), 2026-03 (month)
    start: datetime  # UTC, clipped to the range
    end: datetime


@dataclass(frozen=True, slots=True)
class Span:
    """The range asked for and its buckets."""

    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    period: str
    zone: tzinfo
    zone_name: str
    buckets: tuple[Bucket, ...]
    starts: tuple[int, ...]  # each bucket's start, ms since 1970

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)

    def local(self, moment: datetime) -> str:
        """An instant as the range's wall clock, with its offset (ISO 8601)."""
        return moment.astimezone(self.zone).isoformat(timespec="milliseconds")

    def locate(self, ms: int) -> int | None:
        """The index of the bucket holding instant ``ms``, or None outside the range."""
        if not self.start_ms <= ms < self.end_ms:
            return None
        return bisect.bisect_right(self.starts, ms) - 1

    def text_floor(self, moment: datetime) -> str:
        """A lower bound for a stored event time's text at or after ``moment`` (whatever the
        edge's offset): a date to compare the text with, a day of margin included."""
        return (moment - _OFFSET_MARGIN).date().isoformat()

    def text_ceiling(self, moment: datetime) -> str:
        """An upper bound (exclusive) for the text of a stored event time before ``moment``."""
        return ((moment + _OFFSET_MARGIN).date() + timedelta(days=1)).isoformat()


def span(start: str, end: str, period: str, tz: str) -> Span:
    """Parse and check a KPI's range: ``end`` after ``start``, at most ``MAX_BUCKETS`` buckets."""
    if period not in PERIODS:
        raise invalid(f"period must be one of {', '.join(PERIODS)}")
    zone = time_zone(tz)
    begin, finish = bound(start, zone, "from"), bound(end, zone, "to")
    if finish <= begin:
        raise invalid(f"to ({end}) must be after from ({start})")
    days = {"day": 1, "week": 7, "month": 28}[period]
    if (finish - begin).days // days > MAX_BUCKETS:
        raise invalid(f"at most {MAX_BUCKETS} periods of a {period}: shorten the range")
    buckets = tuple(_buckets(begin, finish, period, zone))
    return Span(begin, finish, period, zone, "UTC" if zone is UTC else tz, buckets,
                tuple(to_ms(b.start) for b in buckets))


def _buckets(begin: datetime, finish: datetime, period: str, zone: tzinfo) -> list[Bucket]:
    day = begin.astimezone(zone).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    out: list[Bucket] = []
    while (at := start_of(day, zone)) < finish:
        if period == "day":
            label, following = day.isoformat(), day + timedelta(days=1)
        elif period == "week":
            year, week, _ = day.isocalendar()
            label, following = f"{year}-W{week:02d}", day + timedelta(days=7)
        else:
            label = f"{day.year}-{day.month:02d}"
            following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        end = start_of(following, zone)
        if end > begin:
            out.append(Bucket(label, max(at, begin), min(end, finish)))
        day = following
    return out


# --- event times inside SQL -------------------------------------------------------------------

# Stored event times keep the edge's offset, so their text order is not time order: SQL reads
# them as milliseconds since 1970 (to the nearest one) through SQLite's julianday, and through
# Python only for the ISO 8601 forms SQLite does not read (``t``, a comma, ``+0100``): COALESCE
# calls the function only where julianday gave NULL.
INSTANT_FUNCTION = "floorsync_ms"


def instant_sql(column: str) -> str:
    """SQL for the instant of a stored event time, in ms since 1970 (UTC)."""
    return (f"COALESCE(CAST(ROUND((julianday({column}) - 2440587.5) * 86400000.0) AS BIGINT),"
            f" {INSTANT_FUNCTION}({column}))")


def _instant_ms(text: str | None) -> int | None:
    """As julianday reads a time: to the nearest millisecond."""
    if text is None:
        return None
    try:
        return to_ms(datetime.fromisoformat(text).astimezone(UTC) + _MS / 2)
    except ValueError:
        return None


def read(store: Store, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """One statement (one snapshot) on the calling thread's reader, which knows the instant
    function."""
    try:
        conn = store._reader()
        if store.engine == "sqlite":  # PostgreSQL has it as a SQL function (server/pg.py)
            conn.create_function(INSTANT_FUNCTION, 1, _instant_ms, deterministic=True)
        return conn.execute(sql, params).fetchall()
    except store.errors as exc:
        raise failure(exc, "read") from exc


# --- shares and order statistics ------------------------------------------------------------


def share(part: float, whole: float) -> float | None:
    """part / whole, or None when there is nothing to share."""
    return None if whole <= 0 else part / whole


def weighted_rank(samples: list[tuple[float, float]], fraction: float) -> float | None:
    """Nearest rank by weight: the smallest value v such that the samples at most v weigh at
    least ``fraction`` of all (``samples``: (value, weight), sorted by value)."""
    total = sum(w for _, w in samples)
    if total <= 0:
        return None
    goal, running = fraction * total - 1e-9 * total, 0.0
    for value, weight in samples:
        running += weight
        if running >= goal:
            return value
    return samples[-1][0]
