"""API tokens as the server keeps them: a name, the SHA-256 of the token, its scopes.

The server never holds a token in plain text after reading its configuration: a request's
bearer token is hashed and the digest compared (in constant time) with every configured one.

Why plain SHA-256 and not scrypt or PBKDF2 with a salt: the tokens ``floorsync token new``
makes are 32 random bytes (256 bits). Salting and stretching defend guessable secrets
(passwords) against dictionary and rainbow-table attacks; neither exists for a uniformly random
256-bit value, whose hash cannot be reversed or brute-forced. A fast hash also keeps every
request cheap; a stretched hash costing tens of milliseconds per request would be a
denial-of-service lever. A hand-picked short token (the older ``FLOORSYNC_TOKENS=token=scopes``
form, kept for demos and tests) gets no such guarantee: its hash is only as strong as the token.

Rotation: two entries with the same name and different hashes are both valid; the old one is
removed from the file (and the service restarted) once clients carry the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from floorsync.server.errors import ConfigError

HASH_PREFIX = "sha256:"
TOKEN_BYTES = 32
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_PLAIN_FORBIDDEN = set(" \t\r\n=;,#")
# Each scope with the scopes it implies: admin implies write implies read.
SCOPES: Mapping[str, frozenset[str]] = MappingProxyType({
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
})


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One valid token: who it is (``name``, what the audit log records), its digest, scopes."""

    name: str
    digest: bytes
    scopes: frozenset[str]

    def __repr__(self) -> str:  # the digest stays out of reprs and tracebacks
        return f"TokenEntry(name={self.name!r}, scopes={sorted(self.scopes)})"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def hash_text(token: str) -> str:
    """``sha256:<64 hex>``, the form a tokens file holds."""
    return HASH_PREFIX + digest(token).hex()


def new_token() -> str:
    """A bearer token of 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def fingerprint(token: str) -> str:
    """The name a plain (legacy) token goes by: 12 hex digits of its hash, never the token."""
    return HASH_PREFIX + digest(token).hex()[:12]


def match(token: str, entries: Iterable[TokenEntry]) -> TokenEntry | None:
    """The entry ``token`` hashes to, or None. Every entry is compared, in constant time."""
    given = digest(token)
    found: TokenEntry | None = None
    for entry in entries:
        if hmac.compare_digest(given, entry.digest):
            found = entry
    return found


def expand_scopes(scopes: str | frozenset[str] | set[str], *, where: str) -> frozenset[str]:
    """``"read,write"`` (or a set) as the scopes granted, implied ones included."""
    names = [s.strip().lower() for s in scopes.split(",")] if isinstance(scopes, str) else scopes
    granted: set[str] = set()
    for name in names:
        if name not in SCOPES:
            raise ConfigError(f"{where}: unknown scope {name!r} (read, write or admin)")
        granted |= SCOPES[name]
    if not granted:
        raise ConfigError(f"{where}: no scopes")
    return frozenset(granted)


def check_name(name: str, where: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(f"{where}: token name {name[:70]!r} must be 1-64 letters, digits"
                          " and . _ @ - (starting with a letter or digit)")
    return name


def parse_hash(text: str, where: str) -> bytes:
    value = text.strip().lower()
    if not (value.startswith(HASH_PREFIX) and _HEX.fullmatch(value[len(HASH_PREFIX):])):
        raise ConfigError(f"{where}: expected sha256:<64 hex digits> (floorsync token new"
                          " prints it)")
    return bytes.fromhex(value[len(HASH_PREFIX):])


def plain_entry(token: str, scopes: str | frozenset[str] | set[str], where: str) -> TokenEntry:
    """A token given in plain text (the older form): hashed now, named by its fingerprint."""
    if len(token) < 8:
        raise ConfigError(f"{where}: token {fingerprint(token)} is shorter than 8 characters")
    if not token.isprintable() or _PLAIN_FORBIDDEN & set(token):
        raise ConfigError(f"{where}: token {fingerprint(token)} has whitespace or one of"
                          " = ; , #")
    return TokenEntry(fingerprint(token), digest(token), expand_scopes(scopes, where=where))


def line_of(name: str, token: str, scopes: str) -> str:
    """The tokens-file line for ``token``: ``NAME sha256:HEX SCOPES``."""
    check_name(name, "token")
    granted = expand_scopes(scopes, where="token")
    highest = next(s for s in ("admin", "write", "read") if s in granted)
    return f"{name} {hash_text(token)} {highest}"


def parse_env(raw: str) -> list[TokenEntry]:
    """``FLOORSYNC_TOKENS``: entries separated by ``;``, each ``NAME=sha256:HEX:SCOPES`` or
    (older, plain) ``TOKEN=SCOPES``; whitespace around them ignored."""
    entries: list[TokenEntry] = []
    for n, entry in enumerate(raw.split(";"), 1):
        if not entry.strip():
            continue
        left, sep, right = entry.partition("=")
        left, right = left.strip(), right.strip()
        where = f"FLOORSYNC_TOKENS entry {n}"
        if not sep:
            raise ConfigError(f"{where}: expected NAME=sha256:HEX:SCOPES or TOKEN=SCOPES")
        if right.lower().startswith(HASH_PREFIX):
            hashed, _, scopes = right[len(HASH_PREFIX):].partition(":")
            entries.append(TokenEntry(check_name(left, where),
                                      parse_hash(HASH_PREFIX + hashed, where),
                                      expand_scopes(scopes, where=where)))
        else:
            entries.append(plain_entry(left, right, where))
    return entries


def read_file(path: Path) -> list[TokenEntry]:
    """One ``NAME sha256:HEX SCOPES`` per line (scopes: ``read``, ``write``, ``admin`` or a
    comma list); blank lines and ``#`` comments ignored. Plain tokens are refused here."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc}") from None
    entries: list[TokenEntry] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        where = f"{path}:{n}"
        if len(parts) != 3 or not parts[1].lower().startswith(HASH_PREFIX):
            raise ConfigError(f"{where}: expected 'NAME sha256:HEX SCOPES' (a plain token is"
                              " not accepted in the file: make one with floorsync token new)")
        name, hashed, scopes = parts
        entries.append(TokenEntry(check_name(name, where), parse_hash(hashed, where),
                                  expand_scopes(scopes.replace(" ", ""), where=where)))
    return entries


def check_unique(entries: Iterable[TokenEntry]) -> tuple[TokenEntry, ...]:
    """The same hash twice is a mistake (the same token under two names or scopes); the same
    name twice is rotation and allowed."""
    entries = tuple(entries)
    seen: dict[bytes, str] = {}
    for entry in entries:
        if entry.digest in seen:
            raise ConfigError(f"token {entry.name!r}: the same token is defined twice"
                              f" (also as {seen[entry.digest]!r})")
        seen[entry.digest] = entry.name
    return entries
