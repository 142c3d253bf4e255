"""Serial framing (devices/framing.py): any bytes, cut anywhere, under any framing settings.

Boundary: `FrameDecoder.feed`/`flush` and `to_scan_read` never raise; bad bytes come back as
frames or reads with a reason. Round trip: codes joined with the suffix come back as the same
codes, however the stream is cut into reads.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.devices.framing import ETX, STX, Frame, FrameDecoder, split_aim, to_scan_read

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SUFFIXES = [b"\r", b"\n", b"\r\n", b"\t", b"", b"\x03\x04", b"END"]

configs = st.fixed_dictionaries(
    {
        "suffix": st.sampled_from(SUFFIXES),
        "prefix": st.sampled_from([b"", b"]", b"PFX", b"\x02"]),
        "stx_etx": st.booleans(),
        "max_length": st.integers(1, 64),
    }
)
# Bytes rich in the ones framing cares about.
stream = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\r", b"\n", b"\r\n", b"\t", bytes([STX]), bytes([ETX]), b"END", b"PFX",
                         b"]C1", b"\xff\xfe", b" "]),
    ),
    max_size=30,
).map(b"".join)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True)]


def check_frame(frame: Frame, decoder: FrameDecoder) -> None:
    assert isinstance(frame.data, bytes)
    assert len(frame.data) <= decoder.max_length
    assert frame.error is None or frame.error.strip()
    read = to_scan_read("fuzz", frame, at=AT)
    assert read.error == frame.error or (read.error and read.text is None)
    assert (read.text is None) == (read.error is not None and "undecodable" in read.error)


@given(configs, stream, st.lists(st.integers(0, 10_000), max_size=8))
@example({"suffix": b"\r\n", "prefix": b"", "stx_etx": False, "max_length": 1}, b"\r\n\r", [1])
def test_any_bytes_frame_without_raising(config: dict, data: bytes, points: list[int]) -> None:
    decoder = FrameDecoder(**config)
    frames: list[Frame] = []
    for chunk in cut(data, points):
        frames += decoder.feed(chunk)
        assert len(decoder._buf) <= 2 * decoder.max_length + len(decoder.suffix) + len(chunk)
    last = decoder.flush()
    if last is not None:
        frames.append(last)
    assert not decoder.pending
    for frame in frames:
        check_frame(frame, decoder)


code_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
).filter(lambda s: s.strip() == s and "END" not in s)


@given(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\t", b"END"]),
    st.lists(code_text, max_size=10),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_codes_joined_with_the_suffix_come_back(
    suffix: bytes, codes: list[str], points: list[int]
) -> None:
    decoder = FrameDecoder(suffix=suffix, max_length=64)
    data = b"".join(c.encode() + suffix for c in codes)
    frames: list[Frame] = []
    for chunk in cut(data, points):
        frames += decoder.feed(chunk)
    assert decoder.flush() is None
    assert [f.data.decode() for f in frames] == codes
    assert all(f.error is None for f in frames)


@given(st.lists(code_text, max_size=10), st.lists(st.integers(0, 10_000), max_size=8))
def test_stx_etx_frames_come_back(codes: list[str], points: list[int]) -> None:
    decoder = FrameDecoder(stx_etx=True, max_length=64)
    data = b"\r\n".join(bytes([STX]) + c.encode() + bytes([ETX]) for c in codes)
    frames: list[Frame] = []
    for chunk in cut(data, points):
        frames += decoder.feed(chunk)
    assert decoder.flush() is None
    assert [f.data.decode() for f in frames] == codes


@given(st.text(max_size=20))
def test_split_aim_keeps_every_character(text: str) -> None:
    symbology, rest = split_aim(text)
    assert (symbology or "") + rest == text
    assert symbology is None or len(symbology) == 3
