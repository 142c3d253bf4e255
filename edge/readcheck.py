"""Which tag reads a door must refuse before they reach its journal or its clock (pure).

The readers (`devices.rfid`) already refuse what cannot be parsed. What they cannot judge is a
read that parses but would do harm downstream:

- a reader timestamp far ahead of host time would move the door's watermark (`ReaderClock`)
  into the future: every later, correct read would be "late";
- one far behind would sit behind the watermark, or in the door's buffer, for ever;
- an EPC that cannot be an EPC bank (not whole 16-bit words, empty, over 496 bits), an antenna
  outside 0..65535, a seen count below 1, a non-finite RSSI: readers that are not ours
  (`edge.replay`, tests, a future transport) can build such a `TagRead`.

`check_read(read, host_now, bounds)` returns the reason a read must be refused, or None. The
reason's text up to the first ``:`` is a fixed kind, for counters ("read time too far ahead",
"read time too far behind", "read time unusable", "bad EPC", "bad antenna", "bad seen count",
"bad rssi"); the rest says what was seen.

`max_behind_s` is generous by default (7 days): a reader that flushes a day-old backlog after an
outage is doing its job, and the door logic runs on read time, so those reads still count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import MAX_ANTENNA, MAX_SEEN, epc_problem

KINDS = (
    "read time too far ahead",
    "read time too far behind",
    "read time unusable",
    "bad EPC",
    "bad antenna",
    "bad seen count",
    "bad rssi",
)


@dataclass(frozen=True, slots=True)
class ReadBounds:
    """How far a read's own time may be from host time (seconds; a read exactly at the bound
    is kept)."""

    max_ahead_s: float = 300.0
    max_behind_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        for key in ("max_ahead_s", "max_behind_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{key} must be a positive number of seconds, not {value!r}")


DEFAULT_BOUNDS = ReadBounds()


def check_read(
    read: TagRead, host_now: datetime, bounds: ReadBounds = DEFAULT_BOUNDS
) -> str | None:
    """The reason `read` must be refused, or None; `host_now` is host time, aware."""
    at = read.at
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        return f"read time unusable: no time zone: {at!r}"[:200]
    try:
        ahead = (at - host_now).total_seconds()
    except (OverflowError, TypeError, ValueError) as exc:
        return f"read time unusable: {at!r}: {exc}"[:200]
    if ahead > bounds.max_ahead_s:
        return (
            f"read time too far ahead: {at.isoformat()} is {ahead:.0f} s ahead of host time "
            f"(max_ahead_s {bounds.max_ahead_s:g})"
        )
    if -ahead > bounds.max_behind_s:
        return (
            f"read time too far behind: {at.isoformat()} is {-ahead:.0f} s behind host time "
            f"(max_behind_s {bounds.max_behind_s:g})"
        )
    problem = epc_problem(read.epc)
    if problem is not None:
        return f"bad EPC: {problem}"
    antenna = read.antenna
    if isinstance(antenna, bool) or not isinstance(antenna, int) or not 0 <= antenna <= MAX_ANTENNA:
        return f"bad antenna: {antenna!r} is not 0..{MAX_ANTENNA}"[:200]
    seen = read.seen
    if isinstance(seen, bool) or not isinstance(seen, int) or not 1 <= seen <= MAX_SEEN:
        return f"bad seen count: {seen!r} is not 1..{MAX_SEEN}"[:200]
    rssi = read.rssi
    if rssi is not None and (
        isinstance(rssi, bool) or not isinstance(rssi, int | float) or not math.isfinite(rssi)
    ):
        return f"bad rssi: {rssi!r}"[:200]
    return None
