"""NUL (U+0000) refused at the HTTP boundary, once for every route, before anything is stored.

PostgreSQL's text cannot hold NUL; SQLite's can (and its ``length()`` stops there). So a NUL
that reached the store was kept on one engine and refused on the other (as a 503 "retry later"
that never succeeds). ``NulGuard`` answers 422 problem+json naming where the NUL was instead:
in the URL path, a query parameter (``?item``), a JSON body (``lines[2].item``, keys too) or a
CSV upload (``line 3``), identically on both engines.

Cost (``python -m floorsync.server.nulbench``): a body is scanned for the two spellings a NUL
can have in JSON, a raw 0x00 byte and the escape ``\\u0000`` (searched only when the body has a
backslash), at C speed: on a 31 MiB order ~2 ms, ~18 ms with escapes on every line, against
~230 ms for the ``json.loads`` any route does. Only a body that holds one is read and walked
(~4x ``json.loads``, in the thread pool) to name the places. ``POST /api/v1/events`` is not
scanned at all: the wire decoder refuses NUL itself (the event rejected with its reason, or
the batch a 400), and the guard costs it ~1 us.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from floorsync.server.schemas import Problem, amend_operations, inline_schema

PROBLEM_JSON = "application/problem+json"
TITLE = "invalid request"
MAX_LISTED = 100  # places named in one answer; ``total`` says how many there were
DEFAULT_CHARSET = "utf-8-sig"  # as the CSV imports read a body (server/api/items.py)
MAX_ESCAPED_LOOKS = 64  # texts \\u0000 looked at one by one before reading the whole body
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Nul:
    """One place holding a NUL: a JSON path, ``?name``, ``line N`` or ``URL path``."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Found:
    """The places holding a NUL, in order: the first ``MAX_LISTED`` named, all counted."""

    places: tuple[Nul, ...] = ()
    total: int = 0

    def __bool__(self) -> bool:
        return self.total > 0


NOTHING = Found()
IN_VALUE = "holds a NUL character (U+0000), which the service does not store"
IN_KEY = "a key holding a NUL character (U+0000), which the service does not store"


# --- where: JSON, text, URL --------------------------------------------------------------


def in_json(body: bytes) -> Found:
    """The NULs of a JSON body, by path; none when there is no NUL or it is no JSON (the route
    says so). Read leniently (raw control characters allowed) so no route's parser can differ."""
    return nuls_in_json(body) if might_hold_nul(body) else NOTHING


def might_hold_nul(body: bytes) -> bool:
    """The fast path every body takes: a raw 0x00 (memchr), else an escape ``\\u0000`` found
    by search (only when the body has a backslash at all) that follows an even number of
    backslashes (``\\\\u0000`` is a backslash, then the text u0000: no NUL)."""
    if b"\x00" in body:
        return True
    if b"\\" not in body:
        return False
    at = body.find(b"\\u0000")
    for _ in range(MAX_ESCAPED_LOOKS):
        if at < 0:
            return False
        start, floor = at, max(0, at - MAX_ESCAPED_LOOKS)
        while start > floor and body[start - 1] == 0x5C:  # the backslashes before it
            start -= 1
        if (at - start) % 2 == 0 or start == floor > 0:  # even, or too many to count here
            return True
        at = body.find(b"\\u0000", at + 6)
    return at >= 0  # many escaped texts: the slow path decides


def nuls_in_json(body: bytes) -> Found:
    """The slow path, when a NUL may be there: the document read and walked."""
    try:
        data = json.loads(body, strict=False)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOTHING
    return _walk(data)


# Where the walk is: (key or index, its position among its siblings, the parent's trail).
_Trail = tuple[str | int, int, "_Trail"] | None


