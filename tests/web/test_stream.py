"""The live stream and the log-in over real HTTP (uvicorn on a loopback port): fifty
subscribers at once, a slow one dropped without growing memory, replicas on PostgreSQL seeing
each other's writes, a stopping server ending its streams; cookies, scopes and CSRF."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from floorsync.edge import wire
from floorsync.localbroker import Mosquitto
from floorsync.server.app import create_app
from floorsync.server.auth import CSRF_HEADER, SESSION_COOKIE
from floorsync.server.dashboard import live
from floorsync.server.dashboard.live import LiveHub
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.factories import event
from tests.server.helpers import READ_TOKEN, TOKENS, WRITE_TOKEN, api_settings, bearer
from tests.web.conftest import Central, live_server, run_async
from tests.web.floor import dock_door, door_pass

SITE = "wh1"


def batch_body(*events: wire.Event, device: str = "door-01") -> bytes:
    """A batch as an edge sends it: its outbox numbers the events (a door leaves seq 0)."""
    numbered = tuple(replace(e, seq=n) for n, e in enumerate(events, 1))
    return wire.encode_batch(wire.Batch(SITE, device, wire.utc_now(), numbered))


def post_events(base: str, body: bytes) -> dict[str, Any]:
    answer = httpx.post(f"{base}/api/v1/events", content=body, timeout=10,
                        headers={**bearer(WRITE_TOKEN), "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    assert {r["status"] for r in result["results"]} == {"applied"}, result
    return result


def cookie_of(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The app on a SQLite store under a real uvicorn: (base URL, app)."""
    app = create_app(api_settings(tmp_path / "central.db"))
    with live_server(app) as base:
        yield base, app


# --- the stream ------------------------------------------------------------------------------


async def read_events(response: httpx.Response, want: str, ready: asyncio.Event,
                      found: asyncio.Event, got: dict[str, Any]) -> None:
    """Parse SSE frames until a ``passes`` event names ``want`` (``ready`` at the first)."""
    name = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "passes":
            ready.set()
            frame = json.loads(line[6:])
            got.setdefault("deltas", 0)
            got["deltas"] += not frame["replace"]
            ids = [p["event_id"] for p in frame["items"]]
            if want in ids:
                got["at"] = time.monotonic()
                found.set()
                return


def test_fifty_streams_at_once_each_get_a_door_pass(served: tuple[str, Any]) -> None:
    base, app = served
    hub: LiveHub = app.state.live
    made = door_pass(dock_door(), 7)

    async def run() -> list[float]:
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     limits=httpx.Limits(max_connections=60)) as client:
            cookies = {SESSION_COOKIE: cookie_of(READ_TOKEN)}
            streams = [client.stream("GET", "/dashboard/stream", cookies=cookies)
                       for _ in range(50)]
            responses = [await s.__aenter__() for s in streams]
            try:
                assert [r.status_code for r in responses] == [200] * 50
                assert all(r.headers["content-type"].startswith("text/event-stream")
                           for r in responses)
                while hub.subscribers < 50:
                    await asyncio.sleep(0.01)
                ready = [asyncio.Event() for _ in responses]
                found = [asyncio.Event() for _ in responses]
                got: list[dict[str, Any]] = [{} for _ in responses]
                readers = [asyncio.create_task(read_events(r, made.id, *args))
                           for r, *args in zip(responses, ready, found, got, strict=True)]
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
                start = time.monotonic()
                await asyncio.to_thread(post_events, base, batch_body(made))
                await asyncio.wait_for(asyncio.gather(*(f.wait() for f in found)), 10)
                for task in readers:
                    task.cancel()
                assert all(g["deltas"] == 1 for g in got)  # the pass came as news
                return [g["at"] - start for g in got]
            finally:
                for s in streams:
                    await s.__aexit__(None, None, None)

    latencies = run_async(run())
    assert len(latencies) == 50
    print(f"\n50 streams: door pass POSTed -> on every stream in {max(latencies) * 1000:.0f} ms"
          f" (first {min(latencies) * 1000:.0f} ms); one poller: {hub.ticks} ticks found a change")
    deadline = time.monotonic() + 5
    while hub.subscribers and time.monotonic() < deadline:  # disconnects noticed
        time.sleep(0.05)
    assert hub.subscribers == 0


