"""The dashboard's log-in: a token posted once becomes an HttpOnly cookie.

Why a cookie: the live stream is an EventSource, which cannot send an ``Authorization``
header, and a token in the stream's URL would land in access logs and browser history. The
cookie holds the token itself (base64url), so every replica behind a load balancer accepts it
with no session store, and removing the token from the server's configuration ends the
session too. It is ``HttpOnly`` (the page's scripts never see it), ``SameSite=Strict`` (no
other site's page makes the browser send it), ``Secure`` when the request came over HTTPS,
and lasts a shift (``MAX_AGE_S``). Writes by cookie also need ``auth.CSRF_HEADER``.
What the cookie may do is the token's scopes: ``read`` to look, ``write`` to resolve.
A log-in or a session check with a token the server does not know is a failed authentication,
limited per client address together with the API's (``auth.check_failures``).
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from floorsync.server import tokens
from floorsync.server.auth import SESSION_COOKIE, AuthError, check_failures, session_token
from floorsync.server.limits import RateLimited, RateLimiter
from floorsync.server.settings import Settings

MAX_AGE_S = 12 * 3600  # a shift
LOGIN_PER_S = 1.0  # log-in attempts per client address, after a burst of LOGIN_BURST
LOGIN_BURST = 10
ALL_SCOPES = ["read", "write", "admin"]

router = APIRouter(prefix="/dashboard", include_in_schema=False)


class LoginIn(BaseModel):
    token: Annotated[str, Field(min_length=1, max_length=512)]


class SessionOut(BaseModel):
    auth: bool = Field(description="false: the server runs with FLOORSYNC_AUTH=off")
    name: str | None = Field(description="the token's name, as the audit log records it")
    scopes: list[str]


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter | None = getattr(request.app.state, "login_rate", None)
    if limiter is None:
        limiter = request.app.state.login_rate = RateLimiter(LOGIN_PER_S, LOGIN_BURST)
    return limiter


def _session(request: Request, token: str | None) -> SessionOut:
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return SessionOut(auth=False, name=None, scopes=ALL_SCOPES)
    entry = None if token is None else tokens.match(token, settings.token_entries)
    if token is not None:  # no cookie at all guesses nothing: not a failure
        check_failures(request, None if entry is None else entry.name)
    if entry is None:
        raise AuthError(401, "unauthorized", "log in with a token", 'Bearer scope="read"')
    return SessionOut(auth=True, name=entry.name, scopes=sorted(entry.scopes))


@router.post("/login", response_model=SessionOut)
def login(request: Request, response: Response, body: LoginIn) -> SessionOut:
    """Check the token and keep it in the session cookie; 401 for a token the server does not
    know (nothing set), 429 past a few attempts a second from one address."""
    client = request.client.host if request.client else "unknown"
    wait = _limiter(request).take(f"login:{client}")
    if wait > 0:
        raise RateLimited("log-ins from this address", wait)
    session = _session(request, body.token)
    if session.auth:
        value = base64.urlsafe_b64encode(body.token.encode()).decode("ascii").rstrip("=")
        response.set_cookie(SESSION_COOKIE, value, max_age=MAX_AGE_S, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
    return session


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


@router.get("/session", response_model=SessionOut)
def session(request: Request) -> SessionOut:
    """Who the cookie is (401 without a valid one, 429 past the failed authentications of
    this address): the page asks before showing anything."""
    return _session(request, session_token(request))
