"""Keyboard-wedge decoding: Linux key events (evdev codes) to the codes a scanner typed.

A wedge scanner types a code as key presses for the keyboard layout it is configured for. The
kernel reports physical keys, not characters, so `KeyDecoder` owns the modifier, caps-lock,
dead-key and Alt-code state and reads keys with the *scanner's* layout (configuration, default
`us`), never the host's. It is a pure state machine: no I/O, no clock; the caller passes each
event's own timestamp, and `flush` ends a partial code when the line went quiet.

Choices:
- Only key-down (value 1) produces characters; key-up (0) only releases modifiers (and ends an
  Alt+numpad code); auto-repeat (2) is ignored.
- A code ends at a terminator key (`enter`, `kpenter`, `tab` by default). A terminator key that
  is not configured is text (`"\\r"`, `"\\t"`). With no terminators, silence ends codes.
- A gap longer than `inter_key_timeout` between two key presses inside a code drops the partial
  code as an error read (people type slower than scanners); the new key starts a new code.
- `SYN_DROPPED`: events up to the next `SYN_REPORT` are discarded, the partial code is dropped
  (error read) and all modifier state (shift, Ctrl, Alt, AltGr, caps lock, dead key) is reset,
  so a lost key-up cannot leave shift stuck.
- Caps lock acts on keys whose shifted character is the upper case of the unshifted one (letters,
  also é/ä...), as on Linux; shift with caps lock gives lower case.
- Right Alt is AltGr on layouts that have it (gb, de, fr), plain Alt on `us`. Left Ctrl + left Alt
  also selects AltGr there, as Windows does and some scanners send.
- Ctrl + a key gives the control character of the character that key types in the current layer
  (`Ctrl+]` = GS, 0x1D; on de `]` is AltGr+9, on fr AltGr+`)`). When that character has no control
  character (de `+`), the key's US character is used, the position-based Ctrl mapping of Windows
  layouts. Ctrl+M/J (CR/LF) end a code when `enter` is a terminator, Ctrl+I when `tab` is.
- Alt held + numpad digits gives the character on Alt release: a leading 0 reads the number in
  Windows-1252, otherwise in code page 437 (both are ASCII below 128, so Alt+029 is GS).
- Numpad keys type their characters whatever Num Lock says (scanners in "keypad" mode assume it on).
- Dead keys (de circumflex, acute, grave; fr circumflex, diaeresis, AltGr tilde and grave;
  Windows conventions): followed by space they give the accent itself, by a letter the composed
  letter (ê), by anything else both characters.
- Unknown keys, key values other than 0/1/2 and event types above EV_MAX never raise: they mark the
  code in progress (U+FFFD stands in for an unknown key) and it comes out as an error read at its
  terminator, at the timeout or on `flush`; the decoder then goes on.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Event types and codes: kernel ABI (linux/input-event-codes.h); tests check them against evdev.
EV_SYN = 0x00
EV_KEY = 0x01
EV_MAX = 0x1F
SYN_REPORT = 0
SYN_DROPPED = 3
KEY_MAX = 0x2FF

KEY_ESC = 1
KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0 = range(2, 12)
KEY_MINUS = 12
KEY_EQUAL = 13
KEY_BACKSPACE = 14
KEY_TAB = 15
KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_U, KEY_I, KEY_O, KEY_P = range(16, 26)
KEY_LEFTBRACE = 26
KEY_RIGHTBRACE = 27
KEY_ENTER = 28
KEY_LEFTCTRL = 29
KEY_A, KEY_S, KEY_D, KEY_F, KEY_G, KEY_H, KEY_J, KEY_K, KEY_L = range(30, 39)
KEY_SEMICOLON = 39
KEY_APOSTROPHE = 40
KEY_GRAVE = 41
KEY_LEFTSHIFT = 42
KEY_BACKSLASH = 43
KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M = range(44, 51)
KEY_COMMA = 51
KEY_DOT = 52
KEY_SLASH = 53
KEY_RIGHTSHIFT = 54
KEY_KPASTERISK = 55
KEY_LEFTALT = 56
KEY_SPACE = 57
KEY_CAPSLOCK = 58
KEY_NUMLOCK = 69
KEY_SCROLLLOCK = 70
KEY_KP7, KEY_KP8, KEY_KP9, KEY_KPMINUS = 71, 72, 73, 74
KEY_KP4, KEY_KP5, KEY_KP6, KEY_KPPLUS = 75, 76, 77, 78
KEY_KP1, KEY_KP2, KEY_KP3, KEY_KP0, KEY_KPDOT = 79, 80, 81, 82, 83
KEY_102ND = 86
KEY_KPENTER = 96
KEY_RIGHTCTRL = 97
KEY_KPSLASH = 98
KEY_RIGHTALT = 100
KEY_LEFTMETA = 125
KEY_RIGHTMETA = 126

#: Names of the codes above, for error messages (and the test against evdev.ecodes).
KEY_NAMES: dict[int, str] = {
    value: name
    for name, value in globals().items()
    if name.startswith("KEY_") and name != "KEY_MAX" and isinstance(value, int)
}

TERMINATOR_KEYS = {"enter": KEY_ENTER, "kpenter": KEY_KPENTER, "tab": KEY_TAB}
DEFAULT_TERMINATORS = ("enter", "kpenter", "tab")
GS = "\x1d"

# Modifier bits.
_LSHIFT, _RSHIFT, _LCTRL, _RCTRL, _LALT, _RALT = 1, 2, 4, 8, 16, 32
_SHIFT = _LSHIFT | _RSHIFT
_CTRL = _LCTRL | _RCTRL
_MOD_BITS = {
    KEY_LEFTSHIFT: _LSHIFT,
    KEY_RIGHTSHIFT: _RSHIFT,
    KEY_LEFTCTRL: _LCTRL,
    KEY_RIGHTCTRL: _RCTRL,
    KEY_LEFTALT: _LALT,
    KEY_RIGHTALT: _RALT,
}
_IGNORED_KEYS = frozenset({KEY_NUMLOCK, KEY_SCROLLLOCK, KEY_LEFTMETA, KEY_RIGHTMETA})
_KP_DIGITS = {
    KEY_KP0: "0",
    KEY_KP1: "1",
    KEY_KP2: "2",
    KEY_KP3: "3",
    KEY_KP4: "4",
    KEY_KP5: "5",
    KEY_KP6: "6",
    KEY_KP7: "7",
    KEY_KP8: "8",
    KEY_KP9: "9",
}
_KEYPAD = {
    **_KP_DIGITS,
    KEY_KPDOT: ".",
    KEY_KPMINUS: "-",
    KEY_KPPLUS: "+",
    KEY_KPASTERISK: "*",
    KEY_KPSLASH: "/",
}
_COMBINING = {"^": "\u0302", "\u00b4": "\u0301", "`": "\u0300", "¨": "\u0308", "~": "\u0303"}
_CTRL_CHARS = "@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_"

# Key rows as laid out on an ISO keyboard; each layer of a layout is one string per row.
_ROW_E = (KEY_GRAVE, KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0,
          KEY_MINUS, KEY_EQUAL)  # fmt: skip
_ROW_D = (KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_U, KEY_I, KEY_O, KEY_P, KEY_LEFTBRACE,
          KEY_RIGHTBRACE)  # fmt: skip
_ROW_C = (KEY_A, KEY_S, KEY_D, KEY_F, KEY_G, KEY_H, KEY_J, KEY_K, KEY_L, KEY_SEMICOLON,
          KEY_APOSTROPHE, KEY_BACKSLASH)  # fmt: skip
_ROW_B = (KEY_102ND, KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M, KEY_COMMA, KEY_DOT,
          KEY_SLASH)  # fmt: skip
_NONE = "□"  # no character on this key in this layer


@dataclass(frozen=True)
class Layout:
    """One keyboard layout: per layer (0 plain, 1 Shift, 2 AltGr, 3 Shift+AltGr) key → character.

    `dead[layer]` holds the dead keys of that layer (key → the accent as typed alone).
    `caps[group]` (0 without, 1 with AltGr) the keys caps lock shifts.
    """

    name: str
    chars: tuple[dict[int, str], dict[int, str], dict[int, str], dict[int, str]]
    dead: tuple[dict[int, str], dict[int, str], dict[int, str], dict[int, str]]
    caps: tuple[frozenset[int], frozenset[int]]
    has_altgr: bool

    def charset(self) -> str:
        """Every character the layout types with one key (and its modifiers) or a dead key."""
        seen: dict[str, None] = {}
        for layer in range(4):
            seen.update(dict.fromkeys(self.chars[layer].values()))
            seen.update(dict.fromkeys(self.dead[layer].values()))
        return "".join(seen)


def _layer(
    rows: tuple[str, str, str, str], dead: str, keypad: dict[int, str] | None
) -> tuple[dict[int, str], dict[int, str]]:
    chars: dict[int, str] = {}
    dead_keys: dict[int, str] = {}
    for keys, row in zip((_ROW_E, _ROW_D, _ROW_C, _ROW_B), rows, strict=True):
        if len(row) != len(keys):
            raise ValueError(f"layout row {row!r} has {len(row)} keys, expected {len(keys)}")
        for key, char in zip(keys, row, strict=True):
            if char == _NONE:
                continue
            if char in dead:
                dead_keys[key] = char
            else:
                chars[key] = char
    if keypad is not None:
        chars[KEY_SPACE] = " "
        chars.update(keypad)
    return chars, dead_keys


def _build(
    name: str,
    layers: list[tuple[tuple[str, str, str, str], str]],
    keypad: dict[int, str] | None = None,
) -> Layout:
    pad = {**_KEYPAD, **(keypad or {})}
    built = [_layer(rows, dead, pad if i < 2 else None) for i, (rows, dead) in enumerate(layers)]
    while len(built) < 4:
        built.append(({}, {}))
    chars = (built[0][0], built[1][0], built[2][0], built[3][0])
    dead = (built[0][1], built[1][1], built[2][1], built[3][1])
    caps = []
    for group in (0, 2):
        low, high = chars[group], chars[group + 1]
        caps.append(
            frozenset(
                key
                for key, char in low.items()
                if char.isalpha() and high.get(key) == char.upper() != char
            )
        )
    return Layout(name, chars, dead, (caps[0], caps[1]), has_altgr=len(layers) > 2)


_N13, _N12, _N11 = _NONE * 13, _NONE * 12, _NONE * 11

LAYOUTS: dict[str, Layout] = {
    "us": _build(
        "us",
        [
            (("`1234567890-=", "qwertyuiop[]", "asdfghjkl;'\\", _NONE + "zxcvbnm,./"), ""),
            (("~!@#$%^&*()_+", "QWERTYUIOP{}", 'ASDFGHJKL:"|', _NONE + "ZXCVBNM<>?"), ""),
        ],
    ),
    "gb": _build(
        "gb",
        [
            (("`1234567890-=", "qwertyuiop[]", "asdfghjkl;'#", "\\zxcvbnm,./"), ""),
            (('¬!"£$%^&*()_+', "QWERTYUIOP{}", "ASDFGHJKL:@~", "|ZXCVBNM<>?"), ""),
            (("¦□□□€□□□□□□□□", "□□é□□□úíó□□□", "á□□□□□□□□□□□", _N11), ""),
            ((_N13, "□□É□□□ÚÍÓ□□□", "Á□□□□□□□□□□□", _N11), ""),
        ],
    ),
    "de": _build(
        "de",
        [
            (("^1234567890ß\u00b4", "qwertzuiopü+", "asdfghjklöä#", "<yxcvbnm,.-"), "^\u00b4"),
            (('°!"§$%&/()=?`', "QWERTZUIOPÜ*", "ASDFGHJKLÖÄ'", ">YXCVBNM;:_"), "`"),
            (("□□²³□□□{[]}\\□", "@□€□□□□□□□□~", _N12, "|□□□□□□µ□□□"), ""),
        ],
        keypad={KEY_KPDOT: ","},
    ),
    "fr": _build(
        "fr",
        [
            (("²&é\"'(-è_çà)=", "azertyuiop^$", "qsdfghjklmù*", "<wxcvbn,;:!"), "^"),
            (("□1234567890°+", "AZERTYUIOP¨£", "QSDFGHJKLM%µ", ">WXCVBN?./§"), "¨"),
            (("□□~#{[|`\\^@]}", "□□€□□□□□□□□¤", _N12, _N11), "~`"),
        ],
    ),
}


def _key_name(code: int) -> str:
    return KEY_NAMES.get(code, f"key code {code}")


def _control(char: str | None) -> str | None:
    """The control character Ctrl gives with `char` (a-z, @, [ \\ ] ^ _), or None."""
    if char is None or len(char) != 1:
        return None
    upper = char.upper() if "a" <= char <= "z" else char
    if upper in _CTRL_CHARS:
        return chr(ord(upper) & 0x1F)
    return None


def _alt_code(digits: str) -> str | None:
    value = int(digits) % 256
    try:
        return bytes([value]).decode("cp1252" if digits.startswith("0") else "cp437")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class DecodedCode:
    """One code typed by a scanner, or a failed one (`error` set, `text` what was decoded so far).

    `at` is the event time (seconds) of the key that ended the code, or of the flush.
    """

    text: str | None
    error: str | None
    at: float


class KeyDecoder:
    """Incremental key-event decoder for one device: `feed` every event, `flush` on silence."""

    def __init__(
        self,
        layout: str = "us",
        *,
        inter_key_timeout: float = 0.1,
        terminators: Iterable[str] = DEFAULT_TERMINATORS,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
        if inter_key_timeout <= 0:
            raise ValueError("inter_key_timeout must be positive")
        terms = tuple(terminators)
        unknown = [t for t in terms if t not in TERMINATOR_KEYS]
        if unknown:
            raise ValueError(f"unknown terminators {unknown}; known: {sorted(TERMINATOR_KEYS)}")
        self.layout = LAYOUTS[layout]
        self.inter_key_timeout = inter_key_timeout
        self.terminators = terms
        self._term_keys = frozenset(TERMINATOR_KEYS[t] for t in terms)
        self._text_keys = {KEY_ENTER: "\r", KEY_KPENTER: "\r", KEY_TAB: "\t"}
        for key in self._term_keys:
            del self._text_keys[key]
        self._t0, self._t1 = self.layout.chars[0], self.layout.chars[1]
        self._caps0 = self.layout.caps[0]
        self._alt_mask = _LALT if self.layout.has_altgr else _LALT | _RALT
        self._altgr_mask = _RALT if self.layout.has_altgr else 0
        self.reset()

    # -- state -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: partial code, modifiers, caps lock, a pending SYN_DROPPED."""
        self._held = 0
        self._caps = False
        self._reset_code()
        self._dropping = False
        self._last = 0.0

    def _reset_code(self) -> None:
        self._buf: list[str] = []
        self._errors: list[str] = []
        self._open = False
        self._dead: str | None = None
        self._altcode = ""

    @property
    def pending(self) -> bool:
        """True while a code is in progress (the I/O loop flushes it on silence)."""
        return self._open

    def _poison(self, reason: str, placeholder: str = "") -> None:
        if len(self._errors) < 3:
            self._errors.append(reason)
        elif len(self._errors) == 3:
            self._errors.append("more errors")
        if placeholder:
            self._put(placeholder)
        self._open = True

    def _take(self, at: float, error: str | None) -> DecodedCode | None:
        """End the code in progress; None when it was empty and clean."""
        if self._dead is not None:
            self._buf.append(self._dead)
        if self._altcode:
            self._errors.append(f"incomplete Alt code {self._altcode}")
        text = "".join(self._buf)
        errors = self._errors
        if error:
            errors = [*errors, error]
        had = self._open
        self._reset_code()
        if errors:
            return DecodedCode(text, "; ".join(errors), at)
        if not had or not text:
            return None
        return DecodedCode(text, None, at)

    def flush(self, at: float) -> DecodedCode | None:
        """End a partial code on silence: an error read, unless no terminators are configured."""
        if not self._open:
            return None
        reason = "truncated: no terminator before silence" if self._term_keys else None
        return self._take(at, reason)

    # -- events ----------------------------------------------------------------------------

    def feed(self, event_type: int, code: int, value: int, timestamp: float) -> list[DecodedCode]:
        """Take one input event; return the codes it completes (usually none)."""
        if self._dropping:
            if event_type == EV_SYN and code == SYN_REPORT:
                self._dropping = False
            return []
        if event_type == EV_KEY:
            if value == 1:
                return self._press(code, timestamp)
            if value == 0:
                bit = _MOD_BITS.get(code)
                if bit is not None:
                    return self._release(bit, timestamp)
                return []
            if value == 2:
                return []
            self._poison(f"bad value {value} for {_key_name(code)}")
            return []
        if event_type == EV_SYN:
            if code == SYN_DROPPED:
                return self._dropped(timestamp)
            return []
        if not 0 <= event_type <= EV_MAX:
            self._poison(f"bad event type {event_type}")
        return []

    def feed_events(self, events: Iterable[tuple[int, int, int, float]]) -> list[DecodedCode]:
        """Feed (type, code, value, timestamp) tuples; return every code they complete."""
        out: list[DecodedCode] = []
        feed = self.feed
        for event_type, code, value, timestamp in events:
            done = feed(event_type, code, value, timestamp)
            if done:
                out.extend(done)
        return out

    def _dropped(self, at: float) -> list[DecodedCode]:
        self._dropping = True
        self._held = 0
        self._caps = False
        if not self._open:
            self._reset_code()
            return []
        partial = self._take(at, "events lost (SYN_DROPPED): partial code dropped")
        return [partial] if partial is not None else []

    def _release(self, bit: int, at: float) -> list[DecodedCode]:
        self._held &= ~bit
        if self._altcode and not self._held & self._alt_mask:
            digits, self._altcode = self._altcode, ""
            char = _alt_code(digits)
            if char is None:
                self._poison(f"Alt code {digits} is not a character", "\ufffd")
            elif self._ends_code(char):
                return self._finish(at)
            else:
                self._put(char)
        return []

    def _ends_code(self, char: str) -> bool:
        """A control character typed as text that stands for a configured terminator key."""
        if char in ("\r", "\n"):
            return KEY_ENTER in self._term_keys
        return char == "\t" and KEY_TAB in self._term_keys

    def _finish(self, at: float) -> list[DecodedCode]:
        done = self._take(at, None)
        return [done] if done is not None else []

    def _press(self, code: int, at: float) -> list[DecodedCode]:
        out: list[DecodedCode] = []
        if self._open and at - self._last > self.inter_key_timeout:
            gap = at - self._last
            reason = None
            if self._term_keys:
                reason = f"timeout: {gap:.3f} s between keys, partial code dropped"
            dropped = self._take(self._last, reason)
            if dropped is not None:
                out.append(dropped)
        self._last = at
        held = self._held
        # Fast path: a character key with no modifier but shift.
        if not held & ~_SHIFT and self._dead is None:
            if self._caps and code in self._caps0:
                char = (self._t0 if held else self._t1).get(code)
            else:
                char = (self._t1 if held else self._t0).get(code)
            if char is not None:
                self._buf.append(char)
                self._open = True
                return out
        bit = _MOD_BITS.get(code)
        if bit is not None:
            self._held = held | bit
            return out
        if code == KEY_CAPSLOCK:
            self._caps = not self._caps
            return out
        if code in self._term_keys:
            out.extend(self._finish(at))
            return out
        if code in _IGNORED_KEYS:
            return out
        out.extend(self._slow_press(code, held, at))
        return out

    def _slow_press(self, code: int, held: int, at: float) -> list[DecodedCode]:
        layout = self.layout
        ctrl = held & _CTRL
        alt = held & self._alt_mask
        altgr = held & self._altgr_mask
        if layout.has_altgr and ctrl and held & _LALT:
            altgr, ctrl, alt = 1, 0, 0  # Ctrl+Alt is AltGr
        if alt and not ctrl and not altgr:
            digit = _KP_DIGITS.get(code)
            if digit is not None:
                self._altcode += digit
                self._open = True
            else:
                self._poison(f"Alt+{_key_name(code)} is not text", "\ufffd")
            return []
        group = 2 if altgr else 0
        layer = group + (1 if held & _SHIFT else 0)
        if self._caps and code in layout.caps[group >> 1]:
            layer ^= 1
        char = layout.chars[layer].get(code)
        dead = None if char is not None else layout.dead[layer].get(code)
        if char is None and dead is None:
            char = self._text_keys.get(code)
            if char is None:
                self._poison(f"unknown key {_key_name(code)}", "\ufffd")
                return []
        if ctrl:
            control = _control(char or dead)
            if control is None and not altgr:
                control = _control(LAYOUTS["us"].chars[layer & 1].get(code))
            if control is None:
                self._poison(f"Ctrl+{_key_name(code)} is not text", "\ufffd")
                return []
            if self._ends_code(control):
                return self._finish(at)
            self._put(control)
            return []
        if dead is not None:
            if self._dead is not None:
                self._buf.append(self._dead)
            self._dead = dead
            self._open = True
            return []
        assert char is not None
        self._put(char)
        return []

    def _put(self, char: str) -> None:
        dead = self._dead
        if dead is not None:
            self._dead = None
            if char != " ":
                composed = unicodedata.normalize("NFC", char + _COMBINING[dead])
                if len(composed) == 1:
                    char = composed
                else:
                    self._buf.append(dead)
            else:
                char = dead
        self._buf.append(char)
        self._open = True


