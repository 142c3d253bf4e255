"""What the NUL guard (``server/nulguard.py``) costs, beside what a request costs anyway, in the
same run (``python -m floorsync.server.nulbench [--mib N] [--batches N] [--json]``).

- **a large document** (an order of ``mib`` MiB, the documents' cap is 32), beside
  ``json.loads`` of the same bytes (the least any route taking a JSON body does with it): the
  guard's scan when no NUL is there (the fast path every clean body takes) without a
  backslash, with ``\\u00e9`` escapes in every line, and with the text ``\\\\u0000`` (a
  backslash, no NUL); and the refusal of a document holding one NUL (read, walked, named);
- **through the middleware**: the document in 64 KiB ``http.request`` messages (as uvicorn
  hands them) to an ASGI app that reads the body and answers, with and without the guard in
  front, taking turns;
- **a small body** (a count's line) through the middleware, with and without the guard;
- **the hot path**: ``POST /api/v1/events`` (a 50-event batch, fresh ids each time) through
  the whole app on a SQLite file, with and without the guard, taking turns; the guard only
  looks at the URL there (the events' decoder refuses NUL itself).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from floorsync.edge import wire
from floorsync.server.app import API_PREFIX, create_app
from floorsync.server.nulguard import NulGuard, in_json
from floorsync.server.settings import Settings

CHUNK = 64 * 1024
TOKEN = "bench-write-token"
_seq = itertools.count(1)


def order_document(mib: float) -> bytes:
    """An order of about ``mib`` MiB: lines with SKUs, lots and notes."""
    line = {"line": 0, "item": "SKU-000000", "qty": 12, "lot": "LOT-2026-11-A",
            "note": "handle with care, keep upright, fragile goods"}
    size = len(json.dumps(line)) + 2
    count = max(1, int(mib * 1024 * 1024 / size))
    lines = [{**line, "line": n, "item": f"SKU-{n:06d}"} for n in range(1, count + 1)]
    return json.dumps({"id": "SO-BENCH", "site": "wh1", "ship_to": "ACME Ltd, Leeds",
                       "lines": lines}).encode()


def _median_s(action: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- through the middleware, on a trivial app ---------------------------------------------


async def _reads_body(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body as Starlette's ``Request.body()`` does, and answers 200."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def _drive(app: Any, pieces: list[bytes], size: int) -> int:
    scope = {"type": "http", "method": "POST", "path": f"{API_PREFIX}/orders",
             "query_string": b"", "headers": [(b"content-length", str(size).encode()),
                                              (b"content-type", b"application/json")]}
    queue = iter(pieces)
    status = 0

    async def receive() -> dict[str, Any]:
        piece = next(queue, None)
        if piece is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": piece, "more_body": piece is not pieces[-1]}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _middleware(body: bytes, runs: int) -> dict[str, float]:
    pieces = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]
    guarded = NulGuard(_reads_body, skip=[f"{API_PREFIX}/events"])
    loop = asyncio.new_event_loop()
    try:
        bare_times: list[float] = []
        guarded_times: list[float] = []
        for _ in range(runs):  # taking turns: the same conditions for both
            for app, times in ((_reads_body, bare_times), (guarded, guarded_times)):
                start = time.perf_counter()
                assert loop.run_until_complete(_drive(app, pieces, len(body))) == 200
                times.append(time.perf_counter() - start)
    finally:
        loop.close()
    return {"bare_s": statistics.median(bare_times),
            "guarded_s": statistics.median(guarded_times)}


# --- the events hot path, through the whole app -------------------------------------------


def _batch() -> bytes:
    events = tuple(wire.Event(wire.new_event_id(), next(_seq), wire.local_now(), "receive",
                              wire.Item(gtin="09501101530003"), 1, None, "DOCK-1")
                   for _ in range(50))
    return wire.encode_batch(wire.Batch("wh1", "hh-01", wire.utc_now(), events))


async def _post_events(client: httpx.AsyncClient, count: int) -> float:
    bodies = [_batch() for _ in range(count)]
    start = time.perf_counter()
    for body in bodies:
        answer = await client.post(f"{API_PREFIX}/events", content=body,
                                   headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
    return (time.perf_counter() - start) / count


def _events(batches: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database=Path(tmp) / "ledger.db", broker=None,
                            tokens={TOKEN: frozenset({"write"})}, rate_token_per_s=0,
                            rate_device_per_s=0)
        app = create_app(settings)
        with_guard = app.user_middleware
        app.user_middleware = [m for m in with_guard if m.cls is not NulGuard]
        bare_stack = app.build_middleware_stack()  # the same app, the guard left out
        app.user_middleware = with_guard

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = app  # as Starlette.__call__ does before its stack
            await bare_stack(scope, receive, send)

        async def run() -> dict[str, float]:
            out: dict[str, list[float]] = {"bare": [], "guarded": []}
            async with app.router.lifespan_context(app):
                clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=target),
                                                   base_url="http://bench",
                                                   headers={"Authorization": f"Bearer {TOKEN}"})
                           for name, target in (("bare", bare), ("guarded", app))}
                await _post_events(clients["guarded"], 20)  # warm up
                for turn in range(rounds):  # ABBA: neither always goes first
                    order = list(clients.items())
                    for name, client in order if turn % 2 == 0 else reversed(order):
                        out[name].append(await _post_events(client, batches))
                for client in clients.values():
                    await client.aclose()
            return {f"{k}_s_per_batch": statistics.median(v) for k, v in out.items()}

        return asyncio.run(run())


def _url_only(runs: int) -> dict[str, float]:
    """The guard's own time on a request it does not read (the events' path): ns a call."""
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    guard = NulGuard(inner, skip=[f"{API_PREFIX}/events"])
    scope = {"type": "http", "method": "POST", "path": f"{API_PREFIX}/events",
             "query_string": b"", "headers": [(b"content-length", b"9000")]}

    async def calls(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            await app(scope, None, None)
        return (time.perf_counter() - start) / runs

    async def both() -> tuple[float, float]:
        return await calls(inner), await calls(guard)

    bare, guarded = asyncio.run(both())
    return {"guard_ns_per_request": (guarded - bare) * 1e9}


def _small_body(runs: int) -> dict[str, float]:
    """A small JSON body (a count line) through the middleware: ns the guard adds a request."""
    body = b'{"lines": [{"item": "09501101530003", "qty": 3, "lot": "L-7"}], "add": false}'
    guarded = NulGuard(_reads_body, skip=[f"{API_PREFIX}/events"])

    async def calls(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            await _drive(app, [body], len(body))
        return (time.perf_counter() - start) / runs

    async def both() -> tuple[float, float]:
        return await calls(_reads_body), await calls(guarded)

    bare, with_guard = asyncio.run(both())
    return {"small_body_ns_added": (with_guard - bare) * 1e9, "small_body_bare_ns": bare * 1e9}


def run(mib: float = 30.0, runs: int = 7, batches: int = 200, rounds: int = 8,
        calls: int = 100_000) -> dict[str, Any]:
    body = order_document(mib)
    assert not in_json(body)
    escaped = body.replace(b'"handle with', b'"\\\\u0000 handle with', 1)
    assert b"\\u0000" in escaped and not in_json(escaped)
    nul = body.replace(b'"handle with', b'"\\u0000 handle with', 1)
    assert [n.path for n in in_json(nul).places] == ["lines[0].note"]
    ascii_escaped = body.replace(b'"handle with', b'"\\u00e9 handle with')
    loads_s = _median_s(lambda: json.loads(body), runs)
    scan_s = _median_s(lambda: in_json(body), runs)
    scan_escapes_s = _median_s(lambda: in_json(ascii_escaped), runs)
    escaped_s = _median_s(lambda: in_json(escaped), runs)
    nul_s = _median_s(lambda: in_json(nul), runs)
    through = _middleware(body, runs)
    events = _events(batches, rounds)
    result: dict[str, Any] = {
        "document_bytes": len(body), "json_loads_s": loads_s, "scan_s": scan_s,
        "scan_vs_json_loads": scan_s / loads_s, "scan_escapes_s": scan_escapes_s,
        "scan_escapes_vs_json_loads": scan_escapes_s / loads_s,
        "escaped_text_s": escaped_s, "escaped_text_vs_json_loads": escaped_s / loads_s,
        "refusal_s": nul_s, "refusal_vs_json_loads": nul_s / loads_s,
        "middleware_bare_s": through["bare_s"], "middleware_guarded_s": through["guarded_s"],
        "middleware_added_ms": (through["guarded_s"] - through["bare_s"]) * 1000,
        **{f"events_{k}": v for k, v in events.items()},
        "events_guarded_vs_bare": events["guarded_s_per_batch"] / events["bare_s_per_batch"],
        **_url_only(2 * calls),
        **_small_body(calls),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=30.0, help="the document's size")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batches", type=int, default=200, help="event batches a round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = run(args.mib, args.runs, args.batches)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"a {r['document_bytes'] / 2**20:.1f} MiB order document (medians of {args.runs}):")
    print(f"  json.loads (baseline)     {r['json_loads_s'] * 1000:8.1f} ms")
    print(f"  guard scan, no backslash  {r['scan_s'] * 1000:8.2f} ms"
          f"  ({r['scan_vs_json_loads']:.3f} x json.loads)")
    print(f"  guard scan, \\u00e9 escapes {r['scan_escapes_s'] * 1000:8.2f} ms"
          f"  ({r['scan_escapes_vs_json_loads']:.3f} x json.loads)")
    print(f"  guard scan, text \\\\u0000 {r['escaped_text_s'] * 1000:8.2f} ms"
          f"  ({r['escaped_text_vs_json_loads']:.3f} x json.loads)")
    print(f"  a NUL: read, walked, named {r['refusal_s'] * 1000:7.1f} ms"
          f"  ({r['refusal_vs_json_loads']:.2f} x json.loads)")
    print(f"  through the middleware    {r['middleware_guarded_s'] * 1000:8.1f} ms, without"
          f" {r['middleware_bare_s'] * 1000:.1f} ms ({r['middleware_added_ms']:+.2f} ms)")
    print("POST /api/v1/events, 50-event batches, the whole app on SQLite:")
    print(f"  with the guard {r['events_guarded_s_per_batch'] * 1000:.3f} ms a batch, without"
          f" {r['events_bare_s_per_batch'] * 1000:.3f} ms"
          f" ({r['events_guarded_vs_bare']:.3f} x)")
    print(f"  the guard's own time there: {r['guard_ns_per_request']:.0f} ns a request")
    print(f"a small JSON body through the middleware: +{r['small_body_ns_added']:.0f} ns a"
          f" request (the bare app: {r['small_body_bare_ns']:.0f} ns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
