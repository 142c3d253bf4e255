"""``floorsync enroll`` and ``floorsync revoke``: a device's broker identity, made and taken back.

Run on the broker host, by the operator who administers mosquitto. Two kinds of identity:

* a password (default): a random one, added to mosquitto's password file with
  ``mosquitto_passwd -b``; the device logs in with its name as username, over the TLS
  listener (8883) or, on a trusted network, the plain one;
* a client certificate (``--cert``): a key and a certificate signed by the site CA
  (``--ca-dir``: ``ca.crt``, ``ca.key``), CN = the device name, for the mutual-TLS listener
  (8884), where mosquitto takes the CN as the username (``use_identity_as_username``). Each
  certificate issued is recorded in ``issued.tsv`` beside the CA, so that revoking finds it.

Either way the device's name is its MQTT username, so the ACL's pattern rules
(``deploy/mosquitto/floorsync.acl``: ``pattern write floorsync/v1/+/%u/events`` ...) already give
it exactly its own topics: enrollment adds no per-device ACL entry. The patterns do not pin a
device to its site (deploy/README.md, "the ACL knows no site"), so enrollment also writes
``acl.txt``, the device's ``user`` block naming its site, for a broker whose ACL replaces the
patterns with one such block per device. Device names are unique per broker: enrollment
refuses a name already enrolled.

The edge TOML written for the device holds its credentials (mode 0600): the password is printed
once, for the operator, and is never logged. ``revoke`` removes the password entry
(``mosquitto_passwd -D``) and adds the device's certificates to the CA's CRL (``crl.pem``, the
TLS listener's ``crlfile``). Both take effect when mosquitto re-reads its files on SIGHUP
(``systemctl reload mosquitto``): the device is then refused on its next connect. mosquitto 2.0
also disconnects a client whose password entry went away at that reload; the CRL is checked
only in a TLS handshake, so a device connected with a revoked certificate stays connected until
it reconnects (restart mosquitto to cut it off at once; tests/security/test_enroll.py).
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
from dataclasses import dataclass
from pathlib import Path

from floorsync.edge import wire

RESERVED_PREFIX = "floorsync-"  # the ACL's `user floorsync-central` block: never a device
CRL_DAYS = 3650  # mosquitto refuses every client certificate once the CRL is past nextUpdate
DEFAULT_PASSWD = Path("/etc/mosquitto/floorsync.passwd")
DEFAULT_CA_DIR = Path("/etc/mosquitto/ca")
DEFAULT_DEVICE_DIR = Path("/etc/floorsync")
ACL_NOTE = ("nothing to add: the pattern rules of deploy/mosquitto/floorsync.acl cover it "
            "(%u = {device}: its own events, status and acks, and the documents); {acl} has "
            "its site-pinned user block, for an ACL without the patterns (deploy/README.md)")
RELOAD = ("reload mosquitto so that it re-reads its password file and CRL: "
          "systemctl reload mosquitto (or kill -HUP the broker's pid)")


class EnrollError(Exception):
    """Enrollment or revocation cannot be done as asked (a message for the operator)."""


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
    acl: str  # what the ACL needs for this device

    def __repr__(self) -> str:  # never the password
        return f"Enrollment(device={self.device!r}, site={self.site!r}, config={self.config})"


@dataclass(frozen=True, slots=True)
class Revocation:
    device: str
    password_removed: bool
    revoked_serials: tuple[int, ...]
    crl: Path | None


def check_device(device: str) -> str:
    try:
        wire.check_name(device, "device")
    except wire.WireError as exc:
        raise EnrollError(str(exc)) from None
    if device.lower().startswith(RESERVED_PREFIX):
        raise EnrollError(f"device names starting with {RESERVED_PREFIX!r} are reserved for "
                          "the central service (its ACL user)")
    return device


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
              key_file: Path | None = None) -> str:
    lines = [
        f"# floorsync edge config of {device} at {site}, from `floorsync enroll` "
        f"({dt.date.today().isoformat()}).",
        "# It holds the device's broker credentials: install it as /etc/floorsync/edge.toml,",
        "# mode 0640, owner root, group floorsync. Add this host's [[scanners]] or [[portals]].",
        f"site = {_toml(site)}",
        f"device = {_toml(device)}  # also its broker username (the ACL's %u)",
        "",
        "[outbox]",
        'path = "/var/lib/floorsync/outbox.db"',
        "",
        "[sync]",
        f"broker = {_toml(broker)}",
    ]
    if password is not None:
        lines += [f"username = {_toml(device)}", f"password = {_toml(password)}"]
    if ca_file is not None:
        lines.append(f"ca_file = {_toml(str(ca_file))}  # the CA of the broker's certificate")
    if cert_file is not None and key_file is not None:
        lines += [f"cert_file = {_toml(str(cert_file))}  # CN = {device}",
                  f"key_file = {_toml(str(key_file))}"]
    return "\n".join(lines) + "\n"


def acl_block(device: str, site: str) -> str:
    """The device's topics, pinned to its site (mosquitto ``user`` block)."""
    return (f"user {device}\n"
            f"topic write floorsync/v1/{site}/{device}/events\n"
            f"topic write floorsync/v1/{site}/{device}/status\n"
            f"topic read floorsync/v1/{site}/{device}/acks\n"
            f"topic read floorsync/v1/{site}/docs/#\n")


