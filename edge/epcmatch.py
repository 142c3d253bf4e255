"""Include/exclude patterns for RFID tags (EPCglobal ALE style, simplified).

A pattern is one of:

- a GS1 company prefix, 6 to 12 digits (``"0614141"``): any decoded EPC of that company
  (SGTIN, SSCC, SGLN, GRAI, GIAI...);
- an EPC URI, pure identity or ALE ``idpat`` form, ``*`` matching any run of characters
  (``"urn:epc:id:sgtin:0614141.*"``, ``"urn:epc:idpat:sgtin:0614141.812345.*"``,
  ``"urn:epc:id:sgln:0614141.00001.0"``);
- tag hex: 16 or more hex digits (``"3074257BF7194E4000001A85"``), or 4 or more with ``*``
  (``"30742*"``): the raw EPC bank, so it also matches tags that do not decode.

Matching happens once per distinct EPC (the door caches the verdict), never per read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = re.compile(r"\d{6,12}")
_HEX = re.compile(r"[0-9A-Fa-f]{16,}|(?=(?:\*?[0-9A-Fa-f]){4})[0-9A-Fa-f*]*\*[0-9A-Fa-f*]*")


@dataclass(frozen=True, slots=True)
class EpcPattern:
    text: str
    kind: str  # prefix | uri | hex
    regex: re.Pattern[str] | None = None

    def matches(self, hex_epc: str, uri: str | None) -> bool:
        if self.kind == "hex":
            assert self.regex is not None
            return self.regex.fullmatch(hex_epc) is not None
        if uri is None:
            return False
        if self.kind == "prefix":
            parts = uri.split(":", 4)
            return len(parts) == 5 and parts[4].startswith(self.text + ".")
        assert self.regex is not None
        return self.regex.fullmatch(uri) is not None


def _wildcard(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def parse_pattern(text: str) -> EpcPattern:
    """One pattern; ``ValueError`` with the reason when it is none of the three forms."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"EPC pattern must be a non-empty string (got {text!r})")
    text = text.strip()
    if _PREFIX.fullmatch(text):
        return EpcPattern(text, "prefix")
    if text.lower().startswith("urn:epc:"):
        uri = re.sub(r"^urn:epc:idpat:", "urn:epc:id:", text, flags=re.IGNORECASE)
        return EpcPattern(text, "uri", _wildcard(uri))
    if _HEX.fullmatch(text):
        return EpcPattern(text, "hex", _wildcard(text.upper()))
    raise ValueError(
        f"EPC pattern {text!r} is neither a GS1 company prefix (6-12 digits), an EPC URI "
        "(urn:epc:id:... or urn:epc:idpat:..., * as wildcard) nor tag hex (16+ hex digits, or "
        "4+ with *)"
    )


def parse_patterns(texts: tuple[str, ...] | list[str]) -> tuple[EpcPattern, ...]:
    return tuple(parse_pattern(t) for t in texts)


@dataclass(frozen=True, slots=True)
class EpcFilter:
    """Tags pass when they match an include pattern (or there are none) and no exclude one."""

    include: tuple[EpcPattern, ...] = ()
    exclude: tuple[EpcPattern, ...] = ()

    def accepts(self, hex_epc: str, uri: str | None) -> bool:
        if self.include and not any(p.matches(hex_epc, uri) for p in self.include):
            return False
        return not any(p.matches(hex_epc, uri) for p in self.exclude)