def _walk(data: Any) -> Found:
    """Every NUL in ``data`` (keys too) without recursion (a document may nest deeply):
    strings are looked at in place, and paths spelled only for what is found."""
    if type(data) is str:
        return Found((Nul("$", IN_VALUE),), 1) if "\x00" in data else NOTHING
    hits: list[tuple[_Trail, str]] = []
    stack: list[tuple[Any, _Trail]] = [(data, None)] if type(data) in (dict, list) else []
    while stack:
        value, trail = stack.pop()
        items = value.items() if type(value) is dict else enumerate(value)
        for position, (step, child) in enumerate(items):
            if type(step) is str and "\x00" in step:
                hits.append(((step, position, trail), IN_KEY))
            kind = type(child)
            if kind is str:
                if "\x00" in child:
                    hits.append(((step, position, trail), IN_VALUE))
            elif kind is dict or kind is list:
                stack.append((child, (step, position, trail)))
    hits.sort(key=lambda hit: _order(*hit))
    return Found(tuple(Nul(_path(trail), reason) for trail, reason in hits[:MAX_LISTED]),
                 len(hits))


def _order(trail: _Trail, reason: str) -> tuple[int, ...]:
    """Where ``trail`` is in document order (a key before its value)."""
    order = [0 if reason == IN_KEY else 1]
    while trail is not None:
        _, position, trail = trail
        order.append(position)
    return tuple(reversed(order))


def _path(trail: _Trail) -> str:
    steps: list[str | int] = []
    while trail is not None:
        step, _, trail = trail
        steps.append(step)
    path = ""
    for step in reversed(steps):
        if isinstance(step, int):
            path += f"[{step}]"
        elif _IDENTIFIER.match(step):
            path += f".{step}" if path else step
        else:
            path += f"[{json.dumps(step[:60])}]"
    return path


def in_text(body: bytes, charset: str) -> Found:
    """The NULs of a text body (a CSV upload) by physical line; none when it cannot be decoded
    in ``charset`` (the route says so)."""
    if b"\x00" not in body:
        return NOTHING  # the fast path; UTF-16/32 text has 0x00 bytes and is decoded below
    try:
        text = body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return NOTHING
    total = text.count("\x00")
    places: list[Nul] = []
    line, counted, at = 1, 0, text.find("\x00")
    while at >= 0 and len(places) < MAX_LISTED:
        line += text.count("\n", counted, at)
        counted = at
        places.append(Nul(f"line {line}", IN_VALUE))
        at = text.find("\x00", at + 1)
    return Found(tuple(places), total)


def in_url(scope: Scope) -> Found:
    """A NUL in the URL path (decoded by the server) or in a query parameter, by name."""
    query: bytes = scope.get("query_string", b"")
    if "\x00" not in scope.get("path", "") and b"%00" not in query and b"\x00" not in query:
        return NOTHING
    places = []
    if "\x00" in scope.get("path", ""):
        places.append(Nul("URL path", IN_VALUE))
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name:
                places.append(Nul(f"?{json.dumps(name[:60])}", IN_KEY))
            elif "\x00" in value:
                places.append(Nul(f"?{name[:60]}", IN_VALUE))
    return Found(tuple(places[:MAX_LISTED]), len(places))


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter of a Content-Type, else what the CSV imports assume."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return DEFAULT_CHARSET


def problem_body(found: Found) -> bytes:
    """The 422: problem+json as the app's other refusals, the places listed (up to 100)."""
    first = found.places[0]
    more = f" (and {found.total - 1} more)" if found.total > 1 else ""
    return json.dumps({
        "type": "about:blank", "title": TITLE, "status": 422,
        "detail": f"{first.path}: {first.reason}{more}; nothing was done",
        "errors": [{"path": n.path, "reason": n.reason} for n in found.places],
        "total": found.total,
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
    up to its route's limit, then handed on whole to the route. A body that may hold a NUL is
    read in the thread pool, as the routes read large documents.
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
        if path in self.text:
            found = NOTHING if b"\x00" not in body else await run_in_threadpool(
                in_text, body, charset_of(_header(scope, b"content-type")))
        else:  # the slow path off the event loop: reading a large document takes a while
            found = await run_in_threadpool(nuls_in_json, body) if might_hold_nul(body) else (
                NOTHING)
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


async def _refuse(send: Send, found: Found) -> None:
    body = problem_body(found)
    await send({"type": "http.response.start", "status": 422, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