def _default_broker(cert: bool) -> str:
    return f"mqtts://{socket.getfqdn()}:{8884 if cert else 8883}"


# --- the commands ---------------------------------------------------------------------------


def enroll(device: str, site: str, *, out: Path, cert: bool = False, broker: str | None = None,
           passwd: Path = DEFAULT_PASSWD, ca_dir: Path = DEFAULT_CA_DIR,
           ca_file: Path | None = None, device_dir: Path = DEFAULT_DEVICE_DIR,
           days: int = 825) -> Enrollment:
    """Make the device's credentials and edge TOML in ``out``. ``device_dir``: where the device
    will find the files (paths in its TOML); ``ca_file``: the CA the device verifies the
    broker with (with ``cert``: the site CA's ``ca.crt`` by default)."""
    check_device(device)
    try:
        wire.check_name(site, "site")
    except wire.WireError as exc:
        raise EnrollError(str(exc)) from None
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
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
    except OSError as exc:
        raise EnrollError(f"cannot use {out}: {exc}") from None
    device_ca = None
    if ca_file is not None:
        try:
            _write(out / "ca.crt", Path(ca_file).read_bytes(), 0o644)
        except OSError as exc:
            raise EnrollError(f"cannot read the CA file {ca_file}: {exc}") from None
        device_ca = device_dir / "ca.crt"
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
    _write(out / "acl.txt", acl_block(device, site), 0o644)
    return Enrollment(device=device, site=site, config=config, broker=broker, password=password,
                      certificate=cert_path, key=key_path, serial=serial,
                      acl=ACL_NOTE.format(device=device, acl=out / "acl.txt"))


def revoke(device: str, *, passwd: Path = DEFAULT_PASSWD,
           ca_dir: Path = DEFAULT_CA_DIR) -> Revocation:
    """Remove the device's password entry and revoke its certificates (CRL)."""
    check_device(device)
    removed = device in _passwd_users(passwd)
    if removed:
        _mosquitto_passwd(["-D", str(passwd), device], f"remove {device} from {passwd}")
    crl_path = ca_dir / "crl.pem"
    mine = {s for s, d, _ in _issued(ca_dir) if d == device}
    already = _revoked_serials(crl_path) if mine else set()
    new = mine - already
    crl = _write_crl(ca_dir, already | new) if new else None
    if not removed and not new:
        where = f"no password entry in {passwd}"
        where += (f", its certificates are already revoked in {crl_path}" if mine
                  else f", no certificate in {ca_dir / 'issued.tsv'}")
        raise EnrollError(f"{device} is not enrolled ({where})")
    return Revocation(device=device, password_removed=removed,
                      revoked_serials=tuple(sorted(new)), crl=crl)


def report_enrollment(e: Enrollment) -> str:
    lines = [f"enrolled {e.device} at {e.site}, broker {e.broker}",
             f"  edge config: {e.config} (mode 0600: install as /etc/floorsync/edge.toml)"]
    if e.certificate is not None and e.serial is not None:
        lines += [f"  certificate: {e.certificate} (CN {e.device}, serial {e.serial:x}) and "
                  f"key {e.key}, with ca.crt: install beside edge.toml"]
    lines.append(f"  ACL: {e.acl}")
    if e.password is not None:
        lines.append(f"  password (shown once; also in edge.toml): {e.password}")
        lines.append(f"then {RELOAD}")
    return "\n".join(lines)


def report_revocation(r: Revocation, passwd: Path) -> str:
    lines = [f"revoked {r.device}"]
    if r.password_removed:
        lines.append(f"  password entry removed from {passwd}")
    if r.revoked_serials:
        serials = ", ".join(f"{s:x}" for s in r.revoked_serials)
        lines.append(f"  certificate(s) {serials} added to the CRL {r.crl}")
    lines.append(f"now {RELOAD}; the device is then refused on its next connect")
    if r.password_removed:
        lines.append("  (mosquitto also disconnects a device logged in with the removed password)")
    if r.revoked_serials:
        lines.append("  (a device connected with a revoked certificate keeps that connection: "
                     "systemctl restart mosquitto to cut it off at once)")
    return "\n".join(lines)
