"""Settings from the environment, with overrides on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.server.errors import ConfigError, ServerError
from floorsync.server.settings import Settings, broker_address


def test_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOORSYNC_DATABASE", "/tmp/x.db")
    monkeypatch.setenv("FLOORSYNC_BROKER", "none")
    monkeypatch.setenv("FLOORSYNC_HTTP_PORT", "9001")
    monkeypatch.setenv("FLOORSYNC_ONLINE_AFTER_S", "5.5")
    s = Settings.from_env(client_id="c2")
    assert s == Settings(
        database=Path("/tmp/x.db"), broker=None, http_port=9001, online_after_s=5.5, client_id="c2"
    )


def test_bad_values_raise_our_error() -> None:
    with pytest.raises(ConfigError):
        Settings(mqtt_protocol="4")
    with pytest.raises(ServerError):
        Settings(broker="http://x")
    assert broker_address("mqtt://broker.local") == ("broker.local", 1883)
    assert broker_address("mqtt://127.0.0.1:1999") == ("127.0.0.1", 1999)
