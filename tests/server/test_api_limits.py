"""API limits: bodies capped (413 naming the limit), rate limits per token and per device (429
with Retry-After, nothing applied, the retry after the wait succeeds), token rotation, CORS
closed by default. The real app on a real SQLite file; time is an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server import tokens
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.limits import RateLimiter
from floorsync.server.settings import Settings
from tests.server.helpers import (
    ADMIN_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    api_client,
    api_settings,
    bearer,
    event,
    payload,
)

SITE = "wh1"


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = api_settings(tmp_path / "limits.db", max_body_bytes=1024,
                            max_document_bytes=4096)
    with api_client(create_app(settings)) as c:
        yield c


# --- bodies ---------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_413_before_anything_is_read(
    client: TestClient
) -> None:
    body = b'{"sku": "' + b"A" * 2000 + b'"}'
    refused = problem(client.post(f"{API_PREFIX}/items", content=body,
                                  headers={"content-type": "application/json"}), 413)
    assert refused["limit"] == 1024 and "1024 bytes" in refused["detail"]
    assert f"POST {API_PREFIX}/items" in refused["detail"]
    # before authentication too: refusing costs less than checking
    anonymous = problem(client.post(f"{API_PREFIX}/items", content=body,
                                    headers={"Authorization": ""}), 413)
    assert anonymous["limit"] == 1024
    assert client.get(f"{API_PREFIX}/items/{'A' * 2000}").status_code == 404  # nothing made


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"sku": "'
        for _ in range(100):
            sent.append(1)
            yield b"A" * 100
        yield b'"}'

    response = client.post(f"{API_PREFIX}/items", content=chunks(),
                           headers={"content-type": "application/json"})
    refused = problem(response, 413)
    assert refused["limit"] == 1024
    assert "content-length" not in response.request.headers  # streamed, no declared length
    small = client.post(f"{API_PREFIX}/items", content=iter([b'{"sku": ', b'"SMALL"}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 201, small.text


def test_documents_and_batches_have_their_own_limits(client: TestClient) -> None:
    # orders: the configured document limit (4096 here), answered before the route reads it
    big_order = b'{"id": "' + b"O" * 5000 + b'"}'
    refused = problem(client.post(f"{API_PREFIX}/orders", content=big_order), 413)
    assert refused["limit"] == 4096
    # a CSV import between the default and the document limit goes through to its route
    csv = b"sku,description\n" + b"".join(b"SKU-%d,%s\n" % (i, b"d" * 20) for i in range(60))
    assert 1024 < len(csv) < 4096
    imported = client.post(f"{API_PREFIX}/items/import", content=csv,
                           headers={"content-type": "text/csv"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 60
    problem(client.post(f"{API_PREFIX}/items/import", content=csv * 3,
                        headers={"content-type": "text/csv"}), 413)
    # a batch keeps the wire's 8 MiB whatever the default: a 2 KiB batch is applied
    events = [event("receive", qty=1, dst="DOCK-1") for _ in range(12)]
    body = payload(SITE, "hh-01", *events)
    assert len(body) > 1024
    response = client.post(f"{API_PREFIX}/events", content=body)
    assert response.status_code == 200, response.text
    assert {r.status for r in wire.decode_ack(response.content).results} == {"applied"}
    over = problem(client.post(f"{API_PREFIX}/events", content=b"x",
                               headers={"content-length": str(wire.MAX_PAYLOAD_BYTES + 1)}),
                   413)
    assert over["limit"] == wire.MAX_PAYLOAD_BYTES


def test_the_routes_own_caps_still_answer(tmp_path: Path) -> None:
    """Behind the middleware the documents' routes keep their own 32 MiB caps: a body over
    them never reaches them now, so they are proven by calling through with the middleware's
    limit at its maximum and the route's cap lowered."""
    from floorsync.server.api import orders as orders_api

    settings = api_settings(tmp_path / "caps.db")
    assert settings.max_document_bytes == 32 * 1024 * 1024
    patch = pytest.MonkeyPatch()
    patch.setattr(orders_api, "MAX_BODY_BYTES", 100)
    try:
        with api_client(create_app(settings)) as c:
            refused = problem(c.post(f"{API_PREFIX}/orders", content=b"{" + b" " * 200 + b"}"),
                              413)
            assert "at most 100 bytes" in refused["detail"]
    finally:
        patch.undo()


