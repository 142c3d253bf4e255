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


@pytest.mark.parametrize("url", [
    "mysql://floorsync:s3cret@db.example:3306/floorsync",
    "sqlite:///var/lib/floorsync/floorsync.db",
])
def test_a_database_url_is_refused_by_its_scheme_without_the_password(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Taken as a file name, postgresql://… made a directory 'postgresql:' and a server that
    answered as if all were well; a scheme we do not serve is refused, and a PostgreSQL URL
    folded into a path ('postgresql:/db', its '//' lost) is not taken for a file either."""
    monkeypatch.chdir(tmp_path)
    folded = "postgresql://floorsync:s3cret@db.example/floorsync"
    for make in (lambda: Settings(database=Path(url), auth=False),
                 lambda: Settings.from_env(database=url, auth=False),
                 lambda: Settings(database=Path(folded), auth=False)):
        with pytest.raises(ConfigError) as caught:
            make()
        assert "://" in str(caught.value) and "SQLite file" in str(caught.value)
        assert "s3cret" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["postgresql://floorsync:s3cret@db.example:5432/floorsync",
                                 "postgres://localhost/floorsync"])
def test_a_postgresql_url_is_a_store(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOORSYNC_DATABASE", url)
    assert Settings.from_env(auth=False).database == url
    assert Settings(database=url, auth=False).database == url


def test_a_file_name_with_a_colon_is_still_a_file(tmp_path: Path) -> None:
    Settings(database=tmp_path / "site:wh1.db", auth=False)
