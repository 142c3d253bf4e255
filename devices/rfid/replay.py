"""Readers without hardware: a recorded file replayed, and the scripted dock-door simulator.

Replay files are JSON lines, one read each, ``t`` in seconds from the start of the recording::

    {"t": 12.5, "reader": "dock-1", "antenna": 1, "epc": "3074257BF7194E4000001A85", "rssi": -52.5}

``reader`` (default: the replay reader's name), ``antenna`` (default 0), ``rssi`` and ``seen``
(default 1) are optional; ``t`` and ``epc`` are required. A read's time is ``start + t`` (start:
the given datetime, default the moment the replay begins). Paced (`realtime=True`) a read is
delivered when its ``t`` has elapsed (divided by `speed`); otherwise as fast as possible. Bad
lines (and lines over `max_line` bytes, skipped without being read into memory whole) go to
`on_error` and the replay goes on. Both readers follow `TagReader`: `run` blocks until
`stop` (after the end they stay online and idle); `done` is set when everything was delivered.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from floorsync.devices.base import DeviceGone, TagRead
from floorsync.devices.rfid.base import (
    OnError,
    OnRead,
    OnState,
    clip,
    host_time,
    normalize_epc,
    parse_antenna,
    parse_float,
    parse_seen,
    supervise,
)
from floorsync.devices.sim import ScriptedPortal


def parse_replay_line(line: bytes, default_reader: str, start: datetime) -> TagRead:
    """One replay line as a TagRead; `ValueError` with the reason if it is bad."""
    try:
        record = json.loads(line)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long
        raise ValueError(f"invalid JSON: {str(exc)[:120]}") from None
    if not isinstance(record, dict):
        raise ValueError("replay line is not an object")
    for key in ("t", "epc"):
        if key not in record:
            raise ValueError(f"replay line has no {key!r}")
    offset = parse_float(record["t"], "t")
    if offset < 0:
        raise ValueError(f"negative t: {offset}")
    try:
        at = start + timedelta(seconds=offset)
    except OverflowError:
        raise ValueError(f"t out of range: {offset}") from None
    rssi = parse_float(record["rssi"], "rssi") if record.get("rssi") is not None else None
    reader = record.get("reader") or default_reader
    if not isinstance(reader, str | int) or isinstance(reader, bool):
        raise ValueError(f"reader is not a name: {type(reader).__name__}")
    return TagRead(
        reader=str(reader),
        epc=normalize_epc(record["epc"]),
        antenna=parse_antenna(record.get("antenna", 0)),
        rssi=rssi,
        at=at,
        seen=parse_seen(record.get("seen", 1), "seen"),
    )


def _pace(stop: threading.Event, began: float, offset: float, speed: float) -> bool:
    """Wait until `offset` (seconds of recording) is due; False if `stop` came first."""
    delay = began + offset / speed - time.monotonic()
    return not (delay > 0 and stop.wait(delay))


class ReplayReader:
    """Replays a JSON lines recording (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        realtime: bool = True,
        speed: float = 1.0,
        start: datetime | None = None,
        on_error: OnError | None = None,
        max_line: int = 64 * 1024,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.max_line = max_line
        self.path = Path(path)
        self.name = name
        self.realtime = realtime
        self.speed = speed
        self.start = start
        self.on_error = on_error
        self.done = threading.Event()

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        """Deliver the file's reads, then idle until `stop`; a missing file is offline (retried)."""

        def session(mark_online: Callable[[], None]) -> None:
            try:
                handle = self.path.open("rb")
            except OSError as exc:
                raise DeviceGone(f"{self.name}: cannot open {self.path}: {exc}") from None
            mark_online()
            with handle:
                self._replay(handle, on_read, stop)
            stop.wait()

        supervise(session, stop, on_state, min_backoff=0.5, max_backoff=5.0)

    def _replay(self, handle: BinaryIO, on_read: OnRead, stop: threading.Event) -> None:
        start = self.start if self.start is not None else host_time()
        began = time.monotonic()
        number = 0
        while True:
            if stop.is_set():
                return
            line = handle.readline(self.max_line + 1)
            if not line:
                break
            number += 1
            if len(line) > self.max_line and not line.endswith(b"\n"):
                size = len(line)
                while (more := handle.readline(self.max_line + 1)) and not more.endswith(b"\n"):
                    size += len(more)
                size += len(more)
                self._error(f"line {number}: over {self.max_line} bytes ({size} bytes)", line)
                continue
            if not line.strip():
                continue
            try:
                read = parse_replay_line(line, self.name, start)
            except ValueError as exc:
                self._error(f"line {number}: {exc}", line.rstrip(b"\r\n"))
                continue
            offset = (read.at - start).total_seconds()
            if self.realtime and not _pace(stop, began, offset, self.speed):
                return
            on_read(read)
        self.done.set()

    def _error(self, reason: str, raw: bytes) -> None:
        if self.on_error is not None:
            self.on_error(reason, clip(raw))


class PortalSimulator:
    """A `devices.sim.ScriptedPortal` as a TagReader: pallets pass the door one after another.

    Each pass is a list of EPCs; its reads (seeded, realistic: repeats, two antennas, RSSI) are
    timed from the moment the pass starts, delivered paced or as fast as possible, with `gap`
    seconds between passes.
    """

    def __init__(
        self,
        portal: ScriptedPortal,
        passes: Sequence[Sequence[str]],
        *,
        realtime: bool = True,
        gap: float = 1.0,
        antennas: tuple[int, ...] = (1, 2),
    ) -> None:
        self.portal = portal
        self.name = portal.reader
        self.passes = [list(p) for p in passes]
        self.realtime = realtime
        self.gap = gap
        self.antennas = antennas
        self.done = threading.Event()

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        if on_state is not None:
            on_state(True)
        for tags in self.passes:
            start = host_time()
            began = time.monotonic()
            for read in self.portal.pallet_pass(tags, start, antennas=self.antennas):
                if stop.is_set():
                    return
                offset = (read.at - start).total_seconds()
                if self.realtime and not _pace(stop, began, offset, 1.0):
                    return
                on_read(read)
            if self.realtime and stop.wait(self.gap):
                return
        self.done.set()
        stop.wait()
