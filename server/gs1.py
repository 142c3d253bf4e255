"""GS1 keys as master data and the ledger's checks read them: GTINs, GLNs and the labels
that carry a GLN (SGLN EPC URI, element string with AI 414/254, Digital Link).
EPCIS identifiers too: EPC URIs (``urn:epc:id:sgtin:…``, ``urn:epc:class:lgtin:…``,
``urn:epc:idpat:sgtin:…``, ``urn:epc:id:sscc:…``, ``urn:epc:id:sgln:…``) and GS1 Digital Link
URIs read into one ``GS1Key``, written back as canonical Digital Link (which, unlike the EPC URI,
needs no company prefix length).

Below both master data and the ledger: it imports neither, so the ledger's checks resolve a GLN
label without importing master data (which imports the store).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from floorsync.server.errors import Invalid

_GLN_EXTENSION = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}\Z")  # GS1 AI 254, set 82
_SGLN_URN = re.compile(r"urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.(\S{1,60})\Z", re.IGNORECASE)
_BARE_GLN = re.compile(r"(\d{13})\Z")
_AI_BRACKETS = re.compile(r"\(414\)(\d{13})(?:\(254\)(.+))?\Z")
_AI_PLAIN = re.compile(r"(?:\][CdQe]\d)?414(\d{13})(?:\x1d?254(.+))?\Z")
_DIGITAL_LINK = re.compile(r"https?://[^?#]*?/414/(\d{13})(?:/254/([^/?#]+))?/?(?:[?#].*)?\Z")


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of ``body`` (weights 3, 1, 3... from the right)."""
    total = 3 * sum(map(int, body[-1::-2])) + sum(map(int, body[-2::-2]))
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


# --- EPCIS identifiers ---------------------------------------------------------------------

DIGITAL_LINK_ROOT = "https://id.gs1.org"
_EPC_GTIN = re.compile(
    r"urn:epc:(id:sgtin|class:lgtin|idpat:sgtin):(\d{6,12})\.(\d{1,7})\.(\S{1,80})\Z", re.IGNORECASE
)
_EPC_SSCC = re.compile(r"urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})\Z", re.IGNORECASE)
_DL_ROOT = r"https?://[^/?#]+(?:/[^?#]*?)?"
_DL_TAIL = r"/?(?:[?#].*)?\Z"
_DL_GTIN = re.compile(
    _DL_ROOT + r"/01/(\d{8}|\d{12,14})(?:/10/([^/?#]{1,80}))?(?:/21/([^/?#]{1,80}))?" + _DL_TAIL
)
_DL_SSCC = re.compile(_DL_ROOT + r"/00/(\d{18})" + _DL_TAIL)


@dataclass(frozen=True, slots=True)
class GS1Key:
    """A GS1 key as EPCIS names things: ``sgtin`` (one serialised item), ``lgtin`` (a class:
    GTIN and lot), ``gtin`` (a class: all of a GTIN), ``sscc`` (a logistic unit), ``sgln``."""

    kind: str
    gtin: str | None = None
    serial: str | None = None
    lot: str | None = None
    sscc: str | None = None
    gln: str | None = None
    extension: str = ""

    def digital_link(self) -> str:
        if self.kind == "sscc":
            return sscc_uri(self.sscc or "")
        if self.kind == "sgln":
            return gln_uri(self.gln or "", self.extension)
        return gtin_uri(self.gtin or "", serial=self.serial, lot=self.lot)


def _dl_escape(text: str) -> str:
    if text.isascii() and text.isalnum():  # most serials and lots: nothing to escape
        return text
    return quote(text, safe="-._~")


def gtin_uri(gtin: str, *, serial: str | None = None, lot: str | None = None) -> str:
    """Canonical Digital Link of a GTIN-14: serialised (AI 21) wins over a lot (AI 10), as an
    instance is named by GTIN and serial alone."""
    if serial:
        return f"{DIGITAL_LINK_ROOT}/01/{gtin}/21/{_dl_escape(serial)}"
    if lot:
        return f"{DIGITAL_LINK_ROOT}/01/{gtin}/10/{_dl_escape(lot)}"
    return f"{DIGITAL_LINK_ROOT}/01/{gtin}"


def sscc_uri(sscc: str) -> str:
    return f"{DIGITAL_LINK_ROOT}/00/{sscc}"


def gln_uri(gln: str, extension: str = "") -> str:
    if extension:
        return f"{DIGITAL_LINK_ROOT}/414/{gln}/254/{_dl_escape(extension)}"
    return f"{DIGITAL_LINK_ROOT}/414/{gln}"


def normalize_sscc(text: str) -> str:
    """An SSCC: 18 digits, its check digit verified."""
    sscc = text.strip()
    if not (sscc.isascii() and sscc.isdigit() and len(sscc) == 18):
        raise Invalid("invalid SSCC", f"{text[:40]!r} is not an SSCC (18 digits)")
    expected = gs1_check_digit(sscc[:-1])
    if int(sscc[-1]) != expected:
        raise Invalid("invalid SSCC", f"{sscc}: bad check digit (expected {expected})")
    return sscc


def parse_gs1_uri(text: str) -> GS1Key | None:
    """The GS1 key in an EPC URI or a GS1 Digital Link URI (any host, path prefix or query);
    None for anything else, or when a check digit or a company prefix split is wrong."""
    text = text.strip()
    try:
        if match := _EPC_GTIN.match(text):
            scheme, prefix, reference, rest = match.groups()
            if len(prefix) + len(reference) != 13:
                return None
            body = reference[0] + prefix + reference[1:]
            gtin = body + str(gs1_check_digit(body))
            scheme = scheme.lower()
            if scheme == "idpat:sgtin":
                return GS1Key("gtin", gtin=gtin) if rest == "*" else None
            if scheme == "class:lgtin":
                return GS1Key("lgtin", gtin=gtin, lot=unquote(rest))
            return GS1Key("sgtin", gtin=gtin, serial=unquote(rest))
        if match := _EPC_SSCC.match(text):
            prefix, reference = match.groups()
            if len(prefix) + len(reference) != 17:
                return None
            body = reference[0] + prefix + reference[1:]
            return GS1Key("sscc", sscc=body + str(gs1_check_digit(body)))
        if match := _DL_GTIN.match(text):
            gtin_text, lot, serial = match.groups()
            gtin = normalize_gtin(gtin_text)
            if serial is not None:
                return GS1Key("sgtin", gtin=gtin, serial=unquote(serial))
            if lot is not None:
                return GS1Key("lgtin", gtin=gtin, lot=unquote(lot))
            return GS1Key("gtin", gtin=gtin)
        if match := _DL_SSCC.match(text):
            return GS1Key("sscc", sscc=normalize_sscc(match.group(1)))
    except Invalid:
        return None
    if text.lower().startswith("urn:epc:id:sgln:") or "/414/" in text:
        found = parse_gln_label(text)
        if found is not None:
            return GS1Key("sgln", gln=found[0], extension=found[1])
    return None


def canonical_uri(text: str) -> str:
    """``text`` as canonical Digital Link when it names a GS1 key we read, else unchanged: one
    form to compare identifiers by, whichever form a document used."""
    key = parse_gs1_uri(text)
    return key.digital_link() if key is not None else text
