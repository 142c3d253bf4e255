"""Code interpretation: GS1 barcodes through biip, EPCs through epcpy, site labels; never raises."""

from __future__ import annotations

import random

import pytest

from floorsync.devices.codes import interpret, interpret_epc
from floorsync.devices.identity import KINDS, Identity

GS = "\x1d"


def test_gs1_128_with_lot_serial_expiry_and_count() -> None:
    ident = interpret(f"010950110153000310LOT-7{GS}1726123121SER9{GS}3712", "]C1")
    assert ident == Identity(
        "item",
        gtin="09501101530003",
        lot="LOT-7",
        serial="SER9",
        expiry="2026-12-31",
        quantity=12,
    )


def test_gs1_datamatrix_and_day_zero_expiry() -> None:
    ident = interpret("0109501101530003172612001012345AB", "]d2")
    assert ident.kind == "item" and ident.lot == "12345AB"
    assert ident.expiry == "2026-12-31"  # day 00 means the end of the month


def test_ean13_with_and_without_aim() -> None:
    assert interpret("4006381333931", "]E0") == Identity("item", gtin="04006381333931")
    assert interpret("4006381333931") == Identity("item", gtin="04006381333931")


def test_upc_a_without_aim_is_gtin14() -> None:
    assert interpret("036000291452").gtin == "00036000291452"


@pytest.mark.parametrize(
    ("text", "symbology"),
    [
        ("4006381333932", None),
        ("4006381333932", "]E0"),
        ("0109501101530004", "]C1"),
        ("00106141412345678909", "]C1"),
        ("414501234567890125412", "]C1"),
    ],
)
def test_wrong_check_digit_is_unknown_with_error(text: str, symbology: str | None) -> None:
    ident = interpret(text, symbology)
    assert ident.kind == "unknown"
    assert ident.error and "check digit" in ident.error


def test_truncated_gs1_is_unknown_with_error() -> None:
    ident = interpret("01095011015", "]C1")
    assert ident.kind == "unknown" and ident.error


def test_sscc_label_is_container_with_contents() -> None:
    ident = interpret(f"00106141412345678908{GS}0209501101530003{GS}3740", "]C1")
    assert ident.kind == "container"
    assert ident.sscc == "106141412345678908"
    assert (ident.gtin, ident.quantity) == ("09501101530003", 40)


def test_ai_414_location_with_extension() -> None:
    ident = interpret("414501234567890025412", "]C1")
    assert ident == Identity("location", gln="5012345678900", location="5012345678900.12")
    assert interpret("4145012345678900", "]C1").location == "5012345678900"


def test_site_location_and_command_labels() -> None:
    assert interpret("LOC:A-01-02") == Identity("location", location="A-01-02")
    assert interpret("LOC:A-01-02", "]C0") == Identity("location", location="A-01-02")
    assert interpret("BIN-7", location_prefixes=("BIN-",)).location == "7"
    assert interpret("CMD:RECEIVE") == Identity("command", command="RECEIVE")
    assert interpret("#DONE", command_prefix="#") == Identity("command", command="DONE")
    assert interpret("CMD:").kind == "unknown"


def test_digital_link_uri() -> None:
    ident = interpret("https://id.gs1.org/01/09501101530003/21/X1", "]Q1")
    assert (ident.kind, ident.gtin, ident.serial) == ("item", "09501101530003", "X1")


def test_other_codes_are_unknown_with_reason() -> None:
    for text, sym in [("hello", None), ("ABC-123", "]A0"), ("", None), ("  ", None), ("]", None)]:
        ident = interpret(text, sym)
        assert ident.kind == "unknown" and ident.error, (text, ident)


def test_gs1_without_key_is_unknown() -> None:
    ident = interpret("10ABC", "]C1")
    assert ident.kind == "unknown" and ident.error and "key" in ident.error


