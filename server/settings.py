"""Settings of the central service: one frozen value, read once from the environment."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server.errors import ConfigError

ENV_PREFIX = "FLOORSYNC_"
PROTOCOLS = ("5", "3.1.1")
_NONE_WORDS = ("", "none", "off", "disabled")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the data lives, which broker to consume from and where HTTP listens.

    ``broker=None`` runs HTTP only (edges POST their batches). The embedded amqtt broker speaks
    MQTT 3.1.1 only, so the protocol is a setting rather than a constant.
    """

    database: Path = Path("floorsync.db")
    broker: str | None = "mqtt://127.0.0.1:1883"
    mqtt_protocol: str = "5"
    client_id: str = "floorsync-central"
    shared_group: str | None = None
    mqtt_username: str | None = None  # the central service's broker identity (deploy/mosquitto)
    mqtt_password: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    online_after_s: float = 60

    def __post_init__(self) -> None:
        if self.mqtt_protocol not in PROTOCOLS:
            raise ConfigError(
                f"mqtt_protocol must be one of {PROTOCOLS}, not {self.mqtt_protocol!r}"
            )
        if self.broker is not None:
            broker_address(self.broker)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """``FLOORSYNC_<FIELD>`` variables, then ``overrides`` on top (the CLI's flags)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, raw)
        values.update(overrides)
        if "database" in values:
            values["database"] = Path(values["database"])
        return cls(**values)


def _convert(name: str, raw: str) -> Any:
    try:
        if name == "http_port":
            return int(raw)
        if name == "online_after_s":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not a number: {raw!r}") from None
    if name in ("broker", "shared_group") and raw.strip().lower() in _NONE_WORDS:
        return None
    return raw


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (port defaults to 1883) as (host, port)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp"):
        raise ConfigError(f"broker URL must be mqtt://host:port, not {url!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"broker URL has a bad port: {url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"broker URL has no host: {url!r}")
    return parts.hostname, port
