"""KeyDecoder on key events that went through a pipe and evdev's own reader.

Every test packs `struct input_event` records, writes them into an `os.pipe()` and reads them back
with `PipeEvents` (an `evdev.eventio.EventIO`, so `read()`/`read_one()` are evdev's C reader).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

import pytest
from evdev import InputEvent, ecodes

from floorsync.devices import keymap
from floorsync.devices.keymap import (
    EV_KEY,
    EV_SYN,
    GS,
    LAYOUTS,
    SYN_DROPPED,
    SYN_REPORT,
    DecodedCode,
    KeyDecoder,
    text_to_keys,
)
from floorsync.devices.wedge import EVENT_SIZE, PipeEvents, pack_events

K = keymap
T0 = 1_700_000_000_000_000  # µs


def timed(
    events: Iterable[tuple[int, int, int]], start_us: int = T0, step_us: int = 2_000
) -> list[tuple[int, int, int, int, int]]:
    """(type, code, value) → (sec, usec, type, code, value), `step_us` apart (scanner speed)."""
    out = []
    for i, (etype, code, value) in enumerate(events):
        t = start_us + i * step_us
        out.append((t // 1_000_000, t % 1_000_000, etype, code, value))
    return out


def through_evdev(records: list[tuple[int, int, int, int, int]]) -> list[InputEvent]:
    """Write the records into a pipe and read them back with evdev's reader."""
    read_fd, write_fd = os.pipe()
    reader = PipeEvents(read_fd)
    events: list[InputEvent] = []
    data = pack_events(records)
    chunk = EVENT_SIZE * 170  # 4080 bytes: under PIPE_BUF, so each write is atomic
    try:
        for i in range(0, len(data), chunk):
            os.write(write_fd, data[i : i + chunk])
            while True:
                try:
                    batch = list(reader.read())
                except BlockingIOError:
                    break
                events.extend(batch)
    finally:
        os.close(write_fd)
        reader.close()
    assert len(events) == len(records)
    return events


def decode(
    events: Iterable[tuple[int, int, int]] | list[tuple[int, int, int, int, int]],
    layout: str = "us",
    *,
    decoder: KeyDecoder | None = None,
    **kwargs: object,
) -> list[DecodedCode]:
    events = list(events)
    records = events if events and len(events[0]) == 5 else timed(events)  # type: ignore[arg-type]
    dec = decoder if decoder is not None else KeyDecoder(layout, **kwargs)  # type: ignore[arg-type]
    out: list[DecodedCode] = []
    for ev in through_evdev(records):  # type: ignore[arg-type]
        out += dec.feed(ev.type, ev.code, ev.value, ev.timestamp())
    return out


def texts(codes: list[DecodedCode]) -> list[str | None]:
    assert all(c.error is None for c in codes), codes
    return [c.text for c in codes]


def tap(*keys: int) -> list[tuple[int, int, int]]:
    """Press and release each key in turn."""
    out: list[tuple[int, int, int]] = []
    for key in keys:
        out += [(EV_KEY, key, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, key, 0), (EV_SYN, 0, 0)]
    return out


def down(key: int) -> list[tuple[int, int, int]]:
    return [(EV_KEY, key, 1), (EV_SYN, SYN_REPORT, 0)]


def up(key: int) -> list[tuple[int, int, int]]:
    return [(EV_KEY, key, 0), (EV_SYN, SYN_REPORT, 0)]


# -- the tables -----------------------------------------------------------------------------------


def test_key_codes_are_evdev_codes() -> None:
    for code, name in K.KEY_NAMES.items():
        assert ecodes.ecodes[name] == code, name
    assert len(K.KEY_NAMES) >= 80
    for name in ("EV_SYN", "EV_KEY", "EV_MAX", "SYN_REPORT", "SYN_DROPPED", "KEY_MAX"):
        assert ecodes.ecodes[name] == getattr(K, name), name


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_character_of_each_layout_round_trips(layout: str) -> None:
    charset = LAYOUTS[layout].charset()
    assert set("0123456789-./+*%$ ") <= set(charset)
    assert set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") <= set(charset)
    codes = decode(text_to_keys(charset, layout), layout)
    assert texts(codes) == [charset]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_barcode_punctuation_on_each_layout(layout: str) -> None:
    code = "]C1" + "0109501101530003" + "10AB-12/3.4" + GS + "21X+Y%Z$ @#&"
    assert texts(decode(text_to_keys(code, layout), layout)) == [code]


