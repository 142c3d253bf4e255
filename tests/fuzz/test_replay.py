"""Replay input: reader recordings (devices/rfid/replay.py) and `floorsync edge replay`
recordings (edge/replay.py) with any lines.

Boundary: `parse_replay_line` raises only ValueError, with the reason. `edge.replay.replay`
never raises for a line: each unreadable one is reported on stderr with its line number and a
reason, the rest replays, and the exit status says whether any was bad. Round trip: a reader
line written from valid fields parses back to them.
"""

from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.devices.rfid.base import MAX_ANTENNA, MAX_SEEN, epc_problem
from floorsync.devices.rfid.replay import parse_replay_line
from floorsync.edge import wire
from floorsync.edge.config import EdgeConfig, load
from floorsync.edge.replay import replay

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIG = """
site = "wh1"
device = "door-01"

[[scanners]]
name = "hh-07"
port = "/dev/null"

[[portals]]
name = "door-01"
location = "DOCK-1"
reader = "replay"
antennas = { "1" = "outside", "2" = "inside" }
include = ["0614141"]
gpi = 1
"""

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.sampled_from(["3034257BF7194E40000003E8", "hh-07", "door-01", "dock-9", "CMD:RECEIVE",
                     "LOC:DOCK-1", "]C1010950110153000310L1\x1d3012", "E2", "1e999"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=2), max_leaves=4)
KEYS = ("t", "device", "code", "reader", "antenna", "epc", "rssi", "gpi", "state", "count", "seen")
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
numbers = st.one_of(st.floats(0, 600), st.integers(0, 600))
good_reads = st.fixed_dictionaries(
    {"t": numbers, "reader": st.just("door-01"), "antenna": st.integers(0, 3),
     "epc": st.sampled_from(["3034257BF7194E40000003E8", "3034257BF7194E40000003E9"]),
     "rssi": st.floats(-80, -30)})
good_scans = st.fixed_dictionaries(
    {"t": numbers, "device": st.just("hh-07"),
     "code": st.sampled_from(["CMD:RECEIVE", "LOC:DOCK-1", "]C1010950110153000310L1\x1d3012",
                              "garbage", ""])})
lines = st.one_of(
    records.map(json.dumps), good_reads.map(json.dumps), good_scans.map(json.dumps),
    st.text(max_size=40), values.map(json.dumps),
)


def raw_bytes(text: str) -> bytes:
    """``text`` as bytes; lone surrogates \\udc80-\\udcff stand for bytes that are no UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def edge_config() -> EdgeConfig:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "door.toml"
        path.write_text(CONFIG)
        return load(path)


EDGE = edge_config()


@given(st.lists(lines, max_size=25))
@example(['{"t": 1, "reader": "door-01", "epc": "3034257BF7194E40000003E8", "count": 0}',
          '{"t": 1, "reader": "door-01", "gpi": "x", "state": true}',
          '{"t": 1, "device": "hh-07", "code": "]C1\\ud800"}'])
# regressions (found by atheris): a line that is not UTF-8 made the whole replay raise
# UnicodeDecodeError; a line nested past the recursion limit raised RecursionError
@example(['{"t": 1, "device": "hh-07", "code": "\udcc7"}', "[" * 5000])
def test_edge_replay_reports_every_bad_line(recording: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.jsonl"
        path.write_bytes(raw_bytes("\n".join(recording)))
        out, errors = io.StringIO(), io.StringIO()
        status = replay(path, EDGE, out, errors, START)
    assert status in (0, 1)
    for line in out.getvalue().splitlines():
        wire.event_from_dict(json.loads(line))  # what comes out is a valid wire event
    reports = errors.getvalue().splitlines()
    assert reports and reports[-1].startswith("replayed ")
    for report in reports:
        if "skipped:" in report:
            assert report.split("skipped:", 1)[1].strip()
    assert status == (1 if any("skipped:" in r for r in reports) else 0)


@given(records.map(json.dumps) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
@example('{"t": 1e308, "epc": "E280"}')
@example('{"t": 0, "epc": "E280", "reader": []}')
def test_reader_replay_lines_parse_or_say_why(line: str) -> None:
    try:
        read = parse_replay_line(line.encode("utf-8", "surrogatepass"), "replay", START)
    except ValueError as exc:
        assert str(exc).strip()
        return
    assert epc_problem(read.epc) is None
    assert 0 <= read.antenna <= MAX_ANTENNA and 1 <= read.seen <= MAX_SEEN


@given(st.floats(0, 1e7), st.text(st.sampled_from("0123456789ABCDEF"), min_size=4,
                                  max_size=4).map(lambda w: w * 6),
       st.integers(0, MAX_ANTENNA), st.integers(1, MAX_SEEN), st.none() | st.floats(-100, 0),
       st.none() | st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10))
def test_reader_replay_line_round_trip(t: float, epc: str, antenna: int, seen: int,
                                       rssi: float | None, reader: str | None) -> None:
    record = {"t": t, "epc": epc, "antenna": antenna, "seen": seen, "rssi": rssi,
              "reader": reader}
    read = parse_replay_line(json.dumps(record).encode(), "replay", START)
    assert (read.epc, read.antenna, read.seen, read.rssi, read.reader) == (
        epc, antenna, seen, rssi, reader or "replay")
    assert read.at == START + timedelta(seconds=t)
