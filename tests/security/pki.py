"""A throw-away PKI for the security tests: a CA, broker (server) and device (client) certificates.

Tests make their own certificates so that no key material lives in the repository and every
failure case (another CA, a wrong host name, an expired or revoked certificate) is one call
away. Keys are EC P-256 (fast to make on a loaded machine); files are PEM, as mosquitto, paho
(``ssl``) and uvicorn read them.

    ca = TestCA.create(tmp_path / "pki")                    # ca.cert, ca.key
    broker = ca.server("broker", hosts=("localhost", "127.0.0.1"))
    device = ca.client("dock-1")                            # CN = dock-1 (the MQTT username)
    crl = ca.crl([device])                                  # a CRL revoking it (mosquitto crlfile)
    other = TestCA.create(tmp_path / "other", name="Other CA")  # an untrusted CA

``Issued.cert`` / ``Issued.key`` are paths; ``Issued.serial`` identifies it in a CRL. Only the
``cryptography`` library is needed (in the dev extra).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "TestCA"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key on disk (PEM)."""

    name: str
    cert: Path
    key: Path
    serial: int


@dataclass(frozen=True, slots=True)
class TestCA:
    """A self-signed CA in ``directory`` (``ca.crt``, ``ca.key``) that issues certificates."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    directory: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str = "floorsync test CA") -> TestCA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cls(name=name, directory=directory, cert=cert_path, key=key_path)

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def issue(
        self,
        name: str,
        *,
        hosts: Sequence[str] = (),
        client: bool = False,
        days: float = 30,
        not_before: dt.datetime | None = None,
    ) -> Issued:
        """Sign a certificate with CN ``name``; ``hosts`` go in subjectAltName (DNS or IP).
        ``days`` may be negative together with ``not_before`` for an expired certificate."""
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or (_now() - dt.timedelta(minutes=5))
        serial = x509.random_serial_number()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return Issued(name=name, cert=cert_path, key=key_path, serial=serial)

    def server(self, name: str = "broker",
               hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> Issued:
        """A broker/HTTP server certificate valid for ``hosts``."""
        return self.issue(name, hosts=hosts)

    def client(self, name: str) -> Issued:
        """A device (client) certificate whose CN is ``name``."""
        return self.issue(name, client=True)

    def crl(self, revoked: Iterable[Issued] = (), path: Path | None = None) -> Path:
        """Write a CRL signed by this CA revoking ``revoked`` (PEM, ``crl.pem`` by default)."""
        ca_cert, ca_key = self._load()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=30))
        )
        for issued in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(issued.serial)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        target = path or self.directory / "crl.pem"
        target.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return target