@pytest.mark.parametrize(
    ("layout", "expected"), [("de", 'Yß1"'), ("fr", "W)&2"), ("gb", 'Z-1"'), ("us", "Z-1@")]
)
def test_field_notes_layout_check(layout: str, expected: str) -> None:
    """The key presses of a US-configured scanner typing `Z-1@`, read with other layouts."""
    us_keys = text_to_keys("Z-1@", "us")
    assert texts(decode(us_keys, layout)) == [expected]


# -- modifiers ------------------------------------------------------------------------------------


def test_left_and_right_shift() -> None:
    events = [
        *down(K.KEY_LEFTSHIFT), *tap(K.KEY_A), *up(K.KEY_LEFTSHIFT),
        *tap(K.KEY_A),
        *down(K.KEY_RIGHTSHIFT), *tap(K.KEY_1), *up(K.KEY_RIGHTSHIFT),
        # both held, one released: still shifted
        *down(K.KEY_LEFTSHIFT), *down(K.KEY_RIGHTSHIFT), *up(K.KEY_LEFTSHIFT), *tap(K.KEY_B),
        *up(K.KEY_RIGHTSHIFT), *tap(K.KEY_B, K.KEY_ENTER),
    ]  # fmt: skip
    assert texts(decode(events)) == ["Aa!Bb"]


def test_caps_lock_shifts_letters_only_and_shift_undoes_it() -> None:
    events = [
        *tap(K.KEY_CAPSLOCK, K.KEY_A, K.KEY_1, K.KEY_SLASH),
        *down(K.KEY_LEFTSHIFT), *tap(K.KEY_A, K.KEY_1), *up(K.KEY_LEFTSHIFT),
        *tap(K.KEY_CAPSLOCK, K.KEY_A, K.KEY_ENTER),
    ]  # fmt: skip
    assert texts(decode(events)) == ["A1/a!a"]


def test_caps_lock_on_de_and_fr() -> None:
    de = [*tap(K.KEY_CAPSLOCK, K.KEY_LEFTBRACE, K.KEY_Y, K.KEY_MINUS, K.KEY_ENTER)]
    assert texts(decode(de, "de")) == ["ÜZß"]
    # fr: caps lock gives capitals, but the digit row keeps its unshifted characters
    fr = [*tap(K.KEY_CAPSLOCK, K.KEY_Q, K.KEY_SEMICOLON, K.KEY_2, K.KEY_1, K.KEY_ENTER)]
    assert texts(decode(fr, "fr")) == ["AMé&"]
    # also behind a dead key (fr ^ then e) and in the AltGr layer (gb AltGr+e)
    fr_dead = tap(K.KEY_CAPSLOCK, K.KEY_LEFTBRACE, K.KEY_E, K.KEY_ENTER)
    assert texts(decode(fr_dead, "fr")) == ["Ê"]
    gb = [*tap(K.KEY_CAPSLOCK), *down(K.KEY_RIGHTALT), *tap(K.KEY_E), *up(K.KEY_RIGHTALT)]
    assert texts(decode([*gb, *tap(K.KEY_ENTER)], "gb")) == ["É"]


