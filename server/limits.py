"""What a client may send: request bodies capped per route, requests rate-limited per token and
per device.

Bodies: ``BodyLimit`` is a pure ASGI middleware in front of every route. A declared
``Content-Length`` over the route's limit is answered 413 before a byte is read (and before
authentication: refusing is cheaper than checking); a body without one (chunked) is counted as
it streams and cut off at the limit with the same 413. The routes with documents keep their own
caps behind it (orders, receipts, CSV imports: 32 MiB).

Rates: token buckets in this process's memory. Several replicas behind a balancer each keep
their own buckets, so the effective limit is the configured one times the replicas.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
MAX_BUCKETS = 100_000  # distinct keys kept; full buckets are dropped first when over


class BodyTooLarge(HTTPException):
    """413: the body is over the route's limit (``limit`` bytes)."""

    def __init__(self, limit: int, where: str) -> None:
        super().__init__(413, f"the request body of {where} is limited to {limit} bytes")
        self.title = "content too large"
        self.limit = limit


class RateLimited(HTTPException):
    """429 with ``Retry-After`` (whole seconds, rounded up); nothing of the request was done."""

    def __init__(self, what: str, retry_after_s: float, detail: str = "") -> None:
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(429, f"too many requests for {what}; retry after {wait} s{detail}",
                         headers={"Retry-After": str(wait)})
        self.title = "too many requests"
        self.retry_after = wait


def problem_bytes(status: int, title: str, detail: str, **extra: object) -> bytes:
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status,
                               "detail": detail}
    body.update(extra)
    return json.dumps(body).encode()


class BodyLimit:
    """Caps every request body: ``limits`` by path (exact), ``default`` for the rest."""

    def __init__(self, app: ASGIApp, default: int, limits: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.limits.get(path.rstrip("/") or "/", self.default)
        where = f"{scope.get('method', '')} {path}"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, BodyTooLarge(limit, where))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, where)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no exception handler turned it into a 413
            if started:
                raise
            await _refuse(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, exc: BodyTooLarge) -> None:
    body = problem_bytes(413, exc.title, str(exc.detail), limit=exc.limit)
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by key: ``burst`` requests at once, refilled at ``per_s`` a second.

    ``per_s == 0`` means no limit. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` from ``key``'s bucket: 0.0 when allowed, else the seconds to wait
        (nothing is taken then)."""
        if self.per_s <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + (now - bucket.at) * self.per_s)
            bucket.at = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / self.per_s

    def _forget_full(self, now: float) -> None:
        """Buckets that would be full again carry no state: drop them (all, if need be)."""
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.per_s >= self.burst]
        for key in full or list(self._buckets):
            del self._buckets[key]
