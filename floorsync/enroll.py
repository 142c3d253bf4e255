"""``floorsync enroll`` and ``floorsync revoke``: a device's broker identity, made and taken back.

Run on the broker host, by the operator who administers mosquitto. Two kinds of identity:

* a password (default): a random one, added to mosquitto's password file with
  ``mosquitto_passwd -b``; the device logs in with its name as username, over the TLS
  listener (8883) or, on a trusted network, the plain one;
* a client certificate (``--cert``): a key and a certificate signed by the site CA
  (``--ca-dir``: ``ca.crt``, ``ca.key``), CN = the device name, for the mutual-TLS listener
  (8884), where mosquitto takes the CN as the username (``use_identity_as_username``). Each
  certificate issued is recorded in ``issued.tsv`` beside the CA, so that revoking finds it.

Either way the device's name is its MQTT username, and enrollment adds the device's block to
the broker's ACL file (``--acl``, default ``/etc/mosquitto/floorsync.acl``): a ``user`` block
that lets it write its own ``events`` and ``status`` and read its own ``acks`` and its site's
documents, under its site only. The shipped ACL (``deploy/mosquitto/floorsync.acl``) holds only
the central service's block, so a device without a block has no rights at all. Each block is
delimited (a ``# floorsync enroll: DEVICE`` line before it, a blank line after it), so that
``revoke`` removes exactly that block and nothing else; the file is replaced atomically with its
mode and owner kept. Device names are unique per broker: enrollment refuses a name already
enrolled (a password entry, a live certificate, or a ``user`` line in the ACL).

The edge TOML written for the device holds its credentials (mode 0600): the password is printed
once, for the operator, and is never logged. ``revoke`` removes the password entry
(``mosquitto_passwd -D``) and the device's ACL block, and adds the device's certificates to the
CA's CRL (``crl.pem``, the TLS listener's ``crlfile``). All take effect when mosquitto re-reads
its files on SIGHUP (``systemctl reload mosquitto``): the device is then refused on its next
connect. mosquitto 2.0 also disconnects a client whose password entry went away at that reload;
the CRL is checked only in a TLS handshake, so a device connected with a revoked certificate
stays connected until it reconnects (restart mosquitto to cut it off at once;
tests/security/test_enroll.py).

On the site network's NATS cluster (deploy/multisite) there is no mosquitto: with
``--nats-users FILE`` the device's identity is a user in the NATS users file instead (a bcrypt
hash of its random password and permissions mirroring its ACL block; ``floorsync/natsusers.py``),
its edge TOML says ``protocol = "3.1.1"`` (NATS refuses MQTT 5), and ``revoke --nats-users``
takes that user out. Nothing of mosquitto's (password file, ACL, CA) is read or written then.
NATS applies the file when every node reloads it (tests/security/test_nats_acl.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from floorsync.brokerfiles import EnrollError, edit_lock, replace_file
from floorsync.edge import expected, wire

if TYPE_CHECKING:
    from floorsync.natsusers import NatsEntry

RESERVED_PREFIX = "floorsync-"  # the ACL's `user floorsync-central` block: never a device
CRL_DAYS = 3650  # mosquitto refuses every client certificate once the CRL is past nextUpdate
DEFAULT_PASSWD = Path("/etc/mosquitto/floorsync.passwd")
DEFAULT_CA_DIR = Path("/etc/mosquitto/ca")
DEFAULT_DEVICE_DIR = Path("/etc/floorsync")
DEFAULT_ACL = Path("/etc/mosquitto/floorsync.acl")
ACL_MARK = "# floorsync enroll: "  # the line before each device's block, then the device name
RELOAD = ("reload mosquitto so that it re-reads its password file, ACL and CRL: "
          "systemctl reload mosquitto (or kill -HUP the broker's pid)")


@dataclass(frozen=True, slots=True)
class Enrollment:
    device: str
    site: str
    config: Path  # the edge TOML
    broker: str
    password: str | None  # password enrollment: shown once
    certificate: Path | None  # certificate enrollment: the device's files
    key: Path | None
    serial: int | None
    acl: Path | None  # the ACL file the device's block was added to (mosquitto)
    nats_users: Path | None = None  # the NATS users file its user was added to (NATS)

    def __repr__(self) -> str:  # never the password
        return f"Enrollment(device={self.device!r}, site={self.site!r}, config={self.config})"


@dataclass(frozen=True, slots=True)
class Revocation:
    device: str
    password_removed: bool
    revoked_serials: tuple[int, ...]
    crl: Path | None
    acl_removed: AclEntry | None  # the device's block, taken out of the ACL file
    nats_removed: NatsEntry | None = None  # its user in the NATS users file, now revoked


def check_device(device: str) -> str:
    try:
        wire.check_name(device, "device")
    except wire.WireError as exc:
        raise EnrollError(str(exc)) from None
    if device.lower().startswith(RESERVED_PREFIX):
        raise EnrollError(f"device names starting with {RESERVED_PREFIX!r} are reserved for "
                          "the central service (its ACL user)")
    if device == expected.DOC_TOPIC_KIND:  # its topics would lie in every device's docs/#
        raise EnrollError(f"the device name {device!r} is reserved for the documents' topics")
    return device


def check_site(site: str) -> str:
    try:
        return wire.check_name(site, "site")
    except wire.WireError as exc:
        raise EnrollError(str(exc)) from None


# --- the password file ----------------------------------------------------------------------


def _passwd_users(passwd: Path) -> set[str]:
    try:
        lines = passwd.read_text().splitlines()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise EnrollError(f"cannot read the password file {passwd}: {exc}") from None
    return {line.split(":", 1)[0] for line in lines if ":" in line}


def _mosquitto_passwd(args: Sequence[str], what: str) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise EnrollError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    try:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnrollError(f"mosquitto_passwd failed to {what}: {exc}") from None
    if done.returncode != 0:  # its messages never contain the password
        raise EnrollError(f"mosquitto_passwd failed to {what}: "
                          f"{(done.stderr or done.stdout).strip()}")


# --- the ACL file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AclEntry:
    """A device's block in the ACL file, as ``enroll`` wrote it: lines ``start`` to ``end``
    (exclusive: the mark, ``user DEVICE``, its ``topic`` lines and the blank line after)."""

    device: str
    site: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class AclFile:
    path: Path
    lines: tuple[str, ...]  # each with its line ending
    entries: dict[str, AclEntry]  # device -> its enrolled block
    users: frozenset[str]  # every ``user`` line's name: enrolled blocks and hand-written ones


def acl_block(device: str, site: str) -> str:
    """The device's topics, pinned to its site (mosquitto ``user`` block)."""
    return (f"user {device}\n"
            f"topic write floorsync/v1/{site}/{device}/events\n"
            f"topic write floorsync/v1/{site}/{device}/status\n"
            f"topic read floorsync/v1/{site}/{device}/acks\n"
            f"topic read floorsync/v1/{site}/docs/#\n")


