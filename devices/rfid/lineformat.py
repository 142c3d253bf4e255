"""Line formats of serial (and other text) RFID readers: one tag report per line.

Desktop and module readers (USB-COM/RS-232) print a line per tag in a vendor-configurable layout,
so the layout is configuration, in one of two spellings:

- a template such as ``"{epc},{antenna},{rssi}"``: fields in braces, everything else literal;
  ``{_}`` skips a field; surrounding whitespace of each field is ignored;
- a regular expression with named groups, for anything irregular
  (``r"EPC:(?P<epc>[0-9A-F]+)\\s+ANT:(?P<antenna>\\d+)"``).

Known fields: ``epc`` (required), ``antenna``, ``rssi`` (dBm, or scaled by ``rssi_scale`` for
readers printing centi-dBm), ``count`` (seen count) and ``time`` (ISO 8601 or Unix epoch, see
`parse_timestamp`). A line that does not match, or whose fields do not parse, raises `ValueError`
with the reason; the reader turns that into an `on_error` report, never an exception.
"""

from __future__ import annotations

import re
from datetime import datetime

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import (
    host_time,
    normalize_epc,
    parse_antenna,
    parse_float,
    parse_seen,
    parse_timestamp,
)

FIELDS = ("epc", "antenna", "rssi", "count", "time")
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_]*)\}")


class LineFormat:
    """A compiled line layout; `parse(line, reader)` turns one line into a TagRead."""

    def __init__(
        self,
        pattern: str | re.Pattern[str],
        *,
        default_antenna: int = 0,
        rssi_scale: float = 1.0,
        encoding: str = "ascii",
    ) -> None:
        self.regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        names = set(self.regex.groupindex)
        if "epc" not in names:
            raise ValueError("a line format needs an 'epc' field")
        unknown = names - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown line format fields: {sorted(unknown)}; known: {FIELDS}")
        self.default_antenna = default_antenna
        self.rssi_scale = rssi_scale
        self.encoding = encoding

    @classmethod
    def template(cls, template: str, **kwargs: object) -> LineFormat:
        """A format from ``"{epc},{antenna},{rssi}"``-style text (see the module docstring)."""
        parts: list[str] = []
        seen: set[str] = set()
        last = 0
        for match in _TEMPLATE_FIELD.finditer(template):
            parts.append(re.escape(template[last : match.start()]))
            name = match.group(1)
            if name == "_":
                parts.append(r"\s*.*?\s*")
            else:
                if name not in FIELDS:
                    raise ValueError(f"unknown template field {{{name}}}; known: {FIELDS}")
                if name in seen:
                    raise ValueError(f"template field {{{name}}} appears twice")
                seen.add(name)
                parts.append(rf"\s*(?P<{name}>.*?)\s*")
            last = match.end()
        parts.append(re.escape(template[last:]))
        return cls("^" + "".join(parts) + "$", **kwargs)  # type: ignore[arg-type]

    def parse(self, line: bytes, reader: str, *, at: datetime | None = None) -> TagRead:
        """One line (without its terminator) as a TagRead; `ValueError` with a reason if bad.

        Without a `time` field the read carries `at` (default: host time now).
        """
        try:
            text = line.decode(self.encoding).strip()
        except UnicodeDecodeError as exc:
            raise ValueError(f"undecodable as {self.encoding}: {exc.reason}") from exc
        match = self.regex.fullmatch(text)
        if match is None:
            raise ValueError("line does not match the configured format")
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        epc = normalize_epc(groups["epc"])
        antenna = (
            parse_antenna(groups["antenna"])
            if groups.get("antenna")
            else self.default_antenna
        )
        rssi = (
            parse_float(groups["rssi"], "rssi") * self.rssi_scale if groups.get("rssi") else None
        )
        seen = parse_seen(groups["count"], "count") if groups.get("count") else 1
        if groups.get("time"):
            raw_time = groups["time"]
            when = parse_timestamp(
                parse_float(raw_time, "time") if _looks_numeric(raw_time) else raw_time
            )
        else:
            when = at if at is not None else host_time()
        return TagRead(reader=reader, epc=epc, antenna=antenna, rssi=rssi, at=when, seen=seen)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"\s*\d+(\.\d+)?\s*", text))
