"""What a scanned code or an EPC identifies: item, location, container, asset, command, or unknown.

Bad and unknown codes are normal on a floor, so `interpret` and `interpret_epc` never raise: they
return kind "unknown" with `error` set, and the caller records the read with that reason.

Choices:
- Site location and command labels are matched by prefix before any GS1 parsing.
- Without an AIM id, a code of only digits with 8, 12, 13 or 14 of them is read as a GTIN
  (biip would also accept it as a GS1 element string), and 18 digits as an SSCC.
- A GS1 element string identifies something only through a key: 00 (container, with 02/37 as its
  contents), 01/02 (item), 414 (location, 254 as extension), 8004 (asset), 8003 (returnable).
- A location with a GLN extension is written "GLN.EXT", for AI 414+254 and SGLN tags alike.
- GS1 element strings of the common AIs go through `devices.gs1fast` first (over 10x faster than
  biip.parse); it gives the same Identity as biip or None, and then biip decides. `fast=False`
  skips it (biip alone, the reference).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import biip
from biip import ParseConfig
from biip.symbology import GS1Symbology
from epcpy import hex_to_tag_encodable
from epcpy.epc_schemes import GIAI, GRAI, SGLN, SGTIN, SSCC

from floorsync.devices import gs1fast as _gs1fast
from floorsync.devices.identity import Identity, identity_from_ais
from floorsync.devices.identity import unknown as _unknown

_CONFIG = ParseConfig(separator_chars=("\x1d",))
_GTIN_LENGTHS = (8, 12, 13, 14)
_HEX = re.compile(r"[0-9A-F]+")


def interpret(
    text: str,
    symbology: str | None = None,
    *,
    location_prefixes: tuple[str, ...] = ("LOC:",),
    command_prefix: str = "CMD:",
    location_patterns: tuple[str | re.Pattern[str], ...] = (),
    fast: bool = True,
) -> Identity:
    """Interpret a scanned code (AIM id stripped, given separately as `symbology`).

    Site labels come first: a command prefix, location prefixes, and location patterns
    (regular expressions matched against the whole code; a group named ``location`` gives the
    location's name, else the whole code is). `fast=False` skips the GS1 fast path
    (devices.gs1fast): biip alone, for comparison.
    """
    try:
        identity = _site_label(text, location_patterns) if location_patterns else None
        if identity is not None:
            return identity
        return _interpret(text, symbology, location_prefixes, command_prefix, fast)
    except Exception as exc:  # biip and friends must never take the pipeline down
        return _unknown(f"cannot interpret: {type(exc).__name__}: {exc}")


def _site_label(text: str, patterns: tuple[str | re.Pattern[str], ...]) -> Identity | None:
    code = text.strip(" \t\r\n") if isinstance(text, str) else ""
    for pattern in patterns:
        match = re.fullmatch(pattern, code)
        if match:
            named = match.groupdict().get("location")
            return Identity("location", location=named or code)
    return None


def _interpret(
    text: str,
    symbology: str | None,
    location_prefixes: tuple[str, ...],
    command_prefix: str,
    fast: bool,
) -> Identity:
    if not isinstance(text, str):
        return _unknown("not text")
    code = text.strip(" \t\r\n")
    if not code:
        return _unknown("empty code")
    if command_prefix and code.startswith(command_prefix):
        command = code[len(command_prefix) :].strip()
        return Identity("command", command=command) if command else _unknown("empty command")
    for prefix in location_prefixes:
        if prefix and code.startswith(prefix):
            where = code[len(prefix) :].strip()
            return Identity("location", location=where) if where else _unknown("empty location")
    if fast:
        quick = _fast_path(code, symbology)
        if quick is not None:
            return quick
    return _interpret_barcode(code, symbology)


def _fast_path(code: str, symbology: str | None) -> Identity | None:
    if not symbology:
        # Without an AIM id biip reads any GS1 element string too, except what the rules below
        # (in _interpret_barcode) read as a bare GTIN or SSCC first.
        if code.isascii() and code.isdigit() and len(code) in (*_GTIN_LENGTHS, 18):
            return None
        return _gs1fast.parse(code, None, assume_gs1=True)
    return _gs1fast.parse(code, symbology)


def _interpret_barcode(code: str, symbology: str | None) -> Identity:
    result = biip.parse((symbology or "") + code, config=_CONFIG)
    sym = result.symbology_identifier
    gs1_sym = sym.gs1_symbology if sym is not None else None
    digits_only = code.isascii() and code.isdigit()
    gtin_only = gs1_sym in GS1Symbology.with_gtin() and gs1_sym not in (
        GS1Symbology.with_gs1_messages()
    )
    if gtin_only or (gs1_sym is None and digits_only and len(code) in _GTIN_LENGTHS):
        if result.gtin is not None:
            return Identity("item", gtin=result.gtin.as_gtin_14())
        return _unknown(result.gtin_error or "not a GTIN")
    if gs1_sym is None and digits_only and len(code) == 18:
        if result.sscc is not None:
            return Identity("container", sscc=result.sscc.value)
        return _unknown(result.sscc_error or "not an SSCC")
    link = result.gs1_digital_link_uri
    if link is None and gs1_sym is None and code.startswith("http"):
        link = biip.parse(code, config=_CONFIG).gs1_digital_link_uri  # e.g. plain QR, "]Q1"
    message = result.gs1_message
    if message is None and link is not None:
        message = link.as_gs1_message()
    if message is not None:
        return _from_element_strings(message.element_strings)
    errors = [result.gs1_message_error, result.gs1_digital_link_uri_error]
    reason = next((e for e in errors if e), None)
    if reason and gs1_sym is not None:
        return _unknown(reason)
    return _unknown("not a GS1 code, location or command label")


def _from_element_strings(elements: Any) -> Identity:
    values: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for es in elements:
        ai = es.ai.ai
        for err in (es.gtin_error, es.sscc_error, es.gln_error):
            if err:
                return _unknown(err)
        values[ai] = es.value
        if ai in ("01", "02") and es.gtin is not None:
            fields["gtin"] = es.gtin.as_gtin_14()
        elif ai == "00" and es.sscc is not None:
            fields["sscc"] = es.sscc.value
        elif ai == "414" and es.gln is not None:
            fields["gln"] = es.gln.value
        elif ai == "17" and es.date is not None:
            fields["expiry"] = es.date.isoformat()
        elif ai == "10":
            fields["lot"] = es.value
        elif ai == "21":
            fields["serial"] = es.value
        elif ai in ("30", "37"):
            fields["quantity"] = int(es.value)
    return identity_from_ais(values, fields)


def interpret_epc(hex_epc: str) -> Identity:
    """Interpret an EPC bank (hex) through epcpy; unknown headers are a normal outcome."""
    try:
        return _interpret_epc(hex_epc)
    except Exception as exc:  # epcpy raises ConvertException, ValueError and more
        return _unknown(f"unknown EPC: {type(exc).__name__}: {exc}")


# SGTIN-96 partition table (TDS 14.5.1): company prefix bits and digits, item reference bits.
_SGTIN_PARTITIONS = ((40, 12, 4), (37, 11, 7), (34, 10, 10), (30, 9, 14), (27, 8, 17),
                     (24, 7, 20), (20, 6, 24))


def _gs1_check_digit(digits: str) -> str:
    total = 3 * sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2]))
    return str((10 - total % 10) % 10)


def sgtin96_fast(clean: str) -> Identity | None:
    """SGTIN-96 (header 30), the tag of nearly every case at a dock, decoded by hand: the same
    Identity as epcpy (tests compare them on generated tags) at a tenth of the cost. None for
    anything else, or anything odd (epcpy then decides)."""
    if len(clean) != 24 or not clean.startswith("30"):
        return None
    value = int(clean, 16)
    partition = value >> 82 & 0x7
    if partition > 6:
        return None
    cp_bits, cp_digits, ir_bits = _SGTIN_PARTITIONS[partition]
    ir_digits = 13 - cp_digits
    company = value >> (38 + ir_bits) & ((1 << cp_bits) - 1)
    item = value >> 38 & ((1 << ir_bits) - 1)
    serial = value & ((1 << 38) - 1)
    if company >= 10**cp_digits or item >= 10**ir_digits:
        return None
    cp, ir = f"{company:0{cp_digits}d}", f"{item:0{ir_digits}d}"
    body = ir[0] + cp + ir[1:]
    return Identity("item", epc=f"urn:epc:id:sgtin:{cp}.{ir}.{serial}",
                    gtin=body + _gs1_check_digit(body), serial=str(serial))


def _interpret_epc(hex_epc: str) -> Identity:
    if not isinstance(hex_epc, str):
        return _unknown("EPC is not text")
    clean = "".join(hex_epc.split()).upper()
    if not clean or not _HEX.fullmatch(clean):
        return _unknown("EPC is not hex")
    fast = sgtin96_fast(clean)
    if fast is not None:
        return fast
    tag = hex_to_tag_encodable(clean)
    uri: str = tag.epc_uri
    parts = uri.rsplit(":", 1)[-1].split(".")
    base = Identity("unknown", epc=uri)
    if isinstance(tag, SGTIN):
        return replace(base, kind="item", gtin=tag.gs1_key(), serial=unquote(parts[-1]))
    if isinstance(tag, SSCC):
        return replace(base, kind="container", sscc=tag.gs1_key())
    if isinstance(tag, SGLN):
        gln = tag.gs1_key()
        ext = unquote(parts[-1]) if len(parts) == 3 else "0"
        location = gln if ext == "0" else f"{gln}.{ext}"
        return replace(base, kind="location", gln=gln, location=location)
    if isinstance(tag, GIAI):
        return replace(base, kind="asset", asset=tag.gs1_key())
    if isinstance(tag, GRAI):
        return replace(base, kind="returnable", asset=tag.gs1_key())
    return replace(base, error=f"unsupported EPC scheme {type(tag).__name__}")
