"""Bearer tokens with scopes: ``read``, ``write``, ``admin`` (each implies the ones before it).

Routes declare what they need with ``dependencies=[Depends(require("write"))]``. No token, or one
the server does not know: 401 with ``WWW-Authenticate: Bearer``; a known token without the scope:
403. Tokens are compared in constant time, against every configured token, so neither a match
nor its position shows in the timing. With ``Settings.auth`` off every route is open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from floorsync.server.schemas import Problem, inline_schema
from floorsync.server.settings import SCOPES, Settings

PROBLEM_JSON = "application/problem+json"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token configured on the server (FLOORSYNC_TOKENS or FLOORSYNC_TOKENS_FILE) "
    "with the scope the operation needs: read, write or admin (admin implies write implies "
    "read).",
)

class AuthError(HTTPException):
    """401 or 403, answered as problem+json with a ``WWW-Authenticate`` challenge."""

    def __init__(self, status: int, title: str, detail: str, challenge: str) -> None:
        super().__init__(status, detail, headers={"WWW-Authenticate": challenge})
        self.title = title


def scopes_of(token: str, tokens: Mapping[str, frozenset[str]]) -> frozenset[str] | None:
    """The scopes of ``token``, or None. Every configured token is compared, in constant time."""
    given = token.encode("utf-8", "surrogateescape")
    found: frozenset[str] | None = None
    for known, scopes in tokens.items():
        if hmac.compare_digest(given, known.encode("utf-8")):
            found = scopes
    return found


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
            return
        if credentials is None:
            raise AuthError(401, "unauthorized", "send Authorization: Bearer <token>",
                            f'Bearer scope="{scope}"')
        granted = scopes_of(credentials.credentials, settings.tokens)
        if granted is None:
            raise AuthError(401, "unauthorized", "the bearer token is not valid",
                            'Bearer error="invalid_token"')
        if scope not in granted:
            raise AuthError(403, "forbidden", f"the token lacks the {scope!r} scope",
                            f'Bearer error="insufficient_scope", scope="{scope}"')

    check.scope = scope  # type: ignore[attr-defined]
    return check


def document_denials(app: FastAPI) -> None:
    """401 and 403 in the OpenAPI document of every operation that requires a scope.

    The scope itself is in the operation's security requirement (``{"bearer": ["write"]}``).
    """
    generate = app.openapi
    schema = {PROBLEM_JSON: {"schema": inline_schema(Problem)}}

    def openapi() -> dict[str, Any]:
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict) or not operation.get("security"):
                    continue
                scopes = sorted({s for req in operation["security"] for v in req.values()
                                 for s in v})
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", {
                    "description": "no bearer token, or one the server does not know",
                    "content": schema,
                })
                responses.setdefault("403", {
                    "description": f"the token lacks the {' or '.join(scopes)} scope",
                    "content": schema,
                })
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# ``dependencies=`` of a route: the scope it needs.
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]
ADMIN = [Depends(require("admin"))]
