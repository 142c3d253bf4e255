"""The GS1 fast path gives biip's Identity exactly, or None (biip decides); never its own error."""

from __future__ import annotations

import calendar
import random

import pytest

from floorsync.devices import gs1fast
from floorsync.devices.codes import interpret
from floorsync.devices.identity import KINDS, Identity

GS = "\x1d"
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
SYMBOLOGIES = ["]C1", "]d2", "]Q3", "]e0"]


def with_check(payload: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return payload + str((10 - total % 10) % 10)


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def gtin14(rng: random.Random) -> str:
    size = rng.choice([8, 12, 13, 14, 14])  # shorter GTINs padded with zeros, as in AI 01
    return with_check(digits(rng, size - 1)).zfill(14)


def text(rng: random.Random) -> str:
    return "".join(rng.choice(CSET82) for _ in range(rng.randint(1, 20)))


def yymmdd(rng: random.Random) -> str:
    yy, month = rng.randrange(100), rng.randint(1, 12)
    last = calendar.monthrange(2000 + yy, month)[1]  # leap years agree across the window
    day = rng.choice([0, 1, rng.randint(1, last), last])
    return f"{yy:02d}{month:02d}{day:02d}"


def elements(rng: random.Random) -> list[tuple[str, str]]:
    """A plausible label's element strings: an item, a pallet or a location."""
    shape = rng.choice(["item", "item", "pallet", "location"])
    if shape == "location":
        out = [("414", with_check(digits(rng, 12)))]
        if rng.random() < 0.7:
            out.append(("254", text(rng)))
        return out
    if shape == "pallet":
        out = [("00", with_check(digits(rng, 17)))]
        if rng.random() < 0.7:
            out.append(("02", gtin14(rng)))
            out.append(("37", digits(rng, rng.randint(1, 8))))
    else:
        out = [("01", gtin14(rng))]
        if rng.random() < 0.4:
            out.append(("30", digits(rng, rng.randint(1, 8))))
        if rng.random() < 0.6:
            out.append(("21", text(rng)))
    for ai, p in [("10", 0.6), ("17", 0.6), ("11", 0.2), ("13", 0.1), ("15", 0.2)]:
        if rng.random() < p:
            out.append((ai, yymmdd(rng) if ai in ("11", "13", "15", "17") else text(rng)))
    rng.shuffle(out)
    return out


VARIABLE = {"10", "21", "254", "30", "37"}


def encode(rng: random.Random, parts: list[tuple[str, str]]) -> str:
    out = ""
    for i, (ai, value) in enumerate(parts):
        out += ai + value
        last = i == len(parts) - 1
        if (ai in VARIABLE and not last) or rng.random() < 0.1:
            out += GS  # required after variable fields; some printers put one everywhere
    return out


def generated(n: int, seed: int) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    return [(encode(rng, elements(rng)), rng.choice(SYMBOLOGIES)) for _ in range(n)]


def reference(code: str, symbology: str | None) -> Identity:
    return interpret(code, symbology, fast=False)


def test_generated_codes_match_biip_exactly() -> None:
    for code, sym in generated(3000, seed=7):
        fast = gs1fast.parse(code, sym)
        assert fast is not None, (code, sym)
        assert fast == reference(code, sym), (code, sym)
        assert interpret(code, sym) == fast


def test_without_aim_when_the_caller_says_gs1() -> None:
    for code, _ in generated(800, seed=8):
        assert gs1fast.parse(code) is None  # not without being told
        fast = gs1fast.parse(code, None, assume_gs1=True)
        assert fast is not None
        if code.isdigit() and len(code) in (8, 12, 13, 14, 18):
            continue  # interpret reads these as a bare GTIN or SSCC
        assert fast == reference(code, None) == interpret(code, None), code


def test_known_labels() -> None:
    label = f"010950110153000310LOT-7{GS}1726123121SER9{GS}3712"
    assert gs1fast.parse(label, "]C1") == Identity(
        "item",
        gtin="09501101530003",
        lot="LOT-7",
        serial="SER9",
        expiry="2026-12-31",
        quantity=12,
    )
    assert gs1fast.parse("0109501101530003172612001012345AB", "]d2") == Identity(
        "item", gtin="09501101530003", lot="12345AB", expiry="2026-12-31"
    )
    no_key = gs1fast.parse("172402001012", "]C1")  # a date and a lot, no key
    assert no_key == reference("172402001012", "]C1") and no_key is not None
    assert no_key.kind == "unknown" and no_key.error and "key" in no_key.error
    assert gs1fast.parse("414501234567890025412", "]C1") == Identity(
        "location", gln="5012345678900", location="5012345678900.12"
    )
    pallet = gs1fast.parse(f"00106141412345678908{GS}0209501101530003{GS}3740{GS}", "]C1")
    assert pallet == Identity(
        "container", sscc="106141412345678908", gtin="09501101530003", quantity=40
    )


@pytest.mark.parametrize(
    ("code", "symbology"),
    [
        ("0109501101530004", "]C1"),  # bad GTIN check digit
        ("00106141412345678909", "]C1"),  # bad SSCC check digit
        ("414501234567890125412", "]C1"),  # bad GLN check digit
        ("0109501101530003", "]E0"),  # not a GS1 message symbology
        ("4006381333931", "]E0"),  # plain EAN-13
        ("4006381333931", None),
        ("https://id.gs1.org/01/09501101530003", "]Q1"),  # Digital Link
        ("01095011015300039112", "]C1"),  # AI 91: not on the fast path
        ("01095011015300038004ABC", "]C1"),
        ("01095011015", "]C1"),  # truncated
        ("0109501101530003171302", "]C1"),  # truncated date
        ("0109501101530003171313", "]C1"),  # month 13
        ("0109501101530003170231", "]C1"),  # 31 February
        ("01095011015300031700", "]C1"),
        (f"010950110153000310{GS}21X", "]C1"),  # empty lot
        ("010950110153000310" + "A" * 21, "]C1"),  # lot longer than 20
        ("0109501101530003" + "10AB CD", "]C1"),  # space is not in CSET 82
        ("0109501101530003" + "10ÄB", "]C1"),
        ("010950110153000330", "]C1"),  # empty count
        ("0109501101530003301234567890", "]C1"),  # count of 10 digits
        (f"0109501101530003{GS}0109501101530003", "]C1"),  # AI twice
        (f"{GS}0109501101530003", "]C1"),
        ("0109501101530003 ", "]C1"),
        ("", "]C1"),
        (GS, "]C1"),
        ("01" + "".join(chr(0x660 + int(d)) for d in "09501101530003"), "]C1"),  # Arabic-Indic
    ],
)
def test_odd_codes_go_to_biip(code: str, symbology: str | None) -> None:
    assert gs1fast.parse(code, symbology) is None
    ident = interpret(code, symbology)
    assert ident == reference(code, symbology)
    assert ident.kind in KINDS


def _mutations(rng: random.Random, code: str) -> list[str]:
    out = [code[:cut] for cut in range(1, len(code))]  # every truncation
    for _ in range(8):
        i = rng.randrange(len(code))
        out.append(code[:i] + rng.choice("0123456789" + GS + "A") + code[i + 1 :])
    i = rng.randrange(len(code))
    out.append(code[:i] + rng.choice(["91", "8004", "240", "3103", GS + GS]) + code[i:])
    return out


def test_truncated_and_mutated_codes_are_none_or_biips_result() -> None:
    rng = random.Random(11)
    agreed = declined = 0
    for code, sym in generated(250, seed=12):
        for variant in _mutations(rng, code):
            fast = gs1fast.parse(variant, sym)
            if fast is None:
                declined += 1
                continue
            agreed += 1
            assert fast == reference(variant, sym), (variant, sym)
    assert agreed > 1000 and declined > 1000  # both branches well exercised


def test_check_digit() -> None:
    assert gs1fast.check_digit_ok("09501101530003")
    assert gs1fast.check_digit_ok("106141412345678908")
    assert not gs1fast.check_digit_ok("106141412345678909")
    rng = random.Random(3)
    for _ in range(500):
        code = with_check(digits(rng, rng.randint(7, 17)))
        assert gs1fast.check_digit_ok(code)
        wrong = code[:-1] + str((int(code[-1]) + rng.randint(1, 9)) % 10)
        assert not gs1fast.check_digit_ok(wrong)


def test_never_raises_on_fuzz() -> None:
    rng = random.Random(5)
    pieces = ["01", "00", "02", "10", "17", "21", "30", "37", "414", "254", GS, "9", "0", "A", "ä"]
    checked = 0
    for _ in range(5000):
        code = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        sym = rng.choice([*SYMBOLOGIES, None, "", "]E0"])
        fast = gs1fast.parse(code, sym, assume_gs1=rng.random() < 0.5)
        if fast is None:
            continue
        assert fast.kind in KINDS
        bare_number = code.isdigit() and len(code) in (8, 12, 13, 14, 18)
        if sym or not bare_number:
            assert fast == reference(code, sym), (code, sym)
            checked += 1
    assert checked > 100