@pytest.mark.parametrize(
    ("hex_epc", "expected"),
    [
        (
            "3074257BF7194E4000001A85",
            Identity(
                "item",
                gtin="80614141123458",
                serial="6789",
                epc="urn:epc:id:sgtin:0614141.812345.6789",
            ),
        ),
        (
            "3114257BF4499602D2000000",
            Identity(
                "container", sscc="106141412345678908", epc="urn:epc:id:sscc:0614141.1234567890"
            ),
        ),
        (
            "3214257BF460720000000190",
            Identity(
                "location",
                gln="0614141123452",
                location="0614141123452.400",
                epc="urn:epc:id:sgln:0614141.12345.400",
            ),
        ),
        (
            "3414257BF400000000BC6038",
            Identity("asset", asset="061414112345400", epc="urn:epc:id:giai:0614141.12345400"),
        ),
        (
            "3314257BF40C0E4000000190",
            Identity(
                "returnable", asset="0614141123452400", epc="urn:epc:id:grai:0614141.12345.400"
            ),
        ),
    ],
)
def test_epc_schemes(hex_epc: str, expected: Identity) -> None:
    assert interpret_epc(hex_epc) == expected


def test_epc_accepts_lower_case_and_spaces() -> None:
    assert interpret_epc("3074 257b f719 4e40 0000 1a85").gtin == "80614141123458"


@pytest.mark.parametrize("bad", ["", "xyz", "30 74 ZZ", "E2801160600002", "00" * 12, "30", "3074"])
def test_bad_epcs_are_unknown(bad: str) -> None:
    ident = interpret_epc(bad)
    assert ident.kind == "unknown" and ident.error


def _fuzz_texts(rng: random.Random, n: int) -> list[str]:
    pieces = [
        "]C1",
        "]E0",
        "]d2",
        "]",
        "01",
        "00",
        "414",
        "254",
        "17",
        "10",
        "21",
        "37",
        GS,
        "LOC:",
        "CMD:",
        "http://",
        "https://id.gs1.org/01/",
        "9",
        "0",
    ]
    out = []
    for _ in range(n):
        mode = rng.randrange(4)
        if mode == 0:
            out.append(
                bytes(rng.randrange(256) for _ in range(rng.randrange(40))).decode("latin-1")
            )
        elif mode == 1:
            out.append("".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 50))))
        elif mode == 2:
            out.append("".join(rng.choice(pieces) for _ in range(rng.randrange(1, 10))))
        else:
            out.append(
                "".join(chr(rng.randrange(0x110000 - 0x800)) for _ in range(rng.randrange(20)))
                .encode("utf-8", "replace")
                .decode("utf-8", "replace")
            )
    return out


def test_interpret_never_raises_on_fuzz() -> None:
    rng = random.Random(1234)
    symbologies = [None, "]C1", "]E0", "]d2", "]Q3", "]e0", "]A0", "]X9", "]]]", ""]
    for text in _fuzz_texts(rng, 3000):
        ident = interpret(text, rng.choice(symbologies))
        assert isinstance(ident, Identity) and ident.kind in KINDS
        assert ident.kind != "unknown" or ident.error


def test_interpret_epc_never_raises_on_fuzz() -> None:
    rng = random.Random(99)
    for _ in range(3000):
        head = rng.choice(["30", "31", "32", "33", "34", "35", "36", "E2", ""])
        body = "".join(rng.choice("0123456789ABCDEFabcdefg ") for _ in range(rng.randrange(60)))
        ident = interpret_epc(head + body)
        assert isinstance(ident, Identity) and ident.kind in KINDS
        assert ident.kind != "unknown" or ident.error


def test_non_string_input_does_not_raise() -> None:
    assert interpret(None).kind == "unknown"  # type: ignore[arg-type]
    assert interpret_epc(b"30").kind == "unknown"  # type: ignore[arg-type]


def test_sgtin96_fast_path_matches_epcpy_on_generated_tags() -> None:
    """The hand decoder of SGTIN-96 gives what epcpy gives, and declines what epcpy refuses."""
    import random
    from urllib.parse import unquote

    from epcpy import hex_to_tag_encodable

    from floorsync.devices.codes import sgtin96_fast

    rng = random.Random(96)
    compared = declined = 0
    for _ in range(5000):
        value = 0x30 << 88 | rng.getrandbits(88)
        tag = f"{value:024X}"
        fast = sgtin96_fast(tag)
        try:
            ref = hex_to_tag_encodable(tag)
            uri, gtin = ref.epc_uri, ref.gs1_key()
        except Exception:
            assert fast is None, tag
            declined += 1
            continue
        assert fast is not None, tag
        assert (fast.kind, fast.epc, fast.gtin, fast.serial) == (
            "item", uri, gtin, unquote(uri.rsplit(".", 1)[1])), tag
        compared += 1
    assert compared > 2000 and declined > 2000
    assert sgtin96_fast("3114257BF4499602D2000000") is None  # SSCC-96: epcpy's
