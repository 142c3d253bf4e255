"""The routes outside the OpenAPI document (``include_in_schema=False``, so schemathesis never
sees them): the dashboard's page, log-in, log-out, session, stream and assets; /metrics;
/docs, its OAuth2 redirect and assets; /redoc; /openapi.json itself.

Each gets generated garbage: any method (standard or invented), body, headers, cookies (the
session cookie with garbage, or a real token's), Authorization, CSRF header and query string,
and for the mounted assets any path below them (``..``, encoded slashes, NUL). Boundary: never a
5xx; every refusal (4xx) says why: a body, and a ``detail`` when it is JSON; a 200 from an
assets mount is one of that folder's own files. The limits on failed authentications and
log-ins are off here so the fuzzer keeps reaching what lies behind them (their own tests:
tests/server/test_login_limits.py). Every hidden route of the app must be in ``ROUTES``.
"""

from __future__ import annotations

import base64
import json
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount

from floorsync.server import apidocs, dashboard
from floorsync.server.app import create_app
from floorsync.server.auth import CSRF_HEADER, SESSION_COOKIE, AuthFailures
from floorsync.server.limits import RateLimiter
from tests.server.helpers import ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN, api_settings

# path -> the method it serves (a mount: a folder, any path below it)
ROUTES = {
    "/": "GET", "/dashboard/login": "POST", "/dashboard/logout": "POST",
    "/dashboard/session": "GET", "/dashboard/stream": "GET", "/dashboard/assets": "GET",
    "/metrics": "GET", "/docs": "GET", "/docs/oauth2-redirect": "GET", "/docs/assets": "GET",
    "/redoc": "GET", "/openapi.json": "GET",
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
TOKENS = [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN]
# headers httpx sets itself from the request (a wrong one would hang the request, not the app)
OWN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "cookie",
               "authorization", "content-type", CSRF_HEADER.lower()}


def hidden_routes(app: FastAPI) -> set[str]:
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: list[Any] = list(contexts(app.routes)) if contexts else list(app.routes)
    out = set()
    for route in routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and original.include_in_schema:
            continue
        out.add(str(original.path))
    return out


def files_below(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


ASSETS = {"/dashboard/assets": files_below(dashboard.STATIC),
          "/docs/assets": files_below(apidocs.assets_directory())}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(api_settings(Path(tmp) / "hidden.db"))
        app.state.auth_failures = AuthFailures(per_s=0)
        app.state.login_rate = RateLimiter(0, 0)
        with TestClient(app, raise_server_exceptions=False) as c:
            yield c


def test_every_hidden_route_is_fuzzed(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    assert hidden_routes(app) == set(ROUTES)
    assert {str(r.path) for r in app.routes if isinstance(r, Mount)} <= set(ASSETS)


header_text = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\x00") or b"x")
header_name = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z").filter(
    lambda n: n.lower() not in OWN_HEADERS)
segment = st.one_of(
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "..%2f..", "%00", "index.html", "app.js",
                     "swagger-ui.css", "favicon.png", "", "a" * 300, "%ff%fe", "~", "\\"]),
    # httpx sends no control character in a URL: anything else, percent-encoded (a stray
    # "%" kept, so invalid escapes too)
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=12).map(
        lambda t: urllib.parse.quote(t, safe="%.~!$&'()*+,;=:@")),
)