# -- the inverse: text to key events (tests, simulators, diagnostics) ---------------------------


def _inverse(layout: Layout) -> dict[str, tuple[int, int, bool]]:
    """Character → (layer, key, is_dead), preferring fewer modifiers and main keys over keypad."""
    out: dict[str, tuple[int, int, bool]] = {}
    for layer in range(4):
        for key, char in layout.chars[layer].items():
            if key not in _KEYPAD:
                out.setdefault(char, (layer, key, False))
        for key, char in layout.dead[layer].items():
            out.setdefault(char, (layer, key, True))
    for key, char in layout.chars[0].items():
        out.setdefault(char, (0, key, False))
    return out


_INVERSE = {name: _inverse(layout) for name, layout in LAYOUTS.items()}


def _chord(modifiers: list[int], key: int) -> list[tuple[int, int, int]]:
    events: list[tuple[int, int, int]] = []
    for mod in modifiers:
        events += [(EV_KEY, mod, 1), (EV_SYN, SYN_REPORT, 0)]
    events += [(EV_KEY, key, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, key, 0), (EV_SYN, SYN_REPORT, 0)]
    for mod in reversed(modifiers):
        events += [(EV_KEY, mod, 0), (EV_SYN, SYN_REPORT, 0)]
    return events


def _layer_mods(layer: int) -> list[int]:
    mods = []
    if layer & 2:
        mods.append(KEY_RIGHTALT)
    if layer & 1:
        mods.append(KEY_LEFTSHIFT)
    return mods