def acl_entry(device: str, site: str) -> str:
    """The block as ``enroll`` adds it to the ACL file: delimited, so that revoking removes
    exactly it."""
    return f"{ACL_MARK}{device}\n{acl_block(device, site)}\n"


def read_acl(path: Path) -> AclFile:
    """Parse the ACL file: the blocks enrollment wrote, and every user named. A marked block
    that was edited by hand is an error (its removal would no longer be exact)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EnrollError(f"no ACL file {path}: install deploy/mosquitto/floorsync.acl there "
                          "first (or name the broker's acl_file with --acl)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnrollError(f"cannot read the ACL file {path}: {exc}") from None
    lines = tuple(text.splitlines(keepends=True))
    entries: dict[str, AclEntry] = {}
    users = set()
    for number, line in enumerate(lines):
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            users.add(words[1])
        if not line.startswith(ACL_MARK):
            continue
        device = line[len(ACL_MARK):].strip()
        end = number + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        site = _block_site("".join(lines[number + 1:end]), device)
        if site is None or device in entries:
            raise EnrollError(
                f"{path}, line {number + 1}: the block of {device!r} is not as floorsync "
                "enroll wrote it (edited, or there twice): fix it by hand")
        entries[device] = AclEntry(device, site, number, min(end + 1, len(lines)))
    return AclFile(path, lines, entries, frozenset(users))


def _block_site(block: str, device: str) -> str | None:
    """The site of an enrolled block, if ``block`` is exactly what enrollment writes."""
    topics = block.splitlines()[1:2]
    parts = topics[0].split("/") if topics else []
    site = parts[2] if len(parts) > 2 else ""
    try:
        check_device(device)
        check_site(site)
    except EnrollError:
        return None
    return site if block == acl_block(device, site) else None


def _rewrite_acl(acl: AclFile, text: str) -> None:
    """Replace the ACL file atomically, keeping its mode and owner (mosquitto must still read
    it, and nobody else gains access)."""
    replace_file(acl.path, text)


def check_acl_free(path: Path, device: str) -> AclFile:
    """The ACL file, if it does not name ``device`` yet."""
    acl = read_acl(path)
    if device in acl.users:
        how = ("floorsync revoke it first" if device in acl.entries
               else "a hand-written block: remove it first")
        raise EnrollError(f"{device} already has a block in the ACL {path} ({how})")
    return acl


def acl_add(path: Path, device: str, site: str) -> AclEntry:
    """Append the device's delimited block to the ACL file (refused if the file names the
    device already). The central service's block, comments and other blocks stay as they are."""
    check_device(device)
    check_site(site)
    with edit_lock(path):
        acl = check_acl_free(path, device)
        text = "".join(acl.lines)
        if text and not text.endswith("\n"):
            text += "\n"
        if text and not text.endswith("\n\n"):
            text += "\n"  # a blank line between what was there and the first block
        start = text.count("\n")
        text += acl_entry(device, site)
        _rewrite_acl(acl, text)
    return AclEntry(device, site, start, text.count("\n"))


