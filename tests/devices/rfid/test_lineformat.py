"""Line formats of serial readers: templates, regexes, and every way a line can be bad."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from floorsync.devices.rfid.lineformat import LineFormat

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_template_fields_and_defaults() -> None:
    fmt = LineFormat.template("{epc},{antenna},{rssi}")
    read = fmt.parse(b" 3074257bf7194e4000001a85 , 2 , -52.5 ", "desk-1", at=AT)
    assert (read.reader, read.epc, read.antenna, read.rssi, read.at, read.seen) == (
        "desk-1", "3074257BF7194E4000001A85", 2, -52.5, AT, 1
    )
    assert fmt.parse(b"E280,,", "d", at=AT).antenna == 0  # empty optional fields: defaults
    assert fmt.parse(b"E280,,", "d", at=AT).rssi is None


def test_template_with_literals_skips_count_time_and_scale() -> None:
    fmt = LineFormat.template("TAG:{epc} ANT={antenna} RSSI={rssi} N={count} {_} @{time}",
                              rssi_scale=0.01)
    read = fmt.parse(b"TAG:E2801160 ANT=3 RSSI=-6150 N=4 junk here @2026-01-02T03:04:05Z", "r")
    assert (read.epc, read.antenna, read.rssi, read.seen, read.at) == (
        "E2801160", 3, -61.5, 4, AT
    )
    epoch = LineFormat.template("{epc};{time}").parse(b"E280;1767323045", "r")
    assert epoch.at == AT


def test_regex_format() -> None:
    fmt = LineFormat(r"EPC:(?P<epc>[0-9A-Fa-f]+)\s+ANT:(?P<antenna>\d+)(\s+RSSI:(?P<rssi>\S+))?")
    read = fmt.parse(b"EPC:E2801160 ANT:1", "r", at=AT)
    assert (read.epc, read.antenna, read.rssi) == ("E2801160", 1, None)
    assert fmt.parse(b"EPC:E2801160 ANT:1 RSSI:-40", "r").rssi == -40.0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "does not match"),
        (b"hello", "does not match"),
        (b"XYZ!,1,-50", "not hex"),
        (b"E28,1,-50", "16-bit words"),
        (b"E28011,1,-50", "16-bit words"),
        (b"E280" * 32 + b",1,-50", "longer than the largest EPC bank"),
        (b"E280,one,-50", "antenna"),
        (b"E280,-1,-50", "antenna below 0"),
        (b"E280,65536,-50", "antenna above 65535"),
        (b"E280,99999999999999999999999,-50", "antenna"),
        (b"E280,1.5,-50", "antenna"),
        (b"E280,\xd9\xa1,-50", "undecodable"),
        (b"E280,1,loud", "rssi"),
        (b"E280,1,nan", "rssi"),
        (b"\xff\xfe,1,-50", "undecodable"),
    ],
)
def test_bad_lines_raise_value_error_with_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        LineFormat.template("{epc},{antenna},{rssi}").parse(line, "r")


def test_bad_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="epc"):
        LineFormat.template("{antenna},{rssi}")
    with pytest.raises(ValueError, match="unknown"):
        LineFormat.template("{epc},{power}")
    with pytest.raises(ValueError, match="twice"):
        LineFormat.template("{epc},{epc}")
    with pytest.raises(ValueError, match="unknown"):
        LineFormat(r"(?P<epc>\w+) (?P<phase>\d+)")
