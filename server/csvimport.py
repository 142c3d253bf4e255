"""All-or-nothing CSV imports of master data: the file read into rows, the errors by line."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from floorsync.server.errors import MasterDataError

MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 1000
MULTI_SEPARATORS = re.compile(r"[|;]")

_ALIASES = {"gtin": "gtins", "barcode": "barcodes"}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


class ImportRejected(MasterDataError):
    """Some rows of an import are bad: nothing was written. ``errors`` lists them by line."""

    def __init__(self, what: str, errors: Iterable[RowError]) -> None:
        ordered = sorted(errors, key=lambda e: e.line)
        rows = "row" if len(ordered) == 1 else "rows"
        shown = "" if len(ordered) <= MAX_REPORTED_ERRORS else (
            f" (the first {MAX_REPORTED_ERRORS} are listed)")
        super().__init__(
            "import rejected",
            f"{len(ordered)} {rows} of the {what} file with errors{shown}; nothing was imported",
        )
        self.errors = tuple(ordered[:MAX_REPORTED_ERRORS])
        self.total = len(ordered)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    created: int
    updated: int


def split_multi(cell: str) -> tuple[str, ...]:
    """A CSV cell holding several values separated by ``|`` or ``;``."""
    return tuple(v.strip() for v in MULTI_SEPARATORS.split(cell) if v.strip())


@dataclass(frozen=True, slots=True)
class CsvRows:
    columns: frozenset[str]
    rows: tuple[tuple[int, dict[str, str]], ...]
    errors: tuple[RowError, ...]


def read_csv(text: str, what: str, known: Sequence[str], required: Sequence[str]) -> CsvRows:
    """Rows of a CSV file with a header, each with its first physical line number.

    The delimiter is ``,`` unless the header holds more ``;`` or tabs. A bad header rejects
    the file at once; rows of the wrong width are returned as errors.
    """
    text = text.removeprefix("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ImportRejected(what, [RowError(1, "a header row naming the columns is required;"
                                                    f" columns: {', '.join(known)}")])
        names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        problems = [f"unknown column {h!r}" for h in names if h not in known]
        problems += [f"column {h!r} twice" for h in sorted({h for h in names if
                                                            names.count(h) > 1})]
        problems += [f"required column {c!r} missing" for c in required if c not in names]
        if problems:
            raise ImportRejected(what, [RowError(1, "; ".join(problems) +
                                                 f" (columns: {', '.join(known)})")])
        rows: list[tuple[int, dict[str, str]]] = []
        errors: list[RowError] = []
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(rows) + len(errors) >= MAX_IMPORT_ROWS:
                raise ImportRejected(what, [RowError(start, f"more than {MAX_IMPORT_ROWS} rows;"
                                                            " split the file")])
            if len(cells) != len(names):
                errors.append(RowError(start, f"{len(cells)} cells, the header has {len(names)}"))
                continue
            rows.append((start, {n: c.strip() for n, c in zip(names, cells, strict=True)}))
    except csv.Error as exc:
        raise ImportRejected(what, [RowError(reader.line_num, f"unreadable CSV: {exc}")]) from None
    return CsvRows(frozenset(names), tuple(rows), tuple(errors))