def acl_remove(path: Path, device: str) -> AclEntry | None:
    """Remove the device's enrolled block from the ACL file, exactly its lines; None if it has
    none. A hand-written ``user`` block of the device is refused, not guessed at."""
    check_device(device)
    with edit_lock(path):
        acl = read_acl(path)
        entry = acl.entries.get(device)
        if entry is None:
            if device in acl.users:
                raise EnrollError(f"the ACL {path} has a hand-written block for {device} (no "
                                  f"{ACL_MARK.strip()!r} line): remove it by hand")
            return None
        _rewrite_acl(acl, "".join(acl.lines[:entry.start] + acl.lines[entry.end:]))
    return entry


# --- the CA ---------------------------------------------------------------------------------


def _load_ca(ca_dir: Path) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise EnrollError(
            f"cannot use the site CA in {ca_dir} (ca.crt and an unencrypted ca.key; see "
            f"deploy/README.md, 'TLS and device enrollment'): {exc}") from None
    return cert, key


def _issued(ca_dir: Path) -> list[tuple[int, str, str]]:
    """(serial, device, site) of every certificate issued, from ``issued.tsv``."""
    path = ca_dir / "issued.tsv"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            serial, device, site, *_ = line.split("\t")
            out.append((int(serial, 16), device, site))
    return out


def _revoked_serials(crl_path: Path) -> set[int]:
    from cryptography import x509

    if not crl_path.exists():
        return set()
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except ValueError as exc:
        raise EnrollError(f"cannot read the CRL {crl_path}: {exc}") from None
    return {entry.serial_number for entry in crl}


def _write_crl(ca_dir: Path, serials: set[int]) -> Path:
    """Sign a CRL of ``serials`` with the site CA; written atomically, readable by mosquitto."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_cert, ca_key = _load_ca(ca_dir)
    assert isinstance(ca_cert, x509.Certificate)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + dt.timedelta(days=CRL_DAYS)))
    for serial in sorted(serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    target = ca_dir / "crl.pem"
    _write(target, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    return target


def _issue(ca_dir: Path, device: str, site: str, days: int) -> tuple[bytes, bytes, int]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = _load_ca(ca_dir)
    assert isinstance(ca_cert, x509.Certificate)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, device),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with (ca_dir / "issued.tsv").open("a") as index:
        index.write(f"{serial:x}\t{device}\t{site}\t{cert.not_valid_after_utc.isoformat()}\t"
                    f"{now.isoformat(timespec='seconds')}\n")
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial


# --- files ----------------------------------------------------------------------------------


def _write(path: Path, data: bytes | str, mode: int) -> None:
    """Atomically, with ``mode`` from the start (a secret is never readable by others)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EnrollError(f"cannot write {path}: {exc}") from None


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string (the names are plain; URLs and paths too)


