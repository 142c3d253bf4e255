"""``floorsync edge replay FILE --config CONFIG``: recorded input through the floor logic.

No devices, no broker: each line of FILE (JSON lines, ``t`` in seconds from the start) goes to
the workflow of its scanner or the door of its reader, in time order, and every resulting event
is printed as one JSON line in the wire event shape. Lines::

    {"t": 12.5, "device": "hh-1", "code": "]C1..."}                          a scan
    {"t": 12.5, "reader": "dock-1", "antenna": 1, "epc": "HEX", "rssi": -52.5}  a tag read
    {"t": 12.5, "reader": "dock-1", "gpi": 1, "state": true}                 a GPI input

Events are kept in a throwaway outbox (workflows keep their context there, and events get
their sequence numbers as on a real edge). Unreadable lines are reported on stderr with their
line number, and the replay goes on; the exit status is then 1.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from floorsync.devices.base import ScanRead, TagRead
from floorsync.devices.framing import split_aim
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter
from floorsync.edge.config import EdgeConfig, ScannerConfig
from floorsync.edge.errors import ConfigError
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from floorsync.edge.workflow import HandheldWorkflow

MAX_T = 366 * 24 * 3600.0  # a recording longer than a year is a mistake (NaN fails too)


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    t: float
    data: dict[str, Any]


def read_lines(path: Path, errors: TextIO) -> tuple[list[Line], int]:
    """Parsed lines in time order (stable for equal times), and how many were unreadable."""
    lines, bad = [], 0
    try:
        text = path.read_bytes()  # decoded line by line: one bad byte costs only its line
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            try:
                data = json.loads(raw)  # UnicodeDecodeError is a ValueError too
            except RecursionError:
                raise ValueError("JSON nested too deep") from None
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            t = data.get("t")
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= MAX_T:
                raise ValueError(f"'t' must be a number of seconds from 0 to {MAX_T:.0f}")
            lines.append(Line(number, float(t), data))
        except ValueError as exc:
            bad += 1
            print(f"{path}:{number}: skipped: {exc}", file=errors)
    lines.sort(key=lambda line: line.t)
    return lines, bad


def replay(path: Path, config: EdgeConfig, out: TextIO = sys.stdout,
           errors: TextIO = sys.stderr, start: datetime | None = None) -> int:
    start = start or datetime.now().astimezone()
    lines, bad = read_lines(path, errors)
    scanners = {s.name: s for s in config.scanners}
    arbiter = DoorArbiter.for_portals(config.portals)
    doors = {p.name: Door(p, arbiter=arbiter, tz=start.tzinfo) for p in config.portals}
    printed = 0

    def emit(events: list[wire.Event]) -> None:
        nonlocal printed
        for event in events:
            out.write(wire.encode_event(event) + "\n")
            printed += 1

    with tempfile.TemporaryDirectory(prefix="floorsync-replay-") as tmp, \
            Outbox(Path(tmp) / "outbox.db") as outbox:
        workflows: dict[str, HandheldWorkflow] = {}

        def workflow_of(device: str) -> HandheldWorkflow:
            if device not in workflows:
                scanner = scanners.get(device) or ScannerConfig(name=device, port="")
                workflows[device] = HandheldWorkflow(
                    store=outbox, key=device, mode=scanner.mode, fixed_mode=scanner.fixed_mode,
                    operator=scanner.operator, location_prefixes=config.location_prefixes,
                    location_patterns=config.location_patterns,
                    command_prefix=config.command_prefix,
                    duplicate_window_ms=scanner.duplicate_window_ms, tz=start.tzinfo,
                )
            return workflows[device]

        for line in lines:
            at = start + timedelta(seconds=line.t)
            for door in doors.values():  # time moves on for every door, read or not
                emit(outbox.add(door.advance(at)))
            try:
                emit(_one(line, at, workflow_of, doors, errors))
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                bad += 1
                print(f"{path}:{line.number}: skipped: {exc}", file=errors)
        for door in doors.values():
            emit(outbox.add(door.finish()))
    print(f"replayed {len(lines)} line(s) of {path}: {printed} event(s), {bad} unreadable",
          file=errors)
    return 1 if bad else 0


def _one(line: Line, at: datetime, workflow_of: Any, doors: dict[str, Door],
         errors: TextIO) -> list[wire.Event]:
    data = line.data
    if "device" in data:
        code = data["code"]
        if not isinstance(code, str):
            raise ValueError("'code' must be text")
        symbology, text = split_aim(code)
        read = ScanRead(str(data["device"]), text, code.encode(), symbology, at)
        outcome = workflow_of(read.device).handle(read)
        if not outcome.good:  # what the operator would hear as a bad-read beep
            print(f"line {line.number}: bad read on {read.device}: {outcome.message}",
                  file=errors)
        return list(outcome.events)
    reader = data.get("reader")
    if not isinstance(reader, str):
        raise ValueError("a line needs 'device' (a scan) or 'reader' (a tag read or GPI)")
    door = doors.get(reader)
    if door is None:
        raise KeyError(f"no [[portals]] entry named {reader!r} in the config")
    if "gpi" in data:
        door.gpi(int(data["gpi"]), bool(data["state"]), at)
        return []
    epc, antenna, rssi = data["epc"], data.get("antenna", 0), data.get("rssi")
    if not isinstance(epc, str) or not isinstance(antenna, int):
        raise ValueError("'epc' must be hex text and 'antenna' a number")
    if rssi is not None and (not isinstance(rssi, int | float) or not math.isfinite(rssi)):
        raise ValueError("'rssi' must be a finite number")
    door.add(TagRead(reader, epc.upper(), antenna, rssi, at, int(data.get("count", 1))))
    return []
