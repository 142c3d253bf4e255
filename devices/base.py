"""Reads and errors shared by every device driver.

Reads are plain frozen values so they can cross threads and be logged or persisted as they are.
Bad input never becomes an exception: it becomes a read with `error` set, so the pipeline can
record it with a reason and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


class DeviceError(Exception):
    """The one error root of `devices`: callers catch this and nothing else."""


class DeviceGone(DeviceError):
    """The device went away (unplugged, port closed, cannot be opened); a supervisor may reopen."""


def now() -> datetime:
    """Host time, timezone-aware (UTC), as every read carries."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ScanRead:
    """One barcode scan as the scanner sent it.

    `text` is the code with the AIM symbology identifier stripped (None when the bytes could not be
    decoded), `symbology` the AIM id such as "]C1", `raw` the frame bytes without prefix/suffix,
    `at` the aware host time the frame completed. `error` is set for garbage, overlong, truncated
    or undecodable frames; consumers check it before using `text`.
    """

    device: str
    text: str | None
    raw: bytes
    symbology: str | None
    at: datetime
    error: str | None = None


@dataclass(frozen=True)
class TagRead:
    """One RFID tag report: the reader's (or host's) aware time, antenna, RSSI and seen count.

    `epc` is the EPC bank as upper-case hex, kept raw: interpretation happens later and may fail.
    """

    reader: str
    epc: str
    antenna: int
    rssi: float | None
    at: datetime
    seen: int = 1
