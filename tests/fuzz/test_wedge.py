"""The keyboard-wedge decoder (devices/keymap.py, devices/wedge.py) on any key events.

Boundary: `KeyDecoder.feed`/`flush` never raise, whatever the type, code, value and time; a
failed code carries its reason. `WedgeScanner.read_ready` turns any bytes a device fd yields
(packed `struct input_event` records, cut anywhere) into reads, never an exception. Round trip:
text a layout can type, turned into key events by `text_to_keys`, decodes to the same text.
"""

from __future__ import annotations

import math
import os

from hypothesis import assume, example, given
from hypothesis import strategies as st

from floorsync.devices.keymap import (
    EV_KEY,
    EV_SYN,
    KEY_MAX,
    LAYOUTS,
    SYN_DROPPED,
    SYN_REPORT,
    DecodedCode,
    KeyDecoder,
    text_to_keys,
)
from floorsync.devices.wedge import EVENT_SIZE, PipeEvents, WedgeScanner, pack_events

layouts = st.sampled_from(sorted(LAYOUTS))
times = st.one_of(
    st.floats(0, 1e6, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e300]),
)
events = st.tuples(
    st.one_of(st.sampled_from([EV_KEY, EV_SYN]), st.integers(-5, 70_000)),
    st.one_of(st.integers(0, KEY_MAX), st.sampled_from([SYN_REPORT, SYN_DROPPED]),
              st.integers(-(2**31), 2**31)),
    st.one_of(st.sampled_from([0, 1, 2]), st.integers(-(2**31), 2**31)),
    times,
)


def check(code: DecodedCode) -> None:
    assert code.error is None or code.error.strip()
    assert code.text is None or isinstance(code.text, str)
    assert code.error is not None or code.text  # a clean code is never empty


@given(layouts, st.booleans(), st.lists(events, max_size=80))
@example("de", True, [(EV_KEY, 13, 1, 0.0), (EV_KEY, 100, 1, 0.0), (EV_KEY, 13, 1, 0.0)])
def test_any_key_events_decode_without_raising(
    layout: str, terminators: bool, stream: list[tuple[int, int, int, float]]
) -> None:
    decoder = KeyDecoder(layout, terminators=("enter", "tab") if terminators else ())
    for code in decoder.feed_events(stream):
        check(code)
    last = decoder.flush(1.0)
    if last is not None:
        check(last)
    assert not decoder.pending


@st.composite
def typeable(draw: st.DrawFn) -> tuple[str, str]:
    layout = draw(layouts)
    charset = "".join(sorted(set(LAYOUTS[layout].charset()) - {"\t", "\r", "\n"}))
    text = draw(st.text(st.sampled_from(charset), min_size=1, max_size=30))
    return layout, text


@given(typeable(), st.sampled_from(["ctrl", "alt"]), st.booleans())
def test_typed_text_decodes_to_itself(case: tuple[str, str], gs: str, with_gs: bool) -> None:
    layout, text = case
    if with_gs:
        text = text[:1] + "\x1d" + text[1:]
    try:
        keys = text_to_keys(text, layout, gs=gs)
    except ValueError:
        assume(False)  # a character the layout types only through a dead key it lacks
        return
    decoder = KeyDecoder(layout)
    codes = decoder.feed_events((t, c, v, 0.001 * i) for i, (t, c, v) in enumerate(keys))
    assert [(c.text, c.error) for c in codes] == [(text, None)]


@given(st.binary(max_size=600), st.lists(st.integers(0, 40), max_size=4))
def test_any_device_bytes_become_reads(data: bytes, points: list[int]) -> None:
    """The kernel hands out whole records; the bytes are cut at record boundaries (a trailing
    partial record stands for a broken driver). A scanner that closes itself is done."""
    read_fd, write_fd = os.pipe()
    scanner = WedgeScanner("/dev/input/fuzz", name="hh-f", opener=lambda _: PipeEvents(read_fd))
    try:
        scanner.open()
        marks = sorted({min(p * EVENT_SIZE, len(data)) for p in points} | {len(data)})
        start = 0
        for mark in marks:
            if mark > start and scanner.is_open:
                os.write(write_fd, data[start:mark])
                for read in scanner.read_ready():
                    assert read.error is None or read.error.strip()
            start = mark
        os.close(write_fd)
        write_fd = -1
        while scanner.is_open:
            for read in scanner.read_ready():
                assert read.error is None or read.error.strip()
        assert scanner.last_error
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        scanner.close()


@given(st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40),
                          st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                          st.integers(-(2**31), 2**31 - 1)), max_size=20))
def test_any_event_records_become_reads(records: list[tuple[int, int, int, int, int]]) -> None:
    data = pack_events(records)
    assert len(data) == EVENT_SIZE * len(records)
    test_any_device_bytes_become_reads.hypothesis.inner_test(data, [])  # type: ignore[attr-defined]
