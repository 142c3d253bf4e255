"""GS1 and EPC interpretation (devices/codes.py, devices/gs1fast.py, edge/epcmatch.py).

Boundary: `interpret` and `interpret_epc` never raise; an unknown code always says why.
`gs1fast.parse` never raises and never disagrees with biip. `epcmatch.parse_pattern` raises
only ValueError, with the reason. Round trips: element strings built from valid parts (in any
order, GS where a variable field needs it) give back those parts on both paths; SGTIN-96 tags
built from their fields decode to them, as epcpy does.
"""

from __future__ import annotations

import calendar

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.devices import gs1fast
from floorsync.devices.codes import interpret, interpret_epc, sgtin96_fast
from floorsync.devices.identity import KINDS, Identity
from floorsync.edge.epcmatch import EpcFilter, parse_pattern

GS = "\x1d"
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
SYMBOLOGIES = [None, "]C1", "]d2", "]Q3", "]e0", "]E0", "]Q1", "]A0", "]zz"]


def with_check(payload: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return payload + str((10 - total % 10) % 10)


def sane(identity: Identity) -> None:
    assert identity.kind in KINDS
    if identity.kind == "unknown":
        assert identity.error and identity.error.strip()
    if identity.kind == "item":
        assert identity.gtin or identity.epc


# Text rich in what GS1 parsing looks at: AIs, digits, GS, parentheses, Digital Link pieces.
gs1ish = st.lists(
    st.one_of(
        st.sampled_from(["01", "02", "00", "10", "11", "17", "21", "30", "37", "414", "254",
                         "8003", "8004", "(01)", GS, "https://id.gs1.org/01/", "LOC:", "CMD:",
                         "]C1", "?", "%", " "]),
        st.text(st.sampled_from("0123456789"), max_size=18),
        st.text(max_size=8),
    ),
    max_size=8,
).map("".join)


@given(gs1ish, st.sampled_from(SYMBOLOGIES), st.booleans())
@example("0109501101530003\x1d", "]C1", True)
@example("https://id.gs1.org/01/09501101530003/10/%", None, True)
def test_any_code_is_interpreted_without_raising(text: str, symbology: str | None,
                                                fast: bool) -> None:
    sane(interpret(text, symbology, fast=fast, location_patterns=(r"[A-Z]-\d{2}",)))
    quick = gs1fast.parse(text, symbology, assume_gs1=True)
    if quick is not None and symbology in gs1fast.SYMBOLOGIES:
        assert quick == interpret(text, symbology, fast=False)


gtins = st.integers(0, 10**13 - 1).map(lambda n: with_check(f"{n:013d}"))
cset82 = st.text(st.sampled_from(CSET82), min_size=1, max_size=20)


@st.composite
def yymmdd(draw: st.DrawFn) -> str:
    yy, month = draw(st.integers(0, 99)), draw(st.integers(1, 12))
    last = calendar.monthrange(2000 + yy, month)[1]  # leap years agree across the window
    return f"{yy:02d}{month:02d}{draw(st.integers(0, last)):02d}"


@st.composite
def item_label(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """An item's element strings in any order, and the fields they must give."""
    gtin = draw(gtins)
    parts: list[tuple[str, str]] = [("01", gtin)]
    want: dict[str, object] = {"kind": "item", "gtin": gtin}
    if draw(st.booleans()):
        lot = draw(cset82)
        parts.append(("10", lot))
        want["lot"] = lot
    if draw(st.booleans()):
        serial = draw(cset82)
        parts.append(("21", serial))
        want["serial"] = serial
    if draw(st.booleans()):
        parts.append(("17", draw(yymmdd())))
    if draw(st.booleans()):
        qty = draw(st.integers(0, 10**8 - 1))
        parts.append(("30", str(qty)))
        want["quantity"] = qty
    parts = draw(st.permutations(parts))
    variable = {"10", "21", "30"}
    text = ""
    for i, (ai, value) in enumerate(parts):
        text += ai + value
        if ai in variable and i < len(parts) - 1:
            text += GS
    return text, want


@given(item_label(), st.sampled_from(["]C1", "]d2", "]Q3"]), st.booleans())
def test_element_strings_from_valid_parts_give_them_back(
    label: tuple[str, dict[str, object]], symbology: str, fast: bool
) -> None:
    text, want = label
    identity = interpret(text, symbology, fast=fast)
    assert identity.error is None, identity.error
    for key, value in want.items():
        assert getattr(identity, key) == value, key
    if "17" in text and identity.expiry is not None:
        assert len(identity.expiry) == 10


@given(st.text(st.sampled_from("0123456789abcdefABCDEF \t"), max_size=70) | st.text(max_size=30))
@example("30" + "F" * 22)
@example("3" + "0" * 123)
def test_any_epc_is_interpreted_without_raising(hex_epc: str) -> None:
    sane(interpret_epc(hex_epc))


# SGTIN-96 partitions: (company prefix bits, digits, item reference bits).
PARTITIONS = ((40, 12, 4), (37, 11, 7), (34, 10, 10), (30, 9, 14), (27, 8, 17), (24, 7, 20),
              (20, 6, 24))


@st.composite
def sgtin96(draw: st.DrawFn) -> tuple[str, str, str, int]:
    partition = draw(st.integers(0, 6))
    _, cp_digits, ir_bits = PARTITIONS[partition]
    company = draw(st.integers(0, 10**cp_digits - 1))
    item = draw(st.integers(0, 10 ** (13 - cp_digits) - 1))
    serial = draw(st.integers(0, 2**38 - 1))
    value = (0x30 << 88 | draw(st.integers(0, 7)) << 85 | partition << 82
             | company << (38 + ir_bits) | item << 38 | serial)
    cp, ir = f"{company:0{cp_digits}d}", f"{item:0{13 - cp_digits}d}"
    return f"{value:024X}", cp, ir, serial


@given(sgtin96())
def test_sgtin96_built_from_fields_decodes_to_them(tag: tuple[str, str, str, int]) -> None:
    hex_epc, cp, ir, serial = tag
    identity = interpret_epc(hex_epc)
    assert identity.kind == "item"
    assert identity.epc == f"urn:epc:id:sgtin:{cp}.{ir}.{serial}"
    assert identity.gtin == with_check(ir[0] + cp + ir[1:])
    assert identity.serial == str(serial)
    assert sgtin96_fast(hex_epc) == identity
    from epcpy import hex_to_tag_encodable

    assert hex_to_tag_encodable(hex_epc).epc_uri == identity.epc


patterns = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from("0123456789ABCDEFabcdef*"), max_size=30),
    st.builds(lambda a, b: f"urn:epc:{a}:sgtin:{b}", st.sampled_from(["id", "idpat", "ID"]),
              st.text(st.sampled_from("0123456789.*"), max_size=20)),
    st.text(st.sampled_from("0123456789"), min_size=5, max_size=13),
)


@given(patterns, st.text(st.sampled_from("0123456789ABCDEF"), max_size=40),
       st.none() | st.text(max_size=40))
@example("urn:epc:idpat:(", "3074", "urn:epc:id:(")
def test_epc_patterns_parse_or_say_why(text: str, hex_epc: str, uri: str | None) -> None:
    try:
        pattern = parse_pattern(text)
    except ValueError as exc:
        assert str(exc).strip()
        return
    assert pattern.kind in ("prefix", "uri", "hex")
    verdict = EpcFilter(include=(pattern,)).accepts(hex_epc, uri)
    assert isinstance(verdict, bool)
