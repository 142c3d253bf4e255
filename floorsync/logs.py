"""Process logging for every ``floorsync`` command: text lines (the default) or JSON lines.

``--log-format json`` (or ``FLOORSYNC_LOG_FORMAT=json``) writes one JSON object per line with
``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, the process's own context
(``site`` and ``device`` of an edge agent) and the structured fields a call site passes with
``extra=`` (``event_id``, ``event_ids``, ``reason``, ``state``, ``door``, ...), so a log
shipper can select an event's or a device's lines without parsing prose.

Never secrets, in either format: URL passwords (``mqtt://user:PASSWORD@``,
``postgresql://user:PASSWORD@``) are masked in every line, and so is each secret value the
command registers (its broker, reader and database passwords, plain API tokens). Messages are
written not to hold them; this is the second line of defence for the text no one reviewed
(a library's exception message, a traceback).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
ENV = "FLOORSYNC_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# user:password@ in a URL (any scheme); the user name stays, it helps and is no secret
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):[^\s@/'\"]+@")
# the attributes every LogRecord has: anything else on a record came with extra=
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
    "color_message"}  # uvicorn's message again, with terminal colour codes
_SHORTEST_SECRET = 4  # shorter values would mask ordinary words and numbers


class LogError(ValueError):
    """A log format or level that does not exist."""


class Redactor:
    """Masks URL passwords and each registered secret value in a text."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        found = {v for v in values if v and len(v) >= _SHORTEST_SECRET}
        # longest first: a secret that contains another is masked whole
        self._secrets = tuple(sorted(found | set(self._secrets), key=len, reverse=True))

    def __call__(self, text: str) -> str:
        if "@" in text:
            text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class TextFormatter(logging.Formatter):
    """The classic line, masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; string values masked before encoding (so a secret with a
    character JSON escapes is still found)."""

    def __init__(self, redact: Redactor, context: Mapping[str, object]) -> None:
        super().__init__()
        self._redact = redact
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(self._context)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) == 5:
            client, method, path, _version, status = record.args
            out.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._masked(out), ensure_ascii=False, default=str)

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, Mapping):
            return {str(k): self._masked(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._masked(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self._redact(str(value))


class LogSetup:
    """What ``configure`` installed: a command adds its context and its secrets once it has
    read its configuration (before it starts the threads that log)."""

    def __init__(self, fmt: str, redact: Redactor, context: dict[str, object]) -> None:
        self.format = fmt
        self.redact = redact
        self._context = context

    def context(self, **fields: object) -> None:
        """Fields every JSON line of this process carries (an edge: its site and device)."""
        self._context.update({k: v for k, v in fields.items() if v is not None})

    def secrets(self, *values: str | None) -> None:
        self.redact.add(*values)


def choose_format(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """``--log-format``, else ``FLOORSYNC_LOG_FORMAT``, else text."""
    fmt = (given or env.get(ENV) or "text").strip().lower()
    if fmt not in FORMATS:
        source = "--log-format" if given else ENV
        raise LogError(f"{source}: {fmt!r} is not a log format (text or json)")
    return fmt


def configure(level: str, fmt: str, stream: TextIO | None = None) -> LogSetup:
    """The root logger: one handler on ``stream`` (stderr) in ``fmt``, replacing any other.
    uvicorn's loggers propagate here when it runs with ``log_config=None`` (server/run.py)."""
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise LogError(f"--log-level: {level!r} is not a level (DEBUG, INFO, WARNING, ERROR)")
    redact, context = Redactor(), dict[str, object]()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact, context) if fmt == "json"
                         else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    return LogSetup(fmt, redact, context)


def url_password(url: object) -> str | None:
    """The password in a URL's user part, to register as a secret."""
    from urllib.parse import unquote, urlsplit

    if not isinstance(url, str) or "@" not in url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def plain_tokens(env_value: str | None) -> Iterable[str]:
    """The plain tokens in ``FLOORSYNC_TOKENS``' older form (``token=scopes;…``); the named
    form holds only hashes."""
    for part in (env_value or "").split(";"):
        token, eq, rest = part.strip().partition("=")
        if eq and token and not rest.startswith("sha256:"):
            yield token
