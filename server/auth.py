"""Bearer tokens with scopes: ``read``, ``write``, ``admin`` (each implies the ones before it).

Routes declare what they need with ``dependencies=[Depends(require("write"))]``. No token, or one
the server does not know: 401 with ``WWW-Authenticate: Bearer``; a known token without the scope:
403. The server keeps only each token's SHA-256 (``server/tokens.py``): the request's token is
hashed and compared in constant time against every configured digest, so neither a match nor
its position shows in the timing. The matching entry's *name* is what the request is known by
(``request.state.token_name``: the audit log, ``resolved_token``, ``created_by``); the token
itself is never stored or logged. An authenticated request then takes one from its token's
rate bucket (429 with ``Retry-After`` when empty). With ``Settings.auth`` off every route is
open, and requests share the rate bucket of their client address.

Failed authentications (a token, by header, cookie or the dashboard's log-in, that the server
does not know) are limited per client address (``AuthFailures``): past ``AUTH_FAILURES_BURST``
of them, one more every ``1 / AUTH_FAILURES_PER_S`` seconds; until then every authentication
from that address is answered 429 with ``Retry-After``, whatever its token, so the answer says
nothing about a guess. A token that succeeded from the address since its failures began keeps
working (the sites' edges behind one NAT address, one of them misconfigured); other addresses
are never touched. No token at all is a 401 and no failure (nothing was guessed).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from floorsync.server import tokens
from floorsync.server.limits import MAX_BUCKETS, RateLimited, RateLimiter
from floorsync.server.schemas import amend_operations, problem_content
from floorsync.server.settings import Settings
from floorsync.server.tokens import SCOPES, TokenEntry

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token configured on the server (FLOORSYNC_TOKENS or FLOORSYNC_TOKENS_FILE) "
    "with the scope the operation needs: read, write or admin (admin implies write implies "
    "read).",
)

# The dashboard's session (server/dashboard/session.py): the token itself, base64url, in an
# HttpOnly SameSite=Strict cookie, because EventSource cannot send an Authorization header.
# A write by cookie must also carry CSRF_HEADER (a page of another origin cannot set it
# without a CORS preflight this service never grants).
SESSION_COOKIE = "floorsync_session"
CSRF_HEADER = "X-Floorsync-Dashboard"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Failed authentications per client address: a burst, then one every 5 s (720 an hour).
AUTH_FAILURES_BURST = 20
AUTH_FAILURES_PER_S = 0.2
_KNOWN_GOOD = 64  # token names remembered per address

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Failures:
    left: float  # failures still allowed (a token bucket)
    at: float
    good: set[str] = field(default_factory=set)  # tokens that succeeded since the first failure


@functools.lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """What failures are counted by: the address, an IPv6 one by its /64 (a host holds a whole
    /64, and would otherwise have 2**64 addresses to fail from)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthFailures:
    """Failed authentications by client address (``address_key``), as token buckets of
    ``burst`` failures refilled at ``per_s``; ``per_s == 0``: no limit.

    ``check(host, name)`` is called with the matching token's name, or None when the token is
    unknown (a failure). A valid token costs one look at an empty dict while no address has
    failed (~40 ns), a cached key and a dict look-up while others have (~0.1 us); an
    address's entry is dropped once its bucket is full again.
    """

    def __init__(self, per_s: float = AUTH_FAILURES_PER_S, burst: int = AUTH_FAILURES_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._entries: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def check(self, host: str, name: str | None) -> float:
        """0.0: go on (the token's own answer, 200 or 401); else the seconds until this
        address may authenticate again (429). A failure is counted only when it goes on."""
        if name is not None and not self._entries:
            return 0.0
        if self.per_s <= 0:
            return 0.0
        key = address_key(host)
        if name is not None and key not in self._entries:  # others failed, not this address
            return 0.0
        with self._lock:
            entry = self._entries.get(key)
            if entry is None and name is not None:
                return 0.0
            now = self.clock()
            if entry is None:
                if len(self._entries) >= MAX_BUCKETS:
                    self._forget_full(now)
                entry = self._entries[key] = _Failures(float(self.burst), now)
            entry.left = min(float(self.burst), entry.left + (now - entry.at) * self.per_s)
            entry.at = now
            if name is not None:  # a valid token
                if entry.left >= 1 or name in entry.good:
                    if entry.left >= self.burst:
                        del self._entries[key]
                    elif len(entry.good) < _KNOWN_GOOD:
                        entry.good.add(name)
                    return 0.0
            elif entry.left >= 1:
                entry.left -= 1
                if entry.left < 1:
                    log.warning("failed authentications from %s over the limit (%d, then one"
                                " every %.0f s): its authentications refused for %.0f s", key,
                                self.burst, 1 / self.per_s, (1 - entry.left) / self.per_s)
                return 0.0
            return (1 - entry.left) / self.per_s

    def _forget_full(self, now: float) -> None:
        """Room for an eighth of the table: addresses whose budget has refilled go first, then
        the ones counted earliest. Never the whole table at once (a guesser with more addresses
        than the table holds would then reset every limit at each turn), and the scan runs once
        per eighth of the table, not at every new address."""
        room = max(1, MAX_BUCKETS // 8)
        gone = [k for k, e in self._entries.items()
                if e.left + (now - e.at) * self.per_s >= self.burst][:room]
        if len(gone) < room:
            taken = set(gone)
            gone += [k for k in itertools.islice(self._entries, room) if k not in taken][
                :room - len(gone)]
        for key in gone:
            del self._entries[key]


_created = threading.Lock()


def check_failures(request: Request, name: str | None) -> None:
    """429 when the request's address is over its failed authentications (``AuthFailures``);
    counts the failure when ``name`` is None. Nothing else happens: the caller then answers
    with the token's own outcome."""
    failures: AuthFailures | None = getattr(request.app.state, "auth_failures", None)
    if failures is None:
        with _created:
            failures = getattr(request.app.state, "auth_failures", None)
            if failures is None:
                failures = request.app.state.auth_failures = AuthFailures()
    wait = failures.check(request.client.host if request.client else "unknown", name)
    if wait > 0:
        raise RateLimited("failed authentications from this address", wait)


def session_token(request: Request) -> str | None:
    """The token in the dashboard's session cookie, or None (absent or not base64url)."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or len(value) > 1024:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (-len(value) % 4)
                                        ).decode("utf-8")
    except (ValueError, UnicodeError):
        return None


class AuthError(HTTPException):
    """401 or 403, answered as problem+json with a ``WWW-Authenticate`` challenge."""

    def __init__(self, status: int, title: str, detail: str, challenge: str) -> None:
        super().__init__(status, detail, headers={"WWW-Authenticate": challenge})
        self.title = title


def scopes_of(token: str, entries: Iterable[TokenEntry]) -> frozenset[str] | None:
    """The scopes of ``token``, or None. Every configured digest is compared, in constant time."""
    entry = tokens.match(token, entries)
    return None if entry is None else entry.scopes


def take_rate(request: Request, key: str) -> None:
    """One request from ``key``'s bucket (the app's per-token limiter), or 429."""
    limiter: RateLimiter | None = getattr(request.app.state, "token_rate", None)
    if limiter is None:
        return
    wait = limiter.take(key)
    if wait > 0:
        raise RateLimited("this token", wait)


def require(scope: str) -> Callable[..., None]:
    """A dependency that lets the request through only with a token granting ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(bearer, scopes=[scope]),  # noqa: B008
    ) -> None:
        settings: Settings = request.app.state.settings
        if not settings.auth:
            client = request.client.host if request.client else "unknown"
            take_rate(request, f"client:{client}")
            return
        token = credentials.credentials if credentials is not None else session_token(request)
        if token is None:
            raise AuthError(401, "unauthorized", "send Authorization: Bearer <token>",
                            f'Bearer scope="{scope}"')
        if (credentials is None and request.method not in _SAFE_METHODS
                and request.headers.get(CSRF_HEADER) != "1"):
            raise AuthError(403, "forbidden", f"a write by the dashboard's session cookie needs"
                            f" the {CSRF_HEADER}: 1 header", f'Bearer scope="{scope}"')
        entry = tokens.match(token, settings.token_entries)
        check_failures(request, None if entry is None else entry.name)
        if entry is None:
            raise AuthError(401, "unauthorized", "the bearer token is not valid",
                            'Bearer error="invalid_token"')
        if scope not in entry.scopes:
            raise AuthError(403, "forbidden", f"the token lacks the {scope!r} scope",
                            f'Bearer error="insufficient_scope", scope="{scope}"')
        request.state.token_name = entry.name
        take_rate(request, f"token:{entry.name}")

    check.scope = scope  # type: ignore[attr-defined]
    return check