def test_a_subscriber_that_stops_reading_is_dropped_and_memory_stays_bounded(
        tmp_path: Path) -> None:
    with Store(tmp_path / "c.db") as store:
        hub = LiveHub(lambda: store, 60)

        async def run() -> None:
            slow, quick = hub.subscribe(), hub.subscribe()
            received = 0
            for n in range(live.QUEUE_FRAMES * 3):
                data = live.frame("lag", {"n": n})
                hub._fanout("lag", data, data)
                assert slow.queue.qsize() <= live.QUEUE_FRAMES
                while not quick.queue.empty():  # this one keeps up
                    quick.queue.get_nowait()
                    received += 1
            assert slow.dropped and not quick.dropped
            assert hub.subscribers == 1 and hub.dropped == 1
            # its stream ends (the browser reconnects and starts from the latest panels)
            frames = [f async for f in hub.frames(slow)]
            assert frames == [f"retry: {live.RETRY_MS}\n\n".encode()]
            assert received == live.QUEUE_FRAMES * 3
            again = hub.subscribe()
            assert again.queue.get_nowait() == live.frame("lag", {"n": live.QUEUE_FRAMES * 3 - 1})
            hub.close()

        run_async(run())


def test_a_replica_streams_what_another_replica_wrote(tmp_path: Path, pg_url: str) -> None:
    """Two central processes' apps on one PostgreSQL database: the stream of one shows the
    door pass and the exception that the other ingested (polling the store, not hooks)."""
    made = door_pass(dock_door(), 9)
    ship = event(0, type="ship", from_="A-01-01")
    first = create_app(Settings(database=pg_url, tokens=TOKENS, broker=None))
    second = create_app(Settings(database=pg_url, tokens=TOKENS, broker=None))
    with live_server(first) as base_a, live_server(second) as base_b:
        seen: dict[str, Any] = {}
        with httpx.stream("GET", f"{base_b}/dashboard/stream", timeout=15,
                          headers=bearer(READ_TOKEN)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            posted = False
            name = None
            for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    seen[name or ""] = json.loads(line[6:])
                if not posted and "exceptions" in seen:
                    post_events(base_a, batch_body(made))
                    post_events(base_a, batch_body(ship, device="hh-07"))
                    posted = True
                passes = [p["event_id"] for p in seen.get("passes", {}).get("items", [])]
                if made.id in passes and seen.get("exceptions", {}).get("open") == 1:
                    break
    (pass_row,) = [p for p in seen["passes"]["items"] if p["event_id"] == made.id]
    assert pass_row["location"] == "DOCK-A" and pass_row["read_kind"] == "rfid"
    assert pass_row["epc"] == "urn:epc:id:sgtin:0614141.812345.9"
    assert seen["exceptions"]["items"][0]["kind"] == "negative_stock"
    assert second.state.live.ticks >= 1 and first.state.live.ticks == 0  # B's poller only


def test_a_stopping_server_ends_its_streams_instead_of_waiting_on_them(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    central = Central(tmp_path / "central.db", mosquitto.url)
    central.start()
    try:
        with socket.create_connection(("127.0.0.1", central.port), timeout=10) as sock:
            sock.sendall(b"GET /dashboard/stream HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + central.read_token.encode() + b"\r\n\r\n")
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            assert central.process is not None
            central.process.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = central.process.wait(15)  # without ending the streams: waits forever
            took = time.monotonic() - start
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
        # uvicorn raises the signal again once it has shut down gracefully
        assert code in (0, -signal.SIGTERM) and took < 10, (code, took)
        assert "Application shutdown complete" in central.log
        assert rest.endswith(b"0\r\n\r\n")  # the chunked stream was finished, not cut
    finally:
        central.stop()


# --- log-in, cookie, scopes --------------------------------------------------------------


def test_log_in_sets_an_http_only_strict_cookie_that_reads_but_never_writes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access = logging.getLogger("uvicorn.access")
    app = create_app(api_settings(tmp_path / "central.db"))
    with live_server(app, log_level="debug") as base, \
            httpx.Client(base_url=base, timeout=10) as client:
        access.addHandler(caplog.handler)  # uvicorn's own configuration does not propagate it
        assert client.get("/dashboard/session").status_code == 401
        assert client.get("/dashboard/stream").status_code == 401
        answer = client.post("/dashboard/login", json={"token": READ_TOKEN})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"auth": True, "name": answer.json()["name"],
                                 "scopes": ["read"]}
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower() and "secure" not in attributes  # plain http
        assert READ_TOKEN not in cookie  # base64url of it, not the token as typed

        assert client.get("/dashboard/session").json()["scopes"] == ["read"]
        assert client.get("/api/v1/devices").status_code == 200
        with client.stream("GET", "/dashboard/stream") as stream:
            assert stream.status_code == 200
        refused = client.post("/api/v1/exceptions/1/resolve", headers={CSRF_HEADER: "1"},
                              json={"action": "dismiss", "by": "Ana", "reason": "x"})
        assert refused.status_code == 403 and "write" in refused.json()["detail"]

        assert client.post("/dashboard/logout").status_code == 204
        assert client.get("/dashboard/session").status_code == 401
        assert client.get("/api/v1/devices").status_code == 401
    access.removeHandler(caplog.handler)
    # what the server logged (this test's own client, httpx, logs its requests in full)
    text = "\n".join(r.getMessage() for r in caplog.records
                     if not r.name.startswith(("httpx", "httpcore")))
    assert "/dashboard/login" in text  # uvicorn's access log is in there
    assert READ_TOKEN not in text and cookie_of(READ_TOKEN) not in text


def test_a_write_by_cookie_needs_the_dashboard_header(served: tuple[str, Any]) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/dashboard/login", json={"token": WRITE_TOKEN}).status_code == 200
        body = {"action": "dismiss", "by": "Ana", "reason": "x"}
        forged = client.post("/api/v1/exceptions/1/resolve", json=body)
        assert forged.status_code == 403 and CSRF_HEADER in forged.json()["detail"]
        # with it, the token's scope lets the request through to the route (no such exception)
        allowed = client.post("/api/v1/exceptions/1/resolve", json=body,
                              headers={CSRF_HEADER: "1"})
        assert allowed.status_code == 404, allowed.text
        # a bearer token needs no such header (no browser sends it on its own)
        bare = httpx.post(f"{base}/api/v1/exceptions/1/resolve", json=body,
                          headers=bearer(WRITE_TOKEN), timeout=10)
        assert bare.status_code == 404


@pytest.mark.parametrize("cookie", [
    "not base64 !", "////", cookie_of("unknown-token-1234"), "A" * 2000,
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
])
def test_a_cookie_that_is_no_known_token_is_401(served: tuple[str, Any], cookie: str) -> None:
    base, _ = served
    answer = httpx.get(f"{base}/dashboard/stream", cookies={SESSION_COOKIE: cookie}, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("body", "status"), [
    (b"", 422), (b"{", 422), (b'{"token": 7}', 422), (b'{"token": ""}', 422),
    (json.dumps({"token": "x" * 513}).encode(), 422), (b'["token"]', 422),
])
def test_log_in_refuses_garbage(served: tuple[str, Any], body: bytes, status: int) -> None:
    base, _ = served
    answer = httpx.post(f"{base}/dashboard/login", content=body, timeout=10,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert "set-cookie" not in answer.headers


def test_log_in_attempts_are_rate_limited_per_address(served: tuple[str, Any]) -> None:
    base, _ = served
    answers = [httpx.post(f"{base}/dashboard/login", json={"token": f"guess-{n:04d}"},
                          timeout=10).status_code for n in range(15)]
    assert answers[:10] == [401] * 10 and 429 in answers[10:]


def test_with_auth_off_the_page_needs_no_log_in(tmp_path: Path) -> None:
    app = create_app(Settings(database=tmp_path / "c.db", broker=None, auth=False))
    with live_server(app) as base:
        assert httpx.get(f"{base}/dashboard/session", timeout=10).json() == {
            "auth": False, "name": None, "scopes": ["read", "write", "admin"]}
        with httpx.stream("GET", f"{base}/dashboard/stream", timeout=10) as stream:
            assert stream.status_code == 200


def test_the_page_and_its_assets_are_served_with_a_strict_policy(
        served: tuple[str, Any]) -> None:
    base, _ = served
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    for asset, kind in (("app.js", "javascript"), ("live.js", "javascript"),
                        ("panels.js", "javascript"), ("api.js", "javascript"),
                        ("style.css", "text/css")):
        answer = httpx.get(f"{base}/dashboard/assets/{asset}", timeout=10)
        assert answer.status_code == 200 and kind in answer.headers["content-type"], asset
        assert "https://" not in answer.text, asset
    assert httpx.get(f"{base}/dashboard/assets/../app.py", timeout=10).status_code == 404
    assert "/dashboard/stream" not in httpx.get(f"{base}/openapi.json", timeout=10).text