def test_altgr_layers() -> None:
    de = [*down(K.KEY_RIGHTALT), *tap(K.KEY_Q, K.KEY_8, K.KEY_E), *up(K.KEY_RIGHTALT)]
    assert texts(decode([*de, *tap(K.KEY_ENTER)], "de")) == ["@[€"]
    # Left Ctrl + left Alt is AltGr too (Windows), as some scanners send it
    de_ctrl_alt = [*down(K.KEY_LEFTCTRL), *down(K.KEY_LEFTALT), *tap(K.KEY_Q, K.KEY_0)]
    assert texts(decode([*de_ctrl_alt, *tap(K.KEY_ENTER)], "de")) == ["@}"]
    fr = [*down(K.KEY_RIGHTALT), *tap(K.KEY_0, K.KEY_3, K.KEY_MINUS), *up(K.KEY_RIGHTALT)]
    assert texts(decode([*fr, *tap(K.KEY_ENTER)], "fr")) == ["@#]"]
    gb = [*down(K.KEY_RIGHTALT), *down(K.KEY_LEFTSHIFT), *tap(K.KEY_E), *up(K.KEY_LEFTSHIFT)]
    gb += [*tap(K.KEY_4), *up(K.KEY_RIGHTALT), *tap(K.KEY_ENTER)]
    assert texts(decode(gb, "gb")) == ["É€"]


def test_dead_keys_compose_or_stand_alone() -> None:
    de = [
        *tap(K.KEY_GRAVE, K.KEY_SPACE),  # ^ alone
        *tap(K.KEY_EQUAL, K.KEY_E),  # acute, e: é
        *tap(K.KEY_GRAVE, K.KEY_1),  # ^ then a digit: both
        *tap(K.KEY_ENTER),
    ]
    assert texts(decode(de, "de")) == ["^é^1"]
    for text in ("ê", "Ê", "ë", "^", "¨", "~", "`", "à"):
        assert texts(decode(text_to_keys(text, "fr"), "fr")) == [text], text


def test_key_repeats_are_ignored() -> None:
    events = [
        (EV_KEY, K.KEY_LEFTSHIFT, 1), *[(EV_KEY, K.KEY_LEFTSHIFT, 2)] * 5,
        (EV_KEY, K.KEY_A, 1), *[(EV_KEY, K.KEY_A, 2)] * 10, (EV_KEY, K.KEY_A, 0),
        (EV_KEY, K.KEY_LEFTSHIFT, 0),
        (EV_KEY, K.KEY_B, 1), (EV_KEY, K.KEY_B, 2), (EV_KEY, K.KEY_B, 0),
        *tap(K.KEY_ENTER),
    ]  # fmt: skip
    assert texts(decode(events)) == ["Ab"]


# -- terminators and timing -----------------------------------------------------------------------


def test_enter_kp_enter_and_tab_each_end_a_code() -> None:
    events = [*tap(K.KEY_A, K.KEY_ENTER, K.KEY_B, K.KEY_KPENTER, K.KEY_C, K.KEY_TAB)]
    assert texts(decode(events)) == ["a", "b", "c"]
    # empty codes (a bare Enter) are not reads
    assert decode(tap(K.KEY_ENTER, K.KEY_ENTER)) == []


def test_terminators_not_configured_are_text() -> None:
    events = tap(K.KEY_A, K.KEY_TAB, K.KEY_B, K.KEY_KPENTER, K.KEY_C, K.KEY_ENTER)
    assert texts(decode(events, terminators=("enter",))) == ["a\tb\rc"]


def test_no_terminators_silence_ends_the_code() -> None:
    dec = KeyDecoder("us", terminators=())
    assert decode(tap(K.KEY_A, K.KEY_B), decoder=dec) == []
    assert dec.pending
    done = dec.flush(1.0)
    assert done == DecodedCode("ab", None, 1.0)
    assert not dec.pending and dec.flush(2.0) is None


def test_slow_partial_code_is_dropped_as_an_error_read() -> None:
    slow = timed(tap(K.KEY_X, K.KEY_Y))
    last_us = T0 + len(slow) * 2_000
    fast = timed(text_to_keys("OK", "us"), start_us=last_us + 500_000)
    codes = decode([*slow, *fast])
    assert len(codes) == 2
    assert codes[0].text == "xy" and "timeout" in (codes[0].error or "")
    assert codes[1] == DecodedCode("OK", None, codes[1].at)


def test_a_person_typing_never_makes_a_code() -> None:
    human = timed(text_to_keys("abc", "us"), step_us=40_000)  # 160 ms between key presses
    codes = decode(human)
    assert [c.text for c in codes] == ["a", "b", "c"]
    assert all("timeout" in (c.error or "") for c in codes)


