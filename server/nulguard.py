"""NUL (U+0000) refused at the HTTP boundary, once for every route, before anything is stored.

PostgreSQL's text cannot hold NUL; SQLite's can (and its ``length()`` stops there). So a NUL
that reached the store was kept on one engine and refused on the other (as a 503 "retry later"
that never succeeds). ``NulGuard`` answers 422 problem+json naming where the NUL was instead:
in the URL path, a query parameter (``?item``), a JSON body (``lines[2].item``, keys too) or a
CSV upload (``line 3``), identically on both engines.

Cost: a body is scanned for the two spellings a NUL can have in it (the escape ``\\u0000`` and
a raw 0x00 byte, C speed) and decoded only when one is there. ``POST /api/v1/events`` is not
scanned at all: the wire decoder refuses NUL itself, with a recorded rejection (400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from floorsync.server.schemas import Problem, amend_operations, inline_schema

PROBLEM_JSON = "application/problem+json"
TITLE = "invalid request"
MAX_LISTED = 100  # places named in one answer; ``total`` says how many there were
DEFAULT_CHARSET = "utf-8-sig"  # as the CSV imports read a body (server/api/items.py)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Nul:
    """One place holding a NUL: a JSON path, ``?name``, ``line N`` or ``URL path``."""

    path: str
    reason: str


IN_VALUE = "holds a NUL character (U+0000), which the service does not store"
IN_KEY = "a key holding a NUL character (U+0000), which the service does not store"


# --- where: JSON, text, URL --------------------------------------------------------------


def in_json(body: bytes) -> list[Nul]:
    """The NULs of a JSON body, by path; none when there is no NUL or it is no JSON (the route
    says so). Read leniently (raw control characters allowed) so no route's parser can differ."""
    if b"\\u0000" not in body and b"\x00" not in body:
        return []  # the fast path: a NUL has no other spelling in JSON
    try:
        data = json.loads(body, strict=False)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return []
    return list(_walk(data))


def _walk(data: Any) -> Iterator[Nul]:
    """In document order, without recursion (a document may nest deeply)."""
    stack: list[tuple[str, Any, bool]] = [("", data, False)]
    while stack:
        path, value, is_key = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                yield Nul(path or "$", IN_KEY if is_key else IN_VALUE)
        elif isinstance(value, dict):
            children: list[tuple[str, Any, bool]] = []
            for key, child in value.items():
                step = _step(path, key)
                children += ((step, key, True), (step, child, False))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v, False) for i, v in reversed(list(enumerate(value))))


def _step(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key[:60])}]"


def in_text(body: bytes, charset: str) -> list[Nul]:
    """The NULs of a text body (a CSV upload) by physical line; none when it cannot be decoded
    in ``charset`` (the route says so)."""
    if b"\x00" not in body:
        return []  # the fast path; UTF-16/32 text has 0x00 bytes and is decoded below
    try:
        text = body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return []
    found = []
    at = text.find("\x00")
    while at >= 0:
        found.append(Nul(f"line {text.count(chr(10), 0, at) + 1}", IN_VALUE))
        at = text.find("\x00", at + 1)
    return found


def in_url(scope: Scope) -> list[Nul]:
    """A NUL in the URL path (decoded by the server) or in a query parameter, by name."""
    found = []
    if "\x00" in scope.get("path", ""):
        found.append(Nul("URL path", IN_VALUE))
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name:
                found.append(Nul(f"?{json.dumps(name[:60])}", IN_KEY))
            elif "\x00" in value:
                found.append(Nul(f"?{name[:60]}", IN_VALUE))
    return found


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter of a Content-Type, else what the CSV imports assume."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return DEFAULT_CHARSET


def problem_body(found: list[Nul]) -> bytes:
    """The 422: problem+json as the app's other refusals, every place listed (up to 100)."""
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return json.dumps({
        "type": "about:blank", "title": TITLE, "status": 422,
        "detail": f"{first.path}: {first.reason}{more}; nothing was done",
        "errors": [{"path": n.path, "reason": n.reason} for n in found[:MAX_LISTED]],
        "total": len(found),
    }).encode()


class NulPlace(BaseModel):
    path: str = Field(description="where: a JSON path (lines[2].item), line N of a CSV file,"
                                  " ?name of a query parameter, or URL path")
    reason: str


class NulProblem(Problem):
    """A NUL (U+0000) in the request: refused before anything was done."""

    errors: list[NulPlace] = Field(description=f"where, up to {MAX_LISTED}")
    total: int = Field(description="how many places hold a NUL")


_DOCUMENTED = ("A NUL character (U+0000) in the URL or the body is refused the same way,"
               " each place named (errors[].path).")


def document(app: FastAPI) -> None:
    """Every operation may answer the guard's 422: in the OpenAPI document too (found by
    tests/server/test_schemathesis.py: the CSV imports documented no 422)."""
    content = {PROBLEM_JSON: {"schema": inline_schema(NulProblem)}}

    def amend(operation: dict[str, Any]) -> None:
        responses = operation.setdefault("responses", {})
        if "422" in responses:
            described = responses["422"].get("description", "")
            responses["422"]["description"] = f"{described} {_DOCUMENTED}".strip()
        else:
            responses["422"] = {"description": "a NUL character (U+0000) in the URL or the"
                                " body, each place named; nothing was done", "content": content}

    amend_operations(app, amend)


# --- the middleware ----------------------------------------------------------------------


class NulGuard:
    """Pure ASGI: refuses a request holding a NUL in its URL or body with a 422.

    ``text`` paths take text bodies (CSV), the others JSON; ``skip`` paths' bodies are not
    looked at (their route refuses NUL itself). Sits inside ``BodyLimit``: a body is read only
    up to its route's limit, then handed on whole to the route.
    """

    def __init__(self, app: ASGIApp, text: Collection[str] = (), skip: Collection[str] = ()
                 ) -> None:
        self.app = app
        self.text = frozenset(text)
        self.skip = frozenset(skip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if found := in_url(scope):
            await _refuse(send, found)
            return
        path = str(scope.get("path", "")).rstrip("/") or "/"
        if path in self.skip or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the route sees it
                partial = {"type": "http.request", "body": b"".join(chunks), "more_body": True}
                await self.app(scope, _replay([partial, message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        found = (in_text(body, charset_of(_header(scope, b"content-type")))
                 if path in self.text else in_json(body))
        if found:
            await _refuse(send, found)
            return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _header(scope: Scope, wanted: bytes) -> str:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value).decode("latin-1")
    return ""


async def _refuse(send: Send, found: list[Nul]) -> None:
    body = problem_body(found)
    await send({"type": "http.response.start", "status": 422, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
