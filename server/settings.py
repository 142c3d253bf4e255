"""Settings of the central service: one frozen value, read once from the environment."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from floorsync.server import pg
from floorsync.server import tokens as t
from floorsync.server.epcisurn import check_prefixes
from floorsync.server.errors import ConfigError
from floorsync.server.tokens import TokenEntry

ENV_PREFIX = "FLOORSYNC_"
PROTOCOLS = ("5", "3.1.1")
_NONE_WORDS = ("", "none", "off", "disabled")
_ON_WORDS = ("on", "true", "yes", "1")
_OFF_WORDS = ("off", "false", "no", "0")
MIB = 1024 * 1024
DOCUMENT_CAP = 32 * MIB  # the routes' own caps (orders, receipts, CSV imports) hold beyond it
_LIMITS = ("max_body_bytes", "max_document_bytes", "rate_token_burst", "rate_device_burst")
_RATES = ("rate_token_per_s", "rate_device_per_s")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the data lives, which broker to consume from and where HTTP listens.

    ``broker=None`` runs HTTP only (edges POST their batches). The embedded amqtt broker speaks
    MQTT 3.1.1 only, so the protocol is a setting rather than a constant.

    ``tokens``: hashed entries (``server.tokens.TokenEntry``), or an older mapping of plain
    token to scopes that is hashed here (each then named by its fingerprint); ``tokens_file``
    adds one ``NAME sha256:HEX SCOPES`` per line. Afterwards ``tokens`` holds only
    ``TokenEntry`` values (name, digest, scopes with the implied ones): no plain token is kept.
    With ``auth`` on (the default) the HTTP app refuses to start without a token;
    ``auth=False`` opens every route.

    Limits (``server/limits.py``): request bodies up to ``max_body_bytes`` (1 MiB), except
    ``POST /events`` (the wire's 8 MiB) and the documents (orders, receipts, CSV imports:
    ``max_document_bytes``, at most 32 MiB); per token and per device (an HTTP batch's
    ``device``) token buckets refilled at ``rate_*_per_s`` holding ``rate_*_burst`` requests
    (``rate_*_per_s=0``: no limit). ``cors_origins``: none by default, so no CORS headers.
    """

    database: Path | str = Path("floorsync.db")  # a SQLite file, or a postgresql:// URL
    broker: str | None = "mqtt://127.0.0.1:1883"
    mqtt_protocol: str = "5"
    client_id: str = "floorsync-central"
    shared_group: str | None = None
    mqtt_username: str | None = None  # the central service's broker identity (deploy/mosquitto)
    mqtt_password: str | None = field(default=None, repr=False)
    # or read from this file (trailing line ending dropped; a systemd credential, say)
    mqtt_password_file: Path | None = None
    # mqtts:// brokers (server.brokerlink): the CA of the broker's certificate (None: the
    # system's CAs; the host name is always verified), and for mutual TLS our certificate+key
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # HTTPS for the API (server.run, uvicorn's ssl_* options): our certificate and key; with
    # http_ca_file, clients must present a certificate issued by that CA (mutual TLS)
    http_cert_file: Path | None = None
    http_key_file: Path | None = None
    http_ca_file: Path | None = None
    online_after_s: float = 60
    auth: bool = True
    tokens: Mapping[str, Any] | Iterable[TokenEntry] = field(default=(), repr=False)
    tokens_file: Path | None = None
    max_body_bytes: int = 1 * MIB
    max_document_bytes: int = DOCUMENT_CAP
    rate_token_per_s: float = 200.0
    rate_token_burst: int = 2000
    rate_device_per_s: float = 20.0
    rate_device_burst: int = 200
    cors_origins: tuple[str, ...] = ()
    # GS1 Company Prefixes (6-12 digits) whose keys the EPCIS export writes as EPC URIs (SGLN,
    # SGTIN, SSCC URNs: server/epcisurn.py); others stay Digital Links. Comma-separated in env.
    gs1_company_prefixes: tuple[str, ...] = ()
    # a replica's (--replica) Prometheus /metrics on http_host:this port, 0: none; the HTTP
    # service serves /metrics on its own port (server/api/metrics.py)
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.tokens, Mapping):
            entries = [t.plain_entry(token, scopes, "token")
                       for token, scopes in self.tokens.items()]
        else:
            entries = list(self.tokens)
        if self.tokens_file is not None:
            entries += t.read_file(self.tokens_file)
        object.__setattr__(self, "tokens", t.check_unique(entries))
        for name in _LIMITS:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in _RATES:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be 0 (no limit) or more")
        if self.max_document_bytes > DOCUMENT_CAP:
            raise ConfigError(f"max_document_bytes is at most {DOCUMENT_CAP} (the routes' caps)")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        try:
            object.__setattr__(self, "gs1_company_prefixes",
                               check_prefixes(self.gs1_company_prefixes))
        except ValueError as exc:
            raise ConfigError(f"gs1_company_prefixes: {exc}") from None
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0 (none) or a TCP port, not"
                              f" {self.metrics_port}")
        check_database(self.database)
        if self.mqtt_protocol not in PROTOCOLS:
            raise ConfigError(
                f"mqtt_protocol must be one of {PROTOCOLS}, not {self.mqtt_protocol!r}"
            )
        if self.broker is not None:
            broker_address(self.broker)
        check_mqtt_password_file(self)
        check_mqtt_tls(self)
        check_http_tls(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """``FLOORSYNC_<FIELD>`` variables, then ``overrides`` on top (the CLI's flags)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, raw)
        values.update(overrides)
        if values.get("database") is not None:
            values["database"] = database_of(str(values["database"]))
        if values.get("tokens_file") is not None:
            values["tokens_file"] = Path(values["tokens_file"])
        return cls(**values)

    @property
    def token_entries(self) -> tuple[TokenEntry, ...]:
        """``tokens`` after ``__post_init__``: the hashed entries."""
        return cast(tuple[TokenEntry, ...], self.tokens)


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")  # a Path keeps one slash of "//"


def database_of(text: str) -> Path | str:
    """``--db`` or FLOORSYNC_DATABASE: a URL stays text (a Path would fold its ``//``)."""
    return text if _URL.match(text) else Path(text)


def check_database(database: Path | str) -> None:
    """The store is a SQLite file or a PostgreSQL URL (``postgresql://``). Another URL is
    refused by its scheme alone, never echoed whole (it may hold a password): taken as a file
    name, ``mysql://…`` would make a directory named ``mysql:`` and a server that answered as if
    all were well."""
    found = _URL.match(str(database))
    if found and not (isinstance(database, str) and pg.is_url(database)):
        raise ConfigError(
            f"database: {found.group(1)}:// is not a store this server serves; give the path"
            " of a SQLite file or a postgresql:// URL (FLOORSYNC_DATABASE, --db)")


def _convert(name: str, raw: str) -> Any:
    try:
        if name in ("http_port", "metrics_port", *_LIMITS):
            return int(raw)
        if name in ("online_after_s", *_RATES):
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
        return t.parse_env(raw)
    if name in ("cors_origins", "gs1_company_prefixes"):
        return tuple(o.strip() for o in raw.split(",") if o.strip())
    if name == "tokens_file" and not raw.strip():
        return None
    if name in _HTTP_TLS_FILES:
        return Path(raw.strip()) if raw.strip() else None
    if name in (*_MQTT_TLS_FILES, "mqtt_password_file"):
        return Path(raw.strip()) if raw.strip() else None
    return raw


def parse_tokens(raw: str) -> tuple[TokenEntry, ...]:
    """``FLOORSYNC_TOKENS`` (see ``server.tokens.parse_env``)."""
    return t.check_unique(t.parse_env(raw))


def read_tokens_file(path: Path) -> tuple[TokenEntry, ...]:
    """A tokens file (see ``server.tokens.read_file``)."""
    return t.check_unique(t.read_file(path))


_MQTT_TLS_FILES = ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")


_HTTP_TLS_FILES = ("http_cert_file", "http_key_file", "http_ca_file")


def check_http_tls(settings: Settings) -> None:
    """HTTPS files: certificate and key together, a client CA only with them, all readable."""
    if (settings.http_cert_file is None) != (settings.http_key_file is None):
        raise ConfigError("http_cert_file and http_key_file go together (HTTPS)")
    if settings.http_ca_file is not None and settings.http_cert_file is None:
        raise ConfigError("http_ca_file (client certificates) needs http_cert_file and "
                          "http_key_file (HTTPS)")
    for name in _HTTP_TLS_FILES:
        if getattr(settings, name) is not None:
            path = Path(getattr(settings, name))
            if not path.is_file():
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}: no such file {path}")
            object.__setattr__(settings, name, path)


def check_mqtt_password_file(settings: Settings) -> None:
    """``mqtt_password_file``: the broker password read from a file (a systemd credential, as
    the replicas' FLOORSYNC_NATS_PASSWORD_FILE), without its line ending; not with
    ``mqtt_password`` too, and never empty."""
    if settings.mqtt_password_file is None:
        return
    path = Path(settings.mqtt_password_file)
    try:
        password = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{ENV_PREFIX}MQTT_PASSWORD_FILE: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if settings.mqtt_password not in (None, password):  # the same: dataclasses.replace()
        raise ConfigError(f"{ENV_PREFIX}MQTT_PASSWORD and {ENV_PREFIX}MQTT_PASSWORD_FILE: give one")
    if not password:
        raise ConfigError(f"{ENV_PREFIX}MQTT_PASSWORD_FILE: {path} is empty")
    if settings.mqtt_username is None:
        raise ConfigError(f"{ENV_PREFIX}MQTT_PASSWORD_FILE needs {ENV_PREFIX}MQTT_USERNAME")
    object.__setattr__(settings, "mqtt_password_file", path)
    object.__setattr__(settings, "mqtt_password", password)


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
    try:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    except ValueError as exc:  # "mqtt://[": Invalid IPv6 URL (found by tests/fuzz)
        raise ConfigError(f"broker URL cannot be read ({exc}): {url!r}") from None
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise ConfigError(f"broker URL must be mqtt://host:port or mqtts://host:port, not {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme in ("mqtts", "ssl") else 1883)
    except ValueError:
        raise ConfigError(f"broker URL has a bad port: {url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"broker URL has no host: {url!r}")
    return parts.hostname, port
