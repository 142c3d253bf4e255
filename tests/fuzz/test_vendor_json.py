"""Vendor reader input (devices/rfid/impinj.py, zebra.py, lineformat.py) as hypothesis shapes.

tests/devices/rfid/test_fuzz.py mutates recorded streams with a seeded random; this adds
structure-aware generation (every field of the vendor's event given any JSON value, events sent
as one object, an array, JSON lines or concatenated) and round trips: events built from valid
fields parse back to those fields.

Boundary: the JSON parsers never raise (errors come back in `Parsed.errors`, each with a reason);
`LineFormat.parse` raises only ValueError, with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import MAX_ANTENNA, MAX_RAW, MAX_SEEN, Parsed, epc_problem
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.lineformat import FIELDS, LineFormat
from floorsync.devices.rfid.zebra import parse_zebra

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["E280", "e2801160", "E2" * 70, "0" * 124, "2026-01-02T03:04:05Z",
                     "2026-01-02T03:04:05.123456789+0000", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-14:00", "1e3", "+7", "\u0661", "AAAA", "4oAR", "-2650"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def fields(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


impinj_events = st.fixed_dictionaries(
    {"tagInventoryEvent": fields(("epcHex", "epc", "antennaPort", "peakRssiCdbm", "lastSeenTime"))
     | values},
    optional={"timestamp": values, "hostname": values, "eventType": values,
              "antennaConnectedEvent": values},
)
zebra_events = st.fixed_dictionaries(
    {"data": fields(("idHex", "antenna", "peakRssi", "reads", "MAC")) | values},
    optional={"type": values, "timestamp": values},
)


def framed(events: list[object], how: str) -> bytes:
    if how == "array":
        return json.dumps(events).encode()
    sep = "\n" if how == "lines" else ""
    return sep.join(json.dumps(e) for e in events).encode()


def sane(read: TagRead) -> None:
    assert epc_problem(read.epc) is None and read.epc == read.epc.upper()
    assert 0 <= read.antenna <= MAX_ANTENNA and 1 <= read.seen <= MAX_SEEN
    assert read.at.tzinfo is not None
    read.at.astimezone(UTC)
    assert read.rssi is None or read.rssi == read.rssi


def check(parsed: Parsed) -> None:
    for read in parsed.reads:
        sane(read)
    for error in parsed.errors:
        assert error.reason.strip() and len(error.raw) <= MAX_RAW


hows = st.sampled_from(["array", "lines", "concatenated"])


@given(st.lists(impinj_events | values, min_size=1, max_size=4), hows, st.binary(max_size=8))
@example([{"tagInventoryEvent": {"epcHex": "E280", "lastSeenTime": "9999-12-31T23:59:59-14:00"}}],
         "lines", b"")
def test_impinj_any_event_shape(events: list[object], how: str, tail: bytes) -> None:
    check(parse_impinj(framed(events, how) + tail))
    check(parse_impinj(json.dumps(events[0]).encode(), "dock-1"))


@given(st.lists(zebra_events | values, min_size=1, max_size=4), hows, st.binary(max_size=8))
def test_zebra_any_event_shape(events: list[object], how: str, tail: bytes) -> None:
    check(parse_zebra(framed(events, how) + tail))
    check(parse_zebra(json.dumps(events[0]).encode(), "dock-1"))


epcs = st.integers(1, 31).flatmap(
    lambda words: st.text(st.sampled_from("0123456789ABCDEFabcdef"), min_size=4 * words,
                          max_size=4 * words))
moments = st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))


@given(epcs, st.integers(0, MAX_ANTENNA), st.integers(-10_000, 0), moments, st.booleans())
def test_impinj_valid_fields_round_trip(epc: str, antenna: int, cdbm: int, at: datetime,
                                        last_seen: bool) -> None:
    tag = {"epcHex": epc, "antennaPort": antenna, "peakRssiCdbm": cdbm}
    event: dict[str, object] = {"timestamp": at.isoformat(), "hostname": "imp-1",
                                "tagInventoryEvent": tag}
    if last_seen:
        tag["lastSeenTime"] = (at + timedelta(seconds=1)).isoformat()
    parsed = parse_impinj(json.dumps(event).encode())
    assert not parsed.errors
    (read,) = parsed.reads
    assert (read.epc, read.antenna, read.rssi, read.reader) == (
        epc.upper(), antenna, cdbm / 100, "imp-1")
    assert read.at == at + timedelta(seconds=1 if last_seen else 0)


@given(st.lists(st.tuples(epcs, st.integers(0, MAX_ANTENNA), st.integers(-100, 0),
                          st.integers(1, MAX_SEEN), moments), min_size=1, max_size=5), hows)
def test_zebra_valid_fields_round_trip(tags: list[tuple[str, int, int, int, datetime]],
                                       how: str) -> None:
    events = [{"type": "SIMPLE", "timestamp": at.isoformat(),
               "data": {"idHex": epc, "antenna": ant, "peakRssi": rssi, "reads": seen}}
              for epc, ant, rssi, seen, at in tags]
    parsed = parse_zebra(framed(list(events), how))
    assert not parsed.errors
    assert [(r.epc, r.antenna, r.rssi, r.seen, r.at) for r in parsed.reads] == [
        (epc.upper(), ant, float(rssi), seen, at) for epc, ant, rssi, seen, at in tags]


separators = st.sampled_from([",", ";", " ", "|", " ANT=", "\t"])  # never inside a value


@st.composite
def template_and_line(draw: st.DrawFn) -> tuple[str, bytes, dict[str, object]]:
    names = draw(st.permutations(["epc", *draw(st.sets(st.sampled_from(FIELDS[1:])))]))
    seps = [draw(separators) for _ in names[1:]]
    template = "{" + names[0] + "}" + "".join(s + "{" + n + "}" for s, n in zip(
        seps, names[1:], strict=True))
    values = {"epc": draw(epcs), "antenna": draw(st.integers(0, MAX_ANTENNA)),
              "rssi": draw(st.integers(-100, 0)), "count": draw(st.integers(1, MAX_SEEN)),
              "time": draw(moments).isoformat()}
    line = str(values[names[0]]) + "".join(s + str(values[n]) for s, n in zip(
        seps, names[1:], strict=True))
    return template, line.encode(), {n: values[n] for n in names}


@given(template_and_line())
def test_line_format_round_trip(case: tuple[str, bytes, dict[str, object]]) -> None:
    template, line, want = case
    read = LineFormat.template(template).parse(line, "desk", at=START)
    assert read.epc == str(want["epc"]).upper()
    if "antenna" in want:
        assert read.antenna == want["antenna"]
    if "rssi" in want:
        assert read.rssi == want["rssi"]
    if "count" in want:
        assert read.seen == want["count"]
    if "time" in want:
        assert read.at == datetime.fromisoformat(str(want["time"]))


@given(template_and_line(), st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_line_format_bad_lines_say_why(case: tuple[str, bytes, dict[str, object]],
                                       line: bytes) -> None:
    fmt = LineFormat.template(case[0])
    for data in (line, case[1] + line, line + case[1], case[1][: len(line)]):
        try:
            sane(fmt.parse(data, "desk", at=START))
        except ValueError as exc:
            assert str(exc).strip()
