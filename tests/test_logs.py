"""floorsync/logs.py: the JSON and text formats, the command's context, and masked secrets."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from floorsync import logs

SECRET = 'pa"ss\\wörd-42'  # characters JSON escapes: masked before encoding, still found


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_time_level_logger_message_context_and_extras(
        restore_root: None) -> None:
    out = io.StringIO()
    setup = logs.configure("INFO", "json", out)
    setup.context(site="wh1", device="hh-07", ignored=None)
    log = logging.getLogger("floorsync.edge.sync")
    log.info("connected to %s", "broker:1883", extra={"state": "connected"})
    log.warning("rejected", extra={"event_ids": ["0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c"],
                                   "events": 1, "reasons": {"bad qty"}})
    log.debug("not shown: below the level")
    first, second = (json.loads(line) for line in lines(out))
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert {k: first[k] for k in ("level", "logger", "message", "site", "device", "state")} == {
        "level": "INFO", "logger": "floorsync.edge.sync", "message": "connected to broker:1883",
        "site": "wh1", "device": "hh-07", "state": "connected"}
    assert "ignored" not in first
    assert second["event_ids"] == ["0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c"]
    assert second["events"] == 1 and second["reasons"] == ["bad qty"]


def test_an_exception_is_one_json_line(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", "json", out)
    try:
        raise RuntimeError("the store is gone\nsecond line")
    except RuntimeError:
        logging.getLogger("x").exception("write failed")
    (line,) = lines(out)
    record = json.loads(line)
    assert record["message"] == "write failed"
    assert "RuntimeError: the store is gone" in record["exception"]


def test_uvicorn_access_lines_get_their_fields() -> None:
    """A record as uvicorn makes it (formatted directly: uvicorn started in this process by
    another test keeps its own handlers on these loggers)."""
    made = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/api/v1/stock", "1.1", 200), None)
    made.color_message = "with colours"
    record = json.loads(logs.JsonFormatter(logs.Redactor(), {}).format(made))
    assert "color_message" not in record
    assert record["message"] == '127.0.0.1:5555 - "GET /api/v1/stock HTTP/1.1" 200'
    assert (record["method"], record["path"], record["status"]) == ("GET", "/api/v1/stock", 200)


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_secrets_are_masked_in_messages_extras_and_tracebacks(
        restore_root: None, fmt: str) -> None:
    out = io.StringIO()
    setup = logs.configure("DEBUG", fmt, out)
    setup.secrets(SECRET, None, "", "abc")  # None, empty and too short ones are ignored
    log = logging.getLogger("floorsync.server")
    log.info("db postgresql://floorsync:hunter2-db@10.0.0.5/floorsync, broker "
             "mqtts://central:b%40d-pw@broker:8883 and mqtt://broker:1883 (no password)")
    log.info("bin abc-1")
    log.info("login with %s", SECRET, extra={"detail": {"password": SECRET}, "list": [SECRET]})
    try:
        raise ValueError(f"could not log in as central:{SECRET}")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    for secret in (SECRET, json.dumps(SECRET)[1:-1], "hunter2-db", "b%40d-pw"):
        assert secret not in text, secret
    assert "postgresql://floorsync:***@10.0.0.5/floorsync" in text
    assert "mqtts://central:***@broker:8883" in text
    assert "mqtt://broker:1883 (no password)" in text
    assert "bin abc-1" in text  # a value too short to be a secret masks no ordinary word
    if fmt == "json":
        records = [json.loads(line) for line in lines(out)]
        assert records[2]["message"] == "login with ***"
        assert records[2]["detail"] == {"password": "***"} and records[2]["list"] == ["***"]


def test_the_format_comes_from_the_flag_else_the_environment_else_text() -> None:
    assert logs.choose_format(None, {}) == "text"
    assert logs.choose_format(None, {logs.ENV: "JSON"}) == "json"
    assert logs.choose_format("text", {logs.ENV: "json"}) == "text"
    with pytest.raises(logs.LogError, match=logs.ENV):
        logs.choose_format(None, {logs.ENV: "yaml"})
    with pytest.raises(logs.LogError, match="--log-level"):
        logs.configure("LOUD", "text", io.StringIO())


def test_url_passwords_and_plain_tokens_are_found() -> None:
    assert logs.url_password("postgresql://u:p%40ss@h/db") == "p@ss"
    assert logs.url_password("mqtt://h:1883") is None
    assert logs.url_password("floorsync.db") is None
    assert logs.url_password("mqtt://u:p@[::1") is None  # unreadable: nothing, no error
    assert list(logs.plain_tokens("tok-1=read;tok-2=read,write; ops=sha256:ab12:admin")) == [
        "tok-1", "tok-2"]
    assert list(logs.plain_tokens(None)) == []


def test_a_bad_log_format_in_the_environment_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, "-m", "floorsync", "devices"], capture_output=True,
                          text=True, env={"FLOORSYNC_LOG_FORMAT": "xml", "PATH": "/usr/bin"},
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "floorsync: FLOORSYNC_LOG_FORMAT: 'xml' is not a log format (text or json)")
