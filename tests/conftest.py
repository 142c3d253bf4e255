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
