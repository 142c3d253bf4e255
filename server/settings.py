"""Settings of the central service: one frozen value, read once from the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from floorsync.server.errors import ConfigError

ENV_PREFIX = "FLOORSYNC_"
PROTOCOLS = ("5", "3.1.1")
_NONE_WORDS = ("", "none", "off", "disabled")
_ON_WORDS = ("on", "true", "yes", "1")
_OFF_WORDS = ("off", "false", "no", "0")
# Each scope with the scopes it implies: admin implies write implies read.
SCOPES: Mapping[str, frozenset[str]] = MappingProxyType({
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
})
_TOKEN_FORBIDDEN = set(" \t\r\n=;,#")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the data lives, which broker to consume from and where HTTP listens.

    ``broker=None`` runs HTTP only (edges POST their batches). The embedded amqtt broker speaks
    MQTT 3.1.1 only, so the protocol is a setting rather than a constant.

    ``tokens`` maps each bearer token to its scopes, implied ones included (admin implies write
    implies read); ``tokens_file`` adds one ``token scopes`` per line. With ``auth`` on (the
    default) the HTTP app refuses to start without a token; ``auth=False`` opens every route.
    Tokens never appear in the repr.
    """

    database: Path = Path("floorsync.db")
    broker: str | None = "mqtt://127.0.0.1:1883"
    mqtt_protocol: str = "5"
    client_id: str = "floorsync-central"
    shared_group: str | None = None
    mqtt_username: str | None = None  # the central service's broker identity (deploy/mosquitto)
    mqtt_password: str | None = field(default=None, repr=False)
    # mqtts:// brokers (server.brokerlink): the CA of the broker's certificate (None: the
    # system's CAs; the host name is always verified), and for mutual TLS our certificate+key
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    online_after_s: float = 60
    auth: bool = True
    tokens: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)
    tokens_file: Path | None = None

    def __post_init__(self) -> None:
        tokens = {t: expand_scopes(s, where=f"token {_hint(t)}") for t, s in self.tokens.items()}
        for token in tokens:
            check_token(token)
        if self.tokens_file is not None:
            for token, scopes in read_tokens_file(self.tokens_file).items():
                if token in tokens:
                    raise ConfigError(f"token {_hint(token)} is defined twice")
                tokens[token] = scopes
        object.__setattr__(self, "tokens", MappingProxyType(tokens))
        if self.mqtt_protocol not in PROTOCOLS:
            raise ConfigError(
                f"mqtt_protocol must be one of {PROTOCOLS}, not {self.mqtt_protocol!r}"
            )
        if self.broker is not None:
            broker_address(self.broker)
        check_mqtt_tls(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """``FLOORSYNC_<FIELD>`` variables, then ``overrides`` on top (the CLI's flags)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, raw)
        values.update(overrides)
        for name in ("database", "tokens_file"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
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
    if name == "auth":
        word = raw.strip().lower()
        if word not in _ON_WORDS + _OFF_WORDS:
            raise ConfigError(f"{ENV_PREFIX}AUTH must be on or off, not {raw!r}")
        return word in _ON_WORDS
    if name == "tokens":
        return parse_tokens(raw)
    if name == "tokens_file" and not raw.strip():
        return None
    if name in _MQTT_TLS_FILES:
        return Path(raw.strip()) if raw.strip() else None
    return raw


def _hint(token: str) -> str:
    """Enough of a token to find it in a config, never the whole secret."""
    return repr(token[:4] + "...") if len(token) > 8 else "(short)"


def check_token(token: str) -> None:
    if len(token) < 8:
        raise ConfigError(f"token {_hint(token)} is shorter than 8 characters")
    if not token.isprintable() or _TOKEN_FORBIDDEN & set(token):
        raise ConfigError(f"token {_hint(token)} has whitespace or one of = ; , #")


def expand_scopes(scopes: str | frozenset[str] | set[str], *, where: str) -> frozenset[str]:
    """``"read,write"`` (or a set) as the scopes granted, implied ones included."""
    names = [s.strip().lower() for s in scopes.split(",")] if isinstance(scopes, str) else scopes
    granted: set[str] = set()
    for name in names:
        if name not in SCOPES:
            raise ConfigError(f"{where}: unknown scope {name!r} (read, write or admin)")
        granted |= SCOPES[name]
    if not granted:
        raise ConfigError(f"{where}: no scopes")
    return frozenset(granted)


def parse_tokens(raw: str) -> dict[str, frozenset[str]]:
    """``FLOORSYNC_TOKENS``: ``token=scope,scope;token=scope`` (whitespace around ignored)."""
    tokens: dict[str, frozenset[str]] = {}
    for n, entry in enumerate(raw.split(";"), 1):
        if not entry.strip():
            continue
        token, sep, scopes = entry.partition("=")
        token = token.strip()
        where = f"{ENV_PREFIX}TOKENS entry {n}"
        if not sep:
            raise ConfigError(f"{where}: expected token=scopes")
        check_token(token)
        if token in tokens:
            raise ConfigError(f"token {_hint(token)} is defined twice")
        tokens[token] = expand_scopes(scopes, where=where)
    return tokens


def read_tokens_file(path: Path) -> dict[str, frozenset[str]]:
    """One ``token scope[,scope]`` per line; blank lines and ``#`` comments ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc}") from None
    tokens: dict[str, frozenset[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        where = f"{path}:{n}"
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected 'token scopes'")
        token, scopes = parts
        check_token(token)
        if token in tokens:
            raise ConfigError(f"{where}: token {_hint(token)} is defined twice")
        tokens[token] = expand_scopes(scopes.replace(" ", ""), where=where)
    return tokens


_MQTT_TLS_FILES = ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")


def broker_uses_tls(url: str) -> bool:
    """``mqtts://`` (or ``ssl://``): TLS with certificate and host name verification."""
    return urlsplit(url if "://" in url else f"mqtt://{url}").scheme in ("mqtts", "ssl")


def check_mqtt_tls(settings: Settings) -> None:
    """TLS files only with an mqtts:// broker (never ignored silently); cert and key together."""
    given = [n for n in _MQTT_TLS_FILES if getattr(settings, n) is not None]
    if (settings.mqtt_cert_file is None) != (settings.mqtt_key_file is None):
        raise ConfigError("mqtt_cert_file and mqtt_key_file go together (mutual TLS)")
    if given and (settings.broker is None or not broker_uses_tls(settings.broker)):
        names = ", ".join(ENV_PREFIX + n.upper() for n in given)
        raise ConfigError(f"{names} set but the broker is not mqtts://host:8883")
    for name in given:
        path = Path(getattr(settings, name))
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: no such file {path}")
        object.__setattr__(settings, name, path)


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (port defaults to 1883) or ``mqtts://host:port`` (8883; TLS) as
    (host, port)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise ConfigError(f"broker URL must be mqtt://host:port or mqtts://host:port, not {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme in ("mqtts", "ssl") else 1883)
    except ValueError:
        raise ConfigError(f"broker URL has a bad port: {url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"broker URL has no host: {url!r}")
    return parts.hostname, port