def cookie_value(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@st.composite
def requests(draw: st.DrawFn, route: str) -> dict[str, Any]:
    roll = draw(st.integers(0, 9))  # mostly the route's own method, to reach past the router
    method = ROUTES[route] if roll < 6 else draw(
        st.sampled_from(METHODS) if roll < 9 else st.from_regex(r"\A[A-Z]{1,10}\Z"))
    path = route
    if route in ASSETS:
        files = sorted(ASSETS[route])
        path += "/" + draw(st.one_of(
            st.sampled_from(files),
            st.tuples(st.lists(segment, max_size=3), st.sampled_from(files)).map(
                lambda t: "/".join([*t[0], t[1]])),
            st.lists(segment, max_size=4).map("/".join)))
    query = draw(st.one_of(
        st.just(""),
        st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=4),
        st.text(max_size=40).map(lambda t: urllib.parse.quote(t, safe="%=&+;,/?:@!$'()*[]"))))
    headers: dict[str, bytes | str] = dict(draw(st.dictionaries(header_name, header_text,
                                                                max_size=4)))
    auth = draw(st.one_of(st.none(), st.sampled_from(TOKENS).map(lambda t: f"Bearer {t}"),
                          st.text(st.characters(codec="ascii", exclude_characters="\r\n\x00"),
                                  max_size=40)))
    session = draw(st.one_of(st.none(), st.sampled_from(TOKENS).map(cookie_value),
                             st.text(st.characters(codec="ascii", exclude_characters="\r\n\x00;"),
                                     max_size=60)))
    cookies = draw(st.one_of(st.none(), header_text))
    streaming = route == "/dashboard/stream" and method in ("GET", "HEAD")
    if streaming and (auth in TOKEN_HEADERS or session in TOKEN_COOKIES):
        # a valid stream never ends: what it sends is tests/web/test_stream.py's to check
        auth = session = None
    if auth is not None:
        headers["Authorization"] = auth
    cookie = [] if cookies is None else [cookies]
    if session is not None:
        cookie.append(f"{SESSION_COOKIE}={session}".encode())
    if cookie:
        headers["Cookie"] = b"; ".join(c if isinstance(c, bytes) else c.encode() for c in cookie)
    if draw(st.booleans()):
        headers[CSRF_HEADER] = draw(st.sampled_from(["1", "0", "", "yes"]))
    log_in = st.one_of(st.sampled_from([*TOKENS, "x" * 600, ""]), st.text(max_size=40)).map(
        lambda t: json.dumps({"token": t}).encode())
    body = draw(st.one_of(
        st.none(), st.binary(max_size=200), log_in, log_in,
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8).map(lambda v: json.dumps(v).encode())))
    if body is not None:
        headers["Content-Type"] = draw(st.sampled_from(
            ["application/json", "application/json", "text/plain", "}{",
             "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
             "application/json; charset=latin-1"]))
    return {"method": method, "path": path, "query": query, "headers": headers,
            "content": body}


TOKEN_HEADERS = {f"Bearer {t}" for t in TOKENS}
TOKEN_COOKIES = {cookie_value(t) for t in TOKENS}


def check(client: TestClient, request: dict[str, Any]) -> None:
    query = request["query"]
    url = request["path"]
    if isinstance(query, str) and query:
        url += "?" + query
    response = client.request(request["method"], url, headers=request["headers"],
                              content=request["content"],
                              params=query if isinstance(query, list) else None)
    status = response.status_code
    assert status < 500, (status, response.text[:500])
    if status >= 400 and request["method"] != "HEAD":
        assert response.content.strip(), f"{status} without a reason"
        if "json" in response.headers.get("content-type", ""):
            body = response.json()
            assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    mount = next((m for m in ASSETS if response.request.url.path.startswith(m + "/")), None)
    if status == 200 and mount and request["method"] == "GET":
        assert response.content in ASSETS[mount].values(), f"{response.request.url.path} " \
            "served something that is not one of its folder's files"


@pytest.mark.parametrize("route", ROUTES)
def test_garbage_to_a_hidden_route_is_refused_with_its_reason(client: TestClient, route: str
                                                              ) -> None:
    current = settings()  # the profile's: ci 50 requests a route, long 1,000 (~2.5 min in all)

    @given(request=requests(route))
    @settings(current, max_examples=max(20, min(1000, current.max_examples // 4)),
              suppress_health_check=[*current.suppress_health_check,
                                     HealthCheck.function_scoped_fixture])
    def run(request: dict[str, Any]) -> None:
        check(client, request)

    run()


def test_the_check_sees_a_5xx_and_a_refusal_without_its_reason() -> None:
    """The boundary above can fail: a route that raises, and one that refuses with nothing."""
    from fastapi import Response

    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/mute")
    def mute() -> Response:
        return Response(status_code=400)

    with TestClient(app, raise_server_exceptions=False) as bare:
        request = {"method": "GET", "query": "", "headers": {}, "content": None}
        with pytest.raises(AssertionError, match="500"):
            check(bare, {**request, "path": "/boom"})
        with pytest.raises(AssertionError, match="400 without a reason"):
            check(bare, {**request, "path": "/mute"})
