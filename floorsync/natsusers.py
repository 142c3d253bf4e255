"""A device's user in the site network's NATS cluster (deploy/multisite): made and taken back.

``floorsync enroll DEVICE --site SITE --nats-users FILE`` adds the device's entry to the users
file that every node's ``authorization`` block includes (deploy/multisite/nats/
floorsync-users.conf, installed as ``/etc/nats/floorsync-users.conf``); ``floorsync revoke DEVICE
--nats-users FILE`` removes it. The entry holds a bcrypt hash of the device's random password
(NATS takes bcrypt or plain text for passwords; nkeys need a client that signs the server's
nonce, which MQTT clients cannot) and permissions that mirror the mosquitto ACL block
(``floorsync.enroll.acl_block``), with the MQTT topic ``a/b`` as the NATS subject ``a.b``:

* publish: its own ``events`` and ``status`` at its site (the retained presence, its last will);
* subscribe: its own ``acks``, its site's documents (``docs`` and ``docs.>``: NATS makes the
  MQTT filter ``docs/#`` two subscriptions), and ``$MQTT.sub.>``. NATS 2.9 delivers each QoS 1
  MQTT subscription through an internal subscription on ``$MQTT.sub.<nuid>`` made with the
  client's own permissions: without it every QoS 1 SUBSCRIBE is refused (0x80; measured). It
  grants nothing more: the server refuses an MQTT SUBSCRIBE to ``$MQTT/sub/...`` itself, and
  the user may connect only over MQTT (``allowed_connection_types``), never as a core NATS
  client that could subscribe to it.

NATS checks a publish against the permissions before it stores a retained message or sends a
will, so a device can neither publish nor retain anything under another device's topics or the
documents; a denied MQTT publish is dropped (MQTT 3.1.1 has no way to say so; the server logs
``Publish Violation - User "DEVICE"``).

Names: NATS 2.9 refuses an MQTT topic holding a ``.`` (the edge's CONNECT is refused for its
will), and a ``.`` would split the subject, so sites and devices on NATS have none.

Each entry is delimited as the ACL's blocks are (a ``# floorsync enroll: DEVICE`` line before
it, a blank line after it) and added before the list's closing ``]``. The file is replaced
atomically with its mode and owner kept. Nothing happens to a running server until it reloads
its configuration (``systemctl reload nats-server``, ``nats-server --signal reload``, SIGHUP) on
every node: the file is per node, so copy it to each first. At the reload NATS disconnects a
client whose password no longer matches.

Revoking does not remove the entry: it replaces the password hash by one that matches no
password and marks the entry ``# floorsync revoked: DEVICE``, its permissions unchanged. NATS
2.9 (every 2.9 release; 2.10 rewrote it) crashes on a reload that finds a stored retained
message whose publisher is no longer a user, or may no longer publish it, once another node
has deleted that message (server/mqtt.go mqttCheckPubRetainedPerms: Sublist.Remove(nil), a
nil pointer panic): every edge leaves a retained presence, and the first node to reload deletes
it on the others, so removing a device's user took down the nodes that reloaded after
(tests/security/test_nats_acl.py shows it). A revoked entry keeps the name bound to its site:
enrolling the name again at the same site replaces it; at another site it is refused.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from floorsync.brokerfiles import EnrollError, edit_lock, replace_file
from floorsync.edge import wire

DEFAULT_USERS = Path("/etc/nats/floorsync-users.conf")
MARK = "# floorsync enroll: "  # the line before each device's entry, then the device name
REVOKED_MARK = "# floorsync revoked: "  # the same, once revoked
# Taken by NATS for a bcrypt hash (its prefix), too short to compare: no password matches it.
REVOKED_HASH = "$2b$11$REVOKED.by.floorsync.revoke"
INDENT = "  "
CENTRAL = "floorsync-central"
BCRYPT_COST = 11  # what `nats server passwd` uses; a connect costs one comparison
RELOAD = ("copy the users file to every NATS node and reload each (systemctl reload "
          "nats-server, or nats-server --signal reload): NATS reads it only then")
# what NATS takes for a bcrypt hash (server/auth.go, validBcryptPrefix) and a whole one
_BCRYPT = re.compile(r"^\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}$")
_USER = re.compile(r'\buser:\s*"([^"]*)"')


class NatsUsersError(EnrollError):
    """The users file cannot be edited as asked (a message for the operator)."""


@dataclass(frozen=True, slots=True)
class NatsEntry:
    """A device's entry in the users file: lines ``start`` to ``end`` (exclusive: the mark,
    the entry and the blank line after it)."""

    device: str
    site: str
    start: int
    end: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class UsersFile:
    path: Path
    lines: tuple[str, ...]  # each with its line ending
    entries: dict[str, NatsEntry]  # device -> its enrolled (or revoked) entry
    users: frozenset[str]  # every user named: enrolled entries, the central's, hand-written ones
    close: int  # the line of the users list's closing "]": entries go before it


def check_nats_name(value: str, what: str) -> str:
    """A site or device name NATS can carry in an MQTT topic (no ``.``)."""
    try:
        wire.check_name(value, what)
    except wire.WireError as exc:
        raise NatsUsersError(str(exc)) from None
    if "." in value:
        raise NatsUsersError(f"{what} {value!r}: NATS 2.9 refuses '.' in MQTT topics (and it "
                             "would split the NATS subject): name it without one")
    return value


def subjects(device: str, site: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) allowed to the device: its own topics at its site only."""
    own = f"floorsync.v1.{site}.{device}"
    docs = f"floorsync.v1.{site}.docs"
    return ([f"{own}.events", f"{own}.status"],
            [f"{own}.acks", docs, f"{docs}.>", "$MQTT.sub.>"])