def document_denials(app: FastAPI) -> None:
    """401, 403 and 429 in the OpenAPI document of every operation that requires a scope, and
    413 in every operation with a request body.

    The scope itself is in the operation's security requirement (``{"bearer": ["write"]}``).
    """
    schema = problem_content()

    def amend(operation: dict[str, Any]) -> None:
        if "requestBody" in operation:
            operation.setdefault("responses", {}).setdefault("413", {
                "description": "the body is over this route's limit (problem+json"
                " with ``limit`` in bytes); nothing was done",
                "content": schema,
            })
        if not operation.get("security"):
            return
        scopes = sorted({s for req in operation["security"] for v in req.values() for s in v})
        responses = operation.setdefault("responses", {})
        responses.setdefault("401", {
            "description": "no bearer token, or one the server does not know",
            "content": schema,
        })
        responses.setdefault("403", {
            "description": f"the token lacks the {' or '.join(scopes)} scope",
            "content": schema,
        })
        responses.setdefault("429", {
            "description": "too many requests for this token (or device), or too many"
            " failed authentications from this address; nothing was done: retry after the"
            " Retry-After header's seconds",
            "content": schema,
        })["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                         "description": "seconds to wait"}}

    amend_operations(app, amend)


# ``dependencies=`` of a route: the scope it needs.
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]
ADMIN = [Depends(require("admin"))]