def edge_toml(device: str, site: str, broker: str, *, password: str | None = None,
              ca_file: Path | None = None, cert_file: Path | None = None,
              key_file: Path | None = None, protocol: str | None = None) -> str:
    lines = [
        f"# floorsync edge config of {device} at {site}, from `floorsync enroll` "
        f"({dt.date.today().isoformat()}).",
        "# It holds the device's broker credentials: install it as /etc/floorsync/edge.toml,",
        "# mode 0640, owner root, group floorsync. Add this host's [[scanners]] or [[portals]].",
        f"site = {_toml(site)}",
        f"device = {_toml(device)}  # also its broker username (its ACL user)",
        "",
        "[outbox]",
        'path = "/var/lib/floorsync/outbox.db"',
        "",
        "[sync]",
        f"broker = {_toml(broker)}",
    ]
    if protocol is not None:
        lines.append(f"protocol = {_toml(protocol)}  # NATS speaks MQTT 3.1.1, not 5")
    if password is not None:
        lines += [f"username = {_toml(device)}", f"password = {_toml(password)}"]
    if ca_file is not None:
        lines.append(f"ca_file = {_toml(str(ca_file))}  # the CA of the broker's certificate")
    if cert_file is not None and key_file is not None:
        lines += [f"cert_file = {_toml(str(cert_file))}  # CN = {device}",
                  f"key_file = {_toml(str(key_file))}"]
    return "\n".join(lines) + "\n"


def _default_broker(cert: bool) -> str:
    return f"mqtts://{socket.getfqdn()}:{8884 if cert else 8883}"


# --- the commands ---------------------------------------------------------------------------


def enroll(device: str, site: str, *, out: Path, cert: bool = False, broker: str | None = None,
           passwd: Path = DEFAULT_PASSWD, ca_dir: Path = DEFAULT_CA_DIR,
           ca_file: Path | None = None, device_dir: Path = DEFAULT_DEVICE_DIR,
           days: int = 825, acl: Path = DEFAULT_ACL,
           nats_users: Path | None = None) -> Enrollment:
    """Make the device's credentials and edge TOML in ``out`` and add its block to the ACL
    file ``acl``. ``device_dir``: where the device will find the files (paths in its TOML);
    ``ca_file``: the CA the device verifies the broker with (with ``cert``: the site CA's
    ``ca.crt`` by default). With ``nats_users``: a password and a user in that NATS users
    file instead, nothing of mosquitto's."""
    check_device(device)
    check_site(site)
    if nats_users is not None:
        if cert:
            raise EnrollError("--cert is for mosquitto's mutual-TLS listener: a device on NATS "
                              "(--nats-users) logs in with a password")
        return _enroll_nats(device, site, out=out, broker=broker, ca_file=ca_file,
                            device_dir=device_dir, users=nats_users)
    broker = broker or _default_broker(cert)
    if device in _passwd_users(passwd):
        raise EnrollError(f"{device} is already enrolled (a password entry in {passwd}); "
                          f"floorsync revoke {device} first")
    if cert:
        revoked = _revoked_serials(ca_dir / "crl.pem")
        active = [s for s, d, _ in _issued(ca_dir) if d == device and s not in revoked]
        if active:
            raise EnrollError(f"{device} already has a certificate (serial {active[0]:x}); "
                              f"floorsync revoke {device} first")
        _load_ca(ca_dir)  # fail before writing anything
        ca_file = ca_file or ca_dir / "ca.crt"
    check_acl_free(acl, device)
    device_ca = _device_dir(out, ca_file, device_dir)
    # The block first: without credentials it grants nobody anything; taken out again if the
    # credentials cannot be made, so that a retry is not refused.
    acl_add(acl, device, site)
    try:
        return _credentials(device, site, out=out, cert=cert, broker=broker, passwd=passwd,
                            ca_dir=ca_dir, device_ca=device_ca, device_dir=device_dir,
                            days=days, acl=acl)
    except BaseException:
        with suppress(EnrollError):  # the credentials' error is the one to show
            acl_remove(acl, device)
        raise


