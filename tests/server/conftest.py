"""Fixtures of the central service's tests: a ledger on real SQLite, and the real app on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from floorsync.server.app import create_app
from floorsync.server.ledger import Store
from tests.server.helpers import WRITE_TOKEN, api_settings, bearer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "ledger.db") as s:
        yield s


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    """The app on ``store`` (no MQTT), every request with the write token."""
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(WRITE_TOKEN)) as c:
        yield c
