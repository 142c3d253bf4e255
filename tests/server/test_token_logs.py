"""Tokens never reach a log: the real ``floorsync server`` (uvicorn, root logging at DEBUG)
and the app in-process with every logger captured at DEBUG, driven through valid and invalid
tokens and every kind of refusal (401, 403, 400, 404, 413 declared and chunked, 422, 429,
a malformed HTTP request); then every log line is searched for each token and its hash."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.localbroker import free_port
from floorsync.server import tokens
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.settings import Settings
from tests.server.helpers import event, payload

READER, WRITER, BOSS, HAMMER = (tokens.new_token() for _ in range(4))
LEGACY = "legacy-plain-token-0123456789"  # FLOORSYNC_TOKENS' older plain form
STRANGER = tokens.new_token()  # valid-looking, unknown to the server
SECRETS = (READER, WRITER, BOSS, HAMMER, LEGACY, STRANGER)


def forbidden_texts() -> list[str]:
    """Each token, and the forms of its hash the server holds or could print."""
    out: list[str] = []
    for token in SECRETS:
        out += [token, tokens.digest(token).hex(), tokens.digest(token).hex().upper()]
    return out


def tokens_file(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text("".join(f"{tokens.line_of(name, token, scope)}\n" for name, token, scope in (
        ("reader", READER, "read"), ("writer", WRITER, "write"), ("boss", BOSS, "admin"),
        ("hammer", HAMMER, "read"))))
    return path


def exercise(request: Any) -> None:
    """The same requests against either server: ``request(method, path, token, body=None,
    headers=None)`` returns the status."""
    batch = payload("wh1", "hh-01", event("receive", qty=2, dst="DOCK-1"))
    expect = [
        (200, ("GET", "/stock", READER)),
        (200, ("GET", "/stock", LEGACY)),
        (401, ("GET", "/stock", STRANGER)),
        (401, ("GET", "/stock", READER[:-1])),
        (401, ("GET", "/stock", None)),
        (403, ("POST", "/items", READER, b'{"sku": "X"}')),
        (201, ("POST", "/items", WRITER, b'{"sku": "X"}')),
        (409, ("POST", "/items", WRITER, b'{"sku": "X"}')),
        (422, ("POST", "/items", WRITER, b'{"sku": 7, "gtins": "no"}')),
        (404, ("GET", "/items/NOPE", WRITER)),
        (400, ("POST", "/events", WRITER, b'{"v": 1, "token": "' + WRITER.encode() + b'"}')),
        (200, ("POST", "/events", WRITER, batch)),
        (413, ("POST", "/items", WRITER, b"{" + b" " * 5000 + b"}")),
        (200, ("GET", "/audit", BOSS)),
        (403, ("GET", "/audit", WRITER)),
    ]
    for status, args in expect:
        assert request(*args) == status, args
    statuses = [request("GET", "/stock", HAMMER) for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[-1] == 429
    devices = [request("POST", "/events", WRITER,
                       payload("wh1", "hh-09", event("receive", qty=1, dst="D")))
               for _ in range(4)]
    assert devices[:3] == [200] * 3 and devices[-1] == 429


LIMITS = {"max_body_bytes": 2048, "rate_token_per_s": 0.01, "rate_token_burst": 10,
          "rate_device_per_s": 0.01, "rate_device_burst": 3}


def test_no_token_in_the_logs_of_the_app_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(database=tmp_path / "logs.db", broker=None,
                        tokens_file=tokens_file(tmp_path),
                        tokens=tokens.parse_env(f"{LEGACY}=read"), **LIMITS)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        def request(method: str, path: str, token: str | None, body: bytes | None = None
                    ) -> int:
            headers = {"content-type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return client.request(method, API_PREFIX + path, content=body,
                                  headers=headers).status_code

        exercise(request)
    lines = [f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.exc_text or ''}"
             for r in caplog.records]
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG was on
    for line in lines:
        for text in forbidden_texts():
            assert text not in line, line


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "FLOORSYNC_TOKENS_FILE": str(tokens_file(tmp_path)),
           "FLOORSYNC_TOKENS": f"{LEGACY}=read", "FLOORSYNC_AUTH": "on",
           **{f"FLOORSYNC_{k.upper()}": str(v) for k, v in LIMITS.items()}}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "--log-level", "debug", "server",
             "--db", str(tmp_path / "server.db"), "--broker", "none", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _health(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not answer health in 60 s"
            time.sleep(0.1)
        yield port, log
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", f"{API_PREFIX}/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def test_no_token_in_the_logs_of_a_real_server(server: tuple[int, Path]) -> None:
    port, log = server

    def request(method: str, path: str, token: str | None, body: bytes | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, API_PREFIX + path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status

    exercise(request)

    # a chunked body over the limit, on the real server: cut off with the 413
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"{API_PREFIX}/items", body=iter([b'{"sku": "', b"A" * 4000, b'"}']),
                 headers={"Authorization": f"Bearer {WRITER}",
                          "Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    refused = json.loads(response.read())
    conn.close()
    assert response.status == 413 and refused["limit"] == 2048

    # a malformed request carrying a token: uvicorn's own error path
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"GET /api/v1/stock HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BOSS}"
                    "\r\nContent-Length: nope\r\n\r\n".encode())
        assert raw.recv(1000).startswith(b"HTTP/1.1 400")
    assert _health(port)

    text = log.read_text(errors="replace")
    assert "GET /api/v1/stock" in text and "401" in text  # the access log was written
    assert " DEBUG " in text and "Invalid HTTP request" in text  # debug on; uvicorn's error
    for line in text.splitlines():
        for secret in forbidden_texts():
            assert secret not in line, line
