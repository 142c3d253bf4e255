"""TLS contexts of the network readers' two paths, built once from file paths.

Why here and not in each reader: the MQTT reader (a client of the reader broker) and the HTTP
receiver (a server the readers POST to) make the same mistakes possible (a missing file, a key
that does not match its certificate), and both should fail with one clear `DeviceError` when
they are built, not with an ``ssl`` traceback at the first connection.

Client side (`client_context`): certificate and hostname verification always on (the CA file,
or the system's trust store without one); TLS 1.2 at least; an optional client certificate for
brokers that require one. Server side (`server_context`): the receiver's certificate and key;
TLS 1.2 at least.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from floorsync.devices.base import DeviceError


def _load_chain(context: ssl.SSLContext, cert: str | Path, key: str | Path | None,
                what: str) -> None:
    for path in (cert, key):
        if path is not None and not Path(path).is_file():
            raise DeviceError(f"{what}: no such file {str(path)!r}")
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except ssl.SSLError as exc:
        raise DeviceError(
            f"{what}: cannot use certificate {str(cert)!r} with key {str(key)!r}: "
            f"{exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise DeviceError(f"{what}: cannot read {str(cert)!r}: {exc}") from None


def client_context(ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                   key_file: str | Path | None = None, *, what: str = "TLS") -> ssl.SSLContext:
    """A verifying client context: the peer's chain must lead to ``ca_file`` (or the system
    trust store) and its certificate must name the host connected to."""
    if key_file is not None and cert_file is None:
        raise DeviceError(f"{what}: key_file given without cert_file")
    if ca_file is not None and not Path(ca_file).is_file():
        raise DeviceError(f"{what}: no such CA file {str(ca_file)!r}")
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise DeviceError(f"{what}: CA file {str(ca_file)!r} holds no usable certificate: "
                          f"{exc.reason or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None:
        _load_chain(context, cert_file, key_file, what)
    return context


def server_context(cert_file: str | Path, key_file: str | Path | None = None, *,
                   what: str = "TLS") -> ssl.SSLContext:
    """A server context presenting ``cert_file`` (its chain) with ``key_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file, what)
    return context


def describe(exc: BaseException) -> str:
    """An ssl failure in the words an operator acts on (which side, what to check)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        return (f"TLS: the peer's certificate was refused ({detail}); check ca_file and the "
                "name the certificate was issued for")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc)