def test_limits_are_settings_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("MAX_BODY_BYTES", "2048"), ("RATE_TOKEN_PER_S", "0.5"),
                        ("RATE_DEVICE_BURST", "7"), ("CORS_ORIGINS", "https://a.example, "
                                                                     "https://b.example")):
        monkeypatch.setenv(f"FLOORSYNC_{name}", value)
    s = Settings.from_env(auth=False)
    assert (s.max_body_bytes, s.rate_token_per_s, s.rate_device_burst) == (2048, 0.5, 7)
    assert s.cors_origins == ("https://a.example", "https://b.example")
    defaults = Settings(auth=False)
    assert (defaults.max_body_bytes, defaults.max_document_bytes) == (1024 * 1024,
                                                                      32 * 1024 * 1024)
    from floorsync.server.errors import ConfigError
    for bad in ({"max_body_bytes": 0}, {"max_document_bytes": 33 * 1024 * 1024},
                {"rate_token_per_s": -1.0}, {"rate_device_burst": 0}):
        with pytest.raises(ConfigError):
            Settings(auth=False, **bad)  # type: ignore[arg-type]


def test_openapi_declares_413_and_429(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
            if op.get("security"):
                assert "429" in op["responses"], (method, path)
                assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "429" in spec["paths"][f"{API_PREFIX}/events"]["post"]["responses"]


# --- rates ----------------------------------------------------------------------------------


def limited_app(tmp_path: Path, clock: Clock, **settings: Any) -> FastAPI:
    s = api_settings(tmp_path / "rate.db", **settings)
    app = create_app(s)
    app.state.token_rate = RateLimiter(s.rate_token_per_s, s.rate_token_burst, clock=clock)
    app.state.device_rate = RateLimiter(s.rate_device_per_s, s.rate_device_burst, clock=clock)
    return app


def test_a_token_over_its_rate_is_429_with_retry_after_until_it_waits(tmp_path: Path) -> None:
    clock = Clock()
    app = limited_app(tmp_path, clock, rate_token_per_s=0.5, rate_token_burst=2)
    with api_client(app, token=None) as c:
        read = bearer(READ_TOKEN)
        assert c.get(f"{API_PREFIX}/stock", headers=read).status_code == 200
        assert c.get(f"{API_PREFIX}/items", headers=read).status_code == 200
        refused = c.get(f"{API_PREFIX}/stock", headers=read)
        body = problem(refused, 429)
        assert refused.headers["retry-after"] == "2" and "retry after 2 s" in body["detail"]
        # another token has its own bucket; a bad token is a 401, not a 429
        assert c.get(f"{API_PREFIX}/stock", headers=bearer(WRITE_TOKEN)).status_code == 200
        assert c.get(f"{API_PREFIX}/stock", headers=bearer("no-such-token")).status_code == 401
        clock.now += 1.0  # half the wait: still refused, with the rest of it
        assert c.get(f"{API_PREFIX}/stock", headers=read).headers["retry-after"] == "1"
        clock.now += 1.0
        assert c.get(f"{API_PREFIX}/stock", headers=read).status_code == 200
        assert c.get(f"{API_PREFIX}/health").status_code == 200  # health has no bucket


def test_a_rate_limited_batch_is_told_and_not_applied_and_its_retry_is(tmp_path: Path) -> None:
    clock = Clock()
    app = limited_app(tmp_path, clock, rate_device_per_s=0.25, rate_device_burst=1)
    first = payload(SITE, "hh-01", event("receive", qty=3, dst="DOCK-1"))
    held = [event("receive", qty=5, dst="DOCK-2"), event("receive", qty=7, dst="DOCK-2")]
    second = payload(SITE, "hh-01", *held)
    with api_client(app, token=WRITE_TOKEN) as c:
        assert c.post(f"{API_PREFIX}/events", content=first).status_code == 200
        refused = c.post(f"{API_PREFIX}/events", content=second)
        body = problem(refused, 429)
        assert refused.headers["retry-after"] == "4"
        assert "hh-01" in body["detail"] and "nothing of this batch was applied" in body[
            "detail"]
        store = app.state.store
        ids = [e.id for e in held]
        assert store._query("SELECT count(*) FROM events WHERE id IN (?, ?)", ids) == [(0,)]
        assert store._query("SELECT count(*) FROM rejections")[0][0] == 0  # not a bad batch
        # another device of the same token is not held back by hh-01's bucket
        other = payload(SITE, "hh-02", event("receive", qty=1, dst="DOCK-3"))
        assert c.post(f"{API_PREFIX}/events", content=other).status_code == 200
        clock.now += 4
        retried = c.post(f"{API_PREFIX}/events", content=second)
        assert retried.status_code == 200, retried.text
        assert [(r.id, r.status) for r in wire.decode_ack(retried.content).results] == [
            (e.id, "applied") for e in held]
        stock = c.get(f"{API_PREFIX}/stock", params={"location": "DOCK-2"}).json()["items"]
        assert [s["quantity"] for s in stock] == [12]


def test_the_bucket_refills_and_zero_means_no_limit() -> None:
    clock = Clock()
    bucket = RateLimiter(2.0, 3, clock=clock)
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take("k") == 0.0
    clock.now += 100  # refills up to the burst, not beyond
    assert [bucket.take("k") for _ in range(3)] == [0.0] * 3 and bucket.take("k") > 0
    unlimited = RateLimiter(0, 1, clock=clock)
    assert all(unlimited.take("k") == 0.0 for _ in range(1000))


def test_default_limits_are_generous(tmp_path: Path) -> None:
    """500 requests of one token and 150 batches of one device, as fast as they go."""
    with api_client(create_app(api_settings(tmp_path / "d.db"))) as c:
        assert all(c.get(f"{API_PREFIX}/stock").status_code == 200 for _ in range(500))
        for _ in range(150):
            body = payload(SITE, "hh-01", event("receive", qty=1, dst="DOCK-1"))
            assert c.post(f"{API_PREFIX}/events", content=body).status_code == 200


# --- rotation -------------------------------------------------------------------------------


def test_two_tokens_under_one_name_both_work_then_the_old_one_is_refused(
    tmp_path: Path
) -> None:
    old, new = tokens.new_token(), tokens.new_token()
    path = tmp_path / "tokens"
    path.write_text(f"{tokens.line_of('dashboard', old, 'read')}\n"
                    f"{tokens.line_of('dashboard', new, 'read')}\n"
                    f"{tokens.line_of('ops', ADMIN_TOKEN, 'admin')}\n")
    assert old not in path.read_text() and new not in path.read_text()
    settings = Settings(database=tmp_path / "rot.db", broker=None, tokens_file=path)
    with api_client(create_app(settings), token=None) as c:
        for token in (old, new):
            assert c.get(f"{API_PREFIX}/stock", headers=bearer(token)).status_code == 200
    path.write_text(f"{tokens.line_of('dashboard', new, 'read')}\n")  # the old line removed
    settings = Settings(database=tmp_path / "rot.db", broker=None, tokens_file=path)
    with api_client(create_app(settings), token=None) as c:
        assert c.get(f"{API_PREFIX}/stock", headers=bearer(new)).status_code == 200
        refused = c.get(f"{API_PREFIX}/stock", headers=bearer(old))
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]


# --- CORS -----------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://dashboard.example", "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "authorization"}


def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.options(f"{API_PREFIX}/stock", headers=PREFLIGHT)
    assert response.status_code in (401, 405), response.text
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    plain = client.get(f"{API_PREFIX}/stock", headers={"Origin": "https://dashboard.example"})
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers


def test_cors_answers_only_the_configured_origins(tmp_path: Path) -> None:
    settings = api_settings(tmp_path / "cors.db", cors_origins=("https://dashboard.example",))
    with api_client(create_app(settings), token=None) as c:
        ok = c.options(f"{API_PREFIX}/stock", headers=PREFLIGHT)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://dashboard.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers
        other = c.options(f"{API_PREFIX}/stock",
                          headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
