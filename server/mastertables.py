"""What items and locations share: the store they are kept in, the write transaction after
which the ledger's checks see them, how a key or a text field is checked, and query helpers."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from floorsync.server.errors import Invalid
from floorsync.server.ledger import Store

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def _key(value: str, what: str) -> str:
    value = value.strip()
    if not _KEY.match(value):
        raise Invalid(f"invalid {what}",
                      f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ - (got {value[:80]!r})")
    return value


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise Invalid(f"invalid {what}", f"{what} is longer than {limit} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise Invalid(f"invalid {what}", f"{what} holds control characters")
    return value


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


class MasterTables:
    """Master data in the store's database, written through its one writer."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction; after it the ledger's checks see the new master data."""
        with self._store._transaction() as cur:
            yield cur
            self._store.reload_checks()  # inside the writer lock: no apply sees it half