def _device_dir(out: Path, ca_file: Path | None, device_dir: Path) -> Path | None:
    """Make ``out`` (mode 0700) with a copy of ``ca_file``; the CA's path on the device."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
    except OSError as exc:
        raise EnrollError(f"cannot use {out}: {exc}") from None
    if ca_file is None:
        return None
    try:
        _write(out / "ca.crt", Path(ca_file).read_bytes(), 0o644)
    except OSError as exc:
        raise EnrollError(f"cannot read the CA file {ca_file}: {exc}") from None
    return device_dir / "ca.crt"


def _enroll_nats(device: str, site: str, *, out: Path, broker: str | None,
                 ca_file: Path | None, device_dir: Path, users: Path) -> Enrollment:
    from floorsync import natsusers

    natsusers.check_nats_name(device, "device")
    natsusers.check_nats_name(site, "site")
    broker = broker or _default_broker(False)
    # before anything is written; a revoked entry (at this site) is replaced
    was_revoked = device in natsusers.check_free(users, device, site).entries
    device_ca = _device_dir(out, ca_file, device_dir)
    password = secrets.token_urlsafe(24)
    natsusers.add(users, device, site, password)
    try:
        config = out / "edge.toml"
        _write(config, edge_toml(device, site, broker, password=password, ca_file=device_ca,
                                 protocol="3.1.1"), 0o600)
    except BaseException:
        with suppress(EnrollError):  # the TOML's error is the one to show
            if was_revoked:  # revoked again, never removed (see floorsync/natsusers.py)
                natsusers.revoke(users, device)
            else:
                natsusers.remove(users, device)
        raise
    return Enrollment(device=device, site=site, config=config, broker=broker,
                      password=password, certificate=None, key=None, serial=None, acl=None,
                      nats_users=users)


def _credentials(device: str, site: str, *, out: Path, cert: bool, broker: str, passwd: Path,
                 ca_dir: Path, device_ca: Path | None, device_dir: Path, days: int,
                 acl: Path) -> Enrollment:
    password = cert_path = key_path = serial = None
    if cert:
        cert_pem, key_pem, serial = _issue(ca_dir, device, site, days)
        cert_path, key_path = out / f"{device}.crt", out / f"{device}.key"
        _write(cert_path, cert_pem, 0o644)
        _write(key_path, key_pem, 0o600)
        if not (ca_dir / "crl.pem").exists():  # the mtls listener's crlfile must exist
            _write_crl(ca_dir, set())
        text = edge_toml(device, site, broker, ca_file=device_ca,
                         cert_file=device_dir / cert_path.name,
                         key_file=device_dir / key_path.name)
    else:
        password = secrets.token_urlsafe(24)
        create = [] if passwd.exists() else ["-c"]
        _mosquitto_passwd([*create, "-b", str(passwd), device, password],
                          f"add {device} to {passwd}")
        text = edge_toml(device, site, broker, password=password, ca_file=device_ca)
    config = out / "edge.toml"
    _write(config, text, 0o600)
    return Enrollment(device=device, site=site, config=config, broker=broker, password=password,
                      certificate=cert_path, key=key_path, serial=serial, acl=acl)


def revoke(device: str, *, passwd: Path = DEFAULT_PASSWD, ca_dir: Path = DEFAULT_CA_DIR,
           acl: Path = DEFAULT_ACL, nats_users: Path | None = None) -> Revocation:
    """Remove the device's password entry and its ACL block, and revoke its certificates
    (CRL). An ACL that cannot be edited exactly (a hand-written block of the device, an edited
    enrolled one) is refused before anything is changed. With ``nats_users``: remove the
    device's user from that NATS users file only."""
    check_device(device)
    if nats_users is not None:
        from floorsync import natsusers

        entry = natsusers.revoke(nats_users, device)
        if entry is None:
            raise EnrollError(f"{device} is not enrolled (no user, or a revoked one, in "
                              f"{nats_users})")
        return Revocation(device=device, password_removed=False, revoked_serials=(),
                          crl=None, acl_removed=None, nats_removed=entry)
    listed = read_acl(acl)
    if device in listed.users and device not in listed.entries:
        raise EnrollError(f"the ACL {acl} has a hand-written block for {device} (no "
                          f"{ACL_MARK.strip()!r} line): remove it by hand, then revoke")
    removed = device in _passwd_users(passwd)
    if removed:
        _mosquitto_passwd(["-D", str(passwd), device], f"remove {device} from {passwd}")
    crl_path = ca_dir / "crl.pem"
    mine = {s for s, d, _ in _issued(ca_dir) if d == device}
    already = _revoked_serials(crl_path) if mine else set()
    new = mine - already
    crl = _write_crl(ca_dir, already | new) if new else None
    block = acl_remove(acl, device)
    if not removed and not new and block is None:
        where = f"no password entry in {passwd}"
        where += (f", its certificates are already revoked in {crl_path}" if mine
                  else f", no certificate in {ca_dir / 'issued.tsv'}")
        raise EnrollError(f"{device} is not enrolled ({where}, no block in {acl})")
    return Revocation(device=device, password_removed=removed,
                      revoked_serials=tuple(sorted(new)), crl=crl, acl_removed=block)