def test_flush_marks_a_partial_code_truncated() -> None:
    dec = KeyDecoder()
    decode(tap(K.KEY_1, K.KEY_2), decoder=dec)
    done = dec.flush(5.0)
    assert done is not None and done.text == "12" and "truncated" in (done.error or "")


def test_syn_dropped_drops_the_code_and_resets_modifiers() -> None:
    events = [
        *down(K.KEY_LEFTSHIFT), *tap(K.KEY_A),
        (EV_SYN, SYN_DROPPED, 0),
        # lost in the kernel: the shift release; these leftovers before SYN_REPORT are discarded
        (EV_KEY, K.KEY_Q, 1),
        (EV_SYN, SYN_REPORT, 0),
        *tap(K.KEY_C, K.KEY_ENTER),
    ]  # fmt: skip
    codes = decode(events)
    assert codes[0].text == "A" and "SYN_DROPPED" in (codes[0].error or "")
    assert codes[1:] == [DecodedCode("c", None, codes[1].at)]  # shift is not stuck


def test_syn_dropped_resets_caps_lock_and_altgr() -> None:
    events = [*tap(K.KEY_CAPSLOCK), *down(K.KEY_RIGHTALT), (EV_SYN, SYN_DROPPED, 0)]
    events += [(EV_SYN, SYN_REPORT, 0), *tap(K.KEY_Q, K.KEY_ENTER)]
    assert texts(decode(events, "de")) == ["q"]


# -- control characters ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("how", ["ctrl", "alt"])
def test_gs1_group_separator(layout: str, how: str) -> None:
    label = "]C10109501101530003" + "10LOT7" + GS + "21SER9"
    assert texts(decode(text_to_keys(label, layout, gs=how), layout)) == [label]


def test_ctrl_bracket_is_the_layout_key_for_bracket() -> None:
    us = [*down(K.KEY_LEFTCTRL), *tap(K.KEY_RIGHTBRACE), *up(K.KEY_LEFTCTRL)]
    assert texts(decode([*us, *tap(K.KEY_ENTER)])) == [GS]
    de = [*down(K.KEY_LEFTCTRL), *down(K.KEY_RIGHTALT), *tap(K.KEY_9)]  # ] is AltGr+9 on de
    assert texts(decode([*de, *up(K.KEY_RIGHTALT), *tap(K.KEY_ENTER)], "de")) == [GS]
    # Windows-style position mapping: Ctrl + the key where US has ] (de "+")
    de_pos = [*down(K.KEY_RIGHTCTRL), *tap(K.KEY_RIGHTBRACE), *up(K.KEY_RIGHTCTRL)]
    assert texts(decode([*de_pos, *tap(K.KEY_ENTER)], "de")) == [GS]
    fr = [*down(K.KEY_LEFTCTRL), *down(K.KEY_RIGHTALT), *tap(K.KEY_MINUS)]  # ] is AltGr+)
    assert texts(decode([*fr, *tap(K.KEY_ENTER)], "fr")) == [GS]


def test_alt_numpad_codes() -> None:
    def alt(*keys: int) -> list[tuple[int, int, int]]:
        return [*down(K.KEY_LEFTALT), *tap(*keys), *up(K.KEY_LEFTALT)]

    events = [
        *alt(K.KEY_KP0, K.KEY_KP2, K.KEY_KP9),  # GS
        *alt(K.KEY_KP0, K.KEY_KP1, K.KEY_KP9, K.KEY_KP6),  # Windows-1252: Ä
        *alt(K.KEY_KP1, K.KEY_KP4, K.KEY_KP2),  # code page 437: Ä
        *alt(K.KEY_KP6, K.KEY_KP5),  # A
        *tap(K.KEY_ENTER),
    ]
    assert texts(decode(events)) == ["\x1dÄÄA"]
    # on us the right Alt is Alt, not AltGr
    right = [*down(K.KEY_RIGHTALT), *tap(K.KEY_KP2, K.KEY_KP9), *up(K.KEY_RIGHTALT)]
    assert texts(decode([*right, *tap(K.KEY_ENTER)])) == [GS]


