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
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from floorsync.server import tokens
from floorsync.server.limits import RateLimited, RateLimiter
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
            "description": "too many requests for this token (or device); nothing was"
            " done: retry after the Retry-After header's seconds",
            "content": schema,
        })["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                         "description": "seconds to wait"}}

    amend_operations(app, amend)


# ``dependencies=`` of a route: the scope it needs.
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]
ADMIN = [Depends(require("admin"))]