def report_enrollment(e: Enrollment) -> str:
    lines = [f"enrolled {e.device} at {e.site}, broker {e.broker}",
             f"  edge config: {e.config} (mode 0600: install as /etc/floorsync/edge.toml)"]
    if e.certificate is not None and e.serial is not None:
        lines += [f"  certificate: {e.certificate} (CN {e.device}, serial {e.serial:x}) and "
                  f"key {e.key}, with ca.crt: install beside edge.toml"]
    if e.acl is not None:
        lines.append(f"  ACL: its block added to {e.acl} (its own topics, at {e.site} only)")
    if e.nats_users is not None:
        lines.append(f"  NATS: its user added to {e.nats_users} (bcrypt hash; MQTT only; its "
                     f"own subjects, at {e.site} only)")
    if e.password is not None:
        lines.append(f"  password (shown once; also in edge.toml): {e.password}")
    lines.append(f"then {_reload(e.nats_users is not None)}")
    return "\n".join(lines)


def _reload(nats: bool) -> str:
    if not nats:
        return RELOAD
    from floorsync.natsusers import RELOAD as NATS_RELOAD

    return NATS_RELOAD


def report_acl_added(entry: AclEntry, acl: Path) -> str:
    return (f"added the ACL block of {entry.device} at {entry.site} to {acl} (no credentials "
            f"made)\nthen {RELOAD}")


def report_revocation(r: Revocation, passwd: Path) -> str:
    lines = [f"revoked {r.device}"]
    if r.password_removed:
        lines.append(f"  password entry removed from {passwd}")
    if r.revoked_serials:
        serials = ", ".join(f"{s:x}" for s in r.revoked_serials)
        lines.append(f"  certificate(s) {serials} added to the CRL {r.crl}")
    if r.acl_removed is not None:
        lines.append(f"  its ACL block (site {r.acl_removed.site}) removed")
    if r.nats_removed is not None:
        lines.append(f"  its NATS user (site {r.nats_removed.site}) revoked: no password "
                     "matches it now; the entry stays, marked (NATS 2.9 must not lose a user "
                     "whose retained presence is stored: see floorsync/natsusers.py)")
        lines.append(f"now {_reload(True)}; each node then disconnects the device and refuses "
                     "its next connect")
        return "\n".join(lines)
    lines.append(f"now {RELOAD}; the device is then refused on its next connect")
    if r.password_removed:
        lines.append("  (mosquitto also disconnects a device logged in with the removed password)")
    if r.revoked_serials:
        lines.append("  (a device connected with a revoked certificate keeps that connection: "
                     "systemctl restart mosquitto to cut it off at once)")
    return "\n".join(lines)
