"""Shared fixtures: real brokers, unique topic sites, temporary databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.localbroker import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto of this test's own, on a free loopback port."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def site() -> str:
    """A unique site name, so each test's topics are its own."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a migrated PostgreSQL database that tests clone (tests/pgkit.py)."""
    from tests import pgkit

    with pgkit.migrated() as url:
        yield pgkit.name_of(url)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, migrated, dropped after."""
    from tests import pgkit

    with pgkit.database(template=pg_template) as url:
        yield url
