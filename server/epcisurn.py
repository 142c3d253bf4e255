"""GS1 keys as EPC URIs (pure identity URNs, GS1 Tag Data Standard 2.0) for the EPCIS export.

An EPC URI splits a key at its GS1 Company Prefix (``urn:epc:id:sgln:9506000.13431.D1``), and
the length of a company prefix cannot be read from the key itself: GS1 allocates prefixes of 6
to 12 digits. So the URNs are written for the keys whose company prefix is configured
(``Settings.gs1_company_prefixes``, ``FLOORSYNC_GS1_COMPANY_PREFIXES``: ours, our suppliers');
a key under no configured prefix keeps its GS1 Digital Link, which EPCIS 2.0 accepts as well and
which needs no split. Never a guessed split: a wrong one names another key.

Written (TDS 2.0 §6.3): ``urn:epc:id:sgtin:{prefix}.{indicator}{item ref}.{serial}``,
``urn:epc:class:lgtin:{prefix}.{indicator}{item ref}.{lot}`` (a class: GTIN and lot),
``urn:epc:idpat:sgtin:{prefix}.{indicator}{item ref}.*`` (a class: all of a GTIN),
``urn:epc:id:sscc:{prefix}.{extension digit}{serial ref}`` and
``urn:epc:id:sgln:{prefix}.{location ref}.{extension, 0 when none}``. A serial, lot or GLN
extension is 1-20 characters of GS1's set 82, with ``" % & / < > ?`` %-escaped; a value that is
not (or a GLN extension that is the digit 0, which the SGLN reserves for "none") keeps the
Digital Link. ``server.gs1.parse_gs1_uri`` reads every URN written here back to the same key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from floorsync.server.gs1 import GS1Key, parse_gs1_uri

PREFIX = re.compile(r"\d{6,12}\Z")
_SET_82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}\Z")
_ESCAPES = str.maketrans({'"': "%22", "%": "%25", "&": "%26", "/": "%2F", "<": "%3C",
                          ">": "%3E", "?": "%3F"})
CACHE_LIMIT = 50_000


def check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Company prefixes as given (6-12 digits each), in order, without repeats; ValueError
    naming the first bad one."""
    found: dict[str, None] = {}
    for prefix in prefixes:
        text = prefix.strip()
        if not (text.isascii() and PREFIX.match(text)):
            raise ValueError(f"{prefix[:40]!r} is not a GS1 Company Prefix (6 to 12 digits)")
        found[text] = None
    return tuple(found)


def _escaped(value: str) -> str | None:
    return value.translate(_ESCAPES) if _SET_82.match(value) else None


class EPCWriter:
    """Identifiers as EPC URIs where the company prefix is known (``uri``), else unchanged."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = frozenset(check_prefixes(prefixes))
        # longest first: of two configured prefixes where one starts the other (which GS1 does
        # not allocate, but a list may hold), the longer is the more specific
        self._lengths = sorted({len(p) for p in self.prefixes}, reverse=True)
        self._cache: dict[str, str] = {}

    def _prefix(self, digits: str) -> str | None:
        for length in self._lengths:
            if digits[:length] in self.prefixes:
                return digits[:length]
        return None

    def urn(self, key: GS1Key) -> str | None:
        """The key's EPC URI; None when its company prefix is not configured or a value of it
        cannot be written in one."""
        if key.kind in ("sgtin", "lgtin", "gtin") and key.gtin is not None:
            prefix = self._prefix(key.gtin[1:13])
            if prefix is None:
                return None
            item = key.gtin[0] + key.gtin[1 + len(prefix):13]
            if key.kind == "gtin":
                return f"urn:epc:idpat:sgtin:{prefix}.{item}.*"
            value = _escaped((key.serial if key.kind == "sgtin" else key.lot) or "")
            if value is None:
                return None
            scheme = "id:sgtin" if key.kind == "sgtin" else "class:lgtin"
            return f"urn:epc:{scheme}:{prefix}.{item}.{value}"
        if key.kind == "sscc" and key.sscc is not None:
            prefix = self._prefix(key.sscc[1:17])
            if prefix is None:
                return None
            return f"urn:epc:id:sscc:{prefix}.{key.sscc[0]}{key.sscc[1 + len(prefix):17]}"
        if key.kind == "sgln" and key.gln is not None:
            prefix = self._prefix(key.gln[:12])
            if prefix is None:
                return None
            if not key.extension:
                extension: str | None = "0"
            elif key.extension == "0":
                return None  # the SGLN's "no extension": the Digital Link can say it
            else:
                extension = _escaped(key.extension)
            if extension is None:
                return None
            return f"urn:epc:id:sgln:{prefix}.{key.gln[len(prefix):12]}.{extension}"
        return None

    def uri(self, text: str) -> str:
        """``text`` (an identifier as the export writes it: a Digital Link, or another URI)
        as its EPC URI when there is one, else unchanged."""
        found = self._cache.get(text)
        if found is None:
            key = parse_gs1_uri(text)
            found = (self.urn(key) if key is not None else None) or text
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = found
        return found
