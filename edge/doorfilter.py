"""Which tags a dock door follows: those that decode, may move, and pass its patterns.

Tags must match ``include`` (or ``company_prefixes``) and no ``exclude`` pattern
(``edge.epcmatch``); location tags (SGLN: the door's own tag) never move. Filtered tags are
``excluded``; EPCs that do not decode are ``unknown``: counted and reported, never fatal. The
verdict on each EPC is remembered (up to ``MAX_VERDICTS`` of them, then all are forgotten), so
a tag read many times is decoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

from floorsync.devices.codes import interpret_epc
from floorsync.edge import wire
from floorsync.edge.epcmatch import EpcFilter, parse_patterns

OK, EXCLUDED, UNKNOWN = 0, 1, 2
_MOVABLE = ("item", "container", "asset", "returnable")
MAX_VERDICTS = 100_000  # distinct EPCs remembered (their decoded identity); then forgotten
MAX_UNKNOWN_LISTED = 20  # unknown EPCs listed per cycle report (all are counted)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int  # OK, EXCLUDED, UNKNOWN
    item: wire.Item | None = None
    error: str | None = None


class DoorFilter:
    """One door's filters and its verdicts so far (``verdicts``: EPC -> verdict; the door
    looks there first, on its hot path, and calls ``classify`` for an EPC not in it)."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        self._filter = EpcFilter(parse_patterns(include), parse_patterns(exclude))
        self.verdicts: dict[str, Verdict] = {}

    def classify(self, epc: str, new_unknown: list[str]) -> Verdict:
        """The verdict on ``epc`` (remembered). An unknown EPC is listed in ``new_unknown``
        (its cycle's, at most ``MAX_UNKNOWN_LISTED``)."""
        identity = interpret_epc(epc)
        if identity.kind == "unknown" or not identity.epc:
            verdict = Verdict(UNKNOWN, error=identity.error or "unknown EPC")
            if len(new_unknown) < MAX_UNKNOWN_LISTED:
                new_unknown.append(epc)
        elif identity.kind not in _MOVABLE or not self._filter.accepts(epc, identity.epc):
            verdict = Verdict(EXCLUDED)
        else:
            verdict = Verdict(OK, wire.Item(gtin=identity.gtin, serial=identity.serial,
                                            epc=identity.epc, sscc=identity.sscc))
        if len(self.verdicts) >= MAX_VERDICTS:
            self.verdicts.clear()
        self.verdicts[epc] = verdict
        return verdict

    def unknown_reason(self, epc: str) -> str | None:
        """Why an EPC was not understood (for the agent's exception record), if it was not."""
        verdict = self.verdicts.get(epc)
        return verdict.error if verdict is not None and verdict.status == UNKNOWN else None
