"""The identity a code carries, and how a GS1 element string's keys decide its kind.

Below both code paths: `devices.codes` (biip, epcpy, site labels) and `devices.gs1fast` (the fast
GS1 parser) build the same `Identity` through `identity_from_ais`, so both decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("item", "location", "container", "asset", "returnable", "command", "unknown")


@dataclass(frozen=True)
class Identity:
    """The identity a code carries. `kind` is one of KINDS; `error` says why it is unknown.

    `gtin` is GTIN-14, `expiry` ISO YYYY-MM-DD, `epc` the pure identity URI, `asset` the GIAI or
    GRAI key (for kinds asset and returnable).
    """

    kind: str
    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    expiry: str | None = None
    quantity: int | None = None
    sscc: str | None = None
    gln: str | None = None
    epc: str | None = None
    location: str | None = None
    command: str | None = None
    asset: str | None = None
    error: str | None = None


def unknown(error: str, **fields: Any) -> Identity:
    """An unknown code, with the reason: bad codes are normal on a floor, never an exception."""
    return Identity(kind="unknown", error=error, **fields)


def identity_from_ais(values: dict[str, str], fields: dict[str, Any]) -> Identity:
    """The Identity of a GS1 element string: `values` by AI, `fields` the Identity fields found.

    Shared by the biip path and devices.gs1fast, so both decide the kind the same way.
    """
    if "00" in values:
        return Identity("container", **fields)
    if "01" in values or "02" in values:
        return Identity("item", **fields)
    if "414" in values:
        gln = fields.get("gln") or values["414"]
        ext = values.get("254")
        return Identity("location", gln=gln, location=f"{gln}.{ext}" if ext else gln)
    if "8004" in values:
        return Identity("asset", asset=values["8004"])
    if "8003" in values:
        return Identity("returnable", asset=values["8003"])
    return unknown("GS1 element string without a key (00, 01, 02, 414, 8003, 8004)")