def _strings(values: list[str]) -> str:
    return ", ".join(json.dumps(v) for v in values)  # quoted: an unquoted $ is a NATS variable


def user_entry(device: str, site: str, password_hash: str) -> str:
    """The device's user (a NATS configuration map), as it stands in the users list."""
    publish, subscribe = subjects(device, site)
    return (f'{INDENT}{{user: "{device}", password: "{password_hash}", '
            'allowed_connection_types: ["MQTT"], permissions: {\n'
            f"{INDENT}  publish: {{allow: [{_strings(publish)}]}}\n"
            f"{INDENT}  subscribe: {{allow: [{_strings(subscribe)}]}}}}}}\n")


def delimited(device: str, site: str, password_hash: str) -> str:
    """The entry as enrollment adds it: a mark line before, a blank line after."""
    return f"{INDENT}{MARK}{device}\n{user_entry(device, site, password_hash)}\n"


def tombstone(device: str, site: str) -> str:
    """The entry as revocation leaves it: no password matches, the permissions stay."""
    return f"{INDENT}{REVOKED_MARK}{device}\n{user_entry(device, site, REVOKED_HASH)}\n"


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash NATS accepts: with the ``bcrypt`` package when installed, else the C
    library's crypt(3) (glibc's libxcrypt does bcrypt; Python's ``crypt`` module exists up to
    3.12)."""
    try:
        import bcrypt
    except ImportError:
        pass
    else:
        made = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
        if _BCRYPT.match(made):
            return made
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is not None:
        made = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2 ** cost))
        if made and _BCRYPT.match(made):
            return made
    raise NatsUsersError("no bcrypt here to hash the password for NATS: pip install bcrypt")


def _entry_site(block: str, device: str) -> tuple[str, str] | None:
    """(site, hash) of an enrolled entry, if ``block`` is exactly what enrollment writes."""
    found = re.search(r'"floorsync\.v1\.([^."]+)\.[^."]+\.events"', block)
    pw = re.search(r'password: "([^"]*)"', block)
    if found is None or pw is None:
        return None
    site = found.group(1)
    try:
        check_nats_name(device, "device")
        check_nats_name(site, "site")
    except NatsUsersError:
        return None
    return (site, pw.group(1)) if block == user_entry(device, site, pw.group(1)) else None


def read_users(path: Path) -> UsersFile:
    """Parse the users file: the entries enrollment wrote, every user named, and where the list
    closes. An enrolled entry edited by hand is an error (its removal would not be exact)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NatsUsersError(
            f"no NATS users file {path}: install deploy/multisite/nats/floorsync-users.conf "
            "there first (or name it with --nats-users)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NatsUsersError(f"cannot read the NATS users file {path}: {exc}") from None
    lines = tuple(text.splitlines(keepends=True))
    entries: dict[str, NatsEntry] = {}
    users: set[str] = set()
    close = None
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("#"):
            users.update(_USER.findall(line))
        if stripped == "]":
            close = number
        mark = next((m for m in (MARK, REVOKED_MARK) if stripped.startswith(m.strip())), None)
        if mark is None:
            continue
        device = stripped[len(mark.strip()):].strip()
        end = number + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        found = _entry_site("".join(lines[number + 1:end]), device)
        revoked = mark == REVOKED_MARK
        if found is None or device in entries or not line.startswith(INDENT + mark) \
                or (found[1] == REVOKED_HASH) != revoked:
            raise NatsUsersError(
                f"{path}, line {number + 1}: the entry of {device!r} is not as floorsync "
                "enroll wrote it (edited, or there twice): fix it by hand")
        entries[device] = NatsEntry(device, found[0], number, min(end + 1, len(lines)),
                                    revoked)
    if close is None or not re.search(r"^\s*users\s*[:=]?\s*\[", text, re.MULTILINE):
        raise NatsUsersError(f"{path} has no 'users = [' ... ']' list (a line holding only "
                             "']' closes it): start from deploy/multisite/nats/"
                             "floorsync-users.conf")
    return UsersFile(path, lines, entries, frozenset(users), close)


def check_free(path: Path, device: str, site: str) -> UsersFile:
    """The users file, if ``device`` may be enrolled at ``site``: not a user yet, or revoked
    at that same site (its entry is then replaced)."""
    users = read_users(path)
    entry = users.entries.get(device)
    if entry is not None and entry.revoked:
        if entry.site != site:
            raise NatsUsersError(
                f"{device} was revoked at {entry.site}; its entry stays (NATS 2.9 crashes on a "
                f"reload that removes a user whose retained presence is stored), so the name "
                f"stays at {entry.site}: enroll it there again, or give the device another name")
        return users
    if device in users.users:
        how = ("floorsync revoke it first" if device in users.entries
               else "a hand-written entry: remove it first")
        raise NatsUsersError(f"{device} is already a user in the NATS users file {path} "
                             f"({how})")
    return users


def add(path: Path, device: str, site: str, password: str) -> NatsEntry:
    """Add the device's delimited entry (with ``password`` hashed) before the list's ``]``,
    or in place of its revoked entry at the same site."""
    check_nats_name(device, "device")
    check_nats_name(site, "site")
    hashed = hash_password(password)  # before the lock: it takes a while, on purpose
    with edit_lock(path):
        users = check_free(path, device, site)
        old = users.entries.get(device)
        if old is not None:  # revoked at this site: the same permissions, a new password
            block = delimited(device, site, hashed)
            replace_file(path, "".join([*users.lines[:old.start], block,
                                        *users.lines[old.end:]]))
            return NatsEntry(device, site, old.start, old.start + block.count("\n"))
        before = list(users.lines[:users.close])
        if before and not before[-1].endswith("\n"):
            before[-1] += "\n"
        if before and before[-1].strip():
            before.append("\n")  # a blank line between what was there and the entry
        start = len(before)
        block = delimited(device, site, hashed)
        replace_file(path, "".join([*before, block, *users.lines[users.close:]]))
    return NatsEntry(device, site, start, start + block.count("\n"))


def revoke(path: Path, device: str) -> NatsEntry | None:
    """Make the device's enrolled entry a revoked one (no password matches; marked; the
    permissions kept, see the module's docstring); None if it has no enrolled entry. A
    hand-written user of that name is refused, not guessed at."""
    with edit_lock(path):
        users = read_users(path)
        entry = users.entries.get(device)
        if entry is None or entry.revoked:
            if entry is None and device in users.users:
                raise NatsUsersError(f"the NATS users file {path} has a hand-written user "
                                     f"{device} (no {MARK.strip()!r} line): remove it by hand")
            return None
        block = tombstone(device, entry.site)
        replace_file(path, "".join([*users.lines[:entry.start], block,
                                *users.lines[entry.end:]]))
    return NatsEntry(device, entry.site, entry.start, entry.start + block.count("\n"), True)


def remove(path: Path, device: str) -> NatsEntry | None:
    """Remove the device's entry, exactly its lines; None if it has none. Only for a device
    that never connected (an enrollment undone): see the module's docstring. A hand-written
    user of that name is refused, not guessed at."""
    with edit_lock(path):
        users = read_users(path)
        entry = users.entries.get(device)
        if entry is None:
            if device in users.users:
                raise NatsUsersError(f"the NATS users file {path} has a hand-written user "
                                     f"{device} (no {MARK.strip()!r} line): remove it by hand")
            return None
        replace_file(path, "".join(users.lines[:entry.start] + users.lines[entry.end:]))
    return entry


def set_password(path: Path, user: str = CENTRAL, password: str | None = None) -> str:
    """Give ``user``'s entry (the central service's by default) the bcrypt hash of a new
    random password (or ``password``); returns the password, which is nowhere else."""
    password = password or secrets.token_urlsafe(24)
    hashed = hash_password(password)
    with edit_lock(path):
        users = read_users(path)
        if user in users.entries:
            raise NatsUsersError(f"{user} is an enrolled device: revoke and enroll it again")
        pattern = re.compile(r'(\buser:\s*"' + re.escape(user) + r'"\s*,\s*password:\s*")'
                             r'[^"]*(")')
        found = [n for n, line in enumerate(users.lines)
                 if not line.strip().startswith("#") and pattern.search(line)]
        if len(found) != 1:
            raise NatsUsersError(f"{path}: expected one line with user: \"{user}\", password: "
                                 f"\"...\" (found {len(found)})")
        lines = list(users.lines)
        lines[found[0]] = pattern.sub(lambda m: m.group(1) + hashed + m.group(2), lines[found[0]])
        replace_file(path, "".join(lines))
    return password


def main(argv: list[str] | None = None) -> int:
    """``python -m floorsync.natsusers central-password FILE``: set the central service's."""
    parser = argparse.ArgumentParser(
        prog="python -m floorsync.natsusers",
        description="Give the floorsync-central user of a NATS users file a new random "
                    "password: its bcrypt hash goes in the file, the password is printed once "
                    "(for the replicas' settings). Devices: floorsync enroll --nats-users.")
    parser.add_argument("command", choices=["central-password"])
    parser.add_argument("file", type=Path, nargs="?", default=DEFAULT_USERS,
                        help=f"the users file ({DEFAULT_USERS})")
    args = parser.parse_args(argv)
    try:
        password = set_password(args.file)
    except NatsUsersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{CENTRAL}: new password set in {args.file} (hash only)\n"
          f"  password (shown once): {password}\nthen {RELOAD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
