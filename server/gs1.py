"""GS1 keys as master data and the ledger's checks read them: GTINs, GLNs and the labels
that carry a GLN (SGLN EPC URI, element string with AI 414/254, Digital Link).

Below both master data and the ledger: it imports neither, so the ledger's checks resolve a GLN
label without importing master data (which imports the store).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from floorsync.server.errors import Invalid

_GLN_EXTENSION = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}\Z")  # GS1 AI 254, set 82
_SGLN_URN = re.compile(r"urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.(\S{1,60})\Z", re.IGNORECASE)
_BARE_GLN = re.compile(r"(\d{13})\Z")
_AI_BRACKETS = re.compile(r"\(414\)(\d{13})(?:\(254\)(.+))?\Z")
_AI_PLAIN = re.compile(r"(?:\][CdQe]\d)?414(\d{13})(?:\x1d?254(.+))?\Z")
_DIGITAL_LINK = re.compile(r"https?://[^?#]*?/414/(\d{13})(?:/254/([^/?#]+))?/?(?:[?#].*)?\Z")


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of ``body`` (weights 3, 1, 3... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalize_gtin(text: str) -> str:
    """A GTIN-8, -12, -13 or -14 as a GTIN-14, its check digit verified."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) in (8, 12, 13, 14)):
        raise Invalid("invalid GTIN", f"{text[:40]!r} is not a GTIN (8, 12, 13 or 14 digits)")
    gtin = digits.zfill(14)
    expected = gs1_check_digit(gtin[:-1])
    if int(gtin[-1]) != expected:
        raise Invalid("invalid GTIN", f"{digits}: bad check digit (expected {expected})")
    if int(gtin) == 0:
        raise Invalid("invalid GTIN", f"{digits}: all zeros")
    return gtin


def normalize_gln(text: str) -> str:
    gln = text.strip()
    if not (gln.isascii() and gln.isdigit() and len(gln) == 13):
        raise Invalid("invalid GLN", f"{text[:40]!r} is not a GLN (13 digits)")
    expected = gs1_check_digit(gln[:-1])
    if int(gln[-1]) != expected:
        raise Invalid("invalid GLN", f"{gln}: bad check digit (expected {expected})")
    return gln


def normalize_gln_extension(text: str) -> str:
    extension = text.strip()
    if extension and not _GLN_EXTENSION.match(extension):
        raise Invalid("invalid GLN extension",
                      f"{text[:40]!r}: 1-20 characters of GS1 set 82 (AI 254)")
    return extension


def parse_gln_label(text: str) -> tuple[str, str] | None:
    """(GLN, extension) from an SGLN EPC URI, a GS1 element string with AI 414 (and 254), a
    GS1 Digital Link URI or a bare GLN; None when ``text`` is none of those or its GLN is
    invalid."""
    text = text.strip()
    gln: str | None = None
    extension = ""
    if match := _SGLN_URN.match(text):
        prefix, reference, ext = match.groups()
        if len(prefix) + len(reference) != 12:
            return None
        gln = prefix + reference
        gln += str(gs1_check_digit(gln))
        extension = "" if ext == "0" else unquote(ext)
    else:
        for pattern in (_BARE_GLN, _AI_BRACKETS, _AI_PLAIN, _DIGITAL_LINK):
            if match := pattern.match(text):
                found = (*match.groups(), None)
                gln, extension = found[0], unquote(found[1] or "")
                break
    if gln is None:
        return None
    try:
        return normalize_gln(gln), normalize_gln_extension(extension)
    except Invalid:
        return None


def parse_sgln(text: str) -> tuple[str, str]:
    """Like ``parse_gln_label``, but an error says what is wrong."""
    found = parse_gln_label(text)
    if found is None:
        raise Invalid(
            "invalid SGLN",
            f"{text[:80]!r}: expected urn:epc:id:sgln:..., (414)GLN(254)EXT or a GS1 Digital Link",
        )
    return found


def resolve_gln(gln: str | None, extension: str, sgln: str | None) -> tuple[str | None, str]:
    """GLN and extension given either way (``sgln`` wins; both given must agree)."""
    if not sgln or not sgln.strip():
        return (gln or None), extension
    found = parse_sgln(sgln)
    if gln and gln.strip() and (normalize_gln(gln), normalize_gln_extension(extension)) != found:
        raise Invalid("GLN mismatch", f"sgln {sgln[:80]!r} and gln/gln_extension disagree")
    return found
