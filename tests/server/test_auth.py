"""Bearer tokens with scopes: 401 without a known token, 403 without the scope, health open."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from floorsync.cli import main
from floorsync.server import auth, tokens
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.errors import ConfigError
from floorsync.server.settings import Settings, parse_tokens, read_tokens_file
from tests.server.helpers import (
    ADMIN_TOKEN,
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    api_client,
    api_settings,
    bearer,
)

HEALTH = f"{API_PREFIX}/health"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
ADMIN_ONLY = {("POST", f"{API_PREFIX}/ledger/rebuild"), ("GET", f"{API_PREFIX}/audit")}


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every API route in ``app.routes``."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # routers included lazily
    routes: list[Any] = list(contexts(app.routes)) if contexts else list(app.routes)
    out = []
    for route in routes:
        original = getattr(route, "original_route", route)
        if not isinstance(original, APIRoute) or not str(route.path).startswith(API_PREFIX):
            continue
        path = re.sub(r"\{[^}]+\}", "x", str(route.path))
        out.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return out


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(api_settings(tmp_path / "auth.db"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with api_client(app, token=None) as c:
        yield c


def call(client: TestClient, method: str, path: str, token: str | None) -> Any:
    return client.request(method, path, headers=bearer(token) if token else {})


def test_the_routes_are_all_found(app: FastAPI) -> None:
    ops = set(operations(app))
    assert {("GET", HEALTH), ("GET", f"{API_PREFIX}/stock"), ("POST", f"{API_PREFIX}/events"),
            ("PUT", f"{API_PREFIX}/items/x"), ("POST", f"{API_PREFIX}/locations/import")} <= ops


def test_every_route_but_health_needs_a_token(app: FastAPI, client: TestClient) -> None:
    for method, path in operations(app):
        if path == HEALTH:
            continue
        response = call(client, method, path, None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["status"] == 401


def test_a_wrong_token_is_401(app: FastAPI, client: TestClient) -> None:
    # hundreds of failures from one address: unlimited here (the limit's own tests:
    # tests/server/test_login_limits.py)
    app.state.auth_failures = auth.AuthFailures(per_s=0)
    for method, path in operations(app):
        if path == HEALTH:
            continue
        for headers in (bearer("not-a-known-token"), bearer(ADMIN_TOKEN + "x"),
                        bearer(ADMIN_TOKEN[:-1]), {"Authorization": f"Basic {ADMIN_TOKEN}"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_read_token_reads_but_may_not_write(app: FastAPI, client: TestClient) -> None:
    for method, path in operations(app):
        response = call(client, method, path, READ_TOKEN)
        if method in WRITES or (method, path) in ADMIN_ONLY:
            assert response.status_code == 403, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        else:
            assert response.status_code not in (401, 403), (method, path, response.text)


@pytest.mark.parametrize("token", [WRITE_TOKEN, ADMIN_TOKEN])
def test_write_and_admin_tokens_work_everywhere_but_admin_routes(
    app: FastAPI, client: TestClient, token: str
) -> None:
    for method, path in operations(app):
        response = call(client, method, path, token)
        if (method, path) in ADMIN_ONLY and token != ADMIN_TOKEN:
            assert response.status_code == 403, (method, path, response.text)
        else:
            assert response.status_code not in (401, 403), (method, path, response.text)


def test_admin_may_write(client: TestClient) -> None:
    response = client.post(f"{API_PREFIX}/items", json={"sku": "A-1"}, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 201, response.text
    response = client.get(f"{API_PREFIX}/items/A-1", headers=bearer(READ_TOKEN))
    assert response.json()["sku"] == "A-1"


def test_health_is_open_and_says_little(client: TestClient) -> None:
    response = client.get(HEALTH)
    assert response.status_code == 200
    assert set(response.json()) == {"status", "database", "mqtt"}


def test_openapi_documents_bearer_and_denials(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": auth.bearer.model.description
    }
    health = spec["paths"][HEALTH]["get"]
    assert "security" not in health and "401" not in health["responses"]
    scopes = set()
    for path, operations_ in spec["paths"].items():
        for method, op in operations_.items():
            if path == HEALTH:
                continue
            assert op["security"] in (
                [{"bearer": ["read"]}], [{"bearer": ["write"]}], [{"bearer": ["admin"]}]), path
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            assert "application/problem+json" in op["responses"]["401"]["content"]
            scopes.add((method, op["security"][0]["bearer"][0]))
    assert scopes == {("get", "read"), ("post", "write"), ("put", "write"), ("post", "admin"),
                      ("get", "admin")}


def test_constant_time_comparison_against_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    entries = api_settings(Path("unused.db")).token_entries
    assert auth.scopes_of(READ_TOKEN, entries) == {"read"}
    assert len(compared) == len(TOKENS)  # no early exit on a match
    assert all(len(a) == len(b) == 32 for a, b in compared)  # digests, never the token
    compared.clear()
    assert auth.scopes_of("nope-nope-nope", entries) is None
    assert len(compared) == len(TOKENS)
    assert auth.scopes_of("tëst-nön-ascii", entries) is None  # bytes, so no TypeError


def hashed(token: str) -> str:
    return tokens.hash_text(token)


def test_scopes_imply_each_other_and_plain_tokens_are_hashed() -> None:
    s = Settings(tokens={"aaaaaaaa": "read", "bbbbbbbb": "write", "cccccccc": "admin"})
    assert [(e.name, e.scopes) for e in s.token_entries] == [
        (tokens.fingerprint("aaaaaaaa"), {"read"}),
        (tokens.fingerprint("bbbbbbbb"), {"read", "write"}),
        (tokens.fingerprint("cccccccc"), {"read", "write", "admin"})]
    assert [e.digest for e in s.token_entries] == [tokens.digest(t) for t in
                                                  ("aaaaaaaa", "bbbbbbbb", "cccccccc")]
    assert "aaaaaaaa" not in repr(s) and "aaaaaaaa" not in repr(s.token_entries)
    assert tokens.digest("aaaaaaaa").hex() not in repr(s.token_entries)


def test_tokens_env_format() -> None:
    h1, h2 = hashed("tok1-abcdef"), hashed("tok2-abcdef")
    entries = parse_tokens(f" dash={h1}:read,write ; tok3-abcdef=admin; ci={h2}:admin;")
    assert [(e.name, e.scopes) for e in entries] == [
        ("dash", {"read", "write"}), (tokens.fingerprint("tok3-abcdef"), {"read", "write",
                                                                           "admin"}),
        ("ci", {"read", "write", "admin"})]
    assert entries[0].digest == tokens.digest("tok1-abcdef")
    for bad in ("tok1-abcdef", "tok1-abcdef=", "tok1-abcdef=root", "short=read",
                "tok1-abcdef=read;tok1-abcdef=write", "tok 1-abcdef=read",
                f"dash={h1}", f"dash={h1}:sudo", "dash=sha256:abcd:read", f"bad name={h1}:read",
                f"a={h1}:read;b={h1}:write"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# name hash scopes\n\nreader {hashed('file-token-1')} read\n"
                    f"  writer   {hashed('file-token-2')}   read, write \n"
                    f"boss {hashed('file-token-3').upper().replace('SHA256', 'sha256')} admin\n")
    assert [(e.name, e.scopes, e.digest) for e in read_tokens_file(path)] == [
        ("reader", {"read"}, tokens.digest("file-token-1")),
        ("writer", {"read", "write"}, tokens.digest("file-token-2")),
        ("boss", {"read", "write", "admin"}, tokens.digest("file-token-3")),
    ]
    for bad in ("lonely-token\n", "file-token-1 read\n",  # plain tokens are refused here
                f"reader {hashed('x')} sudo\n", f"reader {hashed('x')}\n",
                "reader sha256:1234 read\n", f"r {hashed('x')} read\nw {hashed('x')} write\n",
                f"bad/name {hashed('x')} read\n"):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=str(path) + "|twice"):
            read_tokens_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_tokens_file(tmp_path / "missing")


def test_tokens_from_env_and_file_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"ops {hashed('file-token-1')} admin\n")
    monkeypatch.setenv("FLOORSYNC_TOKENS", f"dash={hashed('env-token-1')}:read")
    monkeypatch.setenv("FLOORSYNC_TOKENS_FILE", str(path))
    s = Settings.from_env()
    assert {(e.name, e.scopes) for e in s.token_entries} == {
        ("dash", frozenset({"read"})), ("ops", frozenset({"read", "write", "admin"}))}
    assert s.auth and s.tokens_file == path
    path.write_text(f"ops {hashed('env-token-1')} admin\n")
    with pytest.raises(ConfigError, match="twice"):
        Settings.from_env()


def test_token_new_command_prints_the_token_once_and_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "new", "dashboard", "--scopes", "write"]) == 0
    out = capsys.readouterr().out.splitlines()
    token, line = out[1].strip(), out[3].strip()
    assert len(token) >= 43 and token not in line
    assert line == f"dashboard {hashed(token)} write"
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    (entry,) = read_tokens_file(path)
    assert (entry.name, entry.scopes) == ("dashboard", {"read", "write"})
    assert main(["token", "new", "two words"]) == 2
    assert main(["token", "new", "x", "--scopes", "root"]) == 2


def test_no_tokens_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="FLOORSYNC_AUTH=off"):
        create_app(Settings(database=tmp_path / "x.db", broker=None))
    for name in ("FLOORSYNC_TOKENS", "FLOORSYNC_TOKENS_FILE", "FLOORSYNC_AUTH"):
        monkeypatch.delenv(name, raising=False)
    # the command says why and exits before listening
    assert main(["server", "--db", str(tmp_path / "x.db"), "--broker", "none"]) == 2


def test_auth_off_explicitly_opens_every_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLOORSYNC_AUTH", "off")
    monkeypatch.delenv("FLOORSYNC_TOKENS", raising=False)
    monkeypatch.delenv("FLOORSYNC_TOKENS_FILE", raising=False)
    settings = Settings.from_env(database=tmp_path / "open.db", broker=None)
    assert settings.auth is False
    app = create_app(settings)
    assert "open to anyone" in caplog.text
    with TestClient(app) as c:
        for method, path in operations(app):
            assert call(c, method, path, None).status_code not in (401, 403), (method, path)
    monkeypatch.setenv("FLOORSYNC_AUTH", "maybe")
    with pytest.raises(ConfigError):
        Settings.from_env()
