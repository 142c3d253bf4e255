"""``floorsync token new NAME --scopes read``: a new API token for the central service.

The plain token is printed once, for the client (a dashboard, an edge posting over HTTP, a
script); the server is given only the line with its hash, for its tokens file
(``FLOORSYNC_TOKENS_FILE``). Rotation: add the new line beside the old one under the same name,
restart, move the client over, then delete the old line and restart again.
"""

from __future__ import annotations

from dataclasses import dataclass

from floorsync.server import tokens


@dataclass(frozen=True, slots=True)
class NewToken:
    name: str
    token: str  # shown once, never stored by the server
    line: str  # NAME sha256:HEX SCOPE, for the tokens file


def new(name: str, scopes: str) -> NewToken:
    """A fresh token of 32 random bytes and its tokens-file line (ConfigError on a bad name or
    scope)."""
    token = tokens.new_token()
    return NewToken(name, token, tokens.line_of(name, token, scopes))


def render(made: NewToken) -> str:
    return (f"token for {made.name} (shown once; give it to the client, keep it out of logs):\n"
            f"  {made.token}\n"
            "line for the server's tokens file (FLOORSYNC_TOKENS_FILE), then restart it:\n"
            f"  {made.line}\n")
