"""Failed authentications are limited per client address (server/auth.py ``AuthFailures``):
a wrong token by header, by the dashboard's cookie or at its log-in counts; past the burst every
authentication from that address is 429 with Retry-After (problem+json), whatever its token, so
the answer says nothing about a guess; a token that succeeded there since its failures began,
and every other address, go on as before. Over the app (TestClient's client address) and over
the real ``floorsync server`` (uvicorn: the address is the socket's, or a trusted proxy's
X-Forwarded-For); tokens never reach a log."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from floorsync.localbroker import free_port
from floorsync.server import auth, tokens
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.auth import AUTH_FAILURES_BURST, AuthFailures, address_key
from floorsync.server.settings import Settings
from tests.server.test_token_logs import _health, tokens_file

STOCK = f"{API_PREFIX}/stock"
READER, WRITER, OTHER = (tokens.new_token() for _ in range(3))
GUESSES = [tokens.new_token() for _ in range(AUTH_FAILURES_BURST + 10)]
SECRETS = (READER, WRITER, OTHER, *GUESSES)
ATTACKER, NEIGHBOUR = "203.0.113.5", "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(database=tmp_path / "limits.db", broker=None, tokens=
                               tokens.parse_env(f"{READER}=read;{WRITER}=write;{OTHER}=read")))


def client_at(app: FastAPI, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000))


def get(client: TestClient, token: str | None = None, path: str = STOCK) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})


def cookie(token: str) -> dict[str, str]:
    """The session cookie of ``token``, as the header a browser sends."""
    value = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return {"Cookie": f"{auth.SESSION_COOKIE}={value}"}


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"] == "about:blank" and body["status"] == 429
    assert body["title"] == "too many requests"
    assert "failed authentications from this address" in body["detail"]


def test_failures_past_the_burst_are_429_with_retry_after(app: FastAPI) -> None:
    """The shipped limit: AUTH_FAILURES_BURST wrong tokens are 401, the next 429 for 5 s."""
    with client_at(app, ATTACKER) as attacker:
        answers = [get(attacker, guess).status_code for guess in GUESSES[:AUTH_FAILURES_BURST]]
        assert answers == [401] * AUTH_FAILURES_BURST
        limited = get(attacker, GUESSES[AUTH_FAILURES_BURST])
        assert_limited(limited)
        assert limited.headers["retry-after"] == "5"  # 1 / AUTH_FAILURES_PER_S


def test_a_blocked_address_learns_nothing_and_others_go_on(app: FastAPI) -> None:
    app.state.auth_failures = AuthFailures(per_s=0.2, burst=5, clock=(clock := Clock()))
    with client_at(app, ATTACKER) as attacker, client_at(app, NEIGHBOUR) as neighbour:
        assert get(neighbour, READER).status_code == 200
        assert [get(attacker, g).status_code for g in GUESSES[:5]] == [401] * 5
        wrong, right = get(attacker, GUESSES[5]), get(attacker, READER)
        assert_limited(wrong)
        assert_limited(right)  # a valid token is no oracle while the address is blocked
        assert (wrong.json(), wrong.headers["retry-after"]) == \
            (right.json(), right.headers["retry-after"])
        # another address: its valid tokens and its own budget of failures, untouched
        assert get(neighbour, READER).status_code == 200
        assert get(neighbour, WRITER).status_code == 200
        assert get(neighbour, GUESSES[0]).status_code == 401
        # no token at all is no guess: 401 while blocked, and never counted
        assert get(attacker).status_code == 401
        # the bucket refills: one more guess every 5 s, then blocked again
        clock.now += 5
        assert get(attacker, GUESSES[6]).status_code == 401
        assert_limited(get(attacker, GUESSES[7]))
        clock.now += 25  # full again: everything as before
        assert get(attacker, READER).status_code == 200
        assert [get(attacker, g).status_code for g in GUESSES[:5]] == [401] * 5


def test_a_token_that_worked_since_the_failures_began_keeps_working(app: FastAPI) -> None:
    """Edges behind one NAT address, one with a wrong token retrying: the others go on."""
    app.state.auth_failures = AuthFailures(per_s=0.2, burst=5, clock=Clock())
    with client_at(app, ATTACKER) as site:
        assert get(site, GUESSES[0]).status_code == 401
        assert get(site, READER).status_code == 200  # seen valid from here since the failure
        assert [get(site, g).status_code for g in GUESSES[1:5]] == [401] * 4
        assert_limited(get(site, GUESSES[5]))
        assert get(site, READER).status_code == 200
        assert_limited(get(site, WRITER))  # never seen here: no oracle for it
        # the cookie of the token that worked, too
        assert site.get("/dashboard/session", headers=cookie(READER)).status_code == 200


def test_cookie_and_log_in_failures_share_the_apis_budget(app: FastAPI) -> None:
    app.state.auth_failures = AuthFailures(per_s=0.2, burst=6, clock=Clock())
    with client_at(app, ATTACKER) as attacker, client_at(app, NEIGHBOUR) as neighbour:
        assert get(attacker, GUESSES[0]).status_code == 401
        for guess in GUESSES[1:3]:
            assert attacker.get("/dashboard/session", headers=cookie(guess)).status_code == 401
        for guess in GUESSES[3:5]:
            refused = attacker.post("/dashboard/login", json={"token": guess})
            assert refused.status_code == 401 and "set-cookie" not in refused.headers
        stream = attacker.get("/dashboard/stream", headers=cookie(GUESSES[5]))
        assert stream.status_code == 401  # the sixth, by the stream's cookie
        assert_limited(attacker.get("/dashboard/session", headers=cookie(GUESSES[6])))
        assert_limited(attacker.get("/dashboard/session", headers=cookie(READER)))
        assert_limited(attacker.get("/dashboard/stream", headers=cookie(READER)))
        login = attacker.post("/dashboard/login", json={"token": READER})
        assert_limited(login)
        assert "set-cookie" not in login.headers
        assert_limited(get(attacker, READER))
        # a cookie that is no token at all (not base64url, too long) guesses nothing
        garbage = {"Cookie": f"{auth.SESSION_COOKIE}=not base64 !"}
        assert attacker.get("/dashboard/session", headers=garbage).status_code == 401
        ok = neighbour.post("/dashboard/login", json={"token": READER})
        assert ok.status_code == 200 and auth.SESSION_COOKIE in ok.headers["set-cookie"]
        assert neighbour.get("/dashboard/session").json()["scopes"] == ["read"]


def test_auth_off_has_no_failures(tmp_path: Path) -> None:
    app = create_app(Settings(database=tmp_path / "open.db", broker=None, auth=False))
    with client_at(app, ATTACKER) as client:
        assert all(get(client, g).status_code == 200 for g in GUESSES)


def test_ipv6_is_counted_by_its_64_and_ipv4_mapped_as_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.4") == "192.0.2.4" == address_key("192.0.2.4")
    assert address_key("testclient") == "testclient"
    failures = AuthFailures(per_s=0.2, burst=2, clock=Clock())
    assert [failures.check(f"2001:db8:1:2::{n}", None) for n in range(1, 4)] == [0, 0, 5.0]
    assert failures.check("2001:db8:1:3::1", None) == 0


def test_the_valid_path_takes_no_lock_and_reads_no_clock_while_nothing_failed() -> None:
    """What a valid token costs while no address has failed: one look at an empty dict."""

    def no_clock() -> float:
        raise AssertionError("the clock was read")

    class NoLock:
        def __enter__(self) -> None:
            raise AssertionError("the lock was taken")

        def __exit__(self, *exc: object) -> None:
            pass

    failures = AuthFailures(clock=no_clock)
    failures._lock = NoLock()  # type: ignore[assignment]
    assert failures.check("192.0.2.4", "reader") == 0.0
    with pytest.raises(AssertionError, match="the lock was taken"):
        failures.check("192.0.2.4", None)  # a failure does take it


def test_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_BUCKETS", 100)
    failures = AuthFailures(per_s=0.2, burst=3, clock=(clock := Clock()))
    for n in range(250):
        failures.check(f"10.0.{n // 250}.{n % 250}", None)
        clock.now += 0.01
    assert len(failures._entries) <= 100


def test_no_token_in_the_logs(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app.state.auth_failures = AuthFailures(per_s=0.2, burst=4, clock=Clock())
    with client_at(app, ATTACKER) as attacker:
        assert get(attacker, READER).status_code == 200
        for guess in GUESSES[:6]:
            get(attacker, guess)
            attacker.get("/dashboard/session", headers=cookie(guess))
            attacker.post("/dashboard/login", json={"token": guess})
        assert_limited(get(attacker, WRITER))
    warned = [r for r in caplog.records if r.name == "floorsync.server.auth"]
    assert len(warned) == 1 and ATTACKER in warned[0].getMessage(), warned
    for record in caplog.records:
        line = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for secret in SECRETS:
            assert secret not in line and tokens.digest(secret).hex() not in line, line


# -- the real server: the address uvicorn takes from the socket -----------------------------

@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "FLOORSYNC_TOKENS_FILE": str(tokens_file(tmp_path)),
           "FLOORSYNC_TOKENS": f"{READER}=read", "FLOORSYNC_AUTH": "on"}
    env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's default: trust 127.0.0.1's X-Forwarded-For
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


def test_the_real_server_limits_by_the_sockets_address(server: tuple[int, Path]) -> None:
    port, log = server

    def status(source: str, token: str | None, forwarded: str | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                          source_address=(source, 0))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if forwarded:
            headers["X-Forwarded-For"] = forwarded
        conn.request("GET", STOCK, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status == 429:
            assert int(response.getheader("Retry-After") or 0) >= 1
            assert response.getheader("Content-Type") == "application/problem+json"
        return response.status

    # 127.0.0.2 is no trusted proxy: its X-Forwarded-For is ignored, a new one per guess
    # changes nothing
    guesses = [status("127.0.0.2", g, forwarded=f"192.0.2.{n}") for n, g in enumerate(GUESSES)]
    assert guesses[:AUTH_FAILURES_BURST] == [401] * AUTH_FAILURES_BURST
    assert set(guesses[AUTH_FAILURES_BURST:]) == {429}
    assert status("127.0.0.2", READER) == 429
    # another address: its valid token, and its own budget of failures
    assert status("127.0.0.3", READER) == 200
    assert status("127.0.0.3", GUESSES[0]) == 401
    # a proxy on 127.0.0.1 (uvicorn trusts its X-Forwarded-For): each client its own budget
    behind = [status("127.0.0.1", g, forwarded="192.0.2.77") for g in GUESSES]
    assert set(behind[AUTH_FAILURES_BURST:]) == {429}
    assert status("127.0.0.1", READER, forwarded="192.0.2.78") == 200
    assert status("127.0.0.1", READER) == 200  # the proxy's own address
    text = log.read_text(errors="replace")
    assert "failed authentications from 127.0.0.2 over the limit" in text
    assert "failed authentications from 192.0.2.77 over the limit" in text
    assert " DEBUG " in text and "GET /api/v1/stock" in text
    for line in text.splitlines():
        for secret in SECRETS:
            assert secret not in line and tokens.digest(secret).hex() not in line, line


def test_a_full_table_forgets_an_eighth_never_a_blocked_newcomer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is bounded; at its cap it drops refilled budgets, then the earliest counted,
    an eighth at a time. Wiping it all (as it once did) would let a guesser with more
    addresses than the table holds reset every limit, its own included."""
    monkeypatch.setattr(auth, "MAX_BUCKETS", 16)
    failures = AuthFailures(per_s=0.2, burst=5, clock=Clock())
    for i in range(15):  # fifteen addresses, one failure each: none refilled
        assert failures.check(f"10.0.0.{i}", None) == 0.0
    for _ in range(5):
        assert failures.check("10.9.9.9", None) == 0.0
    assert failures.check("10.9.9.9", None) > 0  # blocked: the sixteenth entry
    assert failures.check("10.8.8.8", None) == 0.0  # a newcomer at the cap
    assert failures.check("10.9.9.9", None) > 0  # still blocked
    assert failures.check("10.9.9.9", "reader") > 0  # and no oracle for a valid token
    assert len(failures._entries) == 16 - 2 + 1  # the two earliest went
