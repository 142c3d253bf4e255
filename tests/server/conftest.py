"""Fixtures of the central service's tests: a ledger on real SQLite, and the real app on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from tests.server.helpers import WRITE_TOKEN, api_settings, bearer

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The store's engine: every test taking ``store`` runs on both (the contract suite)."""
    return str(request.param)


@pytest.fixture
def database(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where the store lives: a SQLite file, or a PostgreSQL database of this test's own."""
    if engine == "sqlite":
        return tmp_path / "ledger.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(database: str | Path) -> Iterator[Store]:
    with Store(database) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """For what only SQLite has (its pragmas, its query plans' text)."""
    with Store(tmp_path / "ledger.db") as s:
        yield s


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    """The app on ``store`` (no MQTT), every request with the write token."""
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as c:
        yield c
