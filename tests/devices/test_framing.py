"""Framing byte by byte: suffixes split across reads, prefixes, STX/ETX, overlong and garbage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from floorsync.devices.framing import Frame, FrameDecoder, split_aim, to_scan_read


def feed_all(decoder: FrameDecoder, *chunks: bytes) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def test_cr_suffix_frames_and_keeps_buffer_across_reads() -> None:
    d = FrameDecoder()
    assert d.feed(b"]C1ABC") == []
    assert d.pending
    assert d.feed(b"123\rXY") == [Frame(b"]C1ABC123")]
    assert d.feed(b"Z\r") == [Frame(b"XYZ")]
    assert not d.pending


def test_every_byte_fed_alone_still_frames() -> None:
    d = FrameDecoder(suffix=b"\r\n")
    data = b"AB\r\nCD\r\n"
    assert feed_all(d, *(data[i : i + 1] for i in range(len(data)))) == [Frame(b"AB"), Frame(b"CD")]


@pytest.mark.parametrize("configured", [b"\r", b"\n", b"\r\n"])
@pytest.mark.parametrize("sent", [b"\r", b"\n", b"\r\n"])
def test_line_suffixes_are_interchangeable(configured: bytes, sent: bytes) -> None:
    d = FrameDecoder(suffix=configured)
    assert feed_all(d, b"ONE" + sent[:1], sent[1:] + b"TWO" + sent) == [
        Frame(b"ONE"),
        Frame(b"TWO"),
    ]
    assert not d.pending


def test_tab_suffix_keeps_cr_in_data() -> None:
    d = FrameDecoder(suffix=b"\t")
    assert d.feed(b"A\rB\tC\t") == [Frame(b"A\rB"), Frame(b"C")]


def test_custom_multibyte_suffix_split_across_reads() -> None:
    d = FrameDecoder(suffix=b"##")
    assert d.feed(b"CODE1#") == []
    assert d.feed(b"#CODE2##") == [Frame(b"CODE1"), Frame(b"CODE2")]


def test_empty_frames_are_dropped() -> None:
    assert FrameDecoder().feed(b"\r\r\n\rA\r") == [Frame(b"A")]


def test_prefix_is_stripped_and_missing_prefix_reported() -> None:
    d = FrameDecoder(prefix=b"@@")
    frames = d.feed(b"@@ABC\rNOPE\r")
    assert frames[0] == Frame(b"ABC")
    assert frames[1].data == b"NOPE" and frames[1].error == "missing prefix"


def test_stx_etx_frames_and_drops_whitespace_between() -> None:
    d = FrameDecoder(stx_etx=True)
    assert feed_all(d, b"\x02AB", b"C\x03\r\n\x02D\x03") == [Frame(b"ABC"), Frame(b"D")]
    assert d.flush() is None


def test_stx_etx_reports_garbage_and_cut_frames() -> None:
    d = FrameDecoder(stx_etx=True)
    frames = d.feed(b"junk\x02AB\x02CD\x03")
    assert frames[0] == Frame(b"junk", "garbage outside STX/ETX")
    assert frames[1].data == b"AB" and frames[1].error and "truncated" in frames[1].error
    assert frames[2] == Frame(b"CD")
    assert d.feed(b"\x02EF") == []
    flushed = d.flush()
    assert flushed is not None and flushed.data == b"EF" and "truncated" in (flushed.error or "")


def test_stx_etx_overlong_resyncs() -> None:
    d = FrameDecoder(stx_etx=True, max_length=4)
    frames = d.feed(b"\x02ABCDEFGH")
    assert len(frames) == 1 and frames[0].error and "overlong" in frames[0].error
    assert d.feed(b"IJ\x03\x02OK\x03") == [Frame(b"OK")]


def test_overlong_is_reported_once_then_resyncs_at_next_suffix() -> None:
    d = FrameDecoder(max_length=8)
    frames = feed_all(d, b"0123456789", b"ABCDEFGHIJ", b"KLM\rGOOD\r")
    assert len(frames) == 2
    assert frames[0].error and "overlong" in frames[0].error
    assert frames[0].data == b"01234567"
    assert frames[1] == Frame(b"GOOD")


def test_overlong_within_one_read() -> None:
    frames = FrameDecoder(max_length=4).feed(b"ABCDEFG\rOK\r")
    assert [f.error is not None for f in frames] == [True, False]
    assert frames[1] == Frame(b"OK")


def test_overlong_with_multibyte_suffix_split_after_discard() -> None:
    d = FrameDecoder(suffix=b"##", max_length=4)
    frames = feed_all(d, b"ABCDEFGH#", b"#OK##")
    assert len(frames) == 2 and frames[1] == Frame(b"OK")


def test_flush_marks_partial_frame_truncated() -> None:
    d = FrameDecoder()
    d.feed(b"PART")
    frame = d.flush()
    assert frame is not None and frame.data == b"PART"
    assert frame.error and "truncated" in frame.error
    assert d.flush() is None
    assert d.feed(b"NEXT\r") == [Frame(b"NEXT")]


def test_no_suffix_mode_ends_frames_on_silence_without_error() -> None:
    d = FrameDecoder(suffix=b"")
    assert d.feed(b"ABC") == []
    assert d.flush() == Frame(b"ABC")


def test_flush_after_overlong_discard_emits_nothing() -> None:
    d = FrameDecoder(max_length=2)
    assert len(d.feed(b"ABCDE")) == 1
    assert d.flush() is None


def test_garbage_bytes_pass_through_as_frames() -> None:
    data = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"")
    frames = FrameDecoder(max_length=1000).feed(data + b"\r")
    assert frames == [Frame(data)]


def test_to_scan_read_strips_aim_and_reports_undecodable() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    good = to_scan_read("s1", Frame(b"]E04006381333931"), at=at)
    assert (good.text, good.symbology, good.error, good.at) == ("4006381333931", "]E0", None, at)
    bad = to_scan_read("s1", Frame(b"\xff\xfe]C1"))
    assert bad.text is None and bad.raw == b"\xff\xfe]C1"
    assert bad.error and "undecodable" in bad.error
    assert bad.at.tzinfo is not None
    cut = to_scan_read("s1", Frame(b"AB", "truncated: x"))
    assert cut.text == "AB" and cut.error == "truncated: x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("]C1010950", ("]C1", "010950")),
        ("]d2X", ("]d2", "X")),
        ("]Q3", ("]Q3", "")),
        ("]E0123", ("]E0", "123")),
        ("]C", (None, "]C")),
        ("]1C", (None, "]1C")),
        ("C1]", (None, "C1]")),
        ("", (None, "")),
        ("]é1x", (None, "]é1x")),
    ],
)
def test_split_aim(text: str, expected: tuple[str | None, str]) -> None:
    assert split_aim(text) == expected