def text_to_keys(
    text: str, layout: str = "us", *, gs: str = "ctrl", terminator: str | None = "enter"
) -> list[tuple[int, int, int]]:
    """The (type, code, value) events a scanner set to `layout` sends for `text`.

    Each key is pressed and released inside its modifiers, each event followed by SYN_REPORT.
    Accents a dead key can make (ê on fr) are typed as dead key + letter, dead accents alone as
    dead key + space. `gs` is how the GS1 separator is typed: "ctrl" (Ctrl+]) or "alt" (Alt+029).
    `terminator` is a key name of TERMINATOR_KEYS or None. Raises ValueError for a character
    the layout cannot type (this is a helper for tests and simulators, not an input path).
    """
    if gs not in ("ctrl", "alt"):
        raise ValueError("gs must be 'ctrl' or 'alt'")
    inverse = _INVERSE[layout]
    events: list[tuple[int, int, int]] = []
    for char in text:
        if char == "\t":
            events += _chord([], KEY_TAB)
            continue
        if char in ("\r", "\n"):
            events += _chord([], KEY_ENTER)
            continue
        if char == GS and gs == "alt":
            events += [(EV_KEY, KEY_LEFTALT, 1), (EV_SYN, SYN_REPORT, 0)]
            for key in (KEY_KP0, KEY_KP2, KEY_KP9):
                events += _chord([], key)
            events += [(EV_KEY, KEY_LEFTALT, 0), (EV_SYN, SYN_REPORT, 0)]
            continue
        if len(char) == 1 and ord(char) < 0x20:
            target = _CTRL_CHARS[ord(char)]
            found = inverse.get(target.lower()) or inverse.get(target)
            if found is None or found[2]:
                raise ValueError(f"layout {layout} cannot type {char!r}")
            events += _chord([KEY_LEFTCTRL, *_layer_mods(found[0])], found[1])
            continue
        found = inverse.get(char)
        if found is not None:
            layer, key, is_dead = found
            events += _chord(_layer_mods(layer), key)
            if is_dead:
                events += _chord([], KEY_SPACE)
            continue
        decomposed = unicodedata.normalize("NFD", char)
        if len(decomposed) == 2:
            accent = {v: k for k, v in _COMBINING.items()}.get(decomposed[1])
            base = inverse.get(decomposed[0])
            dead = inverse.get(accent) if accent else None
            if base is not None and dead is not None and dead[2] and not base[2]:
                events += _chord(_layer_mods(dead[0]), dead[1])
                events += _chord(_layer_mods(base[0]), base[1])
                continue
        raise ValueError(f"layout {layout} cannot type {char!r}")
    if terminator is not None:
        events += _chord([], TERMINATOR_KEYS[terminator])
    return events