def test_ctrl_m_ends_a_code_when_enter_does() -> None:
    events = [*tap(K.KEY_A), *down(K.KEY_LEFTCTRL), *tap(K.KEY_M), *up(K.KEY_LEFTCTRL)]
    assert texts(decode(events)) == ["a"]
    assert decode(events, terminators=("tab",)) == []  # CR is text then; the code stays open


# -- garbage ------------------------------------------------------------------------------------


def test_garbage_gives_error_reads_and_decoding_goes_on() -> None:
    events = [
        *tap(K.KEY_A, 63, K.KEY_B, K.KEY_ENTER),  # KEY_F5: not text
        *tap(K.KEY_O, K.KEY_K, K.KEY_ENTER),
        (EV_KEY, K.KEY_X, 7), *tap(K.KEY_ENTER),  # key value out of range
        (0x7777, 1, 1), *tap(K.KEY_ENTER),  # event type out of range
        *tap(0x3FF, K.KEY_ENTER),  # key code past KEY_MAX
        *tap(K.KEY_ESC, K.KEY_BACKSPACE, K.KEY_ENTER),
        *down(K.KEY_LEFTALT), *tap(K.KEY_Q), *up(K.KEY_LEFTALT), *tap(K.KEY_ENTER),
        (EV_KEY, 0x3FF, 0), (4, 4, 458792),  # an unknown key-up, an MSC_SCAN: ignored
        *text_to_keys("FINE", "us"),
    ]  # fmt: skip
    codes = decode(events)
    assert [(c.text, c.error is not None) for c in codes] == [
        ("a\ufffdb", True),
        ("ok", False),
        ("", True),
        ("", True),
        ("\ufffd", True),
        ("\ufffd\ufffd", True),
        ("\ufffd", True),
        ("FINE", False),
    ]
    assert "unknown key key code 63" in (codes[0].error or "")
    assert "bad value 7 for KEY_X" in (codes[2].error or "")
    assert "bad event type 30583" in (codes[3].error or "")
    assert "KEY_ESC" in (codes[5].error or "") and "KEY_BACKSPACE" in (codes[5].error or "")
    assert "Alt+KEY_Q" in (codes[6].error or "")


def test_lone_modifiers_and_non_key_events_make_nothing() -> None:
    events = [
        *tap(K.KEY_LEFTSHIFT, K.KEY_RIGHTCTRL, K.KEY_NUMLOCK, K.KEY_LEFTMETA),
        (4, 4, 458792), (17, 1, 1), (EV_SYN, 2, 0),  # MSC_SCAN, LED_CAPSL, SYN_MT_REPORT
    ]  # fmt: skip
    dec = KeyDecoder()
    assert decode(events, decoder=dec) == []
    assert not dec.pending


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="layout"):
        KeyDecoder("dvorak")
    with pytest.raises(ValueError, match="terminators"):
        KeyDecoder(terminators=("space",))
    with pytest.raises(ValueError):
        KeyDecoder(inter_key_timeout=0)
    with pytest.raises(ValueError, match="cannot type"):
        text_to_keys("ß", "us")


def test_evdev_read_one_and_read_loop_on_the_pipe() -> None:
    records = timed(text_to_keys("Q1", "us"))
    read_fd, write_fd = os.pipe()
    reader = PipeEvents(read_fd)
    try:
        os.write(write_fd, pack_events(records))
        first = reader.read_one()
        assert first is not None
        assert (first.sec, first.usec, first.type, first.code, first.value) == records[0]
        rest = list(itertools.islice(reader.read_loop(), len(records) - 1))
        assert reader.read_one() is None  # nothing pending: evdev's own answer
    finally:
        os.close(write_fd)
        reader.close()
    dec = KeyDecoder()
    out = []
    for ev in [first, *rest]:
        out += dec.feed(ev.type, ev.code, ev.value, ev.timestamp())
    assert texts(out) == ["Q1"]
    assert out[0].at == pytest.approx(rest[-1].timestamp() - 0.006)  # the Enter press
